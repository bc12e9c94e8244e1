"""`driftline import MODEL`: bring a model made elsewhere into a local run.

Runs the trainer's own command, `python -m driftline.trainer import`, against the
servers of a running `driftline up` (as `bootstrap_from_stream` runs bootstrap), so
the model is registered exactly as on a cluster: wrapped to the artifact contract,
checked for parity, tagged, and aliased `champion` and `baseline`. Its output (the
parity, where the drift reference comes from, the version) is the trainer's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from driftline.local.parts import TRAINER, Endpoints
from driftline.local.runtime import RuntimeInfo, inherited_env


def local_or_uri(value: str) -> str:
    """A path made absolute (the trainer runs in the run's folder); a URI as it is."""
    return value if urlparse(value).scheme else str(Path(value).expanduser().resolve())


def trainer_argv(model: str, options: list[str]) -> list[str]:
    return [*TRAINER.argv(), "import", local_or_uri(model), *options]


def run(state_dir: Path, model: str, options: list[str]) -> int:
    """Import `model` into the local run in `state_dir`; returns the command's exit code."""
    try:
        info = RuntimeInfo.read(state_dir)
    except FileNotFoundError as exc:
        print(f"driftline import: {exc}", file=sys.stderr)
        return 1
    endpoints = Endpoints(info.kafka_bootstrap_servers, info.redis_url, info.mlflow_tracking_uri)
    env = {
        **inherited_env(),
        **TRAINER.environment(Path(info.model_file), endpoints, 0, data_dir=state_dir / "data"),
    }
    done = subprocess.run(trainer_argv(model, options), env=env, check=False)
    return done.returncode
