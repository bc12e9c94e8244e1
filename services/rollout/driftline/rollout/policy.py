"""The rollout policy: what the state machine needs from a DynamicModel, flattened.

The machine never reads the spec itself. `Policy.from_model` picks the fields of
`spec.rollout` (and `spec.drift.onDrift`, `spec.model.task`) once, so the machine's
tests can build a policy in one line and every face (operator timer, local runtime)
derives the same one from the same YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from driftline.api import DynamicModel
from driftline.api.spec import EstimateGateSpec, GuardSpec

Strategy = Literal["shadow-then-canary", "canary", "shadow", "manual"]
Task = Literal["classification", "regression"]

MAX_MIN_REQUESTS = 100
"""p99 latency and error rate are judged once the candidate served this many requests.

The bar is `minLabeled`, capped here: inference may count a batched call as one
request, and a p99 or an error rate over 100 requests already says what it can.
"""


@dataclass(frozen=True)
class GuardPolicy:
    """`spec.rollout.guard`: how long and how strictly a promotion is watched (`guard`)."""

    window_seconds: float
    max_drop_vs_previous: float = 0.01
    max_drop_vs_baseline: float | None = None
    min_labeled: int = 500

    @classmethod
    def from_spec(cls, spec: GuardSpec | None) -> GuardPolicy | None:
        if spec is None:
            return None
        return cls(
            window_seconds=spec.window_seconds,
            max_drop_vs_previous=spec.max_drop_vs_previous,
            max_drop_vs_baseline=spec.max_drop_vs_baseline,
            min_labeled=spec.min_labeled,
        )


@dataclass(frozen=True)
class Policy:
    model: str
    strategy: Strategy = "shadow-then-canary"
    task: Task = "classification"
    steps: tuple[int, ...] = (5, 20, 50, 100)
    step_seconds: float = 300.0
    shadow_min_samples: int = 2000
    max_disagreement: float = 0.05
    min_labeled: int = 500
    max_quality_drop: float = 0.01
    """Classification: the most the candidate's accuracy may trail the stable's
    (absolute). Regression: the most its mean absolute error may exceed the stable's,
    relative to the stable's (0.01 = 1 % worse)."""
    max_p99_ms: float = 50.0
    max_error_rate: float = 0.01
    max_inconclusive_seconds: float = 1800.0
    rollback_on_drift: bool = False
    segments: tuple[str, ...] = ()
    """The names of `spec.monitoring.segments`: groups whose quality the joiner keeps apart."""
    max_segment_drop: float | None = None
    """Worst-segment gate: the most the candidate may lose on any one segment value
    (as `max_quality_drop` measures it); None judges no segment."""
    min_segment_labeled: int = 200
    """Labeled samples (candidate and stable) a segment value needs to be judged."""
    guard: GuardPolicy | None = None
    """The guard after a promotion (`guard` module); None: no guard."""
    estimate_max_drop: float | None = None
    """`analysis.estimate`: while labels are too few, the most the candidate's accuracy
    estimated from confidence may trail the stable's; None (or regression) ignores it."""
    estimate_min_predictions: int = 200
    estimate_max_age_seconds: float = 300.0

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != 100:
            raise ValueError(f"canary steps {self.steps} must end at 100")

    @classmethod
    def from_model(cls, model: DynamicModel) -> Policy:
        spec = model.spec
        rollout = spec.rollout
        return cls(
            model=model.name,
            strategy=rollout.strategy,
            task=spec.model.task,
            steps=tuple(rollout.canary.steps),
            step_seconds=rollout.canary.step_seconds,
            shadow_min_samples=rollout.shadow.min_samples,
            max_disagreement=rollout.shadow.max_disagreement,
            min_labeled=rollout.analysis.min_labeled,
            max_quality_drop=rollout.analysis.max_accuracy_drop,
            max_p99_ms=rollout.analysis.max_p99_ms,
            max_error_rate=rollout.analysis.max_error_rate,
            max_inconclusive_seconds=rollout.analysis.max_inconclusive_seconds,
            rollback_on_drift="rollback" in spec.drift.on_drift,
            segments=tuple(segment.name for segment in spec.monitoring.segments),
            max_segment_drop=rollout.analysis.max_segment_drop,
            min_segment_labeled=rollout.analysis.min_segment_labeled,
            guard=GuardPolicy.from_spec(rollout.guard),
            **_estimate_gate(rollout.analysis.estimate, spec.model.task),
        )

    @property
    def gates_estimate(self) -> bool:
        """The accuracy estimated from confidence is early evidence (classification)."""
        return self.estimate_max_drop is not None and self.task == "classification"

    @property
    def min_requests(self) -> int:
        return max(1, min(self.min_labeled, MAX_MIN_REQUESTS))

    @property
    def gates_segments(self) -> bool:
        """The worst segment is judged: a drop limit is set and segments exist."""
        return self.max_segment_drop is not None and bool(self.segments)

    @property
    def uses_shadow(self) -> bool:
        return self.strategy != "canary"


def _estimate_gate(spec: EstimateGateSpec | None, task: Task) -> dict[str, Any]:
    if spec is None or task != "classification":
        return {}
    return {
        "estimate_max_drop": spec.max_drop,
        "estimate_min_predictions": spec.min_predictions,
        "estimate_max_age_seconds": spec.max_age_seconds,
    }
