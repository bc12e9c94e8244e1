"""PNG charts of one run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.suite.common import DRIFTLINE, FLOOR, Row

COLOURS = {DRIFTLINE: "#1f77b4", FLOOR: "#7f7f7f", "peer": "#ff7f0e"}


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(rows: list[Row], workload: str) -> list[Row]:
    return [r for r in rows if r.workload == workload and r.status == "ok"]


def http_throughput(rows: list[Row], path: Path) -> bool:
    data = [r for r in _ok(rows, "http") if r.case.endswith(("connection", "connections"))]
    data = [r for r in data if not r.case.startswith("profile")]
    data += [r for r in _ok(rows, "cache") if r.case.endswith(("connection", "connections"))]
    if not data:
        return False
    plt = _plt()
    cases = sorted({r.case for r in data}, key=lambda c: int(c.split()[0]))
    names = list(dict.fromkeys(r.contender for r in data))
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(names) * len(cases) / 2 + 2.5))
    height = 0.8 / len(cases)
    for j, case in enumerate(cases):
        for i, name in enumerate(names):
            row = next((r for r in data if r.contender == name and r.case == case), None)
            if row is None or not row.values.get("rps"):
                continue
            y = i + j * height
            ax.barh(y, row.values["rps"], height, color=COLOURS.get(row.kind, "#2ca02c"),
                    alpha=0.45 + 0.55 * (j + 1) / len(cases))  # fmt: skip
            ax.text(row.values["rps"], y, f" {row.values['rps']:,.0f} ({case.split()[0]})",
                    va="center", fontsize=7)  # fmt: skip
    ax.axvline(8000, color="#d62728", linestyle="--", linewidth=1)
    ax.text(8000, -0.6, " target: 8,000 req/s at 32 connections", color="#d62728", fontsize=7)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("requests per second (median of repeats); shades: 1 / 32 / 128 connections")
    ax.set_title(
        "HTTP predict, same ONNX MLP, one server core (blue Driftline, grey floors, orange peers)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def http_latency(rows: list[Row], path: Path) -> bool:
    data = [r for r in _ok(rows, "http") + _ok(rows, "cache") if r.case.startswith("open loop")]
    data = [r for r in data if r.values.get("p50_ms") is not None]
    if not data:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 0.4 * len(data) + 1.8))
    for i, row in enumerate(data):
        colour = COLOURS.get(row.kind, "#2ca02c")
        ax.barh(i - 0.2, row.values["p50_ms"], 0.4, color=colour, alpha=0.5)
        ax.barh(i + 0.2, row.values.get("p99_ms") or 0, 0.4, color=colour)
        ax.text(row.values.get("p99_ms") or 0, i + 0.2,
                f" p50 {row.values['p50_ms']:.2f} / p99 {row.values.get('p99_ms') or 0:.2f} ms",
                va="center", fontsize=7)  # fmt: skip
    ax.set_yticks(range(len(data)), [r.contender for r in data], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"latency, ms (log scale): light p50, dark p99 at {data[0].case}")
    ax.set_title("HTTP predict latency at a fixed request rate (open loop, h2load)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def grouped(rows: list[Row], workload: str, key: str, label: str, title: str, path: Path) -> bool:
    data = [r for r in _ok(rows, workload) if r.values.get(key) is not None]
    if not data:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 0.38 * len(data) + 1.8))
    for i, row in enumerate(data):
        value = row.values[key] or 0.0
        ax.barh(i, value, 0.7, color=COLOURS.get(row.kind, "#2ca02c"))
        ax.text(value, i, f" {value:,.3g}", va="center", fontsize=7)
    ax.set_yticks(range(len(data)), [f"{r.contender} [{r.case}]" for r in data], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def drift_delay(rows: list[Row], path: Path) -> bool:
    mine = [r for r in _ok(rows, "drift") if r.kind == DRIFTLINE and "false alarms" in r.case]
    if not mine:
        return False
    plt = _plt()
    cases = [r.case for r in mine]
    best = {
        r.case: r
        for r in _ok(rows, "drift")
        if r.kind != DRIFTLINE and r.note == "best peer" and r.case in cases
    }
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(cases) + 1.8))
    for i, row in enumerate(mine):
        ours = row.values.get("median_delay") or 0
        theirs = best[row.case].values.get("median_delay") or 0 if row.case in best else 0
        ax.barh(i - 0.2, ours, 0.4, color=COLOURS[DRIFTLINE])
        ax.barh(i + 0.2, theirs, 0.4, color=COLOURS["peer"])
        ratio = row.values.get("vs_best_peer")
        ax.text(max(ours, theirs), i, f" {ratio:.2f}x" if ratio is not None else " -",
                va="center", fontsize=7)  # fmt: skip
    ax.set_yticks(range(len(cases)), cases, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("median detection delay, samples (blue Driftline FET, orange best River peer)")
    ax.set_title("Concept drift: delay at an equal false-alarm budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(rows: list[Row], folder: Path, prefix: str = "bench") -> list[str]:
    """Every chart that has data; returns the file names written."""
    made = []
    jobs = {
        f"{prefix}-http-throughput.png": lambda p: http_throughput(rows, p),
        f"{prefix}-http-latency.png": lambda p: http_latency(rows, p),
        f"{prefix}-trainer.png": lambda p: grouped(
            rows, "trainer", "samples_per_s", "examples per second (median)",
            "Trainer update path vs raw torch loop and River, one core", p),
        f"{prefix}-feedback.png": lambda p: grouped(
            rows, "feedback", "joins_per_s", "joins per second (median)",
            "Feedback join vs the pipelined Redis ceiling", p),
        f"{prefix}-cache.png": lambda p: grouped(
            rows, "cache", "us_per_request", "microseconds per request (median)",
            "Cache hit vs one Redis round trip", p),
        f"{prefix}-drift-delay.png": lambda p: drift_delay(rows, p),
        f"{prefix}-drift-cost.png": lambda p: grouped(
            [r for r in rows if r.case.startswith("cost per sample")], "drift", "us_per_sample",
            "microseconds per sample (median)", "Drift detectors: cost per sample", p),
    }  # fmt: skip
    for name, job in jobs.items():
        if job(folder / name):
            made.append(name)
    return made
