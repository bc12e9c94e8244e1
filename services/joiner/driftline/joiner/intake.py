"""From consumed Kafka records to a batch the join engine can take.

Every record is decoded and validated against the event contract here, once: a
record that fails (not JSON, another schema version, another model, no request id)
goes to the dead-letter topic with the reason and never reaches Redis, so the
join state holds only valid events and the engine reads them back unchecked.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, get_args

from driftline.api.events import EventError, Outcome, Prediction, Variant, decode
from driftline.api.spec import TopicsSpec
from driftline.joiner import metrics
from driftline.joiner.engine import BatchResult
from driftline.joiner.store import Arrival

log = logging.getLogger(__name__)

_PREDICTED = {variant: f"p:{variant}" for variant in get_args(Variant)}
"""A prediction's field in the join state, by variant."""
_new = tuple.__new__


@dataclass
class Batch:
    """One consumed batch on its way through the joiner."""

    arrivals: list[Arrival]
    origins: list[tuple[Any, str]]
    """Beside each arrival: its record and side ("prediction" or "outcome")."""
    dead: list[tuple[Any, str]]
    """Records for the dead-letter topic, with the reason."""
    reached: dict[tuple[str, int], int]
    """The last offset read per (topic, partition)."""
    started: float
    future: Future[BatchResult] | None = None
    result: BatchResult | None = None
    counted: bool = False

    @property
    def sources(self) -> set[str]:
        return {a.source for a in self.arrivals}


class Intake:
    """Decodes records of the predictions and outcomes topics of one model."""

    def __init__(self, topics: TopicsSpec, model_name: str) -> None:
        self.predictions = topics.predictions
        self.model_name = model_name
        self._sources: dict[tuple[str, int], str] = {}

    def batch(self, records: list[Any], started: float) -> Batch:
        arrivals: list[Arrival] = []
        origins: list[tuple[Any, str]] = []
        dead: list[tuple[Any, str]] = []
        reached: dict[tuple[str, int], int] = {}
        invalid: Counter[str] = Counter()
        predictions, model, sources = self.predictions, self.model_name, self._sources
        # Records come in runs from one partition: what follows from a record's
        # topic and partition is looked up once per run.
        topic: str | None = None
        partition = -1
        place = ("", -1)
        source = side = ""
        for msg in records:
            if msg.error() is not None:
                log.warning("consumer: %s", msg.error())
                continue
            if msg.partition() != partition or msg.topic() != topic:
                topic, partition = msg.topic(), msg.partition()
                place = (topic, partition)
                source = sources.get(place) or sources.setdefault(place, f"{topic}:{partition}")
                side = "prediction" if topic == predictions else "outcome"
            reached[place] = msg.offset()
            value = msg.value()
            try:
                if value is None:
                    raise EventError("empty record")
                if side == "prediction":
                    p = decode(value, Prediction)
                    if p.model != model:
                        raise EventError(f"wrong model: {p.model!r}, expected {model!r}")
                    request_id, name = p.request_id, _PREDICTED[p.variant]
                else:
                    request_id, name = decode(value, Outcome).request_id, "o"
                if not request_id:
                    raise EventError("request_id is empty")
            except EventError as exc:
                invalid[side] += 1
                dead.append((msg, exc.reason))
                continue
            # tuple.__new__ skips the keyword handling of the named tuple's own
            # constructor: a batch makes thousands.
            arrivals.append(_new(Arrival, (request_id, name, value.decode(), source)))
            origins.append((msg, side))
        for side, n in invalid.items():
            metrics.messages.labels(side, "invalid").inc(n)
        return Batch(arrivals, origins, dead, reached, started)
