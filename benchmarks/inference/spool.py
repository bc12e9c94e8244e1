"""What the prediction log's spool costs while the broker is away, per fsync policy.

The log drains its buffer every few milliseconds; while spooling, one drain is one
`Spool.append` of what the drain holds. This replays that shape (drains of
`--batch` predictions, each a real encoded `Prediction`) side by side:

- no spool: the drain hands the records to a Kafka producer whose broker is away
  (librdkafka queues them in memory), which is what the log did before the spool;
- the spool with each fsync policy: `off`, `segment`, `interval` (1 s), `always`.

and reports predictions/s, MB/s and the median and p99 time of one drain.

    python -m benchmarks.inference.spool [--seconds 5] [--batch 16]

Writes benchmarks/results/spool.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftline.api.events import Prediction, encode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_producer
from driftline.inference.spool import Spool

RESULTS = Path(__file__).resolve().parents[1] / "results"
POLICIES = ("off", "segment", "interval", "always")


def predictions(n: int) -> list[tuple[str, bytes, float]]:
    features = {f"x{i}": float(i) for i in range(8)}
    out = []
    for i in range(n):
        rid = f"{os.urandom(8).hex()}-{i:x}"
        p = Prediction(
            request_id=rid, model="bench", model_version="1", variant="stable",
            features=features, output=1.0, ts=time.time(), entity_id=f"e{i}",
            scores=[0.2, 0.8],
        )  # fmt: skip
        out.append((rid, encode(p), p.ts))
    return out


def run(drain: Callable[[list[tuple[str, bytes, float]]], None], seconds: float,
        batch: int) -> dict[str, float]:  # fmt: skip
    records = predictions(4096)
    samples: list[float] = []
    done = size = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = records[(done % 4096) : (done % 4096) + batch] or records[:batch]
        t = time.perf_counter()
        drain(chunk)
        samples.append(time.perf_counter() - t)
        done += len(chunk)
        size += sum(len(v) for _, v, _ in chunk)
    elapsed = time.perf_counter() - started
    samples.sort()
    return {
        "predictions_per_s": done / elapsed,
        "mb_per_s": size / elapsed / 1e6,
        "drain_median_us": statistics.median(samples) * 1e6,
        "drain_p99_us": samples[int(0.99 * (len(samples) - 1))] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=16, help="predictions per drain")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    # No spool: a producer whose broker is away keeps what it is given in memory.
    producer = make_producer(
        KafkaConnection("127.0.0.1:1"),
        **{"queue.buffering.max.messages": 10_000_000, "queue.buffering.max.kbytes": 2**21,
           "message.timeout.ms": 0, "linger.ms": 50, "log_level": 0},
    )  # fmt: skip

    def produce(chunk: list[tuple[str, bytes, float]]) -> None:
        for key, value, _ in chunk:
            producer.produce("bench.predictions", value, key)
        producer.poll(0)

    rows.append({"what": "no spool (producer queue, broker away)"} | run(produce, args.seconds,
                                                                          args.batch))  # fmt: skip
    producer.purge()
    root = Path(os.environ.get("DRIFTLINE_BENCH_DIR") or tempfile.mkdtemp(prefix="spool-bench-"))
    for policy in POLICIES:
        spool = Spool(root / policy, max_bytes=1 << 30, fsync=policy, fsync_seconds=1.0)  # type: ignore[arg-type]

        def append(chunk: list[tuple[str, bytes, float]], spool: Spool = spool) -> None:
            spool.append(chunk)
            spool.tick()

        label = f"spool, fsync {policy}" + (" (1 s)" if policy == "interval" else "")
        rows.append({"what": label} | run(append, args.seconds, args.batch))
        spool.reset()
        spool.close()
    base = rows[0]["predictions_per_s"]
    for row in rows:
        row["x_no_spool"] = row["predictions_per_s"] / base

    load = os.getloadavg()[0]
    python = platform.python_version()
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {python}",
        "load_average": round(load, 1),
        "seconds": args.seconds,
        "batch": args.batch,
        "directory_filesystem": _filesystem(root),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spool.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Prediction log spool: append cost per fsync policy",
        "",
        f"`python -m benchmarks.inference.spool --seconds {args.seconds:g} --batch {args.batch}` "
        f"on {meta['machine']}, load average {meta['load_average']} while measuring; "
        f"spool on {meta['directory_filesystem']}. One drain = {args.batch} encoded predictions "
        "(the log drains every 5 ms; at 200 drains/s a drain of 16 is 3,200 predictions/s).",
        "",
        "| what | predictions/s | MB/s | drain median µs | drain p99 µs | x no spool |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['predictions_per_s']:,.0f} | {r['mb_per_s']:.1f} | "
            f"{r['drain_median_us']:.0f} | {r['drain_p99_us']:.0f} | {r['x_no_spool']:.2f} |"
        )
    (RESULTS / "spool.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _filesystem(path: Path) -> str:
    try:
        best = ""
        fs = "?"
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, fs = mount, kind
        return fs
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
