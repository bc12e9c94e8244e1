"""Features from a Feast online store in Redis, read directly: no Feast SDK at serving.

Feast's own SDK needs numpy>=2 (Driftline pins 1.26) and costs a registry lookup and
protobuf objects per request; Driftline instead reads the Redis layout Feast documents
and writes (`RedisOnlineStore`), which is small and stable:

    key    serialize_entity_key(entity key, version 3) + project (UTF-8)
    field  murmur3_32("<featureView>:<feature>", seed 0) as 4 little-endian bytes
           -> a serialized `feast.types.Value` message
    field  "_ts:<featureView>" -> a serialized `google.protobuf.Timestamp`: the event
           time of the row the view last wrote

An entity key (version 3) is: u32 number of join keys; per join key, sorted by name,
u32 ValueType STRING (2), u32 length, the name; then per value in the same order, u32
ValueType, u32 length, the value (int64 `<q`, int32 `<i`, string UTF-8, bytes as is).
All u32 are little-endian. Only version 3 is supported (Feast's default and the only
one it still writes); any other version is refused when the reader is built.

Values decoded here (protobuf wire format, `feast.types.Value` oneof `val`): bytes_val
(1), string_val (2), int32_val (3), int64_val (4), double_val (5), float_val (6, as the
float32 value widened to a Python float), bool_val (7); an empty message and null_val
(19) are a null. Any other field (lists, timestamps, maps...) raises `FeastOnlineError`.
Feature views whose online names carry a version suffix (`<view>_v<N>`, Feast's
optional feature-view versioning) are read by giving that name as the view.

One read is one round trip: an HMGET per entity row (every requested field of every
view, plus each view's `_ts`). A single row is one plain HMGET. For more rows, by
default (`mode="packed"`), the HMGETs are one pipeline written as one buffer the
reader packs itself (the fields' part of each command is packed once, when the reader
is built) on a connection of the client's pool, and each reply is read by the
connection's parser (hiredis, a C parser, where installed: Driftline depends on it),
skipping redis-py's per-command path (argument packing, pipeline bookkeeping, response
callbacks). `mode="script"` runs the HMGETs inside Redis in a small Lua script
(EVALSHA, loaded on first use) that answers one byte string (per field: its length,
then the bytes): fewer reply elements to parse, but Redis spends several times the
pipeline's time running it. Both need every key on one Redis (not Redis Cluster);
`mode="pipeline"` sends the HMGETs as a redis-py pipeline (a cluster client works).
Features of several views may be read together when the views share the reader's
join keys (they share the Redis hash). Decoded values are memoized by their bytes
(bounded), since feature values repeat (flags, categories, counts).

Serving reads features with `source.feast` (`driftline.api.spec.FeastSource`) through
this reader: `driftline.inference.feast_sources` groups a model's Feast features by
project, join key and max age, one reader per group (docs/features-feast.md). The
store's address is a setting of the part (one Feast Redis per deployment), not spec.
"""

from __future__ import annotations

import enum
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ENTITY_KEY_SERIALIZATION_VERSION = 3
"""The one entity-key serialization of Feast's this reader builds keys with."""

_MASK32 = 0xFFFFFFFF
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")

# feast.types.ValueType.Enum, for the join key types supported.
_JOIN_KEY_TYPES = {"bytes": 1, "string": 2, "int32": 3, "int64": 4}


# KEYS: the entity rows' Redis keys; ARGV: the hash fields. One string back: per
# field, a byte n < 254 then n bytes; 254, a u32 length, the bytes; or 255 for none.
_SCRIPT = """
local out = {}
local n = 0
local char = string.char
for i = 1, #KEYS do
  local values = redis.call('HMGET', KEYS[i], unpack(ARGV))
  for j = 1, #ARGV do
    local v = values[j]
    n = n + 1
    if not v then
      out[n] = '\\255'
    else
      local size = #v
      if size < 254 then out[n] = char(size) else out[n] = '\\254' .. struct.pack('<I', size) end
      n = n + 1
      out[n] = v
    end
  end
end
return table.concat(out)
"""
_MEMO_ENTRIES = 65536
try:  # what redis-py has hiredis answer for "no whole reply yet"
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - another layout of redis-py
    _NOT_ENOUGH_DATA = False
MODES = ("packed", "script", "pipeline")
_MISS = object()


class FeastOnlineError(ValueError):
    """A Feast online-store read Driftline cannot do (configuration or stored data)."""


class FeastStatus(enum.Enum):
    """Per value, as Feast's FieldStatus names them."""

    PRESENT = "PRESENT"
    NULL_VALUE = "NULL_VALUE"
    NOT_FOUND = "NOT_FOUND"
    OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"


def served_value(value: Any, status: FeastStatus) -> tuple[float | None, str | None]:
    """(the number to serve or None for the default, the outcome counted or None)."""
    if status is FeastStatus.OUTSIDE_MAX_AGE:
        return None, "stale"
    if status is not FeastStatus.PRESENT or value is None:
        return None, "missing"
    if isinstance(value, bool | int | float):
        return float(value), None
    return None, "mistyped"


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32 (unsigned), the hash Feast names its Redis fields with."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & _MASK32
    length = len(data)
    whole = length - length % 4
    for (k,) in struct.iter_unpack("<I", data[:whole]):
        k = (k * c1) & _MASK32
        k = ((k << 15) | (k >> 17)) & _MASK32
        k = (k * c2) & _MASK32
        h ^= k
        h = ((h << 13) | (h >> 19)) & _MASK32
        h = (h * 5 + 0xE6546B64) & _MASK32
    tail = data[whole:]
    if tail:
        k = 0
        for i, byte in enumerate(tail):
            k |= byte << (8 * i)
        k = (k * c1) & _MASK32
        k = ((k << 15) | (k >> 17)) & _MASK32
        k = (k * c2) & _MASK32
        h ^= k
    h ^= length
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    h ^= h >> 16
    return h


def feature_field(view: str, name: str) -> bytes:
    """The Redis hash field Feast stores feature `name` of `view` under."""
    return _U32.pack(murmur3_32(f"{view}:{name}".encode()))


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise FeastOnlineError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FeastOnlineError("protobuf varint longer than 10 bytes")


def _signed64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_value(data: bytes) -> Any:
    """A serialized `feast.types.Value` -> its Python value (None for a null)."""
    if not data:
        return None
    key, pos = _varint(data, 0)
    field, wire = key >> 3, key & 7
    if wire == 0:
        raw, pos = _varint(data, pos)
        if field == 4:
            value: Any = _signed64(raw)
        elif field == 3:
            value = _I32.unpack(_U32.pack(raw & _MASK32))[0]
        elif field == 7:
            value = raw != 0
        elif field == 19:
            value = None
        else:
            raise FeastOnlineError(f"unsupported Feast value (field {field})")
    elif wire == 1 and field == 5:
        value = _F64.unpack_from(data, pos)[0]
        pos += 8
    elif wire == 5 and field == 6:
        value = _F32.unpack_from(data, pos)[0]
        pos += 4
    elif wire == 2 and field in (1, 2):
        size, pos = _varint(data, pos)
        raw_bytes = data[pos : pos + size]
        if len(raw_bytes) != size:
            raise FeastOnlineError("truncated Feast value")
        pos += size
        value = raw_bytes.decode() if field == 2 else raw_bytes
    else:
        raise FeastOnlineError(f"unsupported Feast value (field {field}, wire type {wire})")
    if pos != len(data):
        raise FeastOnlineError("a Feast value with more than one field")
    return value


def decode_timestamp(data: bytes) -> float:
    """A serialized `google.protobuf.Timestamp` -> seconds since the epoch."""
    seconds = nanos = 0
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        if key & 7 != 0:
            raise FeastOnlineError("unexpected wire type in a Feast event timestamp")
        raw, pos = _varint(data, pos)
        if key >> 3 == 1:
            seconds = _signed64(raw)
        elif key >> 3 == 2:
            nanos = raw & _MASK32
    return seconds + nanos / 1e9


@dataclass(frozen=True)
class JoinKey:
    """One join key of a Feast entity: its name and the value type Feast stores."""

    name: str
    type: str  # int64 | int32 | string | bytes

    def __post_init__(self) -> None:
        if self.type not in _JOIN_KEY_TYPES:
            raise FeastOnlineError(
                f"join key {self.name!r}: type {self.type!r} is not one of "
                f"{', '.join(_JOIN_KEY_TYPES)}"
            )


@dataclass(frozen=True)
class FeastRows:
    """What one read found, column by column, in the order of the rows asked for.

    `values[ref][i]` is row i's value of feature `ref` ("view:name"), None unless
    `statuses[ref][i]` is PRESENT; `event_times[view][i]` is the event time (epoch
    seconds) of row i's values of that view, None when the store has none.
    """

    values: dict[str, list[Any]]
    statuses: dict[str, list[FeastStatus]]
    event_times: dict[str, list[float | None]]


class FeastOnlineReader:
    """Reads features of one Feast project and entity from Feast's Redis online store.

    `client` is a `redis.Redis` (use `read`) or a `redis.asyncio.Redis` (use `aread`)
    on the store's database. `join_keys` are the entity's join keys (`{name: type}`
    or `JoinKey`s); `features` are refs "view:name"; with `max_age_seconds`, a view's
    values whose event time is older than that are OUTSIDE_MAX_AGE (and None).
    `mode` is "packed" (one pipeline of HMGETs packed by the reader; one Redis),
    "script" (one Lua script per read; one Redis) or "pipeline" (a redis-py pipeline
    of HMGETs; also Redis Cluster). A reader holds no state but bounded memos, and may
    be shared.
    """

    def __init__(
        self,
        client: Any,
        project: str,
        join_keys: Mapping[str, str] | Sequence[JoinKey],
        features: Sequence[str],
        *,
        max_age_seconds: float | None = None,
        entity_key_serialization_version: int = ENTITY_KEY_SERIALIZATION_VERSION,
        mode: str = "packed",
    ) -> None:
        if mode not in MODES:
            raise FeastOnlineError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if entity_key_serialization_version != ENTITY_KEY_SERIALIZATION_VERSION:
            raise FeastOnlineError(
                f"entity_key_serialization_version {entity_key_serialization_version} is "
                f"not supported: Driftline reads version {ENTITY_KEY_SERIALIZATION_VERSION} "
                "only (Feast's default; set it in feature_store.yaml and re-materialize)"
            )
        keys = (
            [JoinKey(name, kind) for name, kind in join_keys.items()]
            if isinstance(join_keys, Mapping)
            else list(join_keys)
        )
        if not keys:
            raise FeastOnlineError("a Feast entity needs at least one join key")
        if len({k.name for k in keys}) != len(keys):
            raise FeastOnlineError("join keys must be distinct")
        if not features:
            raise FeastOnlineError("no features to read")
        if max_age_seconds is not None and max_age_seconds <= 0:
            raise FeastOnlineError("max_age_seconds must be positive")
        self.client = client
        self.mode = mode
        self._script = client.register_script(_SCRIPT) if mode == "script" else None
        self._memo: dict[bytes, Any] = {}
        self._ts_memo: dict[bytes, float] = {}
        self.project = project
        self.join_keys = tuple(sorted(keys, key=lambda k: k.name))
        self.max_age_seconds = max_age_seconds
        self._suffix = project.encode()
        head = [_U32.pack(len(self.join_keys))]
        for key in self.join_keys:
            encoded_name = key.name.encode()
            head += [_U32.pack(2), _U32.pack(len(encoded_name)), encoded_name]
        self._key_head = b"".join(head)
        self._key_types = tuple(_JOIN_KEY_TYPES[k.type] for k in self.join_keys)

        self.features: tuple[str, ...] = tuple(features)
        views: dict[str, list[int]] = {}
        fields: list[bytes] = []
        for position, ref in enumerate(self.features):
            view, sep, name = ref.partition(":")
            if not sep or not view or not name:
                raise FeastOnlineError(f"feature {ref!r} is not a ref 'featureView:feature'")
            if ref in self.features[:position]:
                raise FeastOnlineError(f"feature {ref!r} is asked for twice")
            views.setdefault(view, []).append(position)
            fields.append(feature_field(view, name))
        self.views: tuple[str, ...] = tuple(views)
        # Positions in the HMGET reply: features first, then one _ts per view.
        self._view_features = tuple(tuple(views[view]) for view in self.views)
        self._fields = tuple(fields + [f"_ts:{view}".encode() for view in self.views])
        # RESP of an HMGET: its head, then per row the key, then the fields (packed once).
        self._hmget_head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(self._fields) + 2)
        self._hmget_tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in self._fields)

    # --- keys --------------------------------------------------------------------------

    def redis_key(self, row: Mapping[str, Any]) -> bytes | None:
        """The Redis key of an entity row (its join keys' values); None if one is null."""
        parts = [self._key_head]
        for key, kind in zip(self.join_keys, self._key_types, strict=True):
            value = row.get(key.name)
            if value is None:
                return None
            if kind == 4 or kind == 3:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise FeastOnlineError(f"join key {key.name!r} needs an integer")
                try:
                    encoded = (_I64 if kind == 4 else _I32).pack(value)
                except struct.error:
                    raise FeastOnlineError(
                        f"join key {key.name!r}: {value} is out of {key.type} range"
                    ) from None
            elif kind == 2:
                if not isinstance(value, str):
                    raise FeastOnlineError(f"join key {key.name!r} needs a string")
                encoded = value.encode()
            else:
                if not isinstance(value, bytes):
                    raise FeastOnlineError(f"join key {key.name!r} needs bytes")
                encoded = value
            parts += [_U32.pack(kind), _U32.pack(len(encoded)), encoded]
        parts.append(self._suffix)
        return b"".join(parts)

    # --- reads -------------------------------------------------------------------------

    def read(self, rows: Sequence[Mapping[str, Any]], now: float | None = None) -> FeastRows:
        """Read `rows` with a synchronous client, in one round trip."""
        return self.read_keys([self.redis_key(row) for row in rows], now)

    def read_keys(self, keys: Sequence[bytes | None], now: float | None = None) -> FeastRows:
        """`read` of rows given by their `redis_key` (None: a row with a null key)."""
        present = [key for key in keys if key is not None]
        replies: list[Any] = []
        if len(present) == 1:  # one row: a plain HMGET is cheapest
            replies = [self.client.execute_command("HMGET", present[0], *self._fields)]
        elif present and self.mode == "packed":
            pool = self.client.connection_pool
            connection = pool.get_connection()
            try:
                connection.send_packed_command([self._packed(present)], check_health=False)
                replies = _replies(connection, len(present))
            except BaseException:
                connection.disconnect()  # replies may be left unread
                raise
            finally:
                pool.release(connection)
        elif present and self._script is not None:
            replies = self._split(self._script(keys=present, args=self._fields), len(present))
        elif present:
            pipe = self.client.pipeline(transaction=False)
            for key in present:
                pipe.execute_command("HMGET", key, *self._fields)
            replies = pipe.execute()
        return self.decode(keys, replies, time.time() if now is None else now)

    async def aread(self, rows: Sequence[Mapping[str, Any]], now: float | None = None) -> FeastRows:
        """Read `rows` with a `redis.asyncio` client, in one round trip."""
        return await self.aread_keys([self.redis_key(row) for row in rows], now)

    async def aread_keys(self, keys: Sequence[bytes | None], now: float | None = None) -> FeastRows:
        """`aread` of rows given by their `redis_key` (None: a row with a null key)."""
        present = [key for key in keys if key is not None]
        replies: list[Any] = []
        if len(present) == 1:  # one row: a plain HMGET is cheapest
            replies = [await self.client.execute_command("HMGET", present[0], *self._fields)]
        elif present and self.mode == "packed":
            pool = self.client.connection_pool
            connection = await pool.get_connection()
            try:
                await connection.send_packed_command([self._packed(present)], check_health=False)
                replies = await _areplies(connection, len(present))
            except BaseException:
                await connection.disconnect(nowait=True)  # replies may be left unread
                raise
            finally:
                await pool.release(connection)
        elif present and self._script is not None:
            blob = await self._script(keys=present, args=self._fields)
            replies = self._split(blob, len(present))
        elif present:
            pipe = self.client.pipeline(transaction=False)
            for key in present:
                pipe.execute_command("HMGET", key, *self._fields)
            replies = await pipe.execute()
        return self.decode(keys, replies, time.time() if now is None else now)

    def _packed(self, keys: Sequence[bytes]) -> bytes:
        """One buffer of the HMGETs of `keys` (RESP), as Redis reads a pipeline."""
        head, tail = self._hmget_head, self._hmget_tail
        parts: list[bytes] = []
        for key in keys:
            parts += (head, b"$%d\r\n" % len(key), key, b"\r\n", tail)
        return b"".join(parts)

    def _split(self, blob: bytes, rows: int) -> list[list[bytes | None]]:
        """The script's answer -> one list of raw field values per row."""
        width = len(self._fields)
        flat: list[bytes | None] = []
        append = flat.append
        pos = 0
        try:
            for _ in range(rows * width):
                size = blob[pos]
                pos += 1
                if size == 255:
                    append(None)
                    continue
                if size == 254:
                    (size,) = _U32.unpack_from(blob, pos)
                    pos += 4
                append(blob[pos : pos + size])
                pos += size
        except (IndexError, struct.error):
            raise FeastOnlineError("truncated answer from the Feast read script") from None
        if pos != len(blob):
            raise FeastOnlineError("malformed answer from the Feast read script")
        return [flat[i : i + width] for i in range(0, len(flat), width)]

    def decode(
        self, keys: Sequence[bytes | None], replies: Sequence[Sequence[Any]], now: float
    ) -> FeastRows:
        """Columns from the HMGET replies of the non-null `keys`, in their order."""
        n_features = len(self.features)
        values: list[list[Any]] = [[] for _ in range(n_features)]
        statuses: list[list[FeastStatus]] = [[] for _ in range(n_features)]
        times: list[list[float | None]] = []
        max_age = self.max_age_seconds
        present, null, not_found, old = (
            FeastStatus.PRESENT,
            FeastStatus.NULL_VALUE,
            FeastStatus.NOT_FOUND,
            FeastStatus.OUTSIDE_MAX_AGE,
        )
        memo, ts_memo = self._memo, self._ts_memo
        rows: Sequence[Sequence[Any]] = replies
        if len(replies) != len(keys):  # rows without a key: nothing found
            found = iter(replies)
            nothing = (None,) * len(self._fields)
            rows = [next(found) if key is not None else nothing for key in keys]
        # Column by column: one comprehension per feature (most values are memoized).
        for v, positions in enumerate(self._view_features):
            raw_times = [row[n_features + v] for row in rows]
            column_times = [None if raw is None else ts_memo.get(raw) for raw in raw_times]
            for i, raw in enumerate(raw_times):
                if raw is not None and column_times[i] is None:
                    column_times[i] = ts = decode_timestamp(raw)
                    if len(ts_memo) < _MEMO_ENTRIES:
                        ts_memo[raw] = ts
            times.append(column_times)
            stale = (
                []
                if max_age is None
                else [
                    i for i, ts in enumerate(column_times) if ts is not None and now - ts > max_age
                ]
            )
            for p in positions:
                raws = [row[p] for row in rows]
                found_values = [None if raw is None else memo.get(raw, _MISS) for raw in raws]
                if _MISS in found_values:  # (compared by identity first: in C)
                    for i, value in enumerate(found_values):
                        if value is _MISS:
                            raw = raws[i]
                            found_values[i] = value = decode_value(raw)
                            if len(memo) < _MEMO_ENTRIES:
                                memo[raw] = value
                column_statuses = [
                    not_found if raw is None else present if value is not None else null
                    for raw, value in zip(raws, found_values, strict=True)
                ]
                for i in stale:
                    if raws[i] is not None:
                        found_values[i] = None
                        column_statuses[i] = old
                values[p] = found_values
                statuses[p] = column_statuses
        return FeastRows(
            values=dict(zip(self.features, values, strict=True)),
            statuses=dict(zip(self.features, statuses, strict=True)),
            event_times=dict(zip(self.views, times, strict=True)),
        )


def _hiredis(connection: Any) -> tuple[Any, Any] | None:
    """(parser, hiredis.Reader) of a redis-py connection that parses with hiredis."""
    parser = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if type(reader).__module__.partition(".")[0] != "hiredis":
        return None
    return parser, reader


def _checked(reply: Any) -> Any:
    if isinstance(reply, Exception):  # an error reply (or a closed connection)
        raise reply
    return reply


def _replies(connection: Any, n: int) -> list[Any]:
    """The next `n` replies on a redis-py connection: taken from hiredis' reader in one
    loop where it parses (no call into redis-py per reply), else one by one."""
    found = _hiredis(connection)
    if found is None:
        return [connection.read_response() for _ in range(n)]
    parser, reader = found
    gets = reader.gets
    replies: list[Any] = []
    while len(replies) < n:
        reply = gets()
        if reply is _NOT_ENOUGH_DATA:
            parser.read_from_socket()
        else:
            replies.append(_checked(reply))
    return replies


async def _areplies(connection: Any, n: int) -> list[Any]:
    """`_replies` on a `redis.asyncio` connection."""
    found = _hiredis(connection)
    if found is None:
        return [await connection.read_response() for _ in range(n)]
    parser, reader = found
    gets = reader.gets
    replies: list[Any] = []
    while len(replies) < n:
        reply = gets()
        if reply is _NOT_ENOUGH_DATA:
            await parser.read_from_socket()
        else:
            replies.append(_checked(reply))
    return replies
