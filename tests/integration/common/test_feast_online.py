"""Driftline's Feast reader against what real Feast (tests/rig/feast) wrote to Redis.

Feast 0.67 writes with `feast apply` + `feast materialize` into the tests' real Redis;
the reader must read back exactly those values, report missing entities and features
as NOT_FOUND, nulls as NULL_VALUE, rows older than a max age as OUTSIDE_MAX_AGE, and
agree with Feast's own `get_online_features` on every value.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis._parsers import _AsyncRESP2Parser, _RESP2Parser

from driftline.common.feast_online import FeastOnlineError, FeastOnlineReader, FeastStatus
from driftline_testing.feast import FeastRepo, feast_built

pytestmark = pytest.mark.timeout(600)

NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=2)
F32 = struct.Struct("<f")

# Longer than 253 bytes: the read script's long-length form.
LONG = "zürich ✓ " + "·" * 200
USERS = [
    # user_id, txn_count, age, ratio, amount, segment, vip, event time
    (1, 12, 34, 0.25, 1234.5678, "gold", True, NOW - timedelta(minutes=5)),
    (2, 0, -7, 1.1, -0.1, "", False, NOW - timedelta(minutes=1)),
    (3, -(2**62), 2**31 - 1, -3.5e30, 1e-300, LONG, True, OLD),
    (2**40, 2**63 - 1, 0, 0.0, 6.02e23, None, False, NOW - timedelta(hours=1)),
]
MERCHANTS = [("m-1", 0.125, NOW - timedelta(minutes=2)), ("m-2", 0.9, OLD)]
PAIRS = [(1, "m-1", 3, NOW - timedelta(minutes=3)), (2, "m-1", 0, NOW - timedelta(minutes=4))]
USER_FEATURES = [
    "user_stats:txn_count",
    "user_stats:age",
    "user_stats:ratio",
    "user_stats:amount",
    "user_stats:segment",
    "user_stats:vip",
]


@pytest.fixture(scope="module")
def feast_repo(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastRepo]:
    if not feast_built():
        if os.environ.get("DRIFTLINE_RIG", "").lower() == "off":
            pytest.skip("DRIFTLINE_RIG=off and Feast's venv is not built (make rig)")
        pytest.fail("Feast's venv is not built: run `make rig` (tests/rig/feast/build.sh)")
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    repo = FeastRepo(tmp_path_factory.mktemp("feast"), redis_server.port)
    user_rows = [
        dict(zip(
            ["user_id", "txn_count", "age", "ratio", "amount", "segment", "vip",
             "event_timestamp"], row, strict=True,
        ))
        for row in USERS
    ]  # fmt: skip
    repo.materialize(
        {
            "user_stats": user_rows,
            "merchant_risk": [
                {"merchant_id": m, "risk": r, "event_timestamp": t} for m, r, t in MERCHANTS
            ],
            "user_merchant": [
                {"user_id": u, "merchant_id": m, "pair_count": c, "event_timestamp": t}
                for u, m, c, t in PAIRS
            ],
        },
        start=NOW - timedelta(days=30),
        end=NOW + timedelta(minutes=1),
    )
    yield repo
    client.flushdb()
    client.close()


@pytest.fixture
def client(redis_server: Any, feast_repo: FeastRepo) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


@pytest.fixture(params=["packed", "packed, redis-py's parser", "script", "pipeline"])
def make_reader(request: pytest.FixtureRequest) -> Callable[..., FeastOnlineReader]:
    """The reader in each of its modes (a pipeline of HMGETs it packs, with hiredis
    parsing the replies where installed or redis-py's own Python parser; a Lua script;
    a redis-py pipeline of HMGETs)."""
    mode = request.param.partition(",")[0]
    if "parser" not in request.param:
        return functools.partial(FeastOnlineReader, mode=mode)

    def make(client: Any, *args: Any, **kwargs: Any) -> FeastOnlineReader:
        is_async = type(client).__module__.startswith("redis.asyncio")
        # Set before the client's first command, so its every connection parses so.
        client.connection_pool.connection_kwargs["parser_class"] = (
            _AsyncRESP2Parser if is_async else _RESP2Parser
        )
        return FeastOnlineReader(client, *args, mode=mode, **kwargs)

    return make


def f32(x: float) -> float:
    return float(F32.unpack(F32.pack(x))[0])


def test_values_written_by_feast_read_back_exactly(
    client: redis.Redis, make_reader: Callable[..., FeastOnlineReader]
) -> None:
    reader = make_reader(client, "driftline_test", {"user_id": "int64"}, USER_FEATURES)
    rows = [{"user_id": u[0]} for u in USERS] + [{"user_id": 999}, {"user_id": None}]
    got = reader.read(rows)

    assert got.values["user_stats:txn_count"] == [12, 0, -(2**62), 2**63 - 1, None, None]
    assert got.values["user_stats:age"] == [34, -7, 2**31 - 1, 0, None, None]
    assert got.values["user_stats:ratio"] == [f32(0.25), f32(1.1), f32(-3.5e30), 0.0, None, None]
    assert got.values["user_stats:amount"] == [1234.5678, -0.1, 1e-300, 6.02e23, None, None]
    assert got.values["user_stats:segment"] == ["gold", "", LONG, None, None, None]
    assert got.values["user_stats:vip"] == [True, False, True, False, None, None]
    assert all(type(v) is bool for v in got.values["user_stats:vip"][:4])
    # A null written by Feast is NULL_VALUE; an entity Feast never wrote, NOT_FOUND.
    assert got.statuses["user_stats:segment"][3] is FeastStatus.NULL_VALUE
    for ref in USER_FEATURES:
        assert got.statuses[ref][4:] == [FeastStatus.NOT_FOUND] * 2
        assert set(got.statuses[ref][:3]) == {FeastStatus.PRESENT}
    times = got.event_times["user_stats"]
    assert times[:4] == [u[7].timestamp() for u in USERS]
    assert times[4:] == [None, None]


def test_agrees_with_feasts_own_sdk(
    client: redis.Redis, make_reader: Callable[..., FeastOnlineReader], feast_repo: FeastRepo
) -> None:
    features = [*USER_FEATURES, "merchant_risk:risk"]
    rows: list[dict[str, Any]] = [{"user_id": u[0], "merchant_id": "m-1"} for u in USERS]
    rows += [{"user_id": 999, "merchant_id": "m-9"}]
    sdk = feast_repo.online_features(features, rows)
    users = make_reader(client, "driftline_test", {"user_id": "int64"}, USER_FEATURES)
    merchants = make_reader(
        client, "driftline_test", {"merchant_id": "string"}, ["merchant_risk:risk"]
    )
    got = {**users.read(rows).values, **merchants.read(rows).values}
    for ref in features:
        name = ref.split(":")[1]
        ours = got[ref]
        theirs = sdk[name]
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            if isinstance(b, float) and math.isnan(b):
                assert a is None
            else:
                assert a == b, (ref, ours, theirs)


def test_string_and_compound_entity_keys(
    client: redis.Redis, make_reader: Callable[..., FeastOnlineReader]
) -> None:
    pairs = make_reader(
        client,
        "driftline_test",
        # order given need not be Feast's (sorted by name): the reader sorts
        {"user_id": "int64", "merchant_id": "string"},
        ["user_merchant:pair_count"],
    )
    got = pairs.read(
        [
            {"user_id": 1, "merchant_id": "m-1"},
            {"user_id": 2, "merchant_id": "m-1"},
            {"user_id": 1, "merchant_id": "m-2"},
            {"user_id": 2, "merchant_id": None},
        ]
    )
    assert got.values["user_merchant:pair_count"] == [3, 0, None, None]
    merchants = make_reader(
        client, "driftline_test", {"merchant_id": "string"}, ["merchant_risk:risk"]
    )
    assert merchants.read([{"merchant_id": "m-2"}, {"merchant_id": "m-1"}]).values == {
        "merchant_risk:risk": [0.9, 0.125]
    }


def test_staleness_from_feasts_event_time(
    client: redis.Redis, make_reader: Callable[..., FeastOnlineReader]
) -> None:
    reader = make_reader(
        client,
        "driftline_test",
        {"user_id": "int64"},
        ["user_stats:txn_count", "user_stats:segment"],
        max_age_seconds=86400,
    )
    got = reader.read([{"user_id": 1}, {"user_id": 3}, {"user_id": 999}])
    assert got.values["user_stats:txn_count"] == [12, None, None]
    assert got.statuses["user_stats:txn_count"] == [
        FeastStatus.PRESENT,
        FeastStatus.OUTSIDE_MAX_AGE,
        FeastStatus.NOT_FOUND,
    ]
    # Measured against `now`: a day later, every row is stale.
    later = reader.read([{"user_id": 1}], now=time.time() + 2 * 86400)
    assert later.statuses["user_stats:segment"] == [FeastStatus.OUTSIDE_MAX_AGE]


def test_other_project_and_unknown_feature_are_not_found(
    client: redis.Redis, make_reader: Callable[..., FeastOnlineReader]
) -> None:
    other = make_reader(client, "elsewhere", {"user_id": "int64"}, ["user_stats:txn_count"])
    assert other.read([{"user_id": 1}]).statuses["user_stats:txn_count"] == [FeastStatus.NOT_FOUND]
    unknown = make_reader(
        client, "driftline_test", {"user_id": "int64"}, ["user_stats:nope", "user_stats:age"]
    )
    got = unknown.read([{"user_id": 1}])
    assert got.values == {"user_stats:nope": [None], "user_stats:age": [34]}


async def test_async_client_reads_the_same(
    redis_server: Any, client: redis.Redis, make_reader: Callable[..., FeastOnlineReader]
) -> None:
    import redis.asyncio

    aclient = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        rows = [{"user_id": 1}, {"user_id": 999}, {"user_id": None}, {"user_id": 2}]
        sync = make_reader(client, "driftline_test", {"user_id": "int64"}, USER_FEATURES)
        async_ = make_reader(aclient, "driftline_test", {"user_id": "int64"}, USER_FEATURES)
        assert (await async_.aread(rows, now=1e9)) == sync.read(rows, now=1e9)
    finally:
        await aclient.aclose()


def test_only_serialization_version_3(tmp_path: Path) -> None:
    with pytest.raises(FeastOnlineError, match="version 2 is not supported"):
        FeastOnlineReader(None, "p", {"id": "int64"}, ["v:f"], entity_key_serialization_version=2)
