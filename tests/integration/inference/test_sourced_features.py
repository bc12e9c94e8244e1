"""Per-entity aggregate features served by two inference replicas on one real Redis.

What is checked: concurrent requests for one entity through two servers each see a
different count, exactly 0..N-1 (the aggregate before the request, updated atomically);
the value the model got is the value the prediction log holds; keys expire after their
window; a sent value is refused by name; Redis unreachable serves the default and counts
it, or refuses with a 503 where the spec says so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from prometheus_client import REGISTRY

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.events import Prediction, decode
from driftline.common.entity_aggregates import ttl_ms
from driftline.common.redis_state import model_prefix
from driftline.inference.contract import Served
from driftline.local.servers import MlflowServer, RedisServer, free_port
from driftline.local.servers.kafka import KafkaBroker
from driftline_testing.models import model_document
from tests.integration.inference.harness import Running

from .conftest import read_predictions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

WINDOW = 600
SOURCED = [
    {"name": "visits", "source": {"aggregate": {"function": "count", "windowSeconds": WINDOW}}},
    {
        "name": "x1_sum",
        "source": {"aggregate": {"function": "sum", "of": "x1", "windowSeconds": WINDOW}},
    },
    {
        "name": "label_mean",
        "source": {"aggregate": {"function": "mean", "of": "outcome", "default": 0.5}},
    },
]
ROW = {"x1": 1.0, "x2": -1.25, "x3": 3.0}


@pytest.fixture
def model_doc(
    unique: str, mlflow_server: MlflowServer, redis_server: RedisServer, kafka: KafkaBroker
) -> dict[str, Any]:
    doc = model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=kafka.bootstrap_servers,
        redis=redis_server.url,
        inference={"batching": {"maxBatchSize": 32, "maxDelayMs": 1}, "baseline": False},
    )
    doc["spec"]["features"] += copy.deepcopy(SOURCED)
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


def logged(kafka: KafkaBroker, server: Running, count: int) -> dict[str, Prediction]:
    records = read_predictions(kafka, server.service.model.topics.predictions, count)
    events = [decode(r.value(), Prediction) for r in records]
    return {e.request_id: e for e in events}


def test_two_replicas_count_one_entity_exactly_and_log_what_they_served(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    kafka: KafkaBroker,
    redis_server: RedisServer,
) -> None:
    publish(bias=(0.0, 0.0), aliases=[ALIAS_CHAMPION])
    replicas = [serve(), serve()]
    seen: dict[str, tuple[float, ...]] = {}
    for server in replicas:
        spy_on_inputs(server, seen)
    per_client, clients = 15, 4

    def client(i: int) -> list[int]:
        server = replicas[i % 2]
        return [server.predict(ROW, entity_id="e1").status_code for _ in range(per_client)]

    with ThreadPoolExecutor(clients) as pool:
        statuses = [s for batch in pool.map(client, range(clients)) for s in batch]
    assert statuses == [200] * (per_client * clients)
    # Rows of one request count in their order; a row without an entity changes nothing.
    answer = replicas[0].predict([ROW, ROW, ROW], entity_id=["e2", "e2", "e2"])
    assert answer.status_code == 200
    assert replicas[1].predict(ROW).status_code == 200

    total = per_client * clients + 4
    events = logged(kafka, replicas[0], total)
    assert len(events) == total and set(events) == set(seen)
    for request_id, event in events.items():
        served = seen[request_id]
        assert tuple(event.features[f["name"]] for f in SOURCED) == served
    by_entity: dict[str | None, list[Prediction]] = {}
    for event in events.values():
        by_entity.setdefault(event.entity_id, []).append(event)
    counts = sorted(int(e.features["visits"]) for e in by_entity["e1"])
    assert counts == list(range(per_client * clients))  # before this request, each once
    for event in by_entity["e1"]:
        assert event.features["x1_sum"] == event.features["visits"] * ROW["x1"]
        assert event.features["label_mean"] == 0.5  # no outcome yet: the default
    ids = [p["request_id"] for p in answer.json()["predictions"]]
    assert [events[i].features["visits"] for i in ids] == [0.0, 1.0, 2.0]
    assert [e.features["visits"] for e in by_entity[None]] == [0.0]

    client_ = redis.Redis.from_url(redis_server.url)
    try:
        prefix = model_prefix(replicas[0].service.namespace, replicas[0].name)
        keys = client_.keys(f"{prefix}:agg:*")
        assert sorted(k.decode().rsplit(":", 3)[1:] for k in keys) == [
            ["", str(WINDOW), "e1"],
            ["", str(WINDOW), "e2"],
            ["x1", str(WINDOW), "e1"],
            ["x1", str(WINDOW), "e2"],
        ]  # outcome aggregates are only read at serving: no key made for them
        for key in keys:
            assert 0 < client_.pttl(key) <= ttl_ms(WINDOW)
    finally:
        client_.close()


def test_a_value_sent_for_a_sourced_feature_is_refused_by_name(
    serve: Callable[..., Running], publish: Callable[..., str]
) -> None:
    publish(bias=(0.0, 0.0), aliases=[ALIAS_CHAMPION])
    answer = serve().predict({**ROW, "visits": 3}, entity_id="e1")
    assert answer.status_code == 422
    assert answer.json()["field"] == "features.visits"


def counted(feature: str, outcome: str) -> float:
    labels = {"feature": feature, "outcome": outcome}
    name = "driftline_inference_feature_source_errors_total"
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unreachable() -> redis.asyncio.Redis:
    return redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)


def test_redis_unreachable_serves_defaults_and_counts_or_refuses_as_the_spec_says(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    kafka: KafkaBroker,
    model_doc: dict[str, Any],
) -> None:
    publish(bias=(0.0, 0.0), aliases=[ALIAS_CHAMPION])
    server = serve()
    assert server.service.sources is not None
    server.service.sources.connect(unreachable())
    before = counted("visits", "defaulted")
    answer = server.predict(ROW, entity_id="e1")
    assert answer.status_code == 200
    assert counted("visits", "defaulted") == before + 1
    event = logged(kafka, server, 1)[answer.json()["request_id"]]
    assert [event.features[f["name"]] for f in SOURCED] == [0.0, 0.0, 0.5]

    refusing = copy.deepcopy(model_doc)
    refusing["spec"]["features"][-1]["source"]["onUnavailable"] = "refuse"
    strict = serve(refusing)
    assert strict.service.sources is not None
    strict.service.sources.connect(unreachable())
    answer = strict.predict(ROW, entity_id="e1")
    assert answer.status_code == 503
    assert answer.json()["field"] == "features.label_mean"
    assert answer.headers["retry-after"] == "1"
    assert counted("label_mean", "refused") >= 1
    assert httpx.get(f"{strict.url}/v2/health/ready").status_code == 200
