"""Settings come from DRIFTLINE_DRIFT_* and refuse contradictions."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from driftline.drift.settings import DriftSettings
from tests.drift.streams import dynamic_model


def test_settings_read_the_environment(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(dynamic_model().to_manifest()))
    monkeypatch.setenv("DRIFTLINE_DRIFT_MODEL_FILE", str(path))
    monkeypatch.setenv("DRIFTLINE_DRIFT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("DRIFTLINE_DRIFT_CORRECTION", "fdr")
    settings = DriftSettings()
    assert settings.connections.kafka.bootstrap_servers == "127.0.0.1:1"
    config = settings.monitor_config()
    assert config.correction == "fdr" and config.window == 400
    assert config.online_windows == [20, 80, 200]  # 1/20, 1/5, 1/2 of the window
    assert config.concept_reference == 800


def test_a_short_error_reference_is_refused(tmp_path) -> None:
    with pytest.raises(ValidationError, match="at least twice the longest online window"):
        DriftSettings(
            model_file=tmp_path / "m.yaml", online_windows=[50, 300], concept_reference=400
        )
