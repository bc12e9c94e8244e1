"""The first version: train on a reference dataset, register it as champion.

    python -m driftline.trainer bootstrap --stream sea --seed 1 --samples 20000
    python -m driftline.trainer bootstrap --from-file history.csv

The data comes from a file (CSV with a header, JSON lines, or npz with one array
per feature) or from a `driftline.common.streams` generator. A slice is held out
(`gate.holdoutFraction`): it becomes the anchor set of epoch 0 and the score the
version is logged with. The rest is learned for several passes, after fitting the
standardisation statistics on it. The version is registered with the aliases
`champion` and `baseline`, its reference sample (the drift monitor's reference)
and its training state (where the online trainer starts).

Running it again is safe: if the model already has a champion it does nothing
(`--force` trains and registers a new one); the same data registers once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.api import artifacts
from driftline.api.resource import DynamicModel
from driftline.api.spec import ModelSpec
from driftline.common.feature_values import FeatureValueError
from driftline.common.features import FeatureLayout
from driftline.common.model_signature import signing_key
from driftline.common.streams import make_stream
from driftline.trainer.examples import Examples, holdout_mask
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from driftline.trainer.publish import Publisher
from driftline.trainer.settings import TrainerSettings
from driftline.trainer.versions import ModelVersions

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Reference data that does not fit the model; the message names the problem."""


def rows_from_stream(
    model: DynamicModel, name: str, seed: int, samples: int, concept: int = 0
) -> tuple[list[dict[str, Any]], NDArray[np.float32]]:
    stream = make_stream(name, seed=seed, schedule=[(0, concept)])
    try:
        stream.check_contract(model.spec.features)
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    rows = stream.take(samples)
    return rows.features(), rows.labels.astype(np.float32)


def rows_from_file(
    path: Path, layout: FeatureLayout, label_column: str = "label", require_label: bool = True
) -> tuple[list[dict[str, Any]], NDArray[np.float32]]:
    """Rows and labels; without `require_label` a file may have no labels (all NaN)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv(path, layout, label_column, require_label)
    if suffix in {".jsonl", ".ndjson"}:
        return _jsonl(path, require_label)
    if suffix == ".npz":
        return _npz(path, layout, label_column)
    if suffix in {".parquet", ".pq"}:
        return _parquet(path, layout, label_column, require_label)
    raise DataError(f"{path}: use a .csv, .parquet, .jsonl or .npz file")


def _csv(
    path: Path, layout: FeatureLayout, label_column: str, require_label: bool = True
) -> tuple[list[dict[str, Any]], NDArray[np.float32]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        labelled = require_label or label_column in header
        wanted = (*layout.numeric_names, *layout.categorical_names)
        missing = [n for n in (*wanted, *([label_column] if labelled else [])) if n not in header]
        if missing:
            raise DataError(f"{path}: columns {missing} are missing (header: {header})")
        rows, labels = [], []
        numeric = layout.numeric_names
        for line, record in enumerate(reader, start=2):
            row: dict[str, Any] = {n: _csv_number(path, line, n, record[n]) for n in numeric}
            row.update({n: record[n] for n in layout.categorical_names})
            rows.append(row)
            if not labelled:
                labels.append(float("nan"))
                continue
            try:
                labels.append(float(record[label_column]))
            except ValueError:
                raise DataError(
                    f"{path}:{line}: label {record[label_column]!r} is not a number"
                ) from None
    return rows, np.asarray(labels, np.float32)


def _parquet(
    path: Path, layout: FeatureLayout, label_column: str, require_label: bool = True
) -> tuple[list[dict[str, Any]], NDArray[np.float32]]:
    """A Parquet file's columns named after the features (nulls are missing values)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow: pip install 'driftline[import]'"
        ) from exc
    try:
        header = list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow's ArrowInvalid and OSError for a file that is not one
        raise DataError(f"{path}: not a Parquet file ({exc})") from exc
    labelled = require_label or label_column in header
    wanted = [*layout.numeric_names, *layout.categorical_names]
    missing = [n for n in (*wanted, *([label_column] if labelled else [])) if n not in header]
    if missing:
        raise DataError(f"{path}: columns {missing} are missing (columns: {header})")
    table = pq.read_table(path, columns=wanted + ([label_column] if labelled else []))
    columns = {n: table.column(n).to_pylist() for n in wanted}
    rows = [
        dict(zip(wanted, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    if not wanted:
        rows = [{} for _ in range(table.num_rows)]
    if not labelled:
        return rows, np.full(len(rows), np.nan, np.float32)
    try:
        labels = np.asarray(
            [np.nan if v is None else float(v) for v in table.column(label_column).to_pylist()],
            np.float32,
        )
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: the label column {label_column!r} is not numbers ({exc})"
        ) from exc
    return rows, labels


def _csv_number(path: Path, line: int, name: str, cell: str | None) -> float | None:
    """A CSV cell of a numeric feature: CSV holds text, the feature takes numbers."""
    if not cell or not cell.strip():
        return None  # an empty cell is a missing value
    try:
        return float(cell)
    except ValueError:
        raise DataError(f"{path}:{line}: {name} {cell!r:.40} is not a number") from None


def _jsonl(
    path: Path, require_label: bool = True
) -> tuple[list[dict[str, Any]], NDArray[np.float32]]:
    rows, labels = [], []
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            record = json.loads(text)
            if not isinstance(record, dict) or "features" not in record:
                raise DataError(f"{path}:{line}: expected an object with 'features' and 'label'")
            if "label" not in record and require_label:
                raise DataError(f"{path}:{line}: expected an object with 'features' and 'label'")
            rows.append(record["features"])
            labels.append(float(record["label"]) if "label" in record else float("nan"))
    return rows, np.asarray(labels, np.float32)


def _npz(
    path: Path, layout: FeatureLayout, label_column: str
) -> tuple[list[dict[str, Any]], NDArray[np.float32]]:
    with np.load(path, allow_pickle=False) as data:
        names = (*layout.numeric_names, *layout.categorical_names)
        missing = [n for n in (*names, label_column) if n not in data.files]
        if missing:
            raise DataError(f"{path}: arrays {missing} are missing (found {data.files})")
        columns = {n: data[n].tolist() for n in names}
        labels = data[label_column].astype(np.float32)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    return rows, labels


def examples_from_rows(
    learner: OnlineLearner, rows: list[dict[str, Any]], labels: NDArray[np.float32]
) -> Examples:
    numeric, categorical = learner.layout.arrays(rows)
    n = len(rows)
    return Examples(
        numeric=numeric,
        categorical=categorical,
        codes=learner.encoder(categorical),
        labels=labels,
        key=np.arange(n, dtype=np.int64),
        served=np.full(n, np.nan, np.float32),
        ts=np.full(n, time.time()),
        weight=np.ones(n, np.float32),
    )


def data_fingerprint(ex: Examples) -> str:
    digest = hashlib.sha256()
    for column in (ex.numeric, ex.codes, ex.labels):
        digest.update(np.ascontiguousarray(column).tobytes())
    return digest.hexdigest()


def check_labels(model: ModelSpec, labels: NDArray[np.float32]) -> None:
    """A `DataError` when a classifier's labels are not all class indices."""
    if model.task == "classification":
        bad = (labels < 0) | (labels >= model.classes) | (labels != np.round(labels))
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} labels are not class indices in [0, {model.classes}), "
                f"e.g. {float(labels[bad][0])}"
            )


def bootstrap(
    settings: TrainerSettings,
    rows: list[dict[str, Any]],
    labels: NDArray[np.float32],
    force: bool = False,
    source: str = "",
) -> str:
    """Train and register the first version; returns its version number."""
    model = settings.model
    spec = model.spec
    versions = ModelVersions(
        settings.connections.mlflow_tracking_uri,
        spec.model.registry.name,
        signing_key(spec.model.signing, settings.secrets_dir),
    )
    champion = versions.by_alias(artifacts.ALIAS_CHAMPION)
    if champion is not None and not force:
        log.info(
            "%s already has a champion (version %s); nothing to do", versions.name, champion.version
        )
        return champion.version
    if len(rows) < 50:
        raise DataError(f"{len(rows)} rows are too few to bootstrap from; give at least 50")
    options = LearnerOptions.from_spec(
        spec.model, spec.training, spec.drift, **settings.learner_settings()
    )
    learner = OnlineLearner(spec.model, spec.features, options)
    try:
        ex = examples_from_rows(learner, rows, labels)
    except FeatureValueError as exc:
        raise DataError(str(exc)) from exc
    check_labels(spec.model, ex.labels)
    learner.observe(ex)  # fills the anchor set, the held-out window and the replay reservoir
    held = holdout_mask(ex.key, options.holdout_fraction)
    learner.fit_offline(ex.take(~held), settings.retrain_passes)
    holdout_score = learner.score(ex.take(held))
    log.info("bootstrap: %d rows, held-out score %.4f", len(ex), holdout_score)
    key = hashlib.sha256(
        json.dumps(
            {
                "model": model.name,
                "contract": learner.layout.contract_hash(),
                "learner": spec.model.learner.model_dump(mode="json"),
                "data": data_fingerprint(ex),
                "seed": settings.seed,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    gate = json.dumps(
        {
            "bootstrap": True,
            "rows": len(ex),
            "holdout_score": round(holdout_score, 6),
            "source": source,
        }
    )
    staged = Publisher(settings, model, versions).build(
        learner,
        gate,
        {"holdout_score": holdout_score},
        {},
        None,
        [artifacts.ALIAS_CHAMPION, artifacts.ALIAS_BASELINE],
        key=key,
    )
    version = versions.register(
        staged.key, staged.artifacts, staged.tags, staged.aliases, staged.metrics
    )
    log.info("registered %s version %s as champion and baseline", versions.name, version)
    return version
