"""Joins per second with 1, 2 and 3 joiner replicas in one consumer group, one run.

    python -m benchmarks.feedback.scale_out [--joins 60000] [--rounds 2]

Every replica joins any request (the state is in Redis), so replicas share the
partitions and the work. Each round runs every replica count on the same input (its
own topics), one after the other; the ratio is each round's own rate over its one
replica's. On a machine with fewer cores than replicas + Redis + the broker the ratio
says how much of the joiner's time was its own (Python) and how much Redis's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import redis as redis_py
import yaml

from benchmarks.feedback import measure
from benchmarks.feedback.run import RESULTS, machine_state, model_file
from benchmarks.feedback.workload import requests
from driftline.api import parse_dynamic_model
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics
from driftline.joiner.settings import JoinerSettings
from driftline.local.servers import RedisServer
from driftline_testing import start_kafka


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--joins", type=int, default=60_000, help="joins per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--replicas", default="1,2,3", help="replica counts, comma-separated")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.replicas.split(",")]
    batch = JoinerSettings.model_fields["batch_size"].default
    before = machine_state()
    reqs = requests(args.joins)
    rounds: list[dict[int, measure.Rate]] = []
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        client = redis_py.Redis.from_url(redis.url)
        broker = start_kafka(log_dir=Path(tmp))
        process = getattr(broker, "process", None)
        conn = KafkaConnection(broker.bootstrap_servers)
        try:
            for n in range(1, args.rounds + 1):
                rows: dict[int, measure.Rate] = {}
                for k in counts:
                    client.flushall()
                    path = model_file(
                        Path(tmp),
                        broker.bootstrap_servers,
                        redis.url,
                        args.partitions,
                        str(n * 10 + k),
                    )
                    topics = parse_dynamic_model(yaml.safe_load(path.read_text())).topics
                    ensure_topics(
                        conn,
                        [
                            topics.predictions,
                            topics.outcomes,
                            topics.labeled,
                            topics.dead_letter or "",
                        ],
                        partitions=args.partitions,
                    )
                    measure.produce_input(conn, topics, reqs, lag=2000)
                    rows[k] = measure.joiner_process(
                        conn, topics, path, broker.bootstrap_servers, redis,
                        process.pid if process else None, 2 * len(reqs), len(reqs), batch,
                        replicas=k,
                    )  # fmt: skip
                    print(f"round {n}, {k} replica(s): {rows[k].joins_per_s:,.0f} joins/s")
                rounds.append(rows)
        finally:
            broker.stop()
    report(rounds, counts, args, before, machine_state())
    return 0


def report(
    rounds: list[dict[int, measure.Rate]],
    counts: list[int],
    args: argparse.Namespace,
    before: dict[str, object],
    after: dict[str, object],
) -> None:
    base = counts[0]
    lines = [
        "# Feedback joiner: scale-out with replicas",
        "",
        f"{len(rounds)} rounds of {args.joins:,} requests; {args.partitions} partitions per "
        "topic; replicas in one consumer group, real Redis and Kafka on loopback, "
        f"{os.cpu_count()} cores shared by everything. Ratios are each round's own rate "
        f"over its {base}-replica rate, medians over rounds.",
        "",
        "| replicas | joins/s (median) | ratio | joiner cores | Redis cores | per round |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    table = {}
    for k in counts:
        rate = statistics.median(r[k].joins_per_s for r in rounds)
        ratio = statistics.median(r[k].joins_per_s / r[base].joins_per_s for r in rounds)
        joiner = statistics.median(r[k].extra["cpu_share"]["joiner"] for r in rounds)
        redis = statistics.median(r[k].extra["cpu_share"]["redis"] for r in rounds)
        each = ", ".join(f"{r[k].joins_per_s:,.0f}" for r in rounds)
        lines.append(f"| {k} | {rate:,.0f} | {ratio:.2f} | {joiner:.2f} | {redis:.2f} | {each} |")
        table[k] = {
            "joins_per_s": rate,
            "ratio": ratio,
            "joiner_cores": joiner,
            "redis_cores": redis,
        }
    lines += [
        "",
        "Machine before: load "
        + ", ".join(str(x) for x in before["load_average"])  # type: ignore[attr-defined]
        + "; after: "
        + ", ".join(str(x) for x in after["load_average"])
        + ".",  # type: ignore[attr-defined]
        "",
        "Command: `python -m benchmarks.feedback.scale_out "
        f"--joins {args.joins} --rounds {args.rounds} --replicas {args.replicas}`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "joiner-scale-out.md").write_text(text, encoding="utf-8")
    data = {"before": before, "after": after, "replicas": table, "joins": args.joins}
    (args.out / "joiner-scale-out.json").write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
