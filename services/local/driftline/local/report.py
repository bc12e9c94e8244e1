"""The demo's report: one picture and a short markdown summary.

The picture is the promise of the project: after the world changes, the frozen
model stays wrong and the learning one recovers, with the moments that explain
why (drift detected, candidate shadowed, canary steps, promotion) marked on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Marker:
    t: float
    """Seconds since the start of traffic."""
    label: str
    kind: str  # truth | drift | rollout | promoted | aborted


@dataclass
class Curve:
    name: str
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class ScenarioResult:
    name: str
    title: str
    passed: bool
    summary: list[tuple[str, str]]
    """Rows of the markdown table: (what, value)."""
    curves: list[Curve]
    markers: list[Marker]
    notes: list[str] = field(default_factory=list)


_COLORS = {"truth": "black", "drift": "tab:red", "rollout": "tab:gray",
           "promoted": "tab:green", "aborted": "tab:orange"}  # fmt: skip


def plot(result: ScenarioResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    styles = ["-", "--", ":", "-."]
    for i, curve in enumerate(result.curves):
        if curve.points:
            xs, ys = zip(*curve.points, strict=True)
            ax.plot(xs, ys, styles[i % len(styles)], linewidth=2.2, label=curve.name)
    top = 1.02
    for j, marker in enumerate(result.markers):
        color = _COLORS.get(marker.kind, "tab:gray")
        ax.axvline(marker.t, color=color, linestyle="--" if marker.kind == "rollout" else "-",
                   linewidth=1.2, alpha=0.8)  # fmt: skip
        ax.text(marker.t, top - 0.045 * (j % 6), " " + marker.label, color=color, fontsize=8,
                va="top", transform=ax.get_xaxis_transform())  # fmt: skip
    ax.set_xlabel("seconds of traffic")
    ax.set_ylabel("live accuracy (10 s window)")
    ax.set_ylim(0.0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(result.title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def markdown(results: list[ScenarioResult], images: dict[str, str]) -> str:
    lines = ["# Driftline demo report", ""]
    for result in results:
        verdict = "passed" if result.passed else "FAILED"
        lines += [f"## {result.title} ({verdict})", ""]
        if result.name in images:
            lines += [f"![{result.title}]({images[result.name]})", ""]
        lines += ["| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in result.summary]
        lines.append("")
        if result.markers:
            lines += ["Timeline (seconds of traffic):", ""]
            lines += [f"- {m.t:6.1f} s  {m.label}" for m in result.markers]
            lines.append("")
        lines += [f"> {n}" for n in result.notes]
        lines.append("")
    return "\n".join(lines)


def write_report(results: list[ScenarioResult], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    for result in results:
        name = f"{result.name}.png"
        plot(result, out_dir / name)
        images[result.name] = name
    path = out_dir / "REPORT.md"
    path.write_text(markdown(results, images), encoding="utf-8")
    # The same verdicts for scripts: {scenario: {"passed": ..., "summary": {what: value}}}.
    verdicts = {r.name: {"passed": r.passed, "summary": dict(r.summary)} for r in results}
    (out_dir / "results.json").write_text(json.dumps(verdicts, indent=2) + "\n")
    return path
