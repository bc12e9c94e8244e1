"""Features from a real Feast online store served by a real inference app.

Feast (tests/rig/feast) materializes `user_stats` into a Redis of its own (the
`feastRedisUrl` setting of inference, not the model's Redis); a model with
`source.feast` features and one per-entity aggregate is served. What is checked: the
values Feast materialized are the model's input and the prediction log's values,
exactly (as float32, the model's input type); a user Feast does not know, a null and an
entity id that is no integer and a string value get each feature's default, counted by
outcome; Feast's
Redis unreachable serves the default and counts it, or refuses with a 503 where the
spec says so. Join keys taken from request fields of other names (a view keyed by
`merchant_id` read from `shop`, a view of two join keys read from `customer` and
`shop`) serve the values Feast wrote, refuse a value that cannot be the key (422
naming the field), and equal what `bootstrap --from-feast` joins offline for the same
rows, for every Feast feature of the model.
"""

from __future__ import annotations

import copy
import json
import os
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from driftline.api import parse_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.events import Prediction, decode
from driftline.inference.contract import Served
from driftline.local.servers import MlflowServer, RedisServer, free_port
from driftline.local.servers.kafka import KafkaBroker
from driftline.trainer.feast_history import rows_from_feast
from driftline_testing.feast import FeastRepo, feast_built, feast_venv
from driftline_testing.models import model_document
from tests.integration.inference.harness import Running

from .conftest import read_predictions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

NOW = datetime.now(UTC).replace(microsecond=0)
PROJECT = "driftline_serving"
KEY = [{"joinKey": "user_id", "type": "int64"}]


def feast(name: str, **extra: Any) -> dict[str, Any]:
    source = {"project": PROJECT, "featureView": "user_stats", "name": name, "entityKeys": KEY}
    return {"name": name, "source": {"feast": {**source, **extra}}}


SOURCED = [
    feast("txn_count", default=-1),
    feast("ratio"),
    feast("amount", default=-2.5),
    feast("vip"),
    feast("segment", default=3),  # a Feast string: served its default, counted mistyped
    {"name": "visits", "source": {"aggregate": {"function": "count", "windowSeconds": 600}}},
]
SHOP = {"joinKey": "merchant_id", "field": "shop"}  # a join key read from another field
CUSTOMER = {"joinKey": "user_id", "type": "int64", "field": "customer"}
KEYED = [
    {
        "name": "risk",
        "source": {
            "feast": {"project": PROJECT, "featureView": "merchant_risk", "name": "risk",
                      "entityKeys": [SHOP], "default": -1}
        },
    },
    {
        "name": "pair_count",
        "source": {
            "feast": {"project": PROJECT, "featureView": "user_merchant", "name": "pair_count",
                      "entityKeys": [CUSTOMER, SHOP], "default": -1}
        },
    },
]  # fmt: skip
ROW = {"x1": 1.0, "x2": -1.25, "x3": 3.0}
USERS = [
    # user_id, txn_count, age, ratio, amount, segment, vip
    (1, 12, 34, 0.25, 1234.5, "gold", True),
    (2, 0, 20, 0.1, -0.5, None, False),  # a null segment
    (2**40, 2**40, 0, -3.5, 0.125, "x", False),
]
F32 = struct.Struct("<f")


def f32(x: float) -> float:
    return float(F32.unpack(F32.pack(x))[0])


@pytest.fixture(scope="module")
def feast_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, FeastRepo]]:
    if not feast_built():
        if os.environ.get("DRIFTLINE_RIG", "").lower() == "off":
            pytest.skip("DRIFTLINE_RIG=off and Feast's venv is not built (make rig)")
        pytest.fail("Feast's venv is not built: run `make rig` (tests/rig/feast/build.sh)")
    folder = tmp_path_factory.mktemp("feast")
    with RedisServer(log_path=folder / "redis.log") as server:
        repo = FeastRepo(folder / "repo", server.port, project=PROJECT)
        columns = ["user_id", "txn_count", "age", "ratio", "amount", "segment", "vip"]
        at = NOW - timedelta(minutes=5)
        repo.materialize(
            {
                "user_stats": [
                    {**dict(zip(columns, u, strict=True)), "event_timestamp": at} for u in USERS
                ],
                "merchant_risk": [
                    {"merchant_id": m, "risk": r, "event_timestamp": at}
                    for m, r in (("m", 0.5), ("m2", 0.75))
                ],
                "user_merchant": [
                    {"user_id": u, "merchant_id": m, "pair_count": c, "event_timestamp": at}
                    for u, m, c in ((1, "m", 1), (2, "m2", 7), (2**40, "m", 5))
                ],
            },
            start=NOW - timedelta(days=30),
            end=NOW + timedelta(minutes=1),
        )
        yield server, repo


@pytest.fixture(scope="module")
def feast_redis(feast_store: tuple[RedisServer, FeastRepo]) -> RedisServer:
    return feast_store[0]


@pytest.fixture
def model_doc(
    unique: str,
    mlflow_server: MlflowServer,
    redis_server: RedisServer,
    kafka: KafkaBroker,
    feast_redis: RedisServer,
) -> dict[str, Any]:
    doc = model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=redis_server.url,
        inference={"batching": {"maxBatchSize": 32, "maxDelayMs": 1}, "baseline": False},
    )
    doc["spec"]["features"] += copy.deepcopy(SOURCED + KEYED)
    return doc


def spy_on_inputs(server: Running, seen: dict[str, tuple[float, ...]]) -> None:
    """Record, per request id, the sourced columns of the rows the model was given."""
    service = server.service
    columns = [service.contract.column[f["name"]][1] for f in SOURCED]
    predict = service.predict

    async def spied(*args: Any, **kwargs: Any) -> Served:
        served = await predict(*args, **kwargs)
        numeric = args[0].numeric
        for row, request_id in enumerate(served.request_ids):
            seen[request_id] = tuple(float(numeric[row, c]) for c in columns)
        return served

    service.predict = spied  # type: ignore[method-assign]


def counted(feature: str, outcome: str) -> float:
    labels = {"feature": feature, "outcome": outcome}
    name = "driftline_inference_feature_source_errors_total"
    return REGISTRY.get_sample_value(name, labels) or 0.0


def logged(kafka: KafkaBroker, server: Running, count: int) -> dict[str, Prediction]:
    records = read_predictions(kafka, server.service.model.topics.predictions, count)
    events = [decode(r.value(), Prediction) for r in records]
    return {e.request_id: e for e in events}


def test_values_feast_materialized_are_served_and_logged_exactly(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    kafka: KafkaBroker,
    feast_redis: RedisServer,
) -> None:
    publish(bias=(0.0, 0.0), aliases=[ALIAS_CHAMPION])
    server = serve(feast_redis_url=feast_redis.url)
    seen: dict[str, tuple[float, ...]] = {}
    spy_on_inputs(server, seen)
    names = [f["name"] for f in SOURCED]
    before = {(n, o): counted(n, o) for n in names for o in ("missing", "stale", "mistyped")}

    entities = ["1", "2", str(2**40), "999", "not-a-number"]
    answer = server.predict([ROW] * len(entities), entity_id=entities)
    assert answer.status_code == 200, answer.text
    single = server.predict(ROW, entity_id="1")  # one row: one plain HMGET
    assert single.status_code == 200

    ids = [p["request_id"] for p in answer.json()["predictions"]] + [single.json()["request_id"]]
    events = logged(kafka, server, len(ids))
    served = [tuple(events[i].features[n] for n in names) for i in ids]
    assert served == [seen[i] for i in ids]  # the model's input is what the log holds
    assert [s[:5] for s in served] == [
        (12.0, 0.25, 1234.5, 1.0, 3.0),
        (0.0, f32(0.1), -0.5, 0.0, 3.0),
        (float(2**40), -3.5, 0.125, 0.0, 3.0),
        (-1.0, 0.0, -2.5, 0.0, 3.0),  # a user Feast never wrote: the defaults
        (-1.0, 0.0, -2.5, 0.0, 3.0),  # an entity id that is no int64: the same
        (12.0, 0.25, 1234.5, 1.0, 3.0),
    ]
    assert [s[5] for s in served[:5]] == [0.0] * 5  # the aggregate, read beside Feast
    after = {key: counted(*key) - value for key, value in before.items()}
    assert {k: v for k, v in after.items() if v} == {
        **{(n, "missing"): 2 for n in ("txn_count", "ratio", "amount", "vip")},
        ("segment", "missing"): 3,  # and a null
        ("segment", "mistyped"): 3,
    }


def test_feast_unreachable_serves_defaults_and_counts_or_refuses_as_the_spec_says(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    kafka: KafkaBroker,
    model_doc: dict[str, Any],
) -> None:
    publish(bias=(0.0, 0.0), aliases=[ALIAS_CHAMPION])
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    server = serve(feast_redis_url=nowhere)
    before = counted("txn_count", "defaulted")
    answer = server.predict(ROW, entity_id="1")
    assert answer.status_code == 200, answer.text
    assert counted("txn_count", "defaulted") == before + 1
    event = logged(kafka, server, 1)[answer.json()["request_id"]]
    assert [event.features[f["name"]] for f in SOURCED] == [-1.0, 0.0, -2.5, 0.0, 3.0, 0.0]

    refusing = copy.deepcopy(model_doc)
    ratio = next(f for f in refusing["spec"]["features"] if f["name"] == "ratio")
    ratio["source"]["onUnavailable"] = "refuse"
    strict = serve(refusing, feast_redis_url=nowhere)
    answer = strict.predict(ROW, entity_id="1")
    assert answer.status_code == 503
    assert answer.json()["field"] == "features.ratio"
    assert answer.headers["retry-after"] == "1"
    assert counted("ratio", "refused") >= 1
    assert httpx.get(f"{strict.url}/v2/health/ready").status_code == 200


def test_join_keys_from_named_fields_serve_what_the_offline_join_gives(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    kafka: KafkaBroker,
    feast_store: tuple[RedisServer, FeastRepo],
    model_doc: dict[str, Any],
    tmp_path: Any,
) -> None:
    redis, repo = feast_store
    publish(bias=(0.0, 0.0), aliases=[ALIAS_CHAMPION])
    server = serve(feast_redis_url=redis.url)
    customers = ["1", "2", str(2**40), "1", "2"]
    shops = ["m", "m2", "m", "nowhere", "m"]  # (1, nowhere) and (2, m): no such pair
    answer = server.predict([ROW] * 5, entity_id=customers, customer=customers, shop=shops)
    assert answer.status_code == 200, answer.text
    ids = [p["request_id"] for p in answer.json()["predictions"]]
    events = logged(kafka, server, len(ids))
    online = [events[i].features for i in ids]
    assert [(f["risk"], f["pair_count"]) for f in online] == [
        (0.5, 1.0),
        (0.75, 7.0),
        (0.5, 5.0),
        (-1.0, -1.0),  # a merchant Feast never wrote: both defaults
        (0.5, -1.0),
    ]

    refused = server.predict([ROW] * 2, customer=["1", "u-2"], shop="m")
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "customer[1]"
    assert "'u-2' is no int64" in refused.json()["error"]

    # Offline: the same rows as of now, joined by Feast's point-in-time retrieval.
    entities = tmp_path / "labeled.jsonl"
    at = datetime.now(UTC).isoformat()
    entities.write_text(
        "".join(
            json.dumps({"entity_id": c, "customer": int(c), "shop": m, "event_timestamp": at,
                        **ROW, "visits": 0.0, "label": 0}) + "\n"
            for c, m in zip(customers, shops, strict=True)
        )
    )  # fmt: skip
    model = parse_dynamic_model(model_doc)
    python = str(feast_venv() / "bin" / "python")
    offline, _ = rows_from_feast(model, entities, repo.path, python)
    names = [f["name"] for f in SOURCED + KEYED if "feast" in f["source"]]
    assert len(names) == 7
    assert [[f32(row[n]) for n in names] for row in offline] == [
        [event[n] for n in names] for event in online
    ]
