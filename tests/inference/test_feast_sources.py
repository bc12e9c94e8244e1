"""Feast features at the request path: grouped per reader, filled before the model, counted.

Feast's Redis is stood in for by a dict of hashes holding Feast's encodings (what real
Feast writes, and serving it through an inference app, is tested in
tests/integration/inference/test_feast_features.py).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from driftline.api import parse_dynamic_model
from driftline.api.spec import DynamicModelSpec
from driftline.common.entity_aggregates import EXCHANGE
from driftline.common.feast_online import FeastOnlineReader, JoinKey, feature_field
from driftline.inference.contract import FeatureContract
from driftline.inference.errors import FeatureSourceUnavailableError, InvalidInputError
from driftline.inference.feast_sources import (
    BadJoinKeyError,
    entity_row,
    feast_features,
    group,
)
from driftline.inference.oip import InferRequest, OipProtocol
from driftline.inference.plain import PlainProtocol
from driftline.inference.sources import SourcedFeatures
from driftline.inference.tensors import TensorInput
from driftline_testing.models import model_document

KEY = [{"joinKey": "user_id", "type": "int64"}]


def feast(name: str, view: str = "user_stats", **extra: Any) -> dict[str, Any]:
    source = {"project": "p", "featureView": view, "name": name, "entityKeys": KEY}
    return {"name": f"{view}_{name}", "source": {"feast": {**source, **extra}}}


TXN = feast("txn_count", default=-1)
RATIO = feast("ratio")
RISK = feast("risk", view="user_risk")


def spec_with(*sourced: dict[str, Any]) -> DynamicModelSpec:
    doc = model_document("m", numeric=("amount",), categorical=("channel",))
    doc["spec"]["features"][1:1] = list(sourced)
    return parse_dynamic_model(doc).spec


def double(value: float) -> bytes:
    return b"\x29" + struct.pack("<d", value)


def int64(value: int) -> bytes:
    out, v = bytearray(b"\x20"), value & (2**64 - 1)
    while True:
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append((v & 0x7F) | 0x80)
        v >>= 7


def timestamp(seconds: int) -> bytes:
    return b"\x08" + int64(seconds)[1:]


class FakeFeastRedis:
    """Hashes keyed as Feast keys them; HMGET and the reader's script, counted."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.hashes: dict[bytes, dict[bytes, bytes]] = {}
        self.failure = failure
        self.calls = 0
        self.reader = FeastOnlineReader(self, "p", [JoinKey("user_id", "int64")], ["v:f"])

    def put(self, user: int, view: str, values: dict[str, bytes], ts: int) -> None:
        key = self.reader.redis_key({"user_id": user})
        assert key is not None
        stored = self.hashes.setdefault(key, {})
        stored.update({feature_field(view, n): v for n, v in values.items()})
        stored[f"_ts:{view}".encode()] = timestamp(ts)

    async def execute_command(self, name: str, key: bytes, *fields: bytes) -> list[Any]:
        assert name == "HMGET"
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return [self.hashes.get(key, {}).get(f) for f in fields]

    @property
    def connection_pool(self) -> Any:
        return FakePool(self)

    def register_script(self, text: str) -> Any:
        async def script(keys: list[bytes], args: list[bytes]) -> bytes:
            self.calls += 1
            if self.failure is not None:
                raise self.failure
            out = b""
            for key in keys:
                for f in args:
                    v = self.hashes.get(key, {}).get(f)
                    out += b"\xff" if v is None else bytes([len(v)]) + v
            return out

        return script


class FakePool:
    """The pool of `FakeFeastRedis`: its one connection answers the packed HMGETs."""

    def __init__(self, store: FakeFeastRedis) -> None:
        self.store = store
        self.replies: list[Any] = []

    async def get_connection(self) -> FakePool:
        return self

    async def release(self, connection: Any) -> None:
        pass

    async def disconnect(self, nowait: bool = False) -> None:
        pass

    async def send_packed_command(self, command: list[bytes], check_health: bool) -> None:
        self.store.calls += 1
        if self.store.failure is not None:
            raise self.store.failure
        data = b"".join(command)
        while data:  # RESP arrays of bulk strings: *N, then N times $len and the bytes
            head, data = data.split(b"\r\n", 1)
            args = []
            for _ in range(int(head[1:])):
                size, data = data.split(b"\r\n", 1)
                args.append(data[: int(size[1:])])
                data = data[int(size[1:]) + 2 :]
            assert args[0] == b"HMGET"
            stored = self.store.hashes.get(args[1], {})
            self.replies.append([stored.get(f) for f in args[2:]])

    async def read_response(self) -> Any:
        return self.replies.pop(0)


def decoded(contract: FeatureContract, rows: list[dict[str, Any]]) -> Any:
    return PlainProtocol(contract, "m", max_rows=8).decode(json.dumps({"features": rows}).encode())


def counted(feature: str, outcome: str) -> float:
    labels = {"feature": feature, "outcome": outcome}
    return REGISTRY.get_sample_value("driftline_inference_feature_source_errors_total", labels) or 0


def test_features_sharing_project_keys_and_max_age_are_one_reader() -> None:
    spec = spec_with(TXN, RATIO, RISK, feast("txn_count", maxAgeSeconds=60) | {"name": "fresh"})
    groups = group(feast_features(spec, FeatureContract(spec)))
    assert [[f.name for f in members] for members in groups.values()] == [
        ["user_stats_txn_count", "user_stats_ratio", "user_risk_risk"],
        ["fresh"],
    ]
    assert list(groups) == [
        ("p", (("user_id", "int64", "entity_id"),), None),
        ("p", (("user_id", "int64", "entity_id"),), 60),
    ]


@pytest.mark.parametrize(
    ("entity", "kind", "value"),
    [
        ("17", "int64", 17),
        ("-3", "int32", -3),
        ("u-17", "int64", None),  # no integer: a missing entity
        (str(2**31), "int32", None),
        (None, "string", None),
        ("u-17", "string", "u-17"),
        ("u-17", "bytes", b"u-17"),
    ],
)
def test_the_entity_id_is_the_join_key_value(entity: str | None, kind: str, value: Any) -> None:
    assert entity_row((entity,), (("k", kind, "entity_id"),)) == {"k": value}


def test_other_request_fields_give_their_keys_and_refuse_a_value_that_is_none() -> None:
    keys = (("merchant_id", "string", "shop"), ("user_id", "int64", "customer"))
    assert entity_row(("m-1", "17"), keys) == {"merchant_id": "m-1", "user_id": 17}
    assert entity_row(("m-1", None), keys) == {"merchant_id": "m-1", "user_id": None}
    for value in ("u-17", str(2**63)):
        with pytest.raises(BadJoinKeyError, match="is no int64") as caught:
            entity_row(("m-1", value), keys)
        assert caught.value.field == "customer"


def sourced(spec: DynamicModelSpec, client: Any) -> tuple[FeatureContract, SourcedFeatures]:
    contract = FeatureContract(spec)
    sources = SourcedFeatures.for_model(spec, contract, "p")
    assert sources is not None
    sources.connect(FakeAggregates(), feast_client=client)
    return contract, sources


class FakeAggregates:
    """The aggregates' Redis: counts its script calls; every count is 5."""

    def __init__(self) -> None:
        self.calls = 0

    def register_script(self, text: str) -> Any:
        assert text == EXCHANGE

        async def script(keys: list[str], args: list[str]) -> list[Any]:
            self.calls += 1
            return [[b"5", b"0", b""] for _ in keys]

        return script


def test_values_are_served_logged_and_gaps_get_the_default_counted() -> None:
    now = int(time.time())
    store = FakeFeastRedis()
    store.put(1, "user_stats", {"txn_count": int64(12), "ratio": double(0.25)}, now)
    store.put(2, "user_stats", {"txn_count": b"", "ratio": b"\x12\x01x"}, now)  # null, string
    store.put(1, "user_risk", {"risk": double(0.625)}, now)
    spec = spec_with(TXN, RATIO, RISK)
    contract, sources = sourced(spec, store)
    request = decoded(contract, [{"amount": 1.0, "channel": "a"}] * 4)
    before = {
        (f, o): counted(f, o)
        for f in ("user_stats_txn_count", "user_stats_ratio", "user_risk_risk")
        for o in ("missing", "mistyped")
    }
    asyncio.run(sources.fill(request.rows, ["1", "2", "9", None]))
    assert store.calls == 1  # one group, one read (three rows with a key)
    assert [list(v)[1:4] for v in request.rows.values] == [
        [12.0, 0.25, 0.625],
        [-1.0, 0.0, 0.0],  # null: default; a string for a numeric feature: default
        [-1.0, 0.0, 0.0],  # no such user
        [-1.0, 0.0, 0.0],  # no entity id
    ]
    np.testing.assert_allclose(request.rows.numeric[:, 1], [12, -1, -1, -1])
    after = {key: counted(*key) - value for key, value in before.items()}
    assert after == {
        ("user_stats_txn_count", "missing"): 3,
        ("user_stats_txn_count", "mistyped"): 0,
        ("user_stats_ratio", "missing"): 2,
        ("user_stats_ratio", "mistyped"): 1,
        ("user_risk_risk", "missing"): 3,
        ("user_risk_risk", "mistyped"): 0,
    }


def test_rows_older_than_max_age_are_stale() -> None:
    store = FakeFeastRedis()
    store.put(1, "user_stats", {"txn_count": int64(3)}, int(time.time()) - 120)
    fresh = feast("txn_count", maxAgeSeconds=60, default=7)
    contract, sources = sourced(spec_with(fresh), store)
    request = decoded(contract, [{"amount": 1.0, "channel": "a"}])
    before = counted("user_stats_txn_count", "stale")
    asyncio.run(sources.fill(request.rows, ["1"]))
    assert request.rows.values[0][1] == 7.0
    assert counted("user_stats_txn_count", "stale") == before + 1


def test_requests_of_one_loop_turn_share_one_read_beside_the_aggregate_script() -> None:
    store = FakeFeastRedis()
    store.put(1, "user_stats", {"txn_count": int64(1)}, int(time.time()))
    store.put(2, "user_stats", {"txn_count": int64(2)}, int(time.time()))
    visits = {"name": "visits", "source": {"aggregate": {"function": "count"}}}
    contract, sources = sourced(spec_with(TXN, visits), store)
    first, second = (decoded(contract, [{"amount": 1.0, "channel": "a"}]) for _ in range(2))

    async def both() -> None:
        await asyncio.gather(sources.fill(first.rows, ["1"]), sources.fill(second.rows, ["2"]))

    asyncio.run(both())
    assert store.calls == 1 and sources.client.calls == 1
    assert [list(r.rows.values[0])[1:3] for r in (first, second)] == [[1.0, 5.0], [2.0, 5.0]]


def test_a_turn_hands_each_request_its_rows_and_builds_each_entity_key_once() -> None:
    store = FakeFeastRedis()
    store.put(1, "user_stats", {"txn_count": int64(1)}, int(time.time()))
    store.put(2, "user_stats", {"txn_count": int64(2)}, int(time.time()))
    contract, sources = sourced(spec_with(TXN), store)
    assert sources.feast is not None
    (reader,) = sources.feast.readers.values()
    built: list[Any] = []
    redis_key = reader.redis_key
    reader.redis_key = lambda row: built.append(row) or redis_key(row)  # type: ignore[method-assign]
    first, second = (decoded(contract, [{"amount": 1.0, "channel": "a"}] * 2) for _ in range(2))

    async def both() -> None:
        await asyncio.gather(
            sources.fill(first.rows, ["1", "9"]), sources.fill(second.rows, ["2", "1"])
        )

    asyncio.run(both())
    asyncio.run(both())
    assert store.calls == 2
    assert [v[1] for v in first.rows.values] == [1.0, -1.0]
    assert [v[1] for v in second.rows.values] == [2.0, 1.0]
    assert built == [{"user_id": 1}, {"user_id": 9}, {"user_id": 2}]


def test_the_store_down_serves_defaults_or_refuses_as_the_spec_says() -> None:
    contract, sources = sourced(spec_with(TXN), FakeFeastRedis(RedisConnectionError("down")))
    request = decoded(contract, [{"amount": 1.0, "channel": "a"}] * 2)
    before = counted("user_stats_txn_count", "defaulted")
    asyncio.run(sources.fill(request.rows, ["1", "2"]))
    assert [v[1] for v in request.rows.values] == [-1.0, -1.0]
    assert counted("user_stats_txn_count", "defaulted") == before + 1

    refusing = TXN | {"source": {**TXN["source"], "onUnavailable": "refuse"}}
    contract, sources = sourced(spec_with(refusing), FakeFeastRedis(TimeoutError()))
    request = decoded(contract, [{"amount": 1.0, "channel": "a"}])
    with pytest.raises(FeatureSourceUnavailableError) as caught:
        asyncio.run(sources.fill(request.rows, ["1"]))
    assert (caught.value.status, caught.value.field) == (503, "features.user_stats_txn_count")


def test_join_keys_from_named_request_fields_are_read_per_row_and_checked() -> None:
    store = FakeFeastRedis()
    store.put(1, "user_stats", {"txn_count": int64(11)}, int(time.time()))
    store.put(2, "user_stats", {"txn_count": int64(22)}, int(time.time()))
    named = [{"joinKey": "user_id", "type": "int64", "field": "customer"}]
    by_field = feast("txn_count", default=-1, entityKeys=named) | {"name": "named"}
    contract, sources = sourced(spec_with(TXN, by_field), store)
    assert contract.request_fields == ("customer",)
    body = {"entity_id": ["2", "1", "1"], "customer": [1, "2", "7"]}
    body["features"] = [{"amount": 1.0, "channel": "a"}] * 3
    request = PlainProtocol(contract, "m", max_rows=8).decode(json.dumps(body).encode())
    assert request.fields == {"entity_id": ["2", "1", "1"], "customer": ["1", "2", "7"]}
    asyncio.run(sources.fill(request.rows, request.entity_ids, request.fields))
    assert [v[1:3] for v in request.rows.values] == [(22.0, 11.0), (11.0, 22.0), (11.0, -1.0)]
    assert store.calls == 2  # two groups (two fields): one read each, in one turn

    body["customer"] = ["1", "x", "2"]  # ... and a value that is no int64: a 422 naming it
    request = PlainProtocol(contract, "m", max_rows=8).decode(json.dumps(body).encode())
    with pytest.raises(InvalidInputError, match="'x' is no int64") as caught:
        asyncio.run(sources.fill(request.rows, request.entity_ids, request.fields))
    assert (caught.value.status, caught.value.field) == (422, "customer[1]")
    del body["customer"]  # absent: a missing entity, as a row without entity_id
    request = PlainProtocol(contract, "m", max_rows=8).decode(json.dumps(body).encode())
    asyncio.run(sources.fill(request.rows, request.entity_ids, request.fields))
    assert [v[2] for v in request.rows.values] == [-1.0] * 3


def test_the_oip_route_reads_join_key_fields_from_its_parameters() -> None:
    named = [{"joinKey": "user_id", "type": "int64", "field": "customer"}]
    spec = spec_with(feast("txn_count", entityKeys=named))
    contract = FeatureContract(spec)
    inputs = [
        TensorInput(name="amount", shape=[2], datatype="FP32", data=[1.0, 2.0]),
        TensorInput(name="channel", shape=[2], datatype="BYTES", data=["a", "b"]),
    ]
    params = {"customer": [17, "18"], "entity_id": "u"}
    request = OipProtocol(contract, "m", max_rows=8).request(
        InferRequest(inputs=inputs, parameters=params), [None, None]
    )
    assert request.fields == {"entity_id": ["u", "u"], "customer": ["17", "18"]}
    with pytest.raises(InvalidInputError) as caught:
        OipProtocol(contract, "m", max_rows=8).request(
            InferRequest(inputs=inputs, parameters={"customer": {"a": 1}}), [None, None]
        )
    assert caught.value.field == "parameters.customer"
