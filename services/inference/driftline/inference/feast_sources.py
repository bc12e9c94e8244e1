"""Features served from Feast's Redis online store (`source.feast`), before the model runs.

Features are grouped by (project, join keys, maxAgeSeconds): one `FeastOnlineReader`
per group, one read (one round trip) per group for the rows of every request that
reaches `fill` in one event-loop turn; the groups are read concurrently. Each join
key's value is the row's value of the request field its `entityKeys[].field` names
(`entity_id` unless the spec names another; an int64/int32 key takes it as a decimal
string). A value of a field other than `entity_id` that cannot be its key (no integer,
out of range) refuses the request (422 naming the field and row); an `entity_id` that
cannot be is served as a missing entity (it names the entity elsewhere too).

Per row and feature, a value is served when Feast has a fresh non-null number (int,
float, bool as 1/0); otherwise the source's default, counted in
`driftline_inference_feature_source_errors_total` by outcome: `missing` (no value for a
join key, entity or feature not in the store, a null, an entity id that is no integer
for an integer key), `stale` (older than maxAgeSeconds) or `mistyped` (a string or bytes
value). These never refuse a request. When Feast's Redis cannot be read (error,
timeout, a value the reader cannot decode), `onUnavailable` applies as for aggregates:
the default (`defaulted`) or a 503 (`refused`).

Per request, the lookup costs little Python: each entity's Redis key is built once and
kept (a bounded LRU per reader), the turn's answer is handed to each request whole with
where its rows start (no copy), and `fill` walks precomputed (feature, column) pairs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
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
from driftline.inference.errors import FeatureSourceUnavailableError, InvalidInputError
from driftline.inference.turn_batch import TurnBatch

log = logging.getLogger(__name__)

GroupKey = tuple[str, tuple[tuple[str, str, str], ...], int | None]
"""(project, sorted (joinKey, type, field), maxAgeSeconds): the features one reader reads."""

OUTCOMES = ("missing", "stale", "mistyped", "defaulted", "refused")

KEY_CACHE_ENTRIES = 65536
"""Entities whose Redis key each reader keeps (least recently used dropped)."""

Keys = tuple[bytes | None, ...]
"""A row's Redis key in each group (None: a row with no key there), in group order."""

Read = dict[GroupKey, FeastRows]
"""What one turn read: each group's rows, for the entities of every request of the turn."""

Part = tuple[Read, int]
"""A request's part of a turn's read: the whole read and the index of its first row."""


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


class BadJoinKeyError(ValueError):
    """A request field's value that cannot be its join key's (the field: `field`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def entity_row(
    values: Sequence[str | None], keys: tuple[tuple[str, str, str], ...]
) -> dict[str, Any]:
    """The join keys' values from a row's values of their fields, in `keys` order.

    None where a value is missing, or where an entity_id cannot be its key; any other
    field's value that cannot be raises `BadJoinKeyError`."""
    row: dict[str, Any] = {}
    for value, (name, kind, field) in zip(values, keys, strict=True):
        key: Any = value
        if value is not None and kind in ("int64", "int32"):
            try:
                key = int(value)
            except ValueError:
                key = None
            else:
                limit = 2**63 if kind == "int64" else 2**31
                if not -limit <= key < limit:
                    key = None
            if key is None and field != "entity_id":
                raise BadJoinKeyError(
                    field, f"{value!r} is no {kind} (the Feast join key {name!r})"
                )
        elif value is not None and kind == "bytes":
            key = value.encode()
        row[name] = key
    return row


class FeastFeatures:
    """Fills the columns of a model's `source.feast` features, batch by batch."""

    def __init__(self, features: Sequence[FeastFeature]) -> None:
        self.features = list(features)
        self.groups = group(self.features)
        self.readers: dict[GroupKey, FeastOnlineReader] = {}
        self._keys: dict[GroupKey, Callable[..., bytes | None]] = {}
        """Per group: its fields' values of a row -> the row's Redis key (None: no key),
        memoized."""
        self._fields = {key: tuple(field for _, _, field in key[1]) for key in self.groups}
        """Per group: the request fields of its join keys, in the group's key order."""
        self._columns = {
            key: [(f.ref, f.column, f.source.default, f.name) for f in members]
            for key, members in self.groups.items()
        }
        """Per group: (ref, column, default, name) of its features, for `fill`."""
        self.client: Any = None
        self._counters = {
            (f.name, outcome): metrics.feature_source_errors_total.labels(f.name, outcome)
            for f in self.features
            for outcome in OUTCOMES
        }
        self._batch: TurnBatch[Keys, Read, Part]
        self._batch = TurnBatch(
            self._read,
            part_of,
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
        self._keys = {}
        for (project, keys, max_age), members in self.groups.items():
            refs = list(dict.fromkeys(f.ref for f in members))
            reader = FeastOnlineReader(
                client,
                project,
                [JoinKey(name, kind) for name, kind, _ in keys],
                refs,
                max_age_seconds=max_age,
            )
            self.readers[(project, keys, max_age)] = reader
            self._keys[(project, keys, max_age)] = redis_keys(reader, keys)

    async def close(self, close_client: bool = True) -> None:
        await self._batch.close()
        if close_client and self.client is not None:
            await self.client.aclose()

    async def fill(
        self,
        rows: Rows,
        entity_ids: Sequence[str | None],
        fields: Mapping[str, Sequence[str | None]] | None = None,
    ) -> None:
        """Write the served values into `rows.numeric` (the caller rewrites logged values);
        `fields` holds per row the request fields join keys read (besides `entity_id`)."""
        assert rows.numeric is not None
        numeric = rows.numeric
        part = await self._batch.submit(self.entity_keys(rows.n, entity_ids, fields or {}))
        if part is None:
            self._unavailable()
            for f in self.features:
                numeric[:, f.column] = f.source.default
            return
        read, first = part
        counts: dict[tuple[str, str], int] = {}
        for key, columns in self._columns.items():
            found = read[key]
            for ref, column, default, name in columns:
                values, statuses = found.values[ref], found.statuses[ref]
                for row in range(rows.n):
                    at = first + row
                    value, outcome = served_value(values[at], statuses[at])
                    numeric[row, column] = default if value is None else value
                    if outcome is not None:
                        counts[(name, outcome)] = counts.get((name, outcome), 0) + 1
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

    def entity_keys(
        self,
        n: int,
        entity_ids: Sequence[str | None],
        fields: Mapping[str, Sequence[str | None]],
    ) -> list[Keys]:
        """Per row, its Redis key in each group; a field's value that cannot be its join
        key's refuses the request (`InvalidInputError` naming the field and row)."""
        columns = []
        for key, names in self._fields.items():
            given = [
                entity_ids if name == "entity_id" else fields.get(name) or [None] * n
                for name in names
            ]
            make = self._keys[key]
            try:
                columns.append(list(map(make, *given)))
            except BadJoinKeyError:
                for row, values in enumerate(zip(*given, strict=True)):
                    try:
                        make(*values)
                    except BadJoinKeyError as exc:
                        where = exc.field if n == 1 else f"{exc.field}[{row}]"
                        raise InvalidInputError(str(exc), field=where) from None
                raise
        return list(zip(*columns, strict=True))

    # --- one read per group per loop turn ------------------------------------------------

    async def _read(self, rows: list[Keys]) -> Read:
        """Each group's rows for the entities of every request of one event-loop turn."""
        groups = list(self.readers)
        reads = [
            self.readers[g].aread_keys([keys[i] for keys in rows]) for i, g in enumerate(groups)
        ]
        answers = [await reads[0]] if len(reads) == 1 else await asyncio.gather(*reads)
        return dict(zip(groups, answers, strict=True))


def redis_keys(
    reader: FeastOnlineReader, keys: tuple[tuple[str, str, str], ...]
) -> Callable[..., bytes | None]:
    """A row's values of the keys' fields -> the reader's Redis key for it, the last
    KEY_CACHE_ENTRIES kept."""

    @functools.lru_cache(maxsize=KEY_CACHE_ENTRIES)
    def redis_key(*values: str | None) -> bytes | None:
        return reader.redis_key(entity_row(values, keys))

    return redis_key


def part_of(read: Read, start: int, stop: int) -> Part:
    """A request's rows `start` to `stop` of the turn's read, without copying them."""
    return read, start
