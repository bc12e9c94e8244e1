"""What the work claimed for one request amounts to: scores, a shadow agreement,
a labeled example.

Pure functions over a request's hash (see lua/prelude.lua). Phase 1 decides in
Redis which work is claimed; these compute what it adds, in Python, with the
shared `quality_fields` the rollout controller's numbers are defined by.

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


@dataclass(frozen=True, slots=True)
class Score:
    request_id: str
    variant: str
    version: str
    fields: dict[str, float]


@dataclass(frozen=True, slots=True)
class Agreement:
    request_id: str
    stable_version: str
    candidate_version: str
    agreed: bool


# The state holds only records that were validated on arrival (`events.decode`):
# read them back with plain decoders, without checking them again.
_read_prediction = msgspec.json.Decoder(Prediction).decode
_read_outcome = msgspec.json.Decoder(Outcome).decode


def predictions_of(request_id: str, state: dict[str, str]) -> dict[str, Prediction]:
    """The predictions that arrived inside the window, by variant."""
    found: dict[str, Prediction] = {}
    for name, payload in state.items():
        if name.startswith("p:"):
            p = _read(request_id, name[2:], payload)
            if p is not None:
                found[name[2:]] = p
    return found


def _read(request_id: str, variant: str, payload: str) -> Prediction | None:
    try:
        return _read_prediction(payload)
    except msgspec.MsgspecError as exc:  # only a foreign writer gets here
        log.error("stored prediction %s/%s unreadable: %s", request_id, variant, exc)
        return None


def outcome_of(request_id: str, state: dict[str, str]) -> Outcome | None:
    payload = state.get("o")
    if payload is None:
        return None
    try:
        return _read_outcome(payload)
    except msgspec.MsgspecError as exc:
        log.error("stored outcome %s unreadable: %s", request_id, exc)
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


def plan_claim(
    request_id: str, state: dict[str, str], claimed: list[str], task: str, tolerance: float
) -> tuple[list[Score], Agreement | None, LabeledExample | None]:
    """The effects of the work claimed for one request (`s:<variant>`, `a`, `e`),
    computed from its state: scores, agreement, labeled example."""
    decoded: dict[str, Prediction | None] = {}

    def prediction(variant: str) -> Prediction | None:
        if variant not in decoded:
            payload = state.get(f"p:{variant}")
            decoded[variant] = None if payload is None else _read(request_id, variant, payload)
        return decoded[variant]

    outcome = outcome_of(request_id, state) if "o" in state else None
    scores: list[Score] = []
    agreement = None
    example = None
    for name in claimed:
        if name.startswith("s:"):
            p = prediction(name[2:])
            if p is not None and outcome is not None:
                fields = quality_fields(task, p.output, outcome.label, p.scores)
                scores.append(Score(request_id, name[2:], p.model_version, fields))
        elif name == "e":
            chosen = prediction(state.get("e", ""))
            if chosen is not None and outcome is not None:
                example = labeled_example(chosen, outcome)
        elif name == "a":
            stable = prediction("stable")
            other = prediction("shadow") or prediction("candidate")
            if stable is not None and other is not None:
                agreed = agrees(task, stable.output, other.output, tolerance)
                agreement = Agreement(request_id, stable.model_version, other.model_version, agreed)
    return scores, agreement, example
