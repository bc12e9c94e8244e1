"""Feedback join: the joiner against the pipelined Redis ceiling, by `benchmarks.feedback`.

Each round measures the ceiling (the Redis commands of every join, pipelined by
redis-cli), the join engine alone, Kafka alone and the joiner process end to end,
one after the other on the same records; the ratio is the median of each round's
own ratio to the ceiling.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.suite.common import DRIFTLINE, FLOOR, Row

WORKLOAD = "feedback"


@dataclass(frozen=True)
class Options:
    joins: int = 50_000
    rounds: int = 3
    smoke: bool = False
    """Ceiling and join engine only: no broker, no joiner process (~15 s saved)."""


def measure(options: Options) -> list[Row]:
    if options.smoke:
        return _smoke(options)
    from benchmarks.feedback.run import main

    with tempfile.TemporaryDirectory(prefix="bench-feedback-") as tmp:
        argv = ["--joins", str(options.joins), "--rounds", str(options.rounds), "--out", tmp]
        main(argv)
        data = json.loads((Path(tmp) / "feedback.json").read_text(encoding="utf-8"))
    rows = []
    for key, label in data["labels"].items():
        rows.append(
            Row(
                WORKLOAD,
                f"{options.joins:,} joins per round",
                label,
                FLOOR if key == "ceiling" else DRIFTLINE,
                values={
                    "joins_per_s": data["median_joins_per_s"][key],
                    "vs_floor": data["median_ratio_to_ceiling"][key],
                },
                repeats={"joins_per_s": [r[key]["joins_per_s"] for r in data["rounds"]]},
            )
        )
    return rows


def _smoke(options: Options) -> list[Row]:
    """The ceiling and the join engine through the same code, on a few joins."""
    import redis as redis_py

    from benchmarks.feedback import measure as feedback
    from benchmarks.feedback.run import LABELS
    from benchmarks.feedback.workload import requests
    from driftline.local.servers import RedisServer

    reqs = requests(options.joins)
    with RedisServer() as redis:
        client = redis_py.Redis.from_url(redis.url)
        ceiling = feedback.redis_ceiling(redis, reqs)
        client.flushall()
        engine = feedback.engine_alone(client, redis, reqs, max(2, options.joins // 4))
    case = f"{options.joins:,} joins per round"
    rows = [
        Row(WORKLOAD, case, LABELS["ceiling"], FLOOR,
            values={"joins_per_s": ceiling.joins_per_s, "vs_floor": 1.0}),
        Row(WORKLOAD, case, LABELS["engine"], DRIFTLINE,
            values={"joins_per_s": engine.joins_per_s,
                    "vs_floor": engine.joins_per_s / ceiling.joins_per_s}),
    ]  # fmt: skip
    for key in ("kafka", "joiner"):
        rows.append(
            Row(WORKLOAD, case, LABELS[key], DRIFTLINE, status="skipped",
                note="smoke run: needs the broker and a consumer group join")
        )  # fmt: skip
    return rows
