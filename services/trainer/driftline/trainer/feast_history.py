"""A bootstrap's training rows from Feast's offline store, point in time.

    python -m driftline.trainer bootstrap --from-feast labeled.parquet --feast-repo repo/

The entity file holds the labeled history: `event_timestamp`, the label, the
features the request carries and the request fields the join keys read
(`entityKeys[].field`: `entity_id`, or the field the spec names), each key's value
made from its field as serving makes it. Every feature with `source.feast` is
looked up with Feast's `get_historical_features` as of each row's timestamp, so a
row never sees a value written after it (no leak from the future). Feast runs in
an environment of its own (`DRIFTLINE_TRAINER_FEAST_PYTHON`: a Python with Feast
installed), through `feast_point_in_time.py`; Driftline never imports Feast.

The values then follow the serving rule (`driftline.common.feast_online.served_value`):
a missing, null or non-numeric value becomes the feature's default, as inference
serves it, so the first version learns from what inference will send it. One
difference is stated, not hidden: `maxAgeSeconds` needs each value's own event time,
which Feast's historical retrieval does not return; offline, the view's `ttl`
decides how old a value may be. Keep the two equal for the same rule.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.api.resource import DynamicModel
from driftline.common.feast_online import FeastStatus, served_value
from driftline.common.features import FeatureLayout
from driftline.trainer.bootstrap import DataError, rows_from_file

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).with_name("feast_point_in_time.py")


def feast_requests(model: DynamicModel) -> list[dict[str, Any]]:
    """One entry per `source.feast` feature: its spec name, Feast ref, join keys, default."""
    wanted = []
    for feature in model.spec.features:
        source = feature.source.feast if feature.source is not None else None
        if source is None:
            continue
        wanted.append(
            {
                "feature": feature.name,
                "ref": f"{source.feature_view}:{source.name}",
                "keys": [
                    {"joinKey": k.join_key, "type": k.type, "field": k.field}
                    for k in source.entity_keys
                ],
                "default": source.default,
                "maxAgeSeconds": source.max_age_seconds,
            }
        )
    return wanted


def rows_from_feast(
    model: DynamicModel,
    entities: Path,
    repo: Path,
    python: str | None,
    label_column: str = "label",
    timeout_seconds: float = 1800.0,
) -> tuple[list[dict[str, Any]], NDArray[np.float32]]:
    """Rows (features as inference would serve them) and labels of `entities`."""
    rows, labels, _ = joined_from_feast(
        model, entities, repo, python, label_column, timeout_seconds
    )
    return rows, labels


def joined_from_feast(
    model: DynamicModel,
    entities: Path,
    repo: Path,
    python: str | None,
    label_column: str = "label",
    timeout_seconds: float = 1800.0,
) -> tuple[list[dict[str, Any]], NDArray[np.float32], NDArray[np.float64]]:
    """`rows_from_feast`, and each row's `event_timestamp` (seconds since the epoch)."""
    wanted = feast_requests(model)
    if not wanted:
        raise DataError("no feature has source.feast; bootstrap from a file (--from-file)")
    if python is None:
        raise DataError(
            "reading Feast's offline store needs a Python with Feast installed: set "
            "DRIFTLINE_TRAINER_FEAST_PYTHON (Driftline never imports Feast itself)"
        )
    if not entities.exists():
        raise DataError(f"{entities}: no such entity file or folder")
    if not (repo / "feature_store.yaml").is_file():
        raise DataError(f"{repo}: no feature_store.yaml there; not a Feast feature repository")
    for f in wanted:
        if f["maxAgeSeconds"] is not None:
            log.warning(
                "%s: maxAgeSeconds is applied at serving only; offline, the Feast view's "
                "ttl decides how old a value may be",
                f["feature"],
            )
    with tempfile.TemporaryDirectory(prefix="driftline-feast-") as folder:
        out = Path(folder) / "rows.parquet"
        request = Path(folder) / "request.json"
        request.write_text(
            json.dumps(
                {
                    "repo": str(repo.resolve()),
                    "entities": str(entities.resolve()),
                    "out": str(out),
                    "features": wanted,
                }
            )
        )
        try:
            done = subprocess.run(
                [python, str(SCRIPT), str(request)],
                capture_output=True,
                text=True,
                timeout=timeout_seconds,
                cwd=repo,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"Feast's point-in-time join did not run: {exc}") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise DataError(f"Feast's point-in-time join failed:\n{tail}")
        layout = FeatureLayout.from_features(model.spec.features)
        try:
            rows, labels = rows_from_file(out, layout, label_column)
        except DataError as exc:  # named after the user's file, not the joined answer
            raise DataError(str(exc).replace(str(out), f"{entities} joined with Feast")) from exc
        times = _seconds(out)
    for row in rows:
        for f in wanted:
            raw = row[f["feature"]]
            status = FeastStatus.NULL_VALUE if raw is None or raw != raw else FeastStatus.PRESENT
            value, _ = served_value(raw, status)
            row[f["feature"]] = f["default"] if value is None else value
    return rows, labels, times


def _seconds(answer: Path) -> NDArray[np.float64]:
    """The answer's `event_timestamp` column in seconds since the epoch."""
    import pyarrow.parquet as pq

    stamps = pq.read_table(answer, columns=["event_timestamp"]).column(0).to_pylist()
    return np.asarray([t.timestamp() for t in stamps], np.float64)
