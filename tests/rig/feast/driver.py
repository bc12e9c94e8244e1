"""Run by the Feast venv's Python (build.sh here), never imported by Driftline's.

    python driver.py parquet DATA.json     write each view's rows to its Parquet file
    python driver.py online REPO REQ.json  Feast's get_online_features, as JSON
    python driver.py time REPO REQ.json    the same, timed (p50/p99 in ms)

DATA.json: {"<path>.parquet": {"dtypes": {column: dtype}, "rows": [{...}]}} with
`event_timestamp` as ISO text. REQ.json: {"features": ["view:name"], "rows": [{...}],
"seconds": 3}.
"""

from __future__ import annotations

import json
import sys
import time


def write_parquet(data_path: str) -> None:
    import pandas as pd

    with open(data_path) as f:
        tables = json.load(f)
    for path, table in tables.items():
        frame = pd.DataFrame(table["rows"])
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        for column, dtype in table["dtypes"].items():
            frame[column] = frame[column].astype(dtype)
        frame.to_parquet(path, index=False)


def online(repo: str, request_path: str, timed: bool) -> None:
    from feast import FeatureStore

    with open(request_path) as f:
        request = json.load(f)
    store = FeatureStore(repo_path=repo)
    features, rows = request["features"], request["rows"]

    def lookup() -> dict[str, list[object]]:
        response = store.get_online_features(features=features, entity_rows=rows)
        return response.to_dict()

    if not timed:
        print(json.dumps(lookup(), default=str))
        return
    for _ in range(20):
        lookup()
    latencies = []
    end = time.perf_counter() + float(request.get("seconds", 3))
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        lookup()
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    print(
        json.dumps(
            {
                "n": len(latencies),
                "p50_ms": latencies[len(latencies) // 2] * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            }
        )
    )


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "parquet":
        write_parquet(sys.argv[2])
    elif command in ("online", "time"):
        online(sys.argv[2], sys.argv[3], timed=command == "time")
    else:
        raise SystemExit(f"unknown command {command!r}")
