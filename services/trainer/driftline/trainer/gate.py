"""The publish gate: a new version must beat what serves, without forgetting.

Two questions, both on rows the new weights never trained on:

1. Held-out slice of recent examples (of the current concept epoch): the new
   weights must score strictly better than the serving version does there.
2. The epoch's anchor set (a uniform sample of the epoch's held-out rows): the
   new weights may not fall more than `gate.maxRegression` below the serving
   version there. This is what catches forgetting under a covariate shift.

Under a concept change the trainer opens a new epoch, which empties the anchor
set and refills it from post-drift rows: the old concept can then no longer hold
the new one back. While the anchor set is still filling, its check is skipped
and the decision says so.

Scores: accuracy (classification) or R^2 (regression); higher is better, so
`maxRegression` is in accuracy points or R^2 points.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Task = Literal["classification", "regression"]


def quality(task: Task, labels: NDArray[np.float32], outputs: NDArray[np.float32]) -> float:
    """Accuracy from probabilities [n, C], or R^2 from values [n]."""
    if len(labels) == 0:
        return float("nan")
    if task == "classification":
        predicted = outputs.argmax(axis=1) if outputs.ndim == 2 else outputs
        return float(np.mean(predicted == labels))
    residual = float(np.sum((labels - outputs) ** 2))
    total = float(np.sum((labels - labels.mean()) ** 2))
    return 1.0 - residual / max(total, 1e-12)


@dataclass(frozen=True)
class Scores:
    holdout: float
    anchor: float


@dataclass(frozen=True)
class GateDecision:
    """Why a version was (or was not) published; stored as the `driftline.gate` tag."""

    publish: bool
    kind: Literal["beats", "no_improvement", "anchor_regression"]
    reason: str
    epoch: int
    serving_version: str | None
    new: Scores
    serving: Scores
    holdout_rows: int
    anchor_rows: int
    max_regression: float

    def to_json(self) -> str:
        """JSON with unknown scores (NaN) as null."""
        return json.dumps(_nulls(asdict(self)), sort_keys=True, allow_nan=False)

    def metrics(self) -> dict[str, float]:
        out = {
            "holdout_new": self.new.holdout,
            "holdout_serving": self.serving.holdout,
            "anchor_new": self.new.anchor,
            "anchor_serving": self.serving.anchor,
        }
        return {k: v for k, v in out.items() if np.isfinite(v)}


def _nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def decide(
    *,
    new: Scores,
    serving: Scores,
    holdout_rows: int,
    anchor_rows: int,
    min_anchor_rows: int,
    max_regression: float,
    epoch: int,
    serving_version: str | None,
) -> GateDecision:
    def verdict(
        kind: Literal["beats", "no_improvement", "anchor_regression"], reason: str
    ) -> GateDecision:
        return GateDecision(
            publish=kind == "beats",
            kind=kind,
            reason=reason,
            epoch=epoch,
            serving_version=serving_version,
            new=Scores(_clean(new.holdout), _clean(new.anchor)),
            serving=Scores(_clean(serving.holdout), _clean(serving.anchor)),
            holdout_rows=holdout_rows,
            anchor_rows=anchor_rows,
            max_regression=max_regression,
        )

    against = f"version {serving_version}" if serving_version else "no serving version"
    if serving_version is not None and not new.holdout > serving.holdout:
        return verdict(
            "no_improvement",
            f"does not beat {against} on {holdout_rows} held-out rows of epoch {epoch} "
            f"({new.holdout:.4f} vs {serving.holdout:.4f})",
        )
    anchor_note: str
    if anchor_rows < min_anchor_rows:
        anchor_note = f"anchor set of epoch {epoch} still filling ({anchor_rows}/{min_anchor_rows})"
    elif serving_version is not None and new.anchor < serving.anchor - max_regression:
        return verdict(
            "anchor_regression",
            f"regresses the anchor set of epoch {epoch} by {serving.anchor - new.anchor:.4f} "
            f"> maxRegression {max_regression} ({new.anchor:.4f} vs {serving.anchor:.4f} "
            f"of {against}, {anchor_rows} rows)",
        )
    else:
        anchor_note = (
            f"anchor set {new.anchor:.4f} vs {serving.anchor:.4f} within maxRegression "
            f"{max_regression}"
        )
    return verdict(
        "beats",
        f"beats {against} on {holdout_rows} held-out rows of epoch {epoch} "
        f"({new.holdout:.4f} vs {serving.holdout:.4f}); {anchor_note}",
    )


def _clean(value: float) -> float:
    return round(float(value), 6) if np.isfinite(value) else float("nan")
