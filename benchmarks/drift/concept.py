"""Concept drift through the error stream: delay and false alarms, side by side.

Every contender reads the same error streams sample by sample. The first `WARMUP`
samples of a stream are for learning the baseline (Driftline's detector takes them
as its reference); alarms there are not counted. An alarm before the drift starts is
a false alarm; the first one after is the detection, its delay counted from the
drift point (for a gradual drift, the transition's centre, so it may be negative).
A stream without a detection by its end is a miss. False alarms are also counted on
a long stream without drift, and reported per 100,000 watched samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from benchmarks.drift.contenders import Contender
from benchmarks.drift.streams import Scenario

WARMUP = 2000


@dataclass
class Score:
    scenario: str
    family: str
    setting: str
    peer: bool
    runs: int
    detected: int
    median_delay: float
    """Median over runs, a miss counting as infinitely late (inf when half are missed)."""
    mean_delay_detected: float
    false_alarms: int
    watched: int
    seconds: float

    @property
    def fa_per_100k(self) -> float:
        return 1e5 * self.false_alarms / self.watched

    def row(self) -> dict[str, object]:
        return {**asdict(self), "fa_per_100k": round(self.fa_per_100k, 2)}


def evaluate(
    scenario: Scenario, contender: Contender, runs: list[np.ndarray], calm: np.ndarray, pre: int
) -> Score:
    if contender.runs is not None:
        runs, calm = runs[: contender.runs], calm[:20_000]
    start = pre - scenario.width // 2  # where the drifted samples begin
    delays: list[float] = []
    false_alarms = watched = 0
    began = time.process_time()
    for errors in runs:
        det = contender.make(errors[:WARMUP])
        delay = math.inf
        for t, x in enumerate(errors):
            if not det.update(float(x)) or t < WARMUP:
                continue
            if t < start:
                false_alarms += 1
                continue
            delay = t - pre
            break
        delays.append(delay)
        watched += start - WARMUP
    det = contender.make(calm[:WARMUP])
    for t, x in enumerate(calm):
        if det.update(float(x)) and t >= WARMUP:
            false_alarms += 1
    watched += len(calm) - WARMUP
    found = [d for d in delays if math.isfinite(d)]
    return Score(
        scenario=scenario.name,
        family=contender.family,
        setting=contender.setting,
        peer=contender.peer,
        runs=len(runs),
        detected=len(found),
        median_delay=float(np.median(delays)),
        mean_delay_detected=float(np.mean(found)) if found else math.inf,
        false_alarms=false_alarms,
        watched=watched,
        seconds=time.process_time() - began,
    )


def best_within(scores: list[Score], family: str, budget: float) -> Score | None:
    """The family's fastest setting whose false-alarm rate stays within `budget` per 100k."""
    fits = [s for s in scores if s.family == family and s.fa_per_100k <= budget]
    return min(fits, key=lambda s: (s.median_delay, s.fa_per_100k), default=None)
