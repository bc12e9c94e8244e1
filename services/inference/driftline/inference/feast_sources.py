"""Features served from Feast's Redis online store (`source.feast`), before the model runs.

Features are grouped by (project, join keys, maxAgeSeconds): one `FeastOnlineReader`
per group, one read (one round trip) per group for the rows of every request that
reaches `fill` in one event-loop turn; the groups are read concurrently. The entity
key's value is the row's `entity_id` (an int64/int32 join key takes it as a decimal
string).

Per row and feature, a value is served when Feast has a fresh non-null number (int,
float, bool as 1/0); otherwise the source's default, counted in
`driftline_inference_feature_source_errors_total` by outcome: `missing` (no entity id,
entity or feature not in the store, a null, an entity id that is no integer for an
integer key), `stale` (older than maxAgeSeconds) or `mistyped` (a string or bytes
value). These never refuse a request. When Feast's Redis cannot be read (error,
timeout, a value the reader cannot decode), `onUnavailable` applies as for aggregates:
the default (`defaulted`) or a 503 (`refused`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from driftline.api.spec import DynamicModelSpec, FeastSource
from driftline.common.feast_online import (
    FeastOnlineError,
    FeastOnlineReader,
    FeastRows,
    JoinKey,
    served_value,
)
from driftline.inference import metrics
from driftline.inference.contract import FeatureContract, Rows
from driftline.inference.errors import FeatureSourceUnavailableError
from driftline.inference.turn_batch import TurnBatch

log = logging.getLogger(__name__)

GroupKey = tuple[str, tuple[tuple[str, str, str], ...], int | None]
"""(project, sorted (joinKey, type, field), maxAgeSeconds): the features one reader reads."""

OUTCOMES = ("missing", "stale", "mistyped", "defaulted", "refused")


@dataclass(frozen=True, slots=True)
class FeastFeature:
    name: str
    column: int
    """Its column in the numeric input."""
    source: FeastSource
    refuse: bool
    """onUnavailable: refuse (else the default is served)."""

    @property
    def ref(self) -> str:
        return f"{self.source.feature_view}:{self.source.name}"


def group_key(source: FeastSource) -> GroupKey:
    keys = tuple(sorted((k.join_key, k.type, k.field) for k in source.entity_keys))
    return (source.project, keys, source.max_age_seconds)


def feast_features(spec: DynamicModelSpec, contract: FeatureContract) -> list[FeastFeature]:
    out = []
    for feature in spec.features:
        source = feature.source
        if source is None or source.feast is None:
            continue
        _, column = contract.column[feature.name]
        out.append(
            FeastFeature(feature.name, column, source.feast, source.on_unavailable == "refuse")
        )
    return out


def group(features: Sequence[FeastFeature]) -> dict[GroupKey, list[FeastFeature]]:
    """The features each reader reads, in spec order."""
    groups: dict[GroupKey, list[FeastFeature]] = {}
    for f in features:
        groups.setdefault(group_key(f.source), []).append(f)
    return groups


def entity_row(entity: str | None, keys: tuple[tuple[str, str, str], ...]) -> dict[str, Any]:
    """The join keys' values from a row's entity_id (None where it cannot be one)."""
    fields = {"entity_id": entity}  # the one per-row request field (spec: entityKeys.field)
    row: dict[str, Any] = {}
    for name, kind, field in keys:
        value: Any = fields[field]
        if value is not None and kind in ("int64", "int32"):
            try:
                value = int(value)
            except ValueError:
                value = None
            else:
                limit = 2**63 if kind == "int64" else 2**31
                if not -limit <= value < limit:
                    value = None
        elif value is not None and kind == "bytes":
            value = value.encode()
        row[name] = value
    return row


class FeastFeatures:
    """Fills the columns of a model's `source.feast` features, batch by batch."""

    def __init__(self, features: Sequence[FeastFeature]) -> None:
        self.features = list(features)
        self.groups = group(self.features)
        self.readers: dict[GroupKey, FeastOnlineReader] = {}
        self.client: Any = None
        self._counters = {
            (f.name, outcome): metrics.feature_source_errors_total.labels(f.name, outcome)
            for f in self.features
            for outcome in OUTCOMES
        }
        self._batch: TurnBatch[str | None, dict[GroupKey, FeastRows], dict[GroupKey, FeastRows]]
        self._batch = TurnBatch(
            self._read,
            cut_rows,
            timeout_seconds=0.1,
            errors=(RedisError, OSError, TimeoutError, FeastOnlineError),
            name="Feast online store",
            fallback="applying onUnavailable",
        )

    def connect(self, client: Any, timeout_seconds: float = 0.1) -> None:
        """Read with this asyncio Redis client (Feast's store); slower reads fail."""
        self.client = client
        self._batch.timeout_seconds = timeout_seconds
        self.readers = {}
        for (project, keys, max_age), members in self.groups.items():
            refs = list(dict.fromkeys(f.ref for f in members))
            self.readers[(project, keys, max_age)] = FeastOnlineReader(
                client,
                project,
                [JoinKey(name, kind) for name, kind, _ in keys],
                refs,
                max_age_seconds=max_age,
            )

    async def close(self, close_client: bool = True) -> None:
        await self._batch.close()
        if close_client and self.client is not None:
            await self.client.aclose()

    async def fill(self, rows: Rows, entity_ids: Sequence[str | None]) -> None:
        """Write the served values into `rows.numeric` (the caller rewrites logged values)."""
        assert rows.numeric is not None
        numeric = rows.numeric
        read = await self._batch.submit(entity_ids)
        if read is None:
            self._unavailable()
            for f in self.features:
                numeric[:, f.column] = f.source.default
            return
        counts: dict[tuple[str, str], int] = {}
        for key, members in self.groups.items():
            found = read[key]
            for f in members:
                values, statuses = found.values[f.ref], found.statuses[f.ref]
                for row in range(rows.n):
                    value, outcome = served_value(values[row], statuses[row])
                    numeric[row, f.column] = f.source.default if value is None else value
                    if outcome is not None:
                        counts[(f.name, outcome)] = counts.get((f.name, outcome), 0) + 1
        for counted, n in counts.items():
            self._counters[counted].inc(n)

    def _unavailable(self) -> None:
        refusing = [f for f in self.features if f.refuse]
        for f in refusing or self.features:
            self._counters[(f.name, "refused" if refusing else "defaulted")].inc()
        if refusing:
            raise FeatureSourceUnavailableError(
                f"{refusing[0].name} comes from Feast's online store, which cannot be read "
                "now (source.onUnavailable: refuse)",
                field=f"features.{refusing[0].name}",
            )

    # --- one read per group per loop turn ------------------------------------------------

    async def _read(self, entities: list[str | None]) -> dict[GroupKey, FeastRows]:
        """Each group's rows for the entities of every request of one event-loop turn."""
        keys = list(self.readers)
        answers = await asyncio.gather(
            *(self.readers[k].aread([entity_row(e, k[1]) for e in entities]) for k in keys)
        )
        return dict(zip(keys, answers, strict=True))


def cut_rows(read: dict[GroupKey, FeastRows], start: int, stop: int) -> dict[GroupKey, FeastRows]:
    """Rows `start` to `stop` of each group's answer."""
    return {
        key: FeastRows(
            values={ref: v[start:stop] for ref, v in rows.values.items()},
            statuses={ref: s[start:stop] for ref, s in rows.statuses.items()},
            event_times={view: t[start:stop] for view, t in rows.event_times.items()},
        )
        for key, rows in read.items()
    }
