"""Drift detection: delay at an equal false-alarm rate, and cost per sample.

Delay comes from `benchmarks.drift` (its quick mode here: 4 runs per scenario,
20,000 calm samples for false alarms; `python -m benchmarks.drift` runs 20): on
fixed-seed SEA, hyperplane and Agrawal streams, Driftline's concept detector (FET
on the error stream) against River's ADWIN, DDM, HDDM_A and PageHinkley, each
tuned over a grid and compared at the best setting within the same false-alarm
budget; and on a Gaussian shift of the inputs, Driftline's scipy online detectors
against alibi-detect's, each scipy detector at its best setting within the false-alarm
rate alibi-detect's detector was measured at (the same calm and shifted streams).

Cost per sample is measured here, all detectors alternating on one calm error
stream, one sample per `update` (as River is used).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.suite.common import DRIFTLINE, PEER, Row, median

WORKLOAD = "drift"
DRIFTLINE_FAMILY = "Driftline FET (scipy)"


@dataclass(frozen=True)
class Options:
    smoke: bool = False
    cost_samples: int = 20_000
    repeats: int = 3


def _delays(options: Options, work: Path) -> dict[str, Any]:
    """`matched` and `covariate` results of the drift benchmark."""
    if not options.smoke:
        from benchmarks.drift.run import main

        main(["--quick", "--only", "concept,covariate", "--out", str(work / "drift")])
        return dict(json.loads((work / "drift.json").read_text(encoding="utf-8")))
    # Smoke: one scenario, one run, three contenders, through the same scoring code.
    from benchmarks.drift.concept import evaluate
    from benchmarks.drift.contenders import driftline_contenders, river_contenders
    from benchmarks.drift.run import WINDOWS, _finite, matched
    from benchmarks.drift.streams import SCENARIOS, ErrorStreams
    from driftline.drift.detectors import make_backend

    scenario = SCENARIOS[0]
    river = [c for c in river_contenders() if c.setting in ("delta=0.002", "threshold=25")]
    scipy = make_backend("scipy", work / "scipy")
    contenders = river + driftline_contenders(scipy, [20000], WINDOWS, DRIFTLINE_FAMILY)
    streams = ErrorStreams(scenario, train=2000)
    data, calm = [streams.run(3000, 1000)], streams.calm(3000)
    scores = [evaluate(scenario, c, data, calm, pre=3000) for c in contenders]
    rows = [r for r in matched(scores) if r["scenario"] == scenario.name]
    return dict(_finite({"matched": rows, "covariate_matched": []}))


def _costs(options: Options, work: Path) -> dict[str, list[float]]:
    """Microseconds per `update`, every detector on the same calm error stream."""
    from benchmarks.drift.contenders import driftline_contenders, river_contenders
    from benchmarks.drift.run import WINDOWS
    from benchmarks.drift.streams import SCENARIOS, ErrorStreams
    from driftline.drift.detectors import make_backend

    picks = {
        "ADWIN": "delta=0.002",
        "DDM": "drift_threshold=3.0",
        "HDDM_A": "drift_confidence=0.001",
        "PageHinkley": "threshold=25",
    }
    contenders = [c for c in river_contenders() if picks.get(c.family) == c.setting]
    backends = ["scipy"] if options.smoke else ["scipy", "alibi"]
    for name in backends:
        backend = make_backend(name, work / f"cost-{name}")  # type: ignore[arg-type]
        contenders += driftline_contenders(backend, [5000], WINDOWS, f"Driftline FET ({name})")
    streams = ErrorStreams(SCENARIOS[0], train=2000 if options.smoke else 10_000)
    reference = streams.calm(2000)
    stream = streams.calm(options.cost_samples)
    built = {f"{c.family} {c.setting}": c.make(reference) for c in contenders}
    for detector in built.values():  # set-up (alibi's threshold configuration) not counted
        skip = getattr(detector, "skip", 0)
        for x in reference[:skip]:
            detector.update(float(x))
    samples: dict[str, list[float]] = {}
    for round_ in range(options.repeats):
        items = list(built.items())
        shift = round_ % len(items)
        for name, detector in items[shift:] + items[:shift]:
            start = time.process_time()
            for x in stream:
                detector.update(float(x))
            samples.setdefault(name, []).append((time.process_time() - start) / len(stream) * 1e6)
    return samples


def measure(options: Options) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        work = Path(tmp)
        results = _delays(options, work)
        costs = _costs(options, work)
    rows: list[Row] = []
    for match in results.get("matched", []):
        case = f"{match['scenario']}, false alarms <= {match['fa_budget_per_100k']:g}/100k"
        ours = match.get("driftline")
        rows.append(
            Row(
                WORKLOAD,
                case,
                DRIFTLINE_FAMILY + (f" {ours['setting']}" if ours else ""),
                DRIFTLINE,
                values={
                    "median_delay": _delay(ours),
                    "vs_best_peer": match.get("ratio"),
                    "fa_per_100k": ours["fa_per_100k"] if ours else None,
                },
                status="ok" if ours else "failed",
                note="" if ours else "no setting within this false-alarm budget",
            )
        )
        for family, peer in (match.get("peers") or {}).items():
            best = (match.get("best_peer") or {}).get("family") == family
            rows.append(
                Row(
                    WORKLOAD,
                    case,
                    f"River {family} {peer['setting']}",
                    PEER,
                    values={"median_delay": _delay(peer), "fa_per_100k": peer["fa_per_100k"]},
                    note="best peer" if best else "",
                )
            )
    add_input_rows(rows, results.get("covariate_matched", []))
    for name, values in costs.items():
        rows.append(
            Row(
                WORKLOAD,
                "cost per sample, one update at a time",
                name if name.startswith("Driftline") else f"River {name}",
                DRIFTLINE if name.startswith("Driftline") else PEER,
                values={"us_per_sample": median(values)},
                repeats={"us_per_sample": values},
            )
        )
    return rows


def add_input_rows(rows: list[Row], matched: list[dict[str, Any]]) -> None:
    """Input-shift rows at matched false-alarm rates (`benchmarks.drift.inputs.matched`):
    per shift and alibi-detect budget (its detector's measured rate), each scipy online
    detector's best setting within it beside the best alibi-detect detector within it."""
    if not matched:
        rows.append(
            Row(WORKLOAD, "input shift", "all", DRIFTLINE, status="skipped",
                note="smoke mode: the covariate section runs in the full benchmark only")
        )  # fmt: skip
        return
    peers_done = set()
    for match in matched:
        case = (
            f"input shift: {match['shift']}, false alarms <= {match['fa_budget_per_100k']:g}/100k"
        )
        found = match.get("median_delay") is not None
        rows.append(
            Row(
                WORKLOAD,
                case,
                f"Driftline {match['detector']}" + (f" {match['setting']}" if found else ""),
                DRIFTLINE,
                values={
                    "median_delay": match.get("median_delay"),
                    "vs_best_peer": match.get("ratio"),
                    "fa_per_100k": match.get("fa_per_100k"),
                },
                status="ok" if found else "failed",
                note="" if found else "no setting within this false-alarm budget",
            )
        )
        if case not in peers_done:
            peers_done.add(case)
            rows.append(
                Row(
                    WORKLOAD,
                    case,
                    f"alibi-detect {match['best_alibi']}",
                    PEER,
                    values={
                        "median_delay": match["best_alibi_delay"],
                        "fa_per_100k": match["best_alibi_fa_per_100k"],
                    },
                    note="best peer",
                )
            )


def _delay(pick: dict[str, Any] | None) -> float | None:
    if not pick or pick.get("median_delay") is None:
        return None
    value = float(pick["median_delay"])
    return value if math.isfinite(value) else None
