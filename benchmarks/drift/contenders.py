"""Every detector behind one call: `update(x) -> drift?`, resetting itself after an alarm.

River's detectors learn their baseline from the stream itself; Driftline's concept
detector takes the first `reference` samples as its error reference (as the monitor
does with the first labeled examples of a version) and is armed after them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from river import drift

from driftline.drift.detectors.base import Backend, ConceptMethod


class Detector(Protocol):
    def update(self, x: float) -> bool: ...


@dataclass(frozen=True)
class Contender:
    family: str
    setting: str
    make: Callable[[np.ndarray], Detector]
    """Builds a detector for one stream, given that stream's warm-up part."""
    peer: bool = True
    runs: int | None = None
    """Score on this many runs (and a 20,000-sample calm stream) only: a slow contender."""


class RiverDetector:
    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def update(self, x: float) -> bool:
        self.detector.update(x)
        return bool(self.detector.drift_detected)


class OnlineErrors:
    """Driftline's concept detector (FET or CUSUM on the error indicator) of one backend."""

    def __init__(
        self,
        backend: Backend,
        reference: np.ndarray,
        ert: int,
        windows: list[int],
        method: ConceptMethod = "fet",
    ):
        self.detector = backend.online_errors(reference > 0.5, ert, windows, method)
        self.setup_seconds = self.detector.setup_seconds
        self.skip = len(reference)  # the reference part of the stream is not watched

    def update(self, x: float) -> bool:
        if self.skip:
            self.skip -= 1
            return False
        step = self.detector.update(np.array([x]))
        if step.drift:
            self.detector.reset()
        return step.drift


def river_contenders() -> list[Contender]:
    out = []
    for delta in (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.002, 0.0002):
        out.append(
            Contender(
                "ADWIN", f"delta={delta}", lambda _r, d=delta: RiverDetector(drift.ADWIN(delta=d))
            )
        )
    for k in (2.0, 2.25, 2.5, 2.75, 3.0, 3.5):
        out.append(
            Contender(
                "DDM",
                f"drift_threshold={k}",
                lambda _r, k=k: RiverDetector(
                    drift.binary.DDM(warning_threshold=k - 0.5, drift_threshold=k)
                ),
            )
        )
    for c in (0.05, 0.01, 0.005, 0.001, 0.0001, 0.00001):
        out.append(
            Contender(
                "HDDM_A",
                f"drift_confidence={c}",
                lambda _r, c=c: RiverDetector(
                    drift.binary.HDDM_A(drift_confidence=c, warning_confidence=min(0.5, 5 * c))
                ),
            )
        )
    for h in (10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 100.0):
        out.append(
            Contender(
                "PageHinkley",
                f"threshold={h:g}",
                lambda _r, h=h: RiverDetector(drift.PageHinkley(threshold=h, mode="up")),
            )
        )
    return out


def driftline_contenders(
    backend: Backend,
    erts: list[int],
    windows: list[int],
    label: str,
    runs: int | None = None,
    method: ConceptMethod = "fet",
) -> list[Contender]:
    return [
        Contender(
            label,
            f"ERT={ert}",
            lambda ref, e=ert: OnlineErrors(backend, ref, e, windows, method),
            peer=False,
            runs=runs,
        )
        for ert in erts
    ]
