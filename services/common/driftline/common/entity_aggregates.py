"""Per-entity aggregates over sliding windows, kept in Redis: one layout for every part.

A feature with `source.aggregate` (driftline.api.spec.AggregateSource) is computed at
serving from the entity's earlier events, logged with the prediction, and learned
from as logged. Inference reads and updates the aggregates of request features, and
reads those of outcomes; the feedback joiner updates the outcome ones when it joins a
label. Both go through `EXCHANGE`, one Lua script per batch, so that every read-then-
add is atomic across inference replicas and joiners: Redis is the single truth.

    driftline:<ns>:<model>:agg:<of>:<windowSeconds>:<entity>   hash
        c:<b>  events in bucket b       s:<b>  sum of their values
        lb     bucket of the last event lv     its value

A window is `BUCKETS` buckets of windowSeconds/BUCKETS seconds (bucket b holds the
events of [b * width, (b + 1) * width)); a read sums the buckets from the current one
back `BUCKETS - 1`, so it covers between windowSeconds - width and windowSeconds of the
past. Buckets that fell out are deleted by the next update of the entity, and the key
expires windowSeconds + width after it, so memory is bounded by the entities active
in one window. Buckets later than now (another replica's clock ahead) count too.
Features that aggregate the same events over the same window share one hash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from driftline.api.spec import AggregateSource

BUCKETS = 60
"""Buckets per window: the resolution is windowSeconds / 60."""

Op = Literal["read", "add", "read-add"]
_OPS: dict[Op, str] = {"read": "r", "add": "a", "read-add": "ra"}

EXCHANGE = """
local now, buckets = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local at = 3 + (i - 1) * 4
  local op, width, value = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
  local ttl_ms = ARGV[at + 3]
  local b = math.floor(now / width)
  local oldest = b - buckets + 1
  local fields = redis.call('HGETALL', key)
  local count, sum, lb, lv = 0, 0, nil, ''
  local stale = {}
  for j = 1, #fields, 2 do
    local f, v = fields[j], fields[j + 1]
    if f == 'lb' then
      lb = tonumber(v)
    elseif f == 'lv' then
      lv = v
    else
      local idx = tonumber(string.sub(f, 3))
      if idx < oldest then
        stale[#stale + 1] = f
      elseif string.sub(f, 1, 1) == 'c' then
        count = count + tonumber(v)
      else
        sum = sum + tonumber(v)
      end
    end
  end
  if op ~= 'a' then
    local last = ''
    if lb ~= nil and lb >= oldest then last = lv end
    out[#out + 1] = {tostring(count), string.format('%.17g', sum), last}
  end
  if op ~= 'r' then
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
    redis.call('HINCRBY', key, 'c:' .. b, 1)
    redis.call('HINCRBYFLOAT', key, 's:' .. b, value)
    if lb == nil or b >= lb then redis.call('HSET', key, 'lb', b, 'lv', value) end
    redis.call('PEXPIRE', key, ttl_ms)
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Tally:
    """What a window holds for one entity before the current event."""

    count: int
    total: float
    last: float | None


EMPTY = Tally(0, 0.0, None)


def bucket_width(window_seconds: float) -> float:
    return window_seconds / BUCKETS


def ttl_ms(window_seconds: float) -> int:
    """A key outlives its newest bucket's window by nothing more than one bucket."""
    return math.ceil((window_seconds + bucket_width(window_seconds)) * 1000)


def state_name(source: AggregateSource) -> str:
    """The hash name part: features aggregating the same events over one window share it."""
    return f"{source.of or ''}:{source.window_seconds}"


def state_key(prefix: str, source: AggregateSource, entity: str) -> str:
    return f"{prefix}:agg:{state_name(source)}:{entity}"


def value_of(tally: Tally, source: AggregateSource) -> float:
    """The feature's value from a window's tally (`source.default` when it has none)."""
    function = source.function
    if function == "count":
        return float(tally.count)
    if function == "rate":
        return tally.count / source.window_seconds
    if function == "sum":
        return tally.total
    if function == "mean":
        return tally.total / tally.count if tally.count else source.default
    return tally.last if tally.last is not None else source.default


@dataclass(frozen=True, slots=True)
class Step:
    """One entity's update or read in a batch: steps run in order, each atomic with the rest."""

    key: str
    op: Op
    window_seconds: float
    value: float = 0.0


def script_args(steps: Sequence[Step], now: float) -> tuple[list[str], list[str]]:
    """(KEYS, ARGV) of `EXCHANGE` for these steps at time `now` (seconds)."""
    keys = [s.key for s in steps]
    args = [repr(float(now)), str(BUCKETS)]
    for s in steps:
        args += [_OPS[s.op], repr(bucket_width(s.window_seconds)), repr(float(s.value))]
        args.append(str(ttl_ms(s.window_seconds)))
    return keys, args


def parse_reply(reply: Sequence[Any]) -> list[Tally]:
    """The tallies of the steps that read, in their order."""
    tallies = []
    for count, total, last in reply:
        last_text = _text(last)
        tallies.append(
            Tally(int(_text(count)), float(_text(total)), float(last_text) if last_text else None)
        )
    return tallies


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
