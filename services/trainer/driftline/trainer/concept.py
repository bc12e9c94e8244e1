"""Telling a concept change from a covariate shift, from the labeled stream alone.

Both show up the same way at first: the serving model makes more mistakes. They
call for opposite responses (keep the old knowledge vs drop it), so the trainer
asks a second question when the error rate rises:

1. `ErrorRateMonitor` compares the stable version's error rate over the last
   `window` labeled rows with its rate over the epoch's earlier rows (a
   two-proportion z-test; the rise must also be at least `min_increase`, so that
   a long quiet stream does not alarm on noise). When it alarms, a CUSUM over the
   buffered rows estimates where the rise began (`driftline.common.bernoulli_cusum`,
   the code of the drift monitor's CUSUM concept detector).
2. `shifted_features` compares the inputs since that point with the current
   epoch's anchor set (two-sample Kolmogorov-Smirnov per numeric feature,
   chi-squared per categorical one, Bonferroni-corrected). Errors rising while
   the inputs look the same means the labeling rule changed: a concept change.
   Errors rising with moved inputs is a covariate shift: replay and EWC apply.

The drift monitor can also say "concept" outright with a `DriftEvent`; that
wins over this guess.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.common.bernoulli_cusum import rise_start


class ErrorRateMonitor:
    def __init__(
        self,
        window: int = 500,
        min_reference: int = 1000,
        min_increase: float = 0.05,
        z: float = 5.0,
    ) -> None:
        self.window = window
        self.min_reference = min_reference
        self.min_increase = min_increase
        self.z = z
        self.keep = 4 * window  # rows kept for the change-point estimate
        self.reset()

    def reset(self) -> None:
        self.errors = np.zeros(0, np.bool_)
        self.seq = np.zeros(0, np.int64)
        self.reference_rows = 0
        self.reference_errors = 0
        self.counted = 0  # buffered rows (from the front) already in the reference counts
        self.change_start: int | None = None
        self.last_rates: tuple[float, float] = (math.nan, math.nan)
        self.tolerance: float | None = None
        self._calibration = np.zeros(0, np.float64)
        self._calibration_seq = np.zeros(0, np.int64)

    def update_residuals(self, residuals: NDArray[Any], seq: NDArray[np.int64]) -> bool:
        """Regression: feed absolute residuals of the stable version; True = they grew.

        A row counts as a mistake when its residual exceeds the tolerance: the median
        absolute residual of the first `window` rows since the last reset (so the
        reference error rate starts near one half and falls as the model learns). A
        changed rule makes most residuals larger than that, whatever the target's units.
        """
        residuals = np.abs(np.asarray(residuals, np.float64))
        seq = np.asarray(seq, np.int64)
        if self.tolerance is None:
            self._calibration = np.concatenate([self._calibration, residuals])
            self._calibration_seq = np.concatenate([self._calibration_seq, seq])
            if len(self._calibration) < self.window:
                return False
            self.tolerance = float(np.median(self._calibration))
            residuals, seq = self._calibration, self._calibration_seq
            self._calibration = np.zeros(0, np.float64)
            self._calibration_seq = np.zeros(0, np.int64)
        return self.update(residuals > self.tolerance, seq)

    def update(self, errors: NDArray[np.bool_], seq: NDArray[np.int64]) -> bool:
        """Feed one batch of mistakes (True = wrong) in arrival order; True = the rate rose."""
        self.errors = np.concatenate([self.errors, errors.astype(np.bool_)])
        self.seq = np.concatenate([self.seq, seq.astype(np.int64)])
        # Rows older than the window join the reference counts, each once.
        older = len(self.errors) - self.window
        if older > self.counted:
            self.reference_rows += older - self.counted
            self.reference_errors += int(self.errors[self.counted : older].sum())
            self.counted = older
        if len(self.errors) > self.keep:
            drop = len(self.errors) - self.keep
            self.errors, self.seq = self.errors[drop:], self.seq[drop:]
            self.counted -= drop
        if self.reference_rows < self.min_reference or len(self.errors) < self.window:
            return False
        p_ref = self.reference_errors / self.reference_rows
        p_win = float(self.errors[-self.window :].mean())
        self.last_rates = (p_ref, p_win)
        if p_win - p_ref < self.min_increase:
            return False
        base = min(max(p_ref, 1.0 / self.reference_rows), 1 - 1.0 / self.reference_rows)
        sd = math.sqrt(base * (1 - base) * (1 / self.window + 1 / self.reference_rows))
        if (p_win - p_ref) / sd < self.z:
            return False
        # The CUSUM's change point, its reference value halfway between the two rates.
        self.change_start = int(self.seq[rise_start(self.errors, (p_ref + p_win) / 2)])
        return True

    def state(self) -> dict[str, NDArray[Any]]:
        return {
            "monitor.errors": self.errors.astype(np.int64),
            "monitor.seq": self.seq,
            "monitor.counts": np.array(
                [self.reference_rows, self.reference_errors, self.counted], np.int64
            ),
            "monitor.tolerance": np.array(
                [] if self.tolerance is None else [self.tolerance], np.float64
            ),
        }

    def load_state(self, arrays: dict[str, NDArray[Any]]) -> None:
        self.reset()
        if "monitor.counts" not in arrays:
            return
        self.errors = arrays["monitor.errors"].astype(np.bool_)
        self.seq = arrays["monitor.seq"].astype(np.int64)
        self.reference_rows, self.reference_errors, self.counted = (
            int(v) for v in arrays["monitor.counts"]
        )
        tolerance = arrays.get("monitor.tolerance")
        if tolerance is not None and len(tolerance):
            self.tolerance = float(tolerance[0])


def shifted_features(
    recent_numeric: NDArray[np.float32],
    reference_numeric: NDArray[np.float32],
    numeric_names: tuple[str, ...],
    recent_codes: NDArray[np.int64],
    reference_codes: NDArray[np.int64],
    categorical_names: tuple[str, ...],
    alpha: float = 0.001,
) -> list[str]:
    """Features whose distribution differs between the two samples (Bonferroni at `alpha`)."""
    from scipy import stats

    tests = len(numeric_names) + len(categorical_names)
    if tests == 0 or len(recent_numeric) < 20 or len(reference_numeric) < 20:
        return []
    level = alpha / tests
    shifted: list[str] = []
    for j, name in enumerate(numeric_names):
        a, b = recent_numeric[:, j], reference_numeric[:, j]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if len(a) >= 20 and len(b) >= 20 and stats.ks_2samp(a, b).pvalue < level:
            shifted.append(name)
    for j, name in enumerate(categorical_names):
        new, old = recent_codes[:, j], reference_codes[:, j]
        levels = np.union1d(new, old)
        table = np.stack([(new[:, None] == levels).sum(0), (old[:, None] == levels).sum(0)])
        if len(levels) > 1 and stats.chi2_contingency(table).pvalue < level:
            shifted.append(name)
    return shifted


def in_old_region(
    recent_numeric: NDArray[np.float32],
    recent_codes: NDArray[np.int64],
    reference_numeric: NDArray[np.float32],
    reference_codes: NDArray[np.int64],
    quantile: float = 0.9,
    limit: int = 1000,
) -> NDArray[np.bool_]:
    """Which recent rows lie where the reference rows already were.

    A row is "in the old region" when its nearest reference row is closer than
    `quantile` of the reference rows' own nearest-neighbour distances (numeric
    features standardised by the reference, missing values at its mean; a neighbour
    must share every categorical code: an unseen category is new ground too). When
    inputs move, the rows that did not move still tell whether the rule changed: under
    a pure covariate shift the serving model is as right there as before.
    """
    if len(reference_numeric) < 20 or len(recent_numeric) == 0:
        return np.zeros(len(recent_numeric), np.bool_)
    reference_numeric = reference_numeric[-limit:]
    reference_codes = reference_codes[-limit:]
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(reference_numeric, axis=0), nan=0.0)
        std = np.nan_to_num(np.nanstd(reference_numeric, axis=0), nan=1.0)
    std = np.where(std > 1e-8, std, 1.0)

    def scaled(x: NDArray[np.float32]) -> NDArray[np.float64]:
        return np.asarray(np.nan_to_num((x.astype(np.float64) - mean) / std, nan=0.0))

    ref = scaled(reference_numeric)

    def distances(q: NDArray[np.float64], codes: NDArray[np.int64]) -> NDArray[np.float64]:
        d2 = (q**2).sum(1)[:, None] + (ref**2).sum(1)[None, :] - 2 * q @ ref.T
        if codes.shape[1]:  # a category the neighbour does not share: not the same place
            d2 = np.where((codes[:, None, :] != reference_codes[None, :, :]).any(-1), np.inf, d2)
        return np.asarray(np.maximum(d2, 0.0))

    own = distances(ref, reference_codes)
    np.fill_diagonal(own, np.inf)
    radius = float(np.quantile(own.min(1), quantile))
    out = np.zeros(len(recent_numeric), np.bool_)
    for lo in range(0, len(recent_numeric), limit):
        part = slice(lo, lo + limit)
        out[part] = distances(scaled(recent_numeric[part]), recent_codes[part]).min(1) <= radius
    return out


def rose_in_old_region(
    errors: NDArray[np.bool_], reference_rate: float, min_increase: float, z: float
) -> bool:
    """Whether `errors` (rows in the old region) show a higher rate than the reference.

    An exact binomial tail at the one-sided level of `z` standard errors, so that a
    few rows can decide when they say it loudly: when inputs move, few rows may stay
    in the old region (Waveform's rotated features: 25 of 25 wrong against a rate of
    0.18 before), and a normal approximation would need 30 or more.
    """
    from scipy import stats

    n = len(errors)
    if n == 0 or not math.isfinite(reference_rate):
        return False
    wrong = int(errors.sum())
    # A reference rate under one error in n rows counts as one in n: a model that made
    # no errors before does not let a single wrong row decide.
    base = min(max(reference_rate, 1.0 / n), 1.0)
    level = float(stats.norm.sf(z))
    return wrong / n - reference_rate >= min_increase and bool(
        stats.binom.sf(wrong - 1, n, base) <= level
    )
