"""Features the client does not send: their values found at serving, before the model runs.

A feature with `source.aggregate` is a per-entity aggregate in Redis
(`driftline.common.entity_aggregates`). For the rows of every request that reaches
`fill` in one event-loop turn, one Lua script (one round trip) reads, and for
request-feature aggregates also updates, every entity's windows; the values are then
written into the rows: the model input and the row values the prediction log
records are the same numbers, so the joiner, the trainer and the drift monitor see
what was served. The value of a row is the aggregate before that row is counted
(rows of one request count in their order).

Rows without an entity id get the source's default and change no state. When Redis
cannot be read, a feature with `onUnavailable: default` gets its default (counted in
`driftline_inference_feature_source_errors_total`); one with `refuse` fails the
request with a 503. A model without sourced features builds none of this.

Features with `source.feast` are read from Feast's online store by
`driftline.inference.feast_sources`, concurrently with the aggregate script; their
served values are logged the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from driftline.api.spec import OUTCOME, AggregateSource, DynamicModelSpec
from driftline.common.entity_aggregates import (
    EXCHANGE,
    Op,
    Step,
    Tally,
    parse_reply,
    script_args,
    state_key,
    state_name,
    value_of,
)
from driftline.inference import metrics
from driftline.inference.contract import FeatureContract, Rows
from driftline.inference.errors import FeatureSourceUnavailableError
from driftline.inference.feast_sources import FeastFeatures, feast_features
from driftline.inference.turn_batch import TurnBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Sourced:
    name: str
    column: int
    """Its column in the numeric input."""
    source: AggregateSource
    refuse: bool
    """onUnavailable: refuse (else the default is served)."""


class SourcedFeatures:
    """Fills the columns of a model's sourced features (aggregates, Feast), batch by batch."""

    def __init__(self, spec: DynamicModelSpec, contract: FeatureContract, prefix: str) -> None:
        self.contract = contract
        self.prefix = prefix
        self.features: list[_Sourced] = []
        for feature in spec.features:
            source = feature.source
            if source is None or source.aggregate is None:
                continue
            _, column = contract.column[feature.name]
            self.features.append(
                _Sourced(feature.name, column, source.aggregate, source.on_unavailable == "refuse")
            )
        # One state per (events, window): features sharing it read one tally per row.
        self._states: dict[str, tuple[AggregateSource, Op, int | None]] = {}
        for f in self.features:
            key = state_name(f.source)
            of = f.source.of
            if of == OUTCOME:  # updated by the joiner when it joins a label
                self._states.setdefault(key, (f.source, "read", None))
            else:
                of_column = None if of is None else contract.column[of][1]
                self._states.setdefault(key, (f.source, "read-add", of_column))
        self._errors = {
            (f.name, outcome): metrics.feature_source_errors_total.labels(f.name, outcome)
            for f in self.features
            for outcome in ("defaulted", "refused")
        }
        self.client: Any = None
        self._script: Any = None
        self._batch: TurnBatch[Step, list[Tally], list[Tally]] = TurnBatch(
            self._exchange,
            lambda tallies, start, stop: tallies[start:stop],
            timeout_seconds=0.1,
            errors=(RedisError, OSError, TimeoutError),
            name="feature sources",
            fallback="applying onUnavailable",
        )
        from_feast = feast_features(spec, contract)
        self.feast = FeastFeatures(from_feast) if from_feast else None
        """The `source.feast` features; None when there are none."""

    @staticmethod
    def for_model(
        spec: DynamicModelSpec, contract: FeatureContract, prefix: str
    ) -> SourcedFeatures | None:
        """None for a model whose features all come from the request (the usual case)."""
        if not any(f.source is not None for f in spec.features):
            return None
        return SourcedFeatures(spec, contract, prefix)

    def connect(self, client: Any, timeout_seconds: float = 0.1, feast_client: Any = None) -> None:
        """Use this asyncio Redis client (and `feast_client` for Feast's store, this one
        when not given); a read slower than the timeout fails."""
        self.client = client
        self._script = client.register_script(EXCHANGE)
        self._batch.timeout_seconds = timeout_seconds
        if self.feast is not None:
            self.feast.connect(client if feast_client is None else feast_client, timeout_seconds)

    async def close(self) -> None:
        await self._batch.close()
        if self.feast is not None:
            await self.feast.close(close_client=self.feast.client is not self.client)
        if self.client is not None:
            await self.client.aclose()

    async def fill(
        self,
        rows: Rows,
        entity_ids: Sequence[str | None],
        fields: Mapping[str, Sequence[str | None]] | None = None,
    ) -> None:
        """Write the sourced values of `rows` into them (model input and logged values);
        `fields`: per row, the request fields Feast join keys read."""
        assert rows.numeric is not None  # sourced features are numeric
        if self.feast is None:
            await self._fill_aggregates(rows, entity_ids)
        elif not self.features:
            await self.feast.fill(rows, entity_ids, fields)
        else:
            done = await asyncio.gather(
                self._fill_aggregates(rows, entity_ids),
                self.feast.fill(rows, entity_ids, fields),
                return_exceptions=True,
            )
            for outcome in done:
                if isinstance(outcome, BaseException):
                    raise outcome
        self._rewrite_values(rows)

    async def _fill_aggregates(self, rows: Rows, entity_ids: Sequence[str | None]) -> None:
        assert rows.numeric is not None
        if not self.features:
            return
        steps: list[Step] = []
        at: list[tuple[str, int]] = []  # (state, row) of each reading step
        for state, (source, op, column) in self._states.items():
            for row, entity in enumerate(entity_ids):
                if entity is None:
                    continue
                value = 0.0 if column is None else float(rows.numeric[row, column])
                key = state_key(self.prefix, source, entity)
                steps.append(Step(key, op, source.window_seconds, value))
                at.append((state, row))
        tallies: dict[tuple[str, int], Tally] = {}
        if steps:
            answered = await self._batch.submit(steps)
            if answered is None:
                self._unavailable()
            else:
                tallies = dict(zip(at, answered, strict=True))
        numeric = rows.numeric
        for f in self.features:
            state = state_name(f.source)
            for row in range(rows.n):
                tally = tallies.get((state, row))
                numeric[row, f.column] = (
                    f.source.default if tally is None else value_of(tally, f.source)
                )

    def _unavailable(self) -> None:
        """Apply each feature's onUnavailable: refuse the request, or go on with defaults."""
        refusing = [f for f in self.features if f.refuse]
        for f in refusing or self.features:
            self._errors[(f.name, "refused" if refusing else "defaulted")].inc()
        if refusing:
            raise FeatureSourceUnavailableError(
                f"{refusing[0].name} comes from Redis, which cannot be read now "
                "(source.onUnavailable: refuse)",
                field=f"features.{refusing[0].name}",
            )

    # --- one script call per loop turn ----------------------------------------------------

    async def _exchange(self, steps: list[Step]) -> list[Tally]:
        """The tallies of every request's steps of one event-loop turn, in one script call."""
        keys, args = script_args(steps, time.time())
        return parse_reply(await self._script(keys=keys, args=args))

    def _rewrite_values(self, rows: Rows) -> None:
        """The logged row values take the served numbers (as float32 made them)."""
        assert rows.numeric is not None
        served = rows.numeric
        columns = [f.column for f in self.features]  # numeric values come first in a row
        if self.feast is not None:
            columns += [f.column for f in self.feast.features]
        values = []
        for row, original in enumerate(rows.values):
            updated = list(original)
            for column in columns:
                updated[column] = float(served[row, column])
            values.append(tuple(updated))
        rows.values = values
