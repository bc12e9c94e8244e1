"""What the work claimed for one request amounts to: scores, a shadow agreement,
a labeled example.

Pure functions over a request's state (see lua/prelude.lua). Phase 1 decides in
Redis which work is claimed; these compute what it adds, in Python, with the
shared `quality_sums` the rollout controller's numbers are defined by (each group's
summed in one loop).

- Every prediction (any variant) that met the outcome inside the window is scored
  against it, once per (request id, variant).
- The labeled example is built from the served prediction: variant `stable`, else
  `candidate`. Shadow and baseline predictions were scored beside it, not served.
- Shadow agreement compares `stable` with `shadow` (else `candidate`) on the same
  request; it needs no outcome.
- A scored prediction also counts in the group of each segment its features fall
  in (`segments`), with `segment_fields`.
- A prediction the exploration policy answered (`explored`) is scored under the
  variant `explored` of its version instead, and in no segment: the outcome followed
  the policy's decision, not the model's, so the rollout's evidence (stable,
  candidate) leaves it out, and the dashboard sets its accuracy beside the
  exploited traffic's (`spec.training.exploration`).

A batch plans hundreds of claims, so the sums are added in place (`Share`) and
each stored record is decoded at most once per claim.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from driftline.api.events import LabeledExample, Outcome, Prediction
from driftline.common.redis_state import Scored, quality_sums, segment_fields
from driftline.joiner.segments import Segment, place_all
from driftline.joiner.store import State

log = logging.getLogger(__name__)

QUALITY_FIELDS: dict[str, tuple[str, ...]] = {
    "classification": ("count", "correct", "log_loss", "log_loss_count"),
    "regression": ("count", "abs_error", "sq_error"),
}

EXPLORED = "explored"
"""The quality variant of predictions the exploration policy answered."""

# (version, variant) -> field -> sum; (stable version, candidate version) -> [compared, agreed]
QualitySums = dict[tuple[str, str], dict[str, float]]
AgreementSums = dict[tuple[str, str], list[int]]
# (version, variant, segment, group) -> field -> sum
SegmentSums = dict[tuple[str, str, str, str], dict[str, float]]


@dataclass(frozen=True)
class Scoring:
    """How a scored prediction is counted: the task, and the segments it falls in."""

    task: str
    tolerance: float = 0.01
    segments: tuple[Segment, ...] = ()
    binary: bool = False
    """Binary classification: positives are counted per segment (precision, recall)."""


def _add_sums(into: dict[str, float], fields: Mapping[str, float]) -> None:
    for name, value in fields.items():
        into[name] = into.get(name, 0.0) + value


class Share:
    """What a set of claims adds to the live quality and agreement counters.

    A scored prediction is kept as a tuple until `quality` is read, then all of a
    group's are summed in one loop (`quality_sums`): no dict updates per record."""

    __slots__ = ("_quality", "_scored", "agreement", "segments")

    def __init__(
        self,
        quality: QualitySums | None = None,
        agreement: AgreementSums | None = None,
        segments: SegmentSums | None = None,
    ) -> None:
        self._quality: QualitySums = quality if quality is not None else {}
        self._scored: dict[tuple[str, str, str], list[Scored]] = {}
        self.agreement: AgreementSums = agreement if agreement is not None else {}
        self.segments: SegmentSums = segments if segments is not None else {}

    @property
    def quality(self) -> QualitySums:
        if self._scored:
            for (version, variant, task), scored in self._scored.items():
                sums = self._quality.get((version, variant))
                if sums is None:
                    sums = self._quality[(version, variant)] = {}
                quality_sums(sums, task, scored)
            self._scored = {}
        return self._quality

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Share):
            return NotImplemented
        return (self.quality, self.agreement, self.segments) == (
            other.quality, other.agreement, other.segments,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"Share(quality={self.quality!r}, agreement={self.agreement!r}, "
            f"segments={self.segments!r})"
        )

    def score(
        self, version: str, variant: str, task: str, prediction: Prediction, label: float
    ) -> None:
        scored = self._scored.get((version, variant, task))
        if scored is None:
            scored = self._scored[(version, variant, task)] = []
        scored.append((prediction.output, label, prediction.scores))

    def score_segment(
        self, version: str, variant: str, segment: str, group: str, fields: Mapping[str, float]
    ) -> None:
        _add_sums(self.segments.setdefault((version, variant, segment, group), {}), fields)

    def compare(self, stable_version: str, candidate_version: str, agreed: bool) -> None:
        counts = self.agreement.get((stable_version, candidate_version))
        if counts is None:
            counts = self.agreement[(stable_version, candidate_version)] = [0, 0]
        counts[0] += 1
        counts[1] += agreed


# The state holds only records that were validated on arrival (`events.decode`):
# read them back with plain decoders, without checking them again.
_read_prediction = msgspec.json.Decoder(Prediction).decode
_read_outcome = msgspec.json.Decoder(Outcome).decode


def _read(request_id: str, variant: str, payload: str) -> Prediction | None:
    try:
        return _read_prediction(payload)
    except msgspec.MsgspecError as exc:  # only a foreign writer gets here
        log.error("stored prediction %s/%s unreadable: %s", request_id, variant, exc)
        return None


def outcome_of(request_id: str, state: State) -> Outcome | None:
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
        flags=prediction.flags,
        explored=prediction.explored,
        served=prediction.served,
        propensity=prediction.propensity,
    )


def plan_claim(
    request_id: str,
    state: State,
    claimed: Sequence[str],
    scoring: Scoring,
    share: Share,
) -> LabeledExample | None:
    """Add to `share` what the work claimed for one request (`s:<variant>`, `a`,
    `e`) amounts to, computed from its state; return its labeled example, if `e`
    was claimed."""
    task, tolerance = scoring.task, scoring.tolerance
    outcome = outcome_of(request_id, state)
    # Most claims are one served prediction meeting its outcome ("s:stable,e"):
    # each stored record is decoded once, however many claims read it.
    decoded: dict[str, Prediction | None] = {}
    example = None
    for name in claimed:
        if name == "a":
            stable = _prediction(request_id, state, "stable", decoded)
            other = _prediction(request_id, state, "shadow", decoded) or _prediction(
                request_id, state, "candidate", decoded
            )
            if stable is not None and other is not None:
                agreed = agrees(task, stable.output, other.output, tolerance)
                share.compare(stable.model_version, other.model_version, agreed)
        elif outcome is None:
            continue  # scores and the example need the outcome
        elif name == "e":
            chosen = _prediction(request_id, state, state.get("e", ""), decoded)
            if chosen is not None:
                example = labeled_example(chosen, outcome)
        elif name.startswith("s:"):
            p = _prediction(request_id, state, name[2:], decoded)
            if p is not None:
                if p.explored:
                    share.score(p.model_version, EXPLORED, task, p, outcome.label)
                    continue
                share.score(p.model_version, name[2:], task, p, outcome.label)
                if scoring.segments:
                    by_group = segment_fields(task, scoring.binary, p.output, outcome.label)
                    for segment, group in place_all(scoring.segments, p.features):
                        share.score_segment(p.model_version, name[2:], segment, group, by_group)
    return example


def _prediction(
    request_id: str, state: State, variant: str, decoded: dict[str, Prediction | None]
) -> Prediction | None:
    if variant in decoded:
        return decoded[variant]
    payload = state.get("p:" + variant)
    p = decoded[variant] = None if payload is None else _read(request_id, variant, payload)
    return p
