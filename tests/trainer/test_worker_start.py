"""A trainer that cannot write its checkpoint says so at start, not at its first publish."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from driftline.trainer.settings import TrainerSettings
from driftline.trainer.worker import CheckpointDirError, TrainerWorker


def test_unwritable_checkpoint_dir_fails_at_start(tmp_path: Path) -> None:
    model = {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DynamicModel",
        "metadata": {"name": "m"},
        "spec": {
            "model": {"registry": {"trackingUri": "http://127.0.0.1:1", "name": "m"}},
            "features": [{"name": "x"}],
            "kafka": {"bootstrapServers": "127.0.0.1:1"},
            "redis": {"url": "redis://127.0.0.1:1/0"},
        },
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(model))
    (tmp_path / "taken").write_text("a file, not a directory")
    settings = TrainerSettings(
        model_file=tmp_path / "m.yaml", checkpoint_dir=tmp_path / "taken" / "state", metrics_port=0
    )
    with pytest.raises(
        CheckpointDirError, match=r"DRIFTLINE_TRAINER_CHECKPOINT_DIR=.* is not writable"
    ):
        TrainerWorker(settings).run()
