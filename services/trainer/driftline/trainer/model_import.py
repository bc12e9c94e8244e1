"""Bring a model made elsewhere: register it as the first version, like a trained one.

    python -m driftline.trainer import model.onnx --sample rows.csv
    python -m driftline.trainer import pipeline.skops --sample rows.csv [--trust TYPE ...]

The model is an ONNX file, or a scikit-learn estimator saved with skops (converted
with skl2onnx; the `import` extra). A pickle is always refused: loading one runs
whatever code it holds, and Driftline never unpickles.

The graph is wrapped to follow the artifact contract (`onnx_adapter`), and ONNX
Runtime's answers on the wrapped graph must equal the original model's (the
estimator's `predict_proba`/`predict`, or the original graph's) within the trainer's
`parity_tolerance`, on the sample or, without one, on random rows within the spec's
ranges; otherwise nothing is registered.

The sample (`--sample`, CSV with a header or JSON lines, read with the feature value
rules) becomes the drift reference. When it has labels, a learner of the spec is
trained on it and its state is registered as `training/state.npz`: the online
trainer resumes from that learner, a challenger that must pass the gate against the
imported champion. Without labels there is no state and the trainer starts a fresh
learner beside it; without a sample there is no reference either, said in the
output and in the `driftline.reference` tag (the drift monitor waits, not ready).

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
from typing import Any, Final

import numpy as np
import onnx
from numpy.typing import NDArray

from driftline.api import artifacts
from driftline.common.feature_values import FeatureValueError
from driftline.common.features import FeatureLayout
from driftline.trainer import export
from driftline.trainer.bootstrap import DataError, data_fingerprint, examples_from_rows
from driftline.trainer.bootstrap import rows_from_file as read_rows
from driftline.trainer.checkpoint import learner_state, to_bytes
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from driftline.trainer.onnx_adapter import MappingError, adapt, original_feeds
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import Artifacts, ModelVersions

log = logging.getLogger(__name__)

PICKLES: Final = frozenset({".pkl", ".pickle", ".joblib"})
RANDOM_ROWS: Final = 256
NO_REFERENCE: Final = (
    "none: no sample was given; the drift reference will come from the first live traffic "
    "(until a version with a reference serves, the drift monitor waits, not ready)"
)


class ModelImportError(ValueError):
    """A model that cannot be imported as it is; the message says why and what to do."""


@dataclass(frozen=True)
class Imported:
    version: str
    fmt: str
    parity: float
    rows: int
    reference: str
    training_state: str
    seconds: float


@dataclass(frozen=True)
class Source:
    """The original model: its ONNX graph and a function giving its own answers."""

    fmt: str
    graph: onnx.ModelProto
    answers: Any  # (numeric, categorical) -> float array [n, C] or [n]


def refuse_pickle(path: Path) -> ModelImportError:
    return ModelImportError(
        f"{path.name} is a pickle, and loading a pickle runs any code it holds; it is not "
        "loaded. Save the estimator with skops (`skops.io.dump(model, 'model.skops')`) and "
        "import that, or convert it to ONNX (skl2onnx) and import the .onnx file"
    )


def load_source(
    path: Path,
    layout: FeatureLayout,
    task: str,
    *,
    trusted: list[str] | None = None,
) -> Source:
    suffix = path.suffix.lower()
    if not path.exists():
        raise ModelImportError(f"{path}: no such file")
    if suffix == ".onnx":
        return _onnx_source(path)
    if suffix == ".skops":
        return sklearn_source(_load_skops(path, trusted or []), layout, task, "skops")
    if suffix in PICKLES:
        raise refuse_pickle(path)
    raise ModelImportError(
        f"{path}: import a .onnx file or a scikit-learn estimator saved as .skops"
    )


def _onnx_source(path: Path) -> Source:
    try:
        graph = onnx.load_model(str(path))
    except Exception as exc:  # protobuf's decode errors
        raise ModelImportError(f"{path}: not an ONNX model ({exc})") from exc
    return Source("onnx", graph, None)


def _load_skops(path: Path, trusted: list[str]) -> Any:
    import skops.io as sio

    untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in trusted]
    if untrusted:
        raise ModelImportError(
            f"{path.name} holds types skops does not trust by default: {untrusted}; check "
            "them, and pass --trust TYPE for each one you trust"
        )
    return sio.load(path, trusted=trusted or None)


def sklearn_source(estimator: Any, layout: FeatureLayout, task: str, fmt: str) -> Source:
    """Convert a fitted scikit-learn estimator with skl2onnx; answers with the estimator."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as exc:
        raise ModelImportError(
            "importing a scikit-learn model needs skl2onnx: pip install 'driftline[import]'"
        ) from exc
    names = getattr(estimator, "feature_names_in_", None)
    types: list[tuple[str, Any]]
    if names is not None:
        known = {*layout.numeric_names, *layout.categorical_names}
        unknown = [str(n) for n in names if n not in known]
        if unknown:
            raise ModelImportError(
                f"the estimator was fit on columns {unknown}, which are not features of the "
                f"spec (numeric: {', '.join(layout.numeric_names) or '-'}; categorical: "
                f"{', '.join(layout.categorical_names) or '-'})"
            )
        types = [
            (str(n), FloatTensorType([None, 1]))
            if n in layout.numeric_names
            else (str(n), StringTensorType([None, 1]))
            for n in names
        ]
    else:
        width = int(getattr(estimator, "n_features_in_", len(layout.numeric)))
        if layout.categorical:
            raise ModelImportError(
                "the estimator was fit on an array, without column names, but the spec has "
                f"categorical features ({', '.join(layout.categorical_names)}): fit it on a "
                "pandas DataFrame whose columns are named after the features"
            )
        if width != len(layout.numeric):
            raise ModelImportError(
                f"the estimator's input has {width} columns; the spec has "
                f"{len(layout.numeric)} numeric features: {', '.join(layout.numeric_names)}"
            )
        types = [(artifacts.INPUT_NUMERIC, FloatTensorType([None, width]))]
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if task == "classification":
        classes = list(getattr(final, "classes_", []))
        if classes != list(range(len(classes))):
            raise ModelImportError(
                f"the estimator's classes are {classes}; Driftline's labels are class indices "
                "0..C-1 in the order of the probabilities: refit it with labels 0..C-1"
            )
    options = {id(final): {"zipmap": False}} if task == "classification" else None
    try:
        graph = convert_sklearn(
            estimator,
            initial_types=types,
            options=options,
            target_opset={"": export.OPSET, "ai.onnx.ml": 3},
        )
    except Exception as exc:  # skl2onnx raises many types for what it cannot convert
        raise ModelImportError(
            f"skl2onnx cannot convert {type(estimator).__name__}: {exc}"
        ) from exc

    def answers(numeric: NDArray[np.float32], categorical: NDArray[Any]) -> NDArray[Any]:
        if names is not None:
            import pandas as pd

            columns = {}
            for n in names:
                if n in layout.numeric_names:
                    columns[n] = numeric[:, layout.numeric_names.index(n)].astype(np.float64)
                else:
                    columns[n] = categorical[:, layout.categorical_names.index(n)]
            x: Any = pd.DataFrame(columns)
        else:
            x = numeric.astype(np.float64)
        if task == "classification":
            return np.asarray(estimator.predict_proba(x), np.float64)
        return np.asarray(estimator.predict(x), np.float64).ravel()

    return Source(f"sklearn:{fmt}", graph, answers)


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
    force: bool = False,
) -> Imported:
    """Check, wrap and register `path` as champion and baseline; raises `ModelImportError`."""
    started = time.perf_counter()
    model, spec = settings.model, settings.model.spec
    task, classes = spec.model.task, spec.model.classes
    layout = FeatureLayout.from_features(spec.features)
    source = load_source(path, layout, task, trusted=trusted)
    try:
        graph, maps, served = adapt(source.graph, layout, task, classes, output)
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
    diff = float(np.max(np.abs(ours - theirs.reshape(ours.shape))))
    if not np.isfinite(diff) or diff > settings.parity_tolerance:
        raise ModelImportError(
            f"the registered graph answers differently from the original model by {diff:.2e} "
            f"(> {settings.parity_tolerance}) on {len(rows)} rows; nothing was registered"
        )
    outputs = np.asarray(ours, np.float32)

    versions = ModelVersions(settings.connections.mlflow_tracking_uri, spec.model.registry.name)
    options = LearnerOptions.from_spec(
        spec.model, spec.training, spec.drift, **settings.learner_settings()
    )
    learner = OnlineLearner(spec.model, spec.features, options)
    ex = examples_from_rows(learner, rows, labels)
    reference = export.reference_npz(ex, layout, outputs, task) if sample is not None else None
    reference_tag = f"sample:{sample.name}, {len(rows)} rows" if sample else NO_REFERENCE
    labelled = sample is not None and not np.isnan(labels).any()
    state = None
    if labelled:
        learner.observe(ex)  # the anchor set and held-out window of the challenger
        learner.fit_offline(ex, settings.retrain_passes)
        arrays, meta = learner_state(learner)
        state = to_bytes(arrays, meta)
    state_tag = f"challenger learned on {len(rows)} sample rows" if labelled else "none"

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
