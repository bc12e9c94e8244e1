"""Driftline against its peers, side by side in one run: `make bench`.

    python -m benchmarks.run [--smoke] [--only http,cache,trainer,feedback,drift]
                             [--no-peers] [--setup] [--out benchmarks/results]

Runs every workload with its floors and peers (`benchmarks/suite/`), then writes
one report: `REPORT.md`, `report.json` and PNG charts in `--out`. The serving
peers (MLServer, KServe, BentoML) are installed on first use into virtual
environments of their own outside the repository (`--setup` does only that). A
workload or peer that fails is reported with its error; the rest still runs.

`--smoke` is the seconds-long variant the test suite runs so that this code
cannot rot: tiny sizes, no peers, no Driftline HTTP server (it needs MLflow).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One thread per process everywhere (ONNX Runtime, torch, numpy): the servers and the
# loops under test get one core each, as the report says. Set before those imports.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from benchmarks.suite import cache, charts, drift, feedback, http, trainer
from benchmarks.suite import profile as profiler
from benchmarks.suite.common import Row, cores, machine
from benchmarks.suite.peers import ENVS, cache_dir, install
from benchmarks.suite.report import markdown
from benchmarks.suite.targets import judge

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS = ("http", "cache", "trainer", "feedback", "drift")


def _about(module: Any) -> str:
    """A workload module's docstring after its first line: what the report says of it."""
    return (module.__doc__ or "").split("\n\n", 1)[-1].strip()


ABOUT = {name: _about(module) for name, module in
         (("http", http), ("cache", cache), ("trainer", trainer), ("feedback", feedback),
          ("drift", drift))}  # fmt: skip


def setup(log: Callable[[str], None] = print) -> dict[str, str | None]:
    """Install the load generators (apt, when root) and every peer's venv."""
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if not shutil.which(tool) and shutil.which("apt-get") and os.geteuid() == 0:
            log(f"installing {package} with apt-get ...")
            subprocess.run(["apt-get", "install", "-y", package], check=False, capture_output=True)
    cache.ensure_redis_benchmark()
    errors = {}
    for name, env in {**ENVS, "tools": profiler.TOOLS}.items():
        log(f"peer {name}: {'ready' if env.installed() else 'installing ...'}")
        errors[name] = install(env, cache_dir() / "logs" / f"{name}.log")
        if errors[name]:
            log(f"peer {name}: {errors[name]}")
    return errors


def _plans(args: argparse.Namespace) -> dict[str, Callable[[], list[Row]]]:
    where = cores()
    if args.smoke:
        return {
            "http": lambda: http.measure(
                http.Options(
                    seconds=1,
                    repeats=1,
                    connections=(1, 32),
                    rate=100,
                    peers=False,
                    driftline=False,
                ),
                where,
            ),
            "cache": lambda: cache.measure(cache.Options(requests=300, repeats=1), where),
            "trainer": lambda: trainer.measure(
                trainer.Options(rows=2048, river_rows=512, repeats=1, batches=(256, 32)),
                where.server,
            ),
            "feedback": lambda: feedback.measure(feedback.Options(joins=500, smoke=True)),
            "drift": lambda: drift.measure(drift.Options(smoke=True, cost_samples=1000, repeats=1)),
        }
    return {
        "http": lambda: http.measure(
            http.Options(seconds=args.seconds, repeats=args.repeats, peers=not args.no_peers),
            where,
        ),
        "cache": lambda: cache.measure(cache.Options(requests=5000, repeats=5), where),
        "trainer": lambda: trainer.measure(trainer.Options(), where.server),
        "feedback": lambda: feedback.measure(feedback.Options()),
        "drift": lambda: drift.measure(drift.Options()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    before = machine()
    wanted = [w for w in args.only.split(",") if w]
    unknown = set(wanted) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    plans = _plans(args)
    rows: list[Row] = []
    durations: dict[str, float] = {}
    for workload in wanted:
        print(f"== {workload}", flush=True)
        t0 = time.monotonic()
        try:
            rows += plans[workload]()
        except Exception as exc:  # one workload failing must not sink the report
            traceback.print_exc()
            rows.append(
                Row(workload, "all", "all", "driftline", status="failed",
                    note=f"{type(exc).__name__}: {exc}"[:300])
            )  # fmt: skip
        durations[workload] = time.monotonic() - t0
    peers = {
        name: env.version() for name, env in ENVS.items() if env.installed() and not args.no_peers
    }
    if args.smoke:
        peers = {}
    generators = []
    for tool, flag in (("wrk", "-v"), ("h2load", "--version")):
        if shutil.which(tool):
            done = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
            text = (done.stdout or done.stderr).strip().splitlines()
            generators.append(text[0].split(" Copyright")[0] if text else tool)
    return {
        "machine_before": before,
        "machine_after": machine(),
        "seconds": time.monotonic() - started,
        "options": {
            "smoke": args.smoke,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "connections": [1, 32] if args.smoke else list(http.Options().connections),
            "rate": 100 if args.smoke else http.Options().rate,
            "workloads": wanted,
            "peers": not (args.no_peers or args.smoke),
        },
        "peer_versions": peers,
        "load_generators": ", ".join(generators) or "none found",
        "durations": durations,
        "about": ABOUT,
        "rows": [r.as_dict() for r in rows],
        "targets": [j.as_dict() for j in judge(rows)],
    }


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [Row(**r) for r in result["rows"]]
    made = charts.write_all(rows, out)
    (out / "report.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / "REPORT.md").write_text(markdown(result, made), encoding="utf-8")
    print(f"written: {out / 'REPORT.md'}, report.json and {len(made)} charts", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no peers: seconds")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    parser.add_argument("--no-peers", action="store_true", help="skip the HTTP serving peers")
    parser.add_argument("--setup", action="store_true", help="only install the peers and tools")
    parser.add_argument("--seconds", type=float, default=3.0, help="one HTTP load run")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per contender")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    parser.add_argument(
        "--rewrite", action="store_true", help="only rewrite the report from --out/report.json"
    )
    args = parser.parse_args(argv)
    if args.rewrite:
        result = json.loads((args.out / "report.json").read_text(encoding="utf-8"))
        rows = [Row(**r) for r in result["rows"]]
        result["rows"] = [r.as_dict() for r in rows]
        result["targets"] = [j.as_dict() for j in judge(rows)]
        result["about"] = ABOUT
        write(result, args.out)
        return 0
    if args.setup:
        errors = setup()
        return 1 if any(errors.values()) else 0
    if not (args.smoke or args.no_peers) and "http" in args.only:
        setup()
    write(run(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
