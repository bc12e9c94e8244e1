"""Joined labels into the per-entity outcome aggregates that inference reads at serving.

A feature with `source.aggregate.of: outcome` (say, an entity's mean label over a
week) is read by inference and never updated there: the label of a request is not
known when it is served. The joiner adds each label once its example is durable and
its offsets are committed, at the joiner's clock, so the value served for a later
request holds it and the value served for this request never did.

The update is at most once: a crash between the commit and the update, or Redis
failing then, loses that label for the aggregate (counted as failed), while a batch
replayed after a crash is not added twice. Labels of requests without an entity id
change nothing. Layout and script: `driftline.common.entity_aggregates`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from driftline.api.events import LabeledExample
from driftline.api.spec import OUTCOME, AggregateSource, DynamicModelSpec
from driftline.common.entity_aggregates import EXCHANGE, Step, script_args, state_key, state_name
from driftline.joiner import metrics

log = logging.getLogger(__name__)


class OutcomeAggregates:
    """Adds labels to every outcome aggregate a model's features read (one script per batch)."""

    def __init__(self, sources: Sequence[AggregateSource], prefix: str, client: Any) -> None:
        # Features that aggregate outcomes over one window share one state.
        self.states = list({state_name(s): s for s in sources}.values())
        self.prefix = prefix
        self._script = client.register_script(EXCHANGE)

    @staticmethod
    def for_model(spec: DynamicModelSpec, prefix: str, client: Any) -> OutcomeAggregates | None:
        """None for a model with no outcome aggregate (the usual case)."""
        sources = [
            f.source.aggregate
            for f in spec.features
            if f.source is not None
            and f.source.aggregate is not None
            and f.source.aggregate.of == OUTCOME
        ]
        return OutcomeAggregates(sources, prefix, client) if sources else None

    def add(self, examples: Sequence[LabeledExample], now: float) -> None:
        steps = [
            Step(state_key(self.prefix, source, e.entity_id), "add", source.window_seconds, e.label)
            for e in examples
            if e.entity_id is not None
            for source in self.states
        ]
        if not steps:
            return
        keys, args = script_args(steps, now)
        try:
            self._script(keys=keys, args=args)
        except RedisError as exc:
            log.warning("%d labels not added to outcome aggregates: %s", len(steps), exc)
            metrics.outcome_aggregates.labels("failed").inc(len(steps))
            return
        metrics.outcome_aggregates.labels("added").inc(len(steps))
