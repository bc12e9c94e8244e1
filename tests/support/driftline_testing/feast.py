"""A real Feast feature repository on the tests' Redis, written with real Feast.

Feast lives in a venv of its own (tests/rig/feast/build.sh, cached under
`${DRIFTLINE_RIG_CACHE:-~/.cache/driftline-rig}`; `make rig` builds it): Feast needs
numpy>=2, Driftline's environment pins numpy 1.26. `FeastRepo` writes a
feature_store.yaml (Redis online store on loopback, entity key serialization 3),
the feature definitions of `DEFINITIONS` and Parquet files (file offline source),
then runs the `feast apply` and `feast materialize` commands of that venv, exactly
as a user of Feast would.

Views of `DEFINITIONS`:

    user_stats     entity user (user_id int64): txn_count int64, age int32,
                   ratio float32, amount float64, segment string, vip bool
    merchant_risk  entity merchant (merchant_id string): risk float64
    user_merchant  entities user and merchant (compound key): pair_count int64
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

RIG = Path(__file__).resolve().parents[2] / "rig" / "feast"
DRIVER = RIG / "driver.py"

PREAMBLE = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float32, Float64, Int32, Int64, String

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)


def source(name):
    return FileSource(name=name, path="{data}/" + name + ".parquet",
                      timestamp_field="event_timestamp")
"""
"""What every repository's definitions start with: Feast's imports and types, the
entities `user` (user_id int64) and `merchant` (merchant_id string), and `source(name)`,
a view's Parquet file in the repository's data folder."""

DEFINITIONS = (
    PREAMBLE
    + """

user_stats = FeatureView(
    name="user_stats", entities=[user], ttl=timedelta(days=3650), online=True,
    schema=[Field(name="txn_count", dtype=Int64), Field(name="age", dtype=Int32),
            Field(name="ratio", dtype=Float32), Field(name="amount", dtype=Float64),
            Field(name="segment", dtype=String), Field(name="vip", dtype=Bool)],
    source=source("user_stats"),
)
merchant_risk = FeatureView(
    name="merchant_risk", entities=[merchant], ttl=timedelta(days=3650), online=True,
    schema=[Field(name="risk", dtype=Float64)], source=source("merchant_risk"),
)
user_merchant = FeatureView(
    name="user_merchant", entities=[user, merchant], ttl=timedelta(days=3650), online=True,
    schema=[Field(name="pair_count", dtype=Int64)], source=source("user_merchant"),
)
"""
)

# Pandas dtypes of each view's Parquet columns.
DTYPES: dict[str, dict[str, str]] = {
    "user_stats": {
        "user_id": "int64",
        "txn_count": "Int64",
        "age": "Int32",
        "ratio": "float32",
        "amount": "float64",
        "segment": "object",
        "vip": "bool",
    },
    "merchant_risk": {"merchant_id": "object", "risk": "float64"},
    "user_merchant": {"user_id": "int64", "merchant_id": "object", "pair_count": "int64"},
}


def feast_venv() -> Path:
    """The Feast venv this checkout's pins name (built or not)."""
    explicit = os.environ.get("DRIFTLINE_FEAST_VENV")
    if explicit:
        return Path(explicit)
    out = subprocess.run(
        ["bash", str(RIG / "build.sh"), "--print"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip()) / "venv"


def feast_built() -> bool:
    venv = feast_venv()
    return (venv / "bin" / "feast").is_file() and (venv.parent / "feast.done").is_file()


class FeastRepo:
    """A Feast feature repository in `path`, its online store the Redis at
    `redis_host`:`redis_port` (database `redis_db`). Feast's commands run as `wrap`
    makes them (for example inside a network namespace: `NodeNetwork.nsenter`). The
    views are `definitions` (Feast's Python, usually `PREAMBLE` and views of its own;
    `{data}` stands for the folder of their Parquet sources), with `dtypes` per view's
    columns; `DEFINITIONS` by default."""

    def __init__(
        self,
        path: Path,
        redis_port: int,
        project: str = "driftline_test",
        *,
        redis_host: str = "127.0.0.1",
        redis_db: int = 0,
        wrap: Callable[[list[str]], list[str]] | None = None,
        definitions: str = DEFINITIONS,
        dtypes: Mapping[str, Mapping[str, str]] = DTYPES,
    ) -> None:
        self.path = path
        self.project = project
        self.dtypes = dtypes
        self.venv = feast_venv()
        self.wrap = wrap or (lambda argv: argv)
        self.data = path / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        (path / "feature_store.yaml").write_text(
            f"project: {project}\n"
            f"registry: {self.data}/registry.db\n"
            "provider: local\n"
            "online_store:\n"
            "  type: redis\n"
            f'  connection_string: "{redis_host}:{redis_port},db={redis_db}"\n'
            "offline_store:\n"
            "  type: file\n"
            "entity_key_serialization_version: 3\n"
        )
        (path / "definitions.py").write_text(definitions.replace("{data}", str(self.data)))

    def _run(self, *argv: str) -> str:
        env = {**os.environ, "FEAST_USAGE": "False", "PYTHONPATH": ""}
        done = subprocess.run(
            self.wrap(list(argv)),
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def materialize(
        self, tables: Mapping[str, Sequence[Mapping[str, Any]]], start: datetime, end: datetime
    ) -> None:
        """Write each view's rows to its Parquet file, `feast apply`, `feast materialize`.

        Every view of `DEFINITIONS` needs rows; each row carries `event_timestamp`
        (a timezone-aware datetime) between `start` and `end`.
        """
        self.apply(tables)
        self._run(
            str(self.venv / "bin" / "feast"), "materialize", start.isoformat(), end.isoformat()
        )

    def apply(self, tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Write each view's rows to its Parquet file (the offline store), `feast apply`."""
        data = {
            str(self.data / f"{view}.parquet"): {
                "dtypes": self.dtypes[view],
                "rows": [
                    {**row, "event_timestamp": row["event_timestamp"].isoformat()} for row in rows
                ],
            }
            for view, rows in tables.items()
        }
        spec = self.path / "tables.json"
        spec.write_text(json.dumps(data))
        python, feast = str(self.venv / "bin" / "python"), str(self.venv / "bin" / "feast")
        self._run(python, str(DRIVER), "parquet", str(spec))
        self._run(feast, "apply")

    def _request(
        self,
        command: str,
        features: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        seconds: float,
    ) -> Any:
        request = self.path / "request.json"
        request.write_text(
            json.dumps({"features": list(features), "rows": list(rows), "seconds": seconds})
        )
        out = self._run(
            str(self.venv / "bin" / "python"), str(DRIVER), command, str(self.path), str(request)
        )
        return json.loads(out.strip().splitlines()[-1])

    def online_features(
        self, features: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        """Feast's own `get_online_features` for `rows` (its `to_dict()`)."""
        result: dict[str, list[Any]] = self._request("online", features, rows, 0)
        return result

    def time_online_features(
        self, features: Sequence[str], rows: Sequence[Mapping[str, Any]], seconds: float
    ) -> dict[str, float]:
        """p50/p99 (ms) of Feast's `get_online_features` for `rows`, in the Feast venv."""
        result: dict[str, float] = self._request("time", features, rows, seconds)
        return result
