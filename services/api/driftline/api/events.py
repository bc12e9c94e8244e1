"""Event contracts on Kafka: one topic set per model, JSON values, keyed by request id.

msgspec structs decode and validate in one pass (several times faster than building
pydantic models), which matters on the prediction log and in the joiner. Every event
carries its schema version in `v`; a decoder refuses other versions instead of
guessing. Fields added later must have defaults so that older producers still decode.

A consumer never lets a bad message stop the stream: `decode` raises `EventError`
with a reason, and the consumer sends the raw bytes to the dead-letter topic.
"""

from __future__ import annotations

import math
from typing import Final, Literal, TypeVar, cast

import msgspec

SCHEMA_VERSION: Final = 1

Variant = Literal["stable", "candidate", "shadow", "baseline"]
DriftKind = Literal["covariate", "prediction", "label", "concept", "data-quality"]
FeatureValue = int | float | str | None
"""A feature value as the client sent it. `int` comes first so that JSON `5` stays the
integer 5: a categorical `zip: 5` is the category "5", while `5.0` is no category
(`driftline.common.feature_values`)."""
Features = dict[str, FeatureValue]


class Event(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=False):
    """Base of all events; `v` is the schema version."""

    v: int = SCHEMA_VERSION


class Prediction(Event, frozen=True):
    """What inference served (or scored in shadow) for one row of one request."""

    request_id: str
    model: str
    model_version: str
    variant: Variant
    features: Features
    output: float
    """Class index (classification) or predicted value (regression)."""
    ts: float
    """Seconds since the epoch, when the prediction was made."""
    entity_id: str | None = None
    scores: list[float] | None = None
    """Class probabilities (classification)."""
    flags: dict[str, str] | None = None
    """Features whose value a `onInvalid` policy changed or flagged: name -> clip, impute
    or flag (`driftline.common.feature_values.apply_policy`); None when none did."""
    explored: bool = False
    """The exploration policy answered this row (`spec.training.exploration`): the
    client was served `served`, not `output` (which stays the model's own answer)."""
    served: float | None = None
    """What the client was served when `explored`; None when it was `output`."""
    propensity: float | None = None
    """Probability the logging policy serves this row's served label (with exploration
    on; `driftline.api.exploration`)."""


class Outcome(Event, frozen=True):
    """The true label of a request, sent by the user's application when it is known."""

    request_id: str
    label: float
    """Class index (classification) or observed value (regression)."""
    ts: float


class LabeledExample(Event, frozen=True):
    """A served prediction joined with its outcome: the trainer's input."""

    request_id: str
    model: str
    model_version: str
    variant: Variant
    features: Features
    label: float
    output: float
    ts_prediction: float
    ts_label: float
    entity_id: str | None = None
    scores: list[float] | None = None
    flags: dict[str, str] | None = None
    """The prediction's `flags`."""
    explored: bool = False
    """The prediction's `explored`, `served` and `propensity`."""
    served: float | None = None
    propensity: float | None = None


class DriftEvent(Event, frozen=True):
    """The drift monitor saw a change; the trainer and the rollout act per `onDrift`."""

    event_id: str
    model: str
    model_version: str
    kind: DriftKind
    detector: str
    detected_at: float
    score: float
    features: list[str] = []
    p_value: float | None = None
    window_start: float | None = None
    window_end: float | None = None
    samples: int = 0
    alerting: bool = False
    """`drift.onDrift` has `alert`: the event is an alert (counted in
    `driftline_drift_alerts_total`, which the chart's alert rule keys on)."""


class RolloutEvent(Event, frozen=True):
    """A transition of the rollout state machine, with its reason."""

    model: str
    stage: str
    previous_stage: str
    stable_version: str | None
    candidate_version: str | None
    weight: int
    reason: str
    at: float


class EventError(ValueError):
    """A message that does not decode to the expected event; `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


E = TypeVar("E", bound=Event)

_encoder = msgspec.json.Encoder()
_decoders: dict[type[Event], msgspec.json.Decoder[Event]] = {}


class _VersionOnly(msgspec.Struct):
    v: object = None


_version_decoder = msgspec.json.Decoder(_VersionOnly)


def encode(event: Event) -> bytes:
    """JSON bytes of an event (non-finite floats are refused: JSON cannot hold them)."""
    return _encoder.encode(event)


def encode_many(events: list[E]) -> list[bytes]:
    return [_encoder.encode(e) for e in events]


def decode(data: bytes | str, kind: type[E]) -> E:
    """Decode and validate one event of `kind`, or raise `EventError` with the reason."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        event = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise EventError(_version_reason(data, kind) or f"invalid {kind.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise EventError(f"not JSON: {exc}") from exc
    except RecursionError:  # a hostile message: arrays in arrays, thousands deep
        raise EventError(f"invalid {kind.__name__}: nested too deeply to decode") from None
    if event.v != SCHEMA_VERSION:
        raise EventError(
            f"{kind.__name__} schema version {event.v} is not supported "
            f"(this consumer reads version {SCHEMA_VERSION})"
        )
    _check_finite(event)
    return cast(E, event)


def _version_reason(data: bytes | str, kind: type[Event]) -> str | None:
    """When a message fails validation, say so plainly if its version is the cause."""
    try:
        probe = _version_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    if probe.v is not None and probe.v != SCHEMA_VERSION:
        return (
            f"{kind.__name__} schema version {probe.v!r} is not supported "
            f"(this consumer reads version {SCHEMA_VERSION})"
        )
    return None


def _check_finite(event: Event) -> None:
    for name in ("output", "label", "score"):
        value = getattr(event, name, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise EventError(f"{type(event).__name__}.{name} is not a finite number")
