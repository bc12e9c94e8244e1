"""What one request's state owes: scores, a shadow agreement, a labeled example.

Pure functions over the hash phase 1 returned (see lua/prelude.lua). They say what
*could* be counted or emitted; phase 2 decides what actually is, by its markers.

- Every prediction (any variant) that met the outcome inside the window is scored
  against it, once per (request id, variant).
- The labeled example is built from the served prediction: variant `stable`, else
  `candidate`. Shadow and baseline predictions were scored beside it, not served.
- Shadow agreement compares `stable` with `shadow` (else `candidate`) on the same
  request; it needs no outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec

from driftline.api.events import LabeledExample, Outcome, Prediction
from driftline.common.state import quality_fields

log = logging.getLogger(__name__)

QUALITY_FIELDS: dict[str, tuple[str, ...]] = {
    "classification": ("count", "correct", "log_loss", "log_loss_count"),
    "regression": ("count", "abs_error", "sq_error"),
}
SERVED_VARIANTS = ("stable", "candidate")


@dataclass(frozen=True)
class Score:
    request_id: str
    variant: str
    version: str
    fields: dict[str, float]


@dataclass(frozen=True)
class Agreement:
    request_id: str
    stable_version: str
    candidate_version: str
    agreed: bool


@dataclass(frozen=True)
class Emission:
    request_id: str
    example: LabeledExample


@dataclass(frozen=True)
class RequestPlan:
    scores: list[Score]
    agreement: Agreement | None
    emission: Emission | None


# The state holds only records that were validated on arrival (`events.decode`):
# read them back with plain decoders, without checking them again.
_read_prediction = msgspec.json.Decoder(Prediction).decode
_read_outcome = msgspec.json.Decoder(Outcome).decode


def predictions_of(request_id: str, state: dict[str, str]) -> dict[str, Prediction]:
    """The predictions that arrived inside the window, by variant."""
    found: dict[str, Prediction] = {}
    for name, payload in state.items():
        if name.startswith("p:"):
            try:
                found[name[2:]] = _read_prediction(payload)
            except msgspec.MsgspecError as exc:  # only a foreign writer gets here
                log.error("stored prediction %s/%s unreadable: %s", request_id, name, exc)
    return found


def outcome_of(request_id: str, state: dict[str, str]) -> Outcome | None:
    payload = state.get("o")
    if payload is None:
        return None
    try:
        return _read_outcome(payload)
    except msgspec.MsgspecError as exc:
        log.error("stored outcome %s unreadable: %s", request_id, exc)
        return None


def served(predictions: dict[str, Prediction]) -> Prediction | None:
    for variant in SERVED_VARIANTS:
        if variant in predictions:
            return predictions[variant]
    return None


def agrees(task: str, a: float, b: float, tolerance: float) -> bool:
    if task == "classification":
        return int(a) == int(b)
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def labeled_example(prediction: Prediction, outcome: Outcome) -> LabeledExample:
    return LabeledExample(
        request_id=prediction.request_id,
        model=prediction.model,
        model_version=prediction.model_version,
        variant=prediction.variant,
        features=prediction.features,
        label=outcome.label,
        output=prediction.output,
        ts_prediction=prediction.ts,
        ts_label=outcome.ts,
        entity_id=prediction.entity_id,
        scores=prediction.scores,
    )


def plan_request(
    request_id: str, state: dict[str, str], task: str, tolerance: float
) -> RequestPlan:
    """Everything this request's state could still add (markers not yet set)."""
    predictions = predictions_of(request_id, state)
    outcome = outcome_of(request_id, state)
    scores: list[Score] = []
    emission = None
    if outcome is not None:
        for variant, p in predictions.items():
            if f"s:{variant}" not in state:
                fields = quality_fields(task, p.output, outcome.label, p.scores)
                scores.append(Score(request_id, variant, p.model_version, fields))
        chosen = served(predictions)
        if chosen is not None and "e" not in state:
            emission = Emission(request_id, labeled_example(chosen, outcome))
    agreement = None
    stable = predictions.get("stable")
    other = predictions.get("shadow") or predictions.get("candidate")
    if stable is not None and other is not None and "a" not in state:
        agreed = agrees(task, stable.output, other.output, tolerance)
        agreement = Agreement(request_id, stable.model_version, other.model_version, agreed)
    return RequestPlan(scores, agreement, emission)
