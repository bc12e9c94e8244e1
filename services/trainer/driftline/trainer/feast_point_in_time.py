"""Feast's point-in-time join for a bootstrap, run by a Python that has Feast.

    <python with feast> feast_point_in_time.py REQUEST.json

Never imported by Driftline: Feast's releases need numpy>=2 and its own
dependencies, so it runs in an environment of its own (a venv, or an image with
Feast) and this file imports nothing but Feast, pandas and the standard library.
`driftline.trainer.feast_history` writes the request and reads the answer.

REQUEST.json:

    {"repo": "<feature repository>", "entities": "<.parquet|.csv|.jsonl>",
     "out": "<answer .parquet>",
     "features": [{"feature": "<spec name>", "ref": "<view>:<name>",
                   "joinKey": "<join key>", "type": "int64|int32|string|bytes"}]}

The entity file has one row per labeled example: `entity_id`, `event_timestamp`
and any other columns (the label, features the request carries), which pass
through. Each join key is made from `entity_id` as serving makes it; a row whose
entity id cannot be that key gets nulls for that key's features. The answer keeps
the entity file's rows in their order, with one more column per spec feature (the
value as of the row's `event_timestamp`, null where Feast has none).
"""

from __future__ import annotations

import json
import sys
from typing import Any

ROW = "__driftline_row"
LIMITS = {"int64": 2**63, "int32": 2**31}


def read_entities(path: str) -> Any:
    import pandas as pd

    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if lower.endswith(".csv"):
        return pd.read_csv(path, dtype={"entity_id": str})
    if lower.endswith((".jsonl", ".ndjson")):
        return pd.read_json(path, lines=True, dtype={"entity_id": str})
    raise SystemExit(f"{path}: use a .parquet, .csv or .jsonl entity file")


def join_key(entity: Any, kind: str) -> Any:
    """The key's value from an entity id, as serving makes it (None: it cannot be one)."""
    if entity is None or entity != entity:  # None or NaN
        return None
    text = str(entity)
    if kind in LIMITS:
        try:
            value = int(text)
        except ValueError:
            return None
        return value if -LIMITS[kind] <= value < LIMITS[kind] else None
    return text.encode() if kind == "bytes" else text


def main(request_path: str) -> None:
    import pandas as pd

    with open(request_path) as f:
        request = json.load(f)
    entities = read_entities(request["entities"])
    for column in ("entity_id", "event_timestamp"):
        if column not in entities.columns:
            raise SystemExit(f"{request['entities']}: the column {column!r} is missing")
    taken = [f["feature"] for f in request["features"] if f["feature"] in entities.columns]
    if taken:
        raise SystemExit(
            f"{request['entities']}: columns {taken} come from Feast; leave them out of the file"
        )
    entities = entities.reset_index(drop=True)
    entities[ROW] = range(len(entities))
    entities["event_timestamp"] = pd.to_datetime(entities["event_timestamp"], utc=True)
    from feast import FeatureStore  # slow to import: only once the request is known good

    store = FeatureStore(repo_path=request["repo"])
    answer = entities.copy()
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for feature in request["features"]:
        groups.setdefault((feature["joinKey"], feature["type"]), []).append(feature)
    for (key, kind), features in groups.items():
        keys = [join_key(e, kind) for e in entities["entity_id"]]
        known = [i for i, k in enumerate(keys) if k is not None]
        if not known:  # no row has such a key: every value is missing
            for feature in features:
                answer[feature["feature"]] = None
            continue
        frame = pd.DataFrame(
            {
                ROW: [int(entities[ROW][i]) for i in known],
                "event_timestamp": [entities["event_timestamp"][i] for i in known],
                key: pd.Series([keys[i] for i in known], dtype="int64" if kind in LIMITS else None),
            }
        )
        refs = [f["ref"] for f in features]
        joined = store.get_historical_features(
            entity_df=frame, features=refs, full_feature_names=True
        ).to_df()
        columns = {f["ref"].replace(":", "__"): f["feature"] for f in features}
        joined = joined[[ROW, *columns]].rename(columns=columns)
        answer = answer.merge(joined, on=ROW, how="left")
    answer = answer.sort_values(ROW).drop(columns=[ROW])
    answer.to_parquet(request["out"], index=False)


if __name__ == "__main__":
    main(sys.argv[1])
