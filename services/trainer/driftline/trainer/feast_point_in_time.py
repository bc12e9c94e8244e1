"""Feast's point-in-time join for a bootstrap, run by a Python that has Feast.

    <python with feast> feast_point_in_time.py REQUEST.json

Never imported by Driftline: Feast's releases need numpy>=2 and its own
dependencies, so it runs in an environment of its own (a venv, or an image with
Feast) and this file imports nothing but Feast, pandas and the standard library.
`driftline.trainer.feast_history` writes the request and reads the answer.

REQUEST.json:

    {"repo": "<feature repository>", "entities": "<.parquet|.csv|.jsonl|Parquet folder>",
     "out": "<answer .parquet>",
     "features": [{"feature": "<spec name>", "ref": "<view>:<name>",
                   "keys": [{"joinKey": "<join key>", "type": "int64|int32|string|bytes",
                             "field": "<entity file column>"}]}]}

The entity file has one row per labeled example: `event_timestamp`, a column per
request field the join keys read (`entity_id`, or the field the spec names) and any
other columns (the label, features the request carries), which pass through. Each
join key is made from its field as serving makes it: a row whose `entity_id` cannot
be that key gets nulls for that key's features (served as a missing entity), a value
of any other field that cannot be it stops the run naming the row (serving refuses
such a request). The answer keeps the entity file's rows in their order, with one
more column per spec feature (the value as of the row's `event_timestamp`, null where
Feast has none).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

ROW = "__driftline_row"
ASKED = "__driftline_asked"
LIMITS = {"int64": 2**63, "int32": 2**31}


def read_entities(path: str, fields: list[str]) -> Any:
    """The entity file; the `fields` columns as written (strings stay strings)."""
    import pandas as pd

    lower = path.lower()
    if os.path.isdir(path) or lower.endswith((".parquet", ".pq")):  # a folder of Parquet files
        return pd.read_parquet(path)
    if lower.endswith(".csv"):
        return pd.read_csv(path, dtype=dict.fromkeys(fields, str))
    if lower.endswith((".jsonl", ".ndjson")):
        frame = pd.read_json(path, lines=True)
        with open(path) as f:  # pandas would turn "007" into 7 and ints beside a null to floats
            raw = [json.loads(line) for line in f if line.strip()]
        for field in fields:
            if field in frame.columns:  # as text, as a request's fields are (one type a column)
                values = [r.get(field) for r in raw]
                text = [None if v is None else str(v) for v in values]
                frame[field] = pd.Series(text, dtype=object)
        return frame
    raise SystemExit(f"{path}: use a .parquet, .csv or .jsonl entity file, or a Parquet folder")


def join_key(value: Any, kind: str) -> Any:
    """The key's value from a field's value, as serving makes it (None: it cannot be one)."""
    import pandas as pd

    if value is None or (not isinstance(value, str | bytes) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():  # an integer column beside nulls
        value = int(value)
    text = value.decode() if isinstance(value, bytes) else str(value)
    if kind in LIMITS:
        try:
            number = int(text)
        except ValueError:
            return None
        return number if -LIMITS[kind] <= number < LIMITS[kind] else None
    return text.encode() if kind == "bytes" else text


def key_values(entities: Any, key: dict[str, str], path: str) -> list[Any]:
    """Per row, the join key's value from its field (None: missing, or no such entity_id)."""
    import pandas as pd

    name, kind, field = key["joinKey"], key["type"], key["field"]
    values = []
    for row, value in enumerate(entities[field]):
        made = join_key(value, kind)
        if made is None and field != "entity_id" and value is not None and not pd.isna(value):
            raise SystemExit(
                f"{path}: row {row}, column {field!r}: {value!r} is no {kind} "
                f"(the Feast join key {name!r})"
            )
        values.append(made)
    return values


def main(request_path: str) -> None:
    import pandas as pd

    with open(request_path) as f:
        request = json.load(f)
    path = request["entities"]
    fields = sorted({k["field"] for f in request["features"] for k in f["keys"]})
    entities = read_entities(path, fields)
    for column in (*fields, "event_timestamp"):
        if column not in entities.columns:
            raise SystemExit(f"{path}: the column {column!r} is missing")
    taken = [f["feature"] for f in request["features"] if f["feature"] in entities.columns]
    if taken:
        raise SystemExit(f"{path}: columns {taken} come from Feast; leave them out of the file")
    entities = entities.reset_index(drop=True)
    entities[ROW] = range(len(entities))
    entities["event_timestamp"] = pd.to_datetime(entities["event_timestamp"], utc=True)
    from feast import FeatureStore  # slow to import: only once the request is known good

    store = FeatureStore(repo_path=request["repo"])
    answer = entities.copy()
    groups: dict[tuple[tuple[str, str, str], ...], list[dict[str, Any]]] = {}
    for feature in request["features"]:
        keys = tuple(sorted((k["joinKey"], k["type"], k["field"]) for k in feature["keys"]))
        groups.setdefault(keys, []).append(feature)
    for keys, features in groups.items():
        columns_of = {
            name: key_values(entities, {"joinKey": name, "type": kind, "field": field}, path)
            for name, kind, field in keys
        }
        known = [
            i for i in range(len(entities)) if all(v[i] is not None for v in columns_of.values())
        ]
        if not known:  # no row has such a key: every value is missing
            for feature in features:
                answer[feature["feature"]] = None
            continue
        # Feast keeps one row per (join keys, time): ask for each once, then map it back.
        asked: dict[tuple[Any, ...], int] = {}
        at = [
            asked.setdefault(
                (*(columns_of[name][i] for name, _, _ in keys), entities["event_timestamp"][i]),
                len(asked),
            )
            for i in known
        ]
        frame = pd.DataFrame(
            {
                ASKED: range(len(asked)),
                "event_timestamp": [k[-1] for k in asked],
                **{
                    name: pd.Series(
                        [k[j] for k in asked], dtype="int64" if kind in LIMITS else None
                    )
                    for j, (name, kind, _) in enumerate(keys)
                },
            }
        )
        refs = [f["ref"] for f in features]
        joined = store.get_historical_features(
            entity_df=frame, features=refs, full_feature_names=True
        ).to_df()
        columns = {f["ref"].replace(":", "__"): f["feature"] for f in features}
        joined = joined[[ASKED, *columns]].rename(columns=columns)
        rows = pd.DataFrame({ROW: [int(entities[ROW][i]) for i in known], ASKED: at})
        joined = rows.merge(joined, on=ASKED, how="left").drop(columns=[ASKED])
        answer = answer.merge(joined, on=ROW, how="left")
    answer = answer.sort_values(ROW).drop(columns=[ROW])
    answer.to_parquet(request["out"], index=False)


if __name__ == "__main__":
    main(sys.argv[1])
