"""Threshold of an online statistic for a wanted expected run time (ERT).

An online detector over windows of sizes w_1 < ... < w_K alarms when the statistic of
any full window crosses a threshold `h`, then starts afresh: its windows refill, so
window k can alarm again only w_k samples later. A window's statistic after the
reset is the same number as without the reset (it only sees the last w_k samples),
so one long simulated stream without drift, with the statistic of every window at
every step, replays the detector exactly for any `h`: walk from alarm to alarm with
a binary search per window. The threshold is the lowest `h` whose mean run length
(steps / alarms) reaches the ERT.

This is cheaper than alibi-detect's way (many short streams, one quantile per time
step, which needs ten times ERT streams to reach the 1 - 1/ERT quantile), and it
stays accurate for large ERTs: set-up time grows with ERT, not with ERT squared.
When the simulation is too short to see enough alarms (a very large ERT), the alarm
count is extrapolated from the tail, where its logarithm is close to linear in `h`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

MIN_ALARMS = 20
"""Fewer simulated alarms than this at the chosen level: extrapolate instead."""
BISECTIONS = 30


def level_for_run_length(
    stats: npt.NDArray[np.floating[Any]], windows: list[int], run_length: float
) -> float:
    """The lowest level at which the detector's mean run length is at least `run_length`.

    `stats[k, s, t]` is the statistic of window `windows[k]` in simulated stream `s`
    after sample `t` (NaN before the window is full).
    """
    stats = np.asarray(stats, dtype=np.float32)
    wanted = stats.shape[1] * stats.shape[2] / run_length  # alarms allowed in the simulation
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN before any window is full
        peak = np.nanmax(stats, axis=0)
    hi = float(np.nanmax(peak))
    # At the (1 - 1/ERT) quantile of the peak statistic alarms are already too rare;
    # step down until they are too frequent, then bisect.
    tail = 1.0 / run_length
    lo = float(np.nanquantile(peak, 1 - tail))
    while alarms(stats, windows, lo) <= max(wanted, MIN_ALARMS) and tail < 0.5:
        tail = min(0.5, tail * 4)
        lo = float(np.nanquantile(peak, 1 - tail))
    if wanted >= MIN_ALARMS:
        return _bisect(stats, windows, wanted, lo, hi)
    # Too few alarms to read the level off: fit the tail between about 10 and 200 alarms.
    top = _bisect(stats, windows, MIN_ALARMS / 2, lo, hi)
    bottom = _bisect(stats, windows, 10 * MIN_ALARMS, lo, top)
    levels = np.linspace(bottom, top, 8)
    counts = np.array([alarms(stats, windows, float(h)) for h in levels], dtype=np.float64)
    usable = counts > 0
    if usable.sum() < 3:
        return hi
    slope, intercept = np.polyfit(levels[usable], np.log(counts[usable]), 1)
    if slope >= 0:
        return hi
    return float((np.log(wanted) - intercept) / slope)


def alarms(stats: npt.NDArray[np.float32], windows: list[int], level: float) -> int:
    """Alarms of the detector with threshold `level`, resetting after each alarm."""
    total = 0
    for s in range(stats.shape[1]):
        over = [np.flatnonzero(stats[k, s] > level) for k in range(len(windows))]
        pos = 0  # the first sample of the current (fresh) windows
        while True:
            nxt = None
            for k, w in enumerate(windows):
                i = np.searchsorted(over[k], pos + w - 1)  # window k is full from here
                if i < over[k].size and (nxt is None or over[k][i] < nxt):
                    nxt = int(over[k][i])
            if nxt is None:
                break
            total += 1
            pos = nxt + 1
    return total


def _bisect(
    stats: npt.NDArray[np.float32], windows: list[int], wanted: float, lo: float, hi: float
) -> float:
    """Smallest level in [lo, hi] with at most `wanted` alarms."""
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        if alarms(stats, windows, mid) <= wanted:
            hi = mid
        else:
            lo = mid
    return hi
