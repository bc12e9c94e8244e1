"""Run the feedback benchmark: ceilings and the joiner, side by side, one run."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as redis_py
import yaml

from benchmarks.feedback import measure
from benchmarks.feedback.workload import MODEL, requests
from driftline.api import parse_dynamic_model
from driftline.common.connections import KafkaConnection
from driftline.common.infra import RedisServer, start_kafka
from driftline.common.kafka import ensure_topics
from driftline.joiner.settings import JoinerSettings

RESULTS = Path(__file__).resolve().parent.parent / "results"
TARGET = "joiner >= 50k joins/s, or >= 0.5 of the pipelined Redis ceiling"


def machine_state() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        model = next(
            (ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), ""
        )
    busy = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True
    ).stdout.splitlines()[:6]
    return {
        "at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "busiest_processes": [" ".join(b.split()) for b in busy],
        "python": platform.python_version(),
        "nice": os.nice(0),
    }


def model_file(directory: Path, bootstrap: str, redis_url: str, partitions: int) -> Path:
    doc = {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DynamicModel",
        "metadata": {"name": MODEL, "namespace": "bench"},
        "spec": {
            "model": {"registry": {"trackingUri": "http://127.0.0.1:1", "name": MODEL}},
            "features": [{"name": "x1"}, {"name": "x2"}, {"name": "x3"}],
            "kafka": {"bootstrapServers": bootstrap, "partitions": partitions},
            "redis": {"url": redis_url},
            "feedback": {"joinWindowSeconds": 3600},
        },
    }
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--joins", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=JoinerSettings.model_fields["batch_size"].default,
        help="records per consumed batch (the joiner's DRIFTLINE_JOINER_BATCH_SIZE)",
    )
    args = parser.parse_args()
    before = machine_state()
    reqs = requests(args.joins)
    rows: dict[str, measure.Rate] = {}
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        client = redis_py.Redis.from_url(redis.url)
        broker = start_kafka(log_dir=Path(tmp))
        try:
            print(f"{args.joins} joins, broker {broker.kind}, load {before['load_average']}")
            rows["ceiling"] = measure.redis_ceiling(redis, reqs)
            client.flushall()
            rows["engine"] = measure.engine_alone(client, redis, reqs, args.batch_size // 2)
            client.flushall()
            conn = KafkaConnection(broker.bootstrap_servers)
            path = model_file(Path(tmp), broker.bootstrap_servers, redis.url, args.partitions)
            topics = parse_dynamic_model(yaml.safe_load(path.read_text())).topics
            ensure_topics(
                conn,
                [topics.predictions, topics.outcomes, topics.labeled, topics.dead_letter or ""],
                partitions=args.partitions,
            )
            measure.produce_input(conn, topics, reqs, lag=2000)
            rows["kafka"] = measure.kafka_alone(conn, topics, reqs, batch=args.batch_size)
            process = getattr(broker, "process", None)
            rows["joiner"] = measure.joiner_process(
                conn, path, broker.bootstrap_servers, redis,
                process.pid if process else None, 2 * len(reqs), len(reqs), args.batch_size,
            )  # fmt: skip
            broker_kind = broker.kind
        finally:
            broker.stop()
    report(rows, before, machine_state(), args.joins, broker_kind, args.batch_size)
    return 0


LABELS = {
    "ceiling": "Redis ceiling: the 9 operations of one join, pipelined (redis-cli --pipe)",
    "engine": "join engine alone: 2 Lua scripts per batch + planning, no Kafka",
    "kafka": "Kafka alone: consume 2 records, produce 1, per join, no Redis",
    "joiner": "joiner process end to end (python -m driftline.joiner)",
}


def report(
    rows: dict[str, measure.Rate],
    before: dict[str, Any],
    after: dict[str, Any],
    joins: int,
    broker: str,
    batch_size: int,
) -> None:
    ceiling = rows["ceiling"].joins_per_s
    joiner = rows["joiner"].joins_per_s
    met = joiner >= 50_000 or joiner >= 0.5 * ceiling
    lines = [
        "# Feedback joiner: joins per second",
        "",
        f"{joins:,} requests (one stable prediction and one outcome each, realistic payloads),",
        f"one joiner process ({batch_size} records per batch), real Redis 6.2 and the {broker}",
        "broker on loopback, all in one run.",
        "",
        "| measurement | joins/s | vs Redis ceiling |",
        "|---|---:|---:|",
    ]
    for key, label in LABELS.items():
        rate = rows[key].joins_per_s
        lines.append(f"| {label} | {rate:,.0f} | {rate / ceiling:.2f} |")
    cpu = rows["joiner"].extra["cpu_us_per_join"]
    share = rows["joiner"].extra["cpu_share"]
    lines += [
        "",
        f"Target: {TARGET}. **{'Met' if met else 'Not met'}**: "
        f"{joiner:,.0f} joins/s = {joiner / ceiling:.2f} of the ceiling.",
        "",
        "CPU per join in the end-to-end run (us): "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        + "; cores busy: "
        + ", ".join(f"{k} {v:.2f}" for k, v in share.items())
        + ".",
        f"Redis CPU per join: {rows['ceiling'].extra['redis_cpu_us_per_join']:.1f} us for the "
        f"raw commands, {rows['engine'].extra['redis_cpu_us_per_join']:.1f} us in the scripts.",
        "",
        "## Machine",
        "",
        f"{before['cpus']} x {before['cpu_model']}, Python {before['python']}, run under "
        f"nice {before['nice']}. The cores are shared with other people's builds and tests: "
        f"load average {before['load_average']} before, {after['load_average']} after. "
        "Busiest processes at the start: " + "; ".join(before["busiest_processes"]) + ".",
        "Numbers from a busy machine: compare the ratios, not the absolute rates.",
        "",
        "Run it: `python -m benchmarks.feedback [--joins N]`.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feedback.md").write_text(text, encoding="utf-8")
    data = {
        "target": TARGET,
        "met": met,
        "joins": joins,
        "batch_size": batch_size,
        "broker": broker,
        "rows": {
            k: {"label": LABELS[k], "joins_per_s": r.joins_per_s, "seconds": r.seconds, **r.extra}
            for k, r in rows.items()
        },
        "machine": {"before": before, "after": after},
    }
    (RESULTS / "feedback.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
