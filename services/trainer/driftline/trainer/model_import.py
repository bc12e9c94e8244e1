"""Bring a model made elsewhere: register it as the first version, like a trained one.

    python -m driftline.trainer import model.onnx --sample rows.csv
    python -m driftline.trainer import pipeline.skops --sample rows.parquet [--trust TYPE ...]
    python -m driftline.trainer import booster.json|booster.ubj|booster.txt|module.pt

The model is an ONNX file, a scikit-learn estimator saved with skops (skl2onnx), an
XGBoost or LightGBM booster in its own model file, or a TorchScript module
(onnxmltools, torch.onnx; the `import` extra; `import_sources` and the modules beside
it). A pickle is always refused: loading one runs whatever code it holds, and
Driftline never unpickles.

The graph is wrapped to follow the artifact contract (`onnx_adapter`), and ONNX
Runtime's answers on the wrapped graph must equal the original model's (its own
`predict`, or the original graph's) within the trainer's `parity_tolerance`, on the
sample or, without one, on random rows within the spec's ranges; otherwise nothing
is registered.

The sample (`--sample`, CSV with a header, Parquet or JSON lines, read with the
feature value rules) becomes the drift reference. When it has labels, a learner of the
spec is trained on it and its state is registered as `training/state.npz`: the online
trainer resumes from that learner, a challenger that must pass the gate against the
imported champion. Without labels there is no state and the trainer starts a fresh
learner beside it; without a sample there is no reference either, said in the
output and in the `driftline.reference` tag (the drift monitor then takes the version's
first live predictions as its reference).

With `spec.model.signing` naming a key, the model must match its signature
(`--signature`, default `<model>.sig`; OpenSSF model signing) before it is read at
all; a missing one is refused when `required`.

The version is registered through `ModelVersions` (the same run, tags, sha256 and
publish key as a trained one) with the aliases `champion` and `baseline`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

import numpy as np
from numpy.typing import NDArray

from driftline.api import artifacts
from driftline.api.spec import ImportFormat
from driftline.common.feature_values import FeatureValueError
from driftline.common.features import FeatureLayout
from driftline.common.model_signature import SignatureCheck, SignatureError, signing_key
from driftline.trainer import export
from driftline.trainer.adapter import AdapterLearner, FrozenBase
from driftline.trainer.bootstrap import DataError, data_fingerprint, examples_from_rows
from driftline.trainer.bootstrap import rows_from_file as read_rows
from driftline.trainer.checkpoint import learner_state, to_bytes
from driftline.trainer.import_sources import ModelImportError, Source, onnx_source, refuse_pickle
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from driftline.trainer.onnx_adapter import MappingError, adapt, original_feeds
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import Artifacts, ModelVersions

log = logging.getLogger(__name__)

PICKLES: Final = frozenset({".pkl", ".pickle", ".joblib"})
SUFFIXES: Final = {
    ".onnx": "onnx",
    ".skops": "skops",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
    ".lgb": "lightgbm",
    ".pt": "torchscript",
    ".pts": "torchscript",
    ".pth": "torchscript",  # refused unless it is a TorchScript archive (torch.save's pickles)
    ".torchscript": "torchscript",
}
FORMATS: Final = get_args(ImportFormat)
PROBABILITY_SLACK: Final = 1e-3
RANDOM_ROWS: Final = 256
NO_REFERENCE: Final = (
    "none: no sample was given; the drift reference will come from the first live traffic "
    "(the drift monitor takes this version's first predictions; no drift is measured until then)"
)


__all__ = ["ModelImportError", "import_model", "load_source"]


@dataclass(frozen=True)
class Imported:
    version: str
    fmt: str
    parity: float
    rows: int
    reference: str
    training_state: str
    seconds: float


def load_source(
    path: Path,
    layout: FeatureLayout,
    task: str,
    classes: int = 2,
    *,
    fmt: str | None = None,
    trusted: list[str] | None = None,
) -> Source:
    """The original model, by `fmt` or else by the file's suffix; each with its safe loader."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise ModelImportError(f"{path}: no such file")
    if suffix in PICKLES:
        raise refuse_pickle(path)
    fmt = fmt or SUFFIXES.get(suffix)
    if fmt == "onnx":
        return onnx_source(path)
    if fmt == "skops":
        from driftline.trainer.import_sklearn import load_skops, sklearn_source

        return sklearn_source(load_skops(path, trusted or []), layout, task, "skops")
    if fmt == "xgboost":
        from driftline.trainer.import_boosters import xgboost_source

        return xgboost_source(path, layout, task, classes)
    if fmt == "lightgbm":
        from driftline.trainer.import_boosters import lightgbm_source

        return lightgbm_source(path, layout, task, classes)
    if fmt == "torchscript":
        from driftline.trainer.import_torch import torchscript_source

        return torchscript_source(path, layout, task)
    raise ModelImportError(
        f"{path}: import a .onnx file, a scikit-learn estimator saved as .skops, an XGBoost "
        "model file (.json, .ubj), a LightGBM model file (.txt) or a TorchScript module "
        f"(.pt); --format says which for another name ({', '.join(FORMATS)})"
    )


def check_signature(settings: TrainerSettings, path: Path, signature: Path | None) -> None:
    """Refuse `path` unless it matches `signature`, when spec.model.signing names a key;
    before anything is read from the model, so a refused model is never loaded."""
    try:
        check = SignatureCheck.from_spec(settings.model.spec.model.signing, settings.secrets_dir)
        if check is None:
            return
        if check.verify(path, signature):
            log.info("%s: signature %s verified", path.name, signature.name if signature else "")
        else:
            log.warning("%s has no signature; spec.model.signing.required is false", path.name)
    except SignatureError as exc:
        raise ModelImportError(f"{exc}; nothing was registered") from exc


def existing_champion(settings: TrainerSettings) -> str | None:
    """The version under `champion`, if the registry has one (`--if-no-version`)."""
    versions = ModelVersions(
        settings.connections.mlflow_tracking_uri, settings.model.spec.model.registry.name
    )
    champion = versions.by_alias(artifacts.ALIAS_CHAMPION)
    return None if champion is None else str(champion.version)


def parity_difference(ours: NDArray[np.float64], theirs: NDArray[np.float64]) -> float:
    """The largest difference, relative beyond magnitude 1.

    Probabilities and values up to 1 are compared absolutely; a larger value relatively,
    since the contract serves float32, which holds about 7 significant digits: a
    regression value of 1000 cannot match to 1e-5 absolutely in any format.
    """
    scale = np.maximum(1.0, np.abs(theirs))
    return float(np.max(np.abs(ours - theirs) / scale)) if ours.size else 0.0


def check_probabilities(probabilities: NDArray[np.float64]) -> None:
    """A classifier's output must be probabilities: in [0, 1], each row summing to 1."""
    sums = probabilities.sum(axis=1)
    low, high = float(probabilities.min(initial=0.0)), float(probabilities.max(initial=0.0))
    worst = float(np.max(np.abs(sums - 1.0), initial=0.0))
    if low < -PROBABILITY_SLACK or high > 1 + PROBABILITY_SLACK or worst > PROBABILITY_SLACK:
        raise ModelImportError(
            f"the model's classification output is not probabilities (values in [{low:.3g}, "
            f"{high:.3g}], rows summing up to {worst:.3g} away from 1): these look like "
            "scores or logits; end the model with a softmax (or predict_proba) and import again"
        )


def random_rows(layout: FeatureLayout, n: int, seed: int) -> list[dict[str, Any]]:
    """Rows within the spec's ranges (standard normal where a feature has none)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for f in layout.numeric:
        if f.min is not None and f.max is not None:
            values = rng.uniform(f.min, f.max, n)
        else:
            values = rng.standard_normal(n) + (f.min + 1.0 if f.min is not None else 0.0)
            values = np.clip(values, f.min, f.max) if f.max is not None else values
        columns[f.name] = values.tolist()
    for f in layout.categorical:
        choices = list(f.vocabulary) if f.vocabulary else [f"v{i}" for i in range(8)]
        columns[f.name] = [choices[i] for i in rng.integers(0, len(choices), n)]
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


def _rows(
    sample: Path | None, layout: FeatureLayout, label_column: str, seed: int
) -> tuple[list[dict[str, Any]], NDArray[np.float32]]:
    """The sample's rows and labels (NaN without), or random rows without a sample."""
    if sample is None:
        rows = random_rows(layout, RANDOM_ROWS, seed)
        return rows, np.full(len(rows), np.nan, np.float32)
    try:
        rows, labels = read_rows(sample, layout, label_column, require_label=False)
        if not rows:
            raise ModelImportError(f"{sample}: no rows")
        layout.arrays(rows)  # every value follows the feature value rules
    except (DataError, FeatureValueError) as exc:
        raise ModelImportError(f"{sample}: {exc}") from exc
    return rows, labels


def _run(
    graph: bytes,
    layout: FeatureLayout,
    task: str,
    numeric: NDArray[np.float32],
    categorical: NDArray[Any],
) -> NDArray[np.float64]:
    """The registered graph's probabilities or values, fed as inference feeds it."""
    name = artifacts.OUTPUT_PROBABILITIES if task == "classification" else artifacts.OUTPUT_VALUE
    feeds: dict[str, Any] = {}
    if layout.numeric:
        feeds[artifacts.INPUT_NUMERIC] = np.ascontiguousarray(numeric, np.float32)
    if layout.categorical:
        feeds[artifacts.INPUT_CATEGORICAL] = np.asarray(categorical, dtype=object)
    try:
        (out,) = export.session(graph).run([name], feeds)
    except Exception as exc:  # ONNX Runtime's errors (an IR version it cannot read...)
        raise ModelImportError(f"ONNX Runtime cannot run the registered graph: {exc}") from exc
    return np.asarray(out, np.float64)


def import_model(
    settings: TrainerSettings,
    path: Path,
    sample: Path | None = None,
    *,
    label_column: str = "label",
    output: str | None = None,
    trusted: list[str] | None = None,
    fmt: str | None = None,
    force: bool = False,
    signature: Path | None = None,
) -> Imported:
    """Check, wrap and register `path` as champion and baseline; raises `ModelImportError`."""
    started = time.perf_counter()
    model, spec = settings.model, settings.model.spec
    check_signature(settings, path, signature)
    task, classes = spec.model.task, spec.model.classes
    layout = FeatureLayout.from_features(spec.features)
    source = load_source(path, layout, task, classes, fmt=fmt, trusted=trusted)
    try:
        graph, maps, served = adapt(source.graph, layout, task, classes, output, source.columns)
    except MappingError as exc:
        raise ModelImportError(str(exc)) from exc
    export.describe_graph(graph, layout, task, classes, producer="driftline-import")
    registered = bytes(graph.SerializeToString())

    rows, labels = _rows(sample, layout, label_column, settings.seed)
    numeric, categorical = layout.arrays(rows)
    ours = _run(registered, layout, task, numeric, categorical)
    try:
        if source.answers is not None:
            theirs = source.answers(numeric, categorical)
        else:
            (theirs,) = export.session(source.graph.SerializeToString()).run(
                [served], original_feeds(maps, numeric, categorical)
            )
    except Exception as exc:  # ONNX Runtime's and the estimator's errors, said plainly
        raise ModelImportError(f"the original model cannot be run on the rows: {exc}") from exc
    theirs = np.asarray(theirs, np.float64)
    if theirs.size != ours.size:
        raise ModelImportError(
            f"the original model answers with shape {theirs.shape}, the registered graph "
            f"with {ours.shape}"
        )
    if task == "classification":
        check_probabilities(theirs.reshape(ours.shape))
    diff = parity_difference(ours, theirs.reshape(ours.shape))
    if not np.isfinite(diff) or diff > settings.parity_tolerance:
        raise ModelImportError(
            f"the registered graph answers differently from the original model by {diff:.2e} "
            f"(> {settings.parity_tolerance}) on {len(rows)} rows; nothing was registered"
        )
    outputs = np.asarray(ours, np.float32)

    versions = ModelVersions(
        settings.connections.mlflow_tracking_uri,
        spec.model.registry.name,
        signing_key(spec.model.signing, settings.secrets_dir),
    )
    options = LearnerOptions.from_spec(
        spec.model, spec.training, spec.drift, **settings.learner_settings()
    )
    adapter = spec.model.strategy == "adapter"
    learner = (
        AdapterLearner(spec.model, spec.features, options, FrozenBase.of_spec(registered, spec))
        if adapter
        else OnlineLearner(spec.model, spec.features, options)
    )
    ex = examples_from_rows(learner, rows, labels)
    reference = export.reference_npz(ex, layout, outputs, task) if sample is not None else None
    reference_tag = f"sample:{sample.name}, {len(rows)} rows" if sample else NO_REFERENCE
    labelled = sample is not None and not np.isnan(labels).any()
    state = None
    if labelled:
        learner.observe(ex)  # the anchor set and held-out window of the challenger
        if isinstance(learner, AdapterLearner):
            learner.prime(ex)  # statistics only: the adapter starts as the identity
        else:
            learner.fit_offline(ex, settings.retrain_passes)
        arrays, meta = learner_state(learner)
        state = to_bytes(arrays, meta)
    state_tag = "none"
    if labelled:
        state_tag = (
            f"adapter (the identity) with statistics of {len(rows)} sample rows"
            if adapter
            else f"challenger learned on {len(rows)} sample rows"
        )

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    key = hashlib.sha256(
        json.dumps(
            {
                "model": model.name,
                "contract": layout.contract_hash(),
                "import": digest,
                "sample": data_fingerprint(ex) if sample is not None else None,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    existing = versions.by_key(key)
    champion = versions.by_alias(artifacts.ALIAS_CHAMPION)
    if existing is None and champion is not None and not force:
        raise ModelImportError(
            f"{versions.name} already has a champion (version {champion.version}); pass "
            "--force to register the import as the new champion and baseline"
        )
    gate = {"imported": True, "format": source.fmt, "rows": len(rows), "parity": diff}
    tags = {
        artifacts.TAG_PARENT_VERSION: "",
        artifacts.TAG_OFFSETS: "{}",
        artifacts.TAG_EXAMPLES_SEEN: "0",
        artifacts.TAG_CONCEPT_EPOCH: "0",
        artifacts.TAG_GATE: json.dumps(gate, sort_keys=True),
        artifacts.TAG_SPEC_HASH: layout.contract_hash(),
        artifacts.TAG_ORIGIN: artifacts.ORIGIN_IMPORTED,
        artifacts.TAG_IMPORT_SOURCE: json.dumps(
            {"format": source.fmt, "file": path.name, "sha256": digest}, sort_keys=True
        ),
        artifacts.TAG_REFERENCE: reference_tag,
        artifacts.TAG_TRAINING_STATE: "sample" if labelled else "none",
        "driftline.learner": f"imported:{source.fmt}",
        "driftline.parity_max_abs_diff": f"{diff:.3e}",
    }
    version = versions.register(
        key,
        Artifacts(model=registered, reference=reference, state=state),
        tags,
        [artifacts.ALIAS_CHAMPION, artifacts.ALIAS_BASELINE],
        {"parity_max_abs_diff": diff},
    )
    seconds = time.perf_counter() - started
    log.info("imported %s as %s version %s in %.2fs", path.name, versions.name, version, seconds)
    return Imported(version, source.fmt, diff, len(rows), reference_tag, state_tag, seconds)
