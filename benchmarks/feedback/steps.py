"""The joiner's Python steps one at a time: CPU per join of this process, least of
several repeats, on a real Redis without Kafka.

    python -m benchmarks.feedback.steps [--joins N] [--rounds R] [--repeats T] [--baseline DIR]

End to end, the joiner's CPU per join moves by several microseconds from one run to
the next on a shared machine. Each step here is timed alone with this process's
CPU clock, the least of several tries, so what another process takes from the
cores is left out: a change of a microsecond shows. With `--baseline DIR` (a source
tree of an earlier version, `git worktree add DIR REF`) the same steps of that
version run in a child process, the two taking turns.

Steps, per batch of N requests (first their predictions, then their outcomes): intake
(decoding the records), absorb (phase 1 as the JoinStore calls it: packing, the
script call, the reply; Redis's own CPU is not in it), plan, settle (phase 2, and
the scores' sums where a version leaves them until then).

Writes benchmarks/results/feedback-steps.md and feedback-steps.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.feedback.measure import baseline_path
from benchmarks.feedback.workload import MODEL, requests

RESULTS = Path(__file__).resolve().parent.parent / "results"
STEPS = ("intake", "absorb", "plan", "settle")


class _Record:
    """What intake reads of a consumed Kafka record."""

    __slots__ = ("_offset", "_topic", "_value")

    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self._topic, self._offset, self._value = topic, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


def measure(joins: int, repeats: int) -> dict[str, float]:
    """CPU microseconds per join of each step, in this process's version."""
    import redis as redis_py

    from driftline.api.spec import TopicsSpec
    from driftline.joiner import store as store_module
    from driftline.joiner.engine import JoinEngine
    from driftline.joiner.intake import Intake
    from driftline.joiner.store import JoinStore
    from driftline.local.servers import RedisServer

    reqs = requests(joins)
    topics = TopicsSpec(
        predictions="bench.predictions", outcomes="bench.outcomes",
        labeled="bench.labeled", control="bench.control",
    )  # fmt: skip
    intake = Intake(topics, MODEL)
    sides = [
        [_Record(topics.predictions, i, r.prediction) for i, r in enumerate(reqs)],
        [_Record(topics.outcomes, i, r.outcome) for i, r in enumerate(reqs)],
    ]
    # The client as the version's worker makes it.
    packer = getattr(store_module, "command_packer", None)
    options = {"command_packer": packer()} if packer else {}
    least: dict[tuple[str, int], float] = {}

    def timed(step: str, side: int, fn: Any, *args: Any) -> Any:
        started = time.process_time()
        result = fn(*args)
        used = time.process_time() - started
        least[(step, side)] = min(least.get((step, side), used), used)
        return result

    with RedisServer() as redis:
        client = redis_py.Redis.from_url(redis.url, **options)
        engine = JoinEngine(
            JoinStore(client, "bench", MODEL, window=3600, grace=360), "classification"
        )
        for _ in range(repeats):
            client.flushall()
            for side, records in enumerate(sides):
                batch = timed("intake", side, intake.batch, records, 0.0)
                now = time.time()
                absorbed = timed("absorb", side, engine.store_arrivals, batch.arrivals, now, {})
                if side == 1:  # the outcomes: every request is claimed
                    planned = timed("plan", side, engine.plan, *absorbed)
                    result = timed("settle", side, engine.settle, planned, now)
                    assert len(result.examples) == joins, len(result.examples)
                    engine.store.trim_outboxes(result.outboxes)
    # Per step, the least of each side's batch, summed over the sides.
    return {
        step: 1e6 * sum(v for (s, _), v in least.items() if s == step) / joins for step in STEPS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--joins", type=int, default=1000, help="requests per batch")
    parser.add_argument("--repeats", type=int, default=5, help="tries per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--baseline", type=Path, help="a source tree of an earlier version")
    parser.add_argument("--json", action="store_true", help="print only this version's JSON")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(measure(args.joins, args.repeats)))
        return 0
    # (Imported here: the baseline's child imports only what its version has.)
    from benchmarks.feedback.run import machine_state

    before = machine_state()
    rows: dict[str, dict[str, float]] = {}
    env = {**os.environ, "PYTHONPATH": baseline_path(args.baseline)} if args.baseline else {}
    # Rounds take turns, so both versions meet the same spells of load.
    for _ in range(args.rounds):
        turns: list[tuple[str, dict[str, str] | None]] = [("this version", None)]
        if args.baseline is not None:
            turns.append(("baseline (--baseline)", env))
        for name, child_env in turns:
            if child_env is None:
                steps = measure(args.joins, args.repeats)
            else:
                child = subprocess.run(
                    [sys.executable, "-m", "benchmarks.feedback.steps", "--json",
                     "--joins", str(args.joins), "--repeats", str(args.repeats)],
                    env=child_env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                steps = json.loads(child.stdout.strip().splitlines()[-1])
            known = rows.setdefault(name, steps)
            for step, value in steps.items():
                known[step] = min(known[step], value)
    report(rows, before, machine_state(), args)
    return 0


def report(
    rows: dict[str, dict[str, float]],
    before: dict[str, Any],
    after: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    lines = [
        "# Feedback joiner: CPU per join of its Python steps",
        "",
        f"Batches of {args.joins:,} requests (their predictions, then their outcomes, "
        "each request claimed); this process's CPU time of each step, in microseconds "
        f"per join, the least of {args.rounds} x {args.repeats} tries (the versions "
        "taking turns by round); a real Redis 6.2, no Kafka. Redis's own CPU is not in "
        "these numbers (see feedback.md).",
        "",
        "| version | " + " | ".join(STEPS) + " | all |",
        "|---|" + "---:|" * (len(STEPS) + 1),
    ]
    for name, steps in rows.items():
        cells = " | ".join(f"{steps[s]:.2f}" for s in STEPS)
        lines.append(f"| {name} | {cells} | {sum(steps.values()):.2f} |")
    lines += [
        "",
        f"Machine: {before['cpus']} x {before['cpu_model']}, Python {before['python']}, "
        f"nice {before['nice']}; load average {before['load_average']} before, "
        f"{after['load_average']} after (shared with other people's work: the least of "
        "several tries keeps most of that out, not all).",
        "",
        "Run it: `python -m benchmarks.feedback.steps [--joins N] [--rounds R] "
        "[--repeats T] [--baseline DIR]`.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "feedback-steps.md").write_text(text, encoding="utf-8")
    data = {
        "joins": args.joins,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "cpu_us_per_join": rows,
        "machine": {"before": before, "after": after},
    }
    (args.out / "feedback-steps.json").write_text(json.dumps(data, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    sys.exit(main())
