"""What a first run says: with no version registered, nothing is served, and why and what next.

`driftline up` of a model that has no version yet starts every part, and inference
answers each request with 503 "no model version is loaded yet". `driftline up` and
`driftline status` then print the ways forward, with the exact command for this run
(its MLflow, its model file, the columns the data needs), instead of leaving a
newcomer with the 503s.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from driftline.api import DynamicModel
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.common.registry import RegisteredModel, RegistryError


def serves_nothing_yet(tracking_uri: str, registry_name: str) -> bool:
    """True when the registry has no `champion` version (nothing to serve); False when it
    has one, or cannot be read now (then the hint would only be a guess)."""
    registered = RegisteredModel(tracking_uri, registry_name, rest_reads=True, timeout_seconds=5)
    try:
        return registered.version_for_alias(ALIAS_CHAMPION) is None
    except (RegistryError, OSError):
        return False


def bootstrap_command(model_file: Path | str, tracking_uri: str, data: str = "DATA.csv") -> str:
    """The trainer's bootstrap against this run's MLflow (the spec's URI is for a cluster)."""
    return (
        f"DRIFTLINE_TRAINER_MLFLOW_TRACKING_URI={shlex.quote(tracking_uri)} "
        f"python -m driftline.trainer bootstrap --model-file {shlex.quote(str(model_file))} "
        f"--from-file {data}"
    )


def next_steps(model: DynamicModel, model_file: Path | str, tracking_uri: str) -> list[str]:
    """The lines that tell a first run what to do, with the exact commands."""
    spec = model.spec
    columns = ", ".join([f.name for f in spec.features] + ["label"])
    if spec.model.task == "classification":
        label = f"the class index, 0 to {spec.model.classes - 1}"
    else:
        label = "the observed value"
    return [
        f"No version of {model.name} is registered yet: inference answers 503 "
        '"no model version is loaded yet" until there is one. Two ways forward:',
        f"  1. Train the first version from your data, a CSV with the columns {columns} ({label}):",
        f"       {bootstrap_command(model_file, tracking_uri)}",
        "     (.jsonl and .npz files work too; --label-column names another label column.)",
        "  2. Import a model trained elsewhere (ONNX, scikit-learn saved with skops, XGBoost,",
        "     LightGBM, TorchScript):",
        "       driftline import MODEL.onnx --sample DATA.csv",
        "     (the sample gives the drift reference; or name it in the spec as",
        "     model.initial: {uri: MODEL.onnx, sample: DATA.csv}; see docs/import.md.)",
        "Inference loads the new version by itself once it is registered; "
        "`driftline status` shows it.",
    ]
