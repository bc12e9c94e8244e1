"""REPORT.md of one side-by-side run: targets first, then every workload's rows."""

from __future__ import annotations

from typing import Any

from benchmarks.suite.common import Row
from benchmarks.suite.targets import PROFILE_CASE, Judgement

COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    # workload: (value key, header, format)
    "cache": [
        ("us_per_request", "us per request", ",.1f"),
        ("vs_floor", "vs redis-py asyncio GET", ".2f"),
        ("rps", "req/s", ",.0f"),
        ("p50_ms", "p50 ms", ".2f"),
        ("p99_ms", "p99 ms", ".2f"),
        ("cpu_us_per_request", "server CPU us/req", ",.0f"),
    ],
    "trainer": [
        ("samples_per_s", "examples/s", ",.0f"),
        ("vs_floor", "vs raw torch", ".2f"),
        ("rows_in_steps_per_s", "rows in steps/s", ",.0f"),
        ("steps_vs_floor", "steps vs raw torch", ".2f"),
    ],
    "feedback": [
        ("joins_per_s", "joins/s", ",.0f"),
        ("vs_floor", "vs Redis ceiling", ".2f"),
    ],
    "drift": [
        ("median_delay", "median delay (samples)", ",.0f"),
        ("vs_best_peer", "vs best peer", ".2f"),
        ("fa_per_100k", "false alarms /100k", ".1f"),
        ("ms_per_sample", "ms/sample", ".4f"),
        ("us_per_sample", "us/sample", ".2f"),
    ],
}

TITLES = {
    "http": "HTTP predict",
    "cache": "Cache hit",
    "trainer": "Trainer update path",
    "feedback": "Feedback join",
    "drift": "Drift detection",
}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mark(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "**no**"


def _http_table(rows: list[Row], meta: dict[str, Any], names_like: str = "") -> list[str]:
    """One line per server: req/s at each connection count, latency, CPU, ratios."""
    data = [r for r in rows if r.workload in ("http", "cache") and r.status == "ok"]
    data = [r for r in data if "connection" in r.case or r.case.startswith("open loop")]
    data = [r for r in data if names_like in r.contender and r.case != PROFILE_CASE]
    names = list(dict.fromkeys(r.contender for r in data))
    if not names:
        return ["(no server measured)"]
    conns = [f"{c} connection" + ("s" if c > 1 else "") for c in meta["connections"]]
    open_case = next((r.case for r in data if r.case.startswith("open loop")), None)

    def get(name: str, case: str | None, key: str) -> float | None:
        row = next((r for r in data if r.contender == name and r.case == case), None)
        return None if row is None else row.values.get(key)

    ours = get("Driftline, batching on, log off", "32 connections", "rps")
    head = [f"req/s @{c.split()[0]}" for c in conns]
    out = [
        "| server | kind | " + " | ".join(head) + " | p50 / p99 ms @32 | server CPU us/req @32 "
        f"| Driftline (batching on) / this @32 | {open_case or 'open loop'}: p50 / p99 ms |",
        "|---|---|" + "---:|" * len(head) + "---:|---:|---:|---:|",
    ]
    for name in names:
        kind = next(r.kind for r in data if r.contender == name)
        rps32 = get(name, "32 connections", "rps")
        ratio = ours / rps32 if ours and rps32 else None
        out.append(
            f"| {name} | {kind} | "
            + " | ".join(_fmt(get(name, c, "rps"), ",.0f") for c in conns)
            + f" | {_fmt(get(name, '32 connections', 'p50_ms'), '.2f')} / "
            f"{_fmt(get(name, '32 connections', 'p99_ms'), '.2f')}"
            f" | {_fmt(get(name, '32 connections', 'cpu_us_per_request'), ',.0f')}"
            f" | {_fmt(ratio, '.2f')}"
            f" | {_fmt(get(name, open_case, 'p50_ms'), '.2f')} / "
            f"{_fmt(get(name, open_case, 'p99_ms'), '.2f')}"
            + (
                f" (answered {get(name, open_case, 'rps'):,.0f}/s)"
                if open_case and (get(name, open_case, "rps") or 0) < meta["rate"] * 0.95
                else ""
            )
            + " |"
        )
    floor = next(
        (r for r in rows if r.workload == "http" and r.contender.startswith("raw ONNX")), None
    )
    profiled = next((r for r in rows if r.case == PROFILE_CASE and r.status == "ok"), None)
    if profiled and not names_like:
        out += [
            "",
            f"Where {profiled.contender.split(' (')[0]} spends its time at 32 connections "
            "(pyinstrument on the main thread, own time of each function as a share of the "
            "sampled time after the imports; start-up work such as loading the model is "
            "included, so the load runs 4x as long as a timed run to outweigh it):",
            "",
        ]
        out += [f"- {name}: {share or 0:.1%}" for name, share in profiled.values.items()]
    if floor and floor.status == "ok" and not names_like:
        out += [
            "",
            f"Floor without HTTP: raw ONNX Runtime `session.run`, one row, in-process on the "
            f"server core: {_fmt(floor.values.get('rps'), ',.0f')} runs/s, p50 "
            f"{_fmt(floor.values.get('p50_ms'), '.3f')} ms, p99 "
            f"{_fmt(floor.values.get('p99_ms'), '.3f')} ms.",
        ]
    return out


def _generic_table(rows: list[Row], workload: str) -> list[str]:
    data = [r for r in rows if r.workload == workload and r.status == "ok"]
    if workload == "cache":
        data = [r for r in data if "connection" not in r.case and "open loop" not in r.case]
    columns = [c for c in COLUMNS[workload] if any(r.values.get(c[0]) is not None for r in data)]
    out = [
        "| case | contender | kind | " + " | ".join(h for _, h, _ in columns) + " | note |",
        "|---|---|---|" + "---:|" * len(columns) + "---|",
    ]
    for r in data:
        cells = " | ".join(_fmt(r.values.get(k), f) for k, _, f in columns)
        out.append(f"| {r.case} | {r.contender} | {r.kind} | {cells} | {r.note} |")
    return out


def markdown(result: dict[str, Any], charts: list[str]) -> str:
    rows = [Row(**r) for r in result["rows"]]
    judgements = [Judgement(**j) for j in result["targets"]]
    before, after = result["machine_before"], result["machine_after"]
    meta = result["options"]
    out = [
        "# Driftline against its peers",
        "",
        f"`make bench` (`python -m benchmarks.run{' --smoke' if meta['smoke'] else ''}`), "
        f"{before['at']}, {result['seconds'] / 60:.1f} minutes. Every workload measures "
        "Driftline, its floors and its peers in the same run, alternating the contenders "
        "in every repeat (A, B, C, then B, C, A, ...); each number is the median of the "
        "repeats and each ratio the median of per-round ratios where the workload pairs "
        "them. Servers run pinned to one core with `taskset`, load generators to the other; "
        "`OMP_NUM_THREADS=1`.",
        "",
        "## Machine",
        "",
        f"{before['cpus']} x {before['cpu_model']}, {before['memory']} memory, Linux "
        f"{before['kernel']}, Python {before['python']}, this run at nice {before['nice']}.",
        (
            "**A busy machine**: the cores were shared with other work while this ran"
            if _busy(before)
            else "A quiet machine: nothing else ran on the cores when this started"
        )
        + f" (load average {before['load_average']} before, "
        f"{after['load_average']} after; busiest processes at the start: "
        + "; ".join(before["busiest_processes"][:4])
        + "). "
        + (
            "Absolute rates are lower bounds of what a quiet machine gives; the ratios, "
            "measured side by side, are the numbers to compare. "
            if _busy(before)
            else "The ratios, measured side by side, are the numbers to compare. "
        )
        + "Peers: "
        + (", ".join(f"{k} {v}" for k, v in result["peer_versions"].items()) or "not run")
        + f"; load generators: {result['load_generators']}.",
        "",
        "## Targets",
        "",
        "| workload | target | measured | met | short by | what bounds it |",
        "|---|---|---|---|---|---|",
    ]
    for j in judgements:
        out.append(
            f"| {j.workload} | {j.target} | {j.measured} | {_mark(j.met)} | {j.gap or '-'} | "
            f"{j.bound or '-'} |"
        )
    for workload, seconds in result["durations"].items():
        title = TITLES.get(workload, workload)
        out += ["", f"## {title}", "", f"_Measured in {seconds:.0f} s._", ""]
        out += [result["about"].get(workload, ""), ""]
        if workload == "http":
            out += _http_table(rows, meta)
        else:
            out += _generic_table(rows, workload)
        if workload == "cache":
            out += [
                "",
                "Through the whole service (HTTP; cache hit: every request the same row):",
                "",
            ]
            out += _http_table(rows, meta, "Driftline, ")
        missing = [r for r in rows if r.workload == workload and r.status != "ok"]
        if missing:
            out += ["", "Not measured in this run:", ""]
            out += [f"- {r.contender} ({r.case}): {r.status}: {r.note}" for r in missing]
        for chart in charts:
            if chart.split("-", 1)[1].startswith(workload):
                out += ["", f"![{chart}]({chart})"]
    out += [
        "",
        "## Reproduce",
        "",
        "`make bench` installs the peers in their own virtual environments "
        "(`~/.cache/driftline-bench/venvs/<peer>`, uv, telemetry off, no model hub) on its "
        "first run, then measures. `make bench-setup` does only the installs. "
        "`python -m benchmarks.run --only http,trainer` runs some workloads; `--no-peers` "
        "skips the peers; `--smoke` is the seconds-long variant the test suite runs. "
        "Each part's own benchmark (`python -m benchmarks.<part>`) goes deeper into that "
        "part; this report is the side-by-side view.",
        "",
    ]
    return "\n".join(out)


def _busy(machine: dict[str, Any]) -> bool:
    """Other work on the cores when the run started: a 1-minute load average above 1."""
    load = machine.get("load_average") or [0.0]
    return float(load[0]) > 1.0
