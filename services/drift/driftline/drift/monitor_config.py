"""What the monitor's detectors are told: the spec's drift section plus a few settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from driftline.api.spec import DataQualitySpec, DriftSpec
from driftline.drift.detectors.base import ConceptMethod, Correction


@dataclass(frozen=True)
class MonitorConfig:
    detector: str = "ks"
    """ks (windows only) | mmd-online | cvm-online (numeric inputs watched online)."""
    window: int = 1000
    alpha: float = 0.01
    ert: int = 2000
    correction: Correction = "bonferroni"
    mmd_window: int = 20
    online_windows: list[int] = field(default_factory=lambda: [50, 200, 500])
    """Window sizes of the per-feature CVM and the concept detector."""
    concept_reference: int = 1000
    """Labeled examples of the serving version that form the error reference."""
    data_quality: DataQualitySpec | None = None
    """The mean-shift alarm on numeric features (`drift.dataQuality`); off when None."""
    concept_detector: ConceptMethod = "fet"
    """The error-rate detector of classification models (`drift.concept.detector`)."""

    @classmethod
    def from_spec(
        cls,
        spec: DriftSpec,
        *,
        correction: Correction = "bonferroni",
        mmd_window: int = 20,
        online_windows: list[int] | None = None,
        concept_reference: int | None = None,
    ) -> MonitorConfig:
        windows = online_windows or default_online_windows(spec.window)
        return cls(
            detector=spec.detector,
            window=spec.window,
            alpha=spec.p_value,
            ert=spec.expected_run_time,
            correction=correction,
            mmd_window=mmd_window,
            online_windows=windows,
            concept_reference=concept_reference or max(spec.window, 4 * max(windows)),
            data_quality=spec.data_quality,
            concept_detector=spec.concept.detector,
        )


def default_online_windows(window: int) -> list[int]:
    """Short, medium and long sliding windows from the spec's window size.

    The short one reacts within tens of samples to a strong change; the long one, half
    a test window, sees a change of a few percent in an error rate.
    """
    return sorted({max(10, window // 20), max(20, window // 5), max(40, window // 2)})
