"""What runs beside a request: the prediction log, the cache, and serving without either."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from driftline.api.artifacts import ALIAS_BASELINE, ALIAS_CHAMPION
from driftline.api.events import Prediction, decode
from driftline.api.routing import RoutingTable
from driftline.common.redis_state import RoutingStore
from driftline.inference import metrics
from driftline.local.servers import free_port
from driftline.local.servers.kafka import KafkaBroker
from tests.integration.inference.harness import Running, wait_until

from .conftest import SAYS_0, SAYS_1, read_predictions

pytestmark = pytest.mark.integration

ROW = {"x1": 1.5, "x2": -2.0, "x3": 0.25}


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_prediction_is_logged_keyed_by_request_id(
    serve: Callable[..., Running], publish: Callable[..., str], kafka: KafkaBroker
) -> None:
    version = publish(SAYS_1, aliases=[ALIAS_CHAMPION])
    server = serve()
    one = server.predict(ROW, entity_id="e-1").json()
    many = server.predict([ROW, {**ROW, "x1": 7}], entity_id=["e-2", "e-3"]).json()
    sent = {one["request_id"]: ("e-1", 1.5)}
    for row, entity, x1 in zip(many["predictions"], ["e-2", "e-3"], [1.5, 7], strict=True):
        sent[row["request_id"]] = (entity, x1)

    records = read_predictions(kafka, server.service.model.topics.predictions, 3)
    assert len(records) == 3
    for record in records:
        event = decode(record.value(), Prediction)
        assert record.key().decode() == event.request_id
        entity, x1 = sent[event.request_id]
        assert event.entity_id == entity
        assert event.features == {**ROW, "x1": x1}
        assert (event.model, event.model_version, event.variant) == (
            server.service.name,
            version,
            "stable",
        )
        assert event.output == 1.0 and event.scores is not None and len(event.scores) == 2
        assert abs(event.ts - time.time()) < 600


def test_an_absent_broker_never_blocks_or_fails_a_request(
    serve: Callable[..., Running], publish: Callable[..., str]
) -> None:
    publish(aliases=[ALIAS_CHAMPION])
    dead = f"127.0.0.1:{free_port()}"
    server = serve(kafka_bootstrap_servers=dead, log_buffer=100, log_flush_ms=1000)
    before = counter(metrics.PREDICTIONS_DROPPED_TOTAL, reason="buffer_full")
    for _ in range(150):  # more than the buffer holds before its next drain
        assert server.predict(ROW).status_code == 200
    log = server.service.predictions
    assert log is not None
    dropped = counter(metrics.PREDICTIONS_DROPPED_TOTAL, reason="buffer_full") - before
    assert dropped + log.buffered + len(log.producer) >= 150 - 100


def test_the_cache_answers_repeats_and_never_crosses_versions(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    model_doc: dict[str, Any],
    redis_client: Any,
) -> None:
    first = publish(SAYS_0, aliases=[ALIAS_CHAMPION])
    second = publish(SAYS_1)
    doc = copy.deepcopy(model_doc)
    doc["spec"]["inference"]["cache"] = {"enabled": True, "ttlSeconds": 60}
    server = serve(doc)
    hits = counter(metrics.CACHE_TOTAL, result="hit")
    misses = counter(metrics.CACHE_TOTAL, result="miss")

    answers = [server.predict(ROW).json() for _ in range(3)]
    assert {(a["model_version"], a["label"]) for a in answers} == {(first, 0)}
    assert counter(metrics.CACHE_TOTAL, result="miss") - misses == 1
    assert counter(metrics.CACHE_TOTAL, result="hit") - hits == 2
    assert answers[1]["probabilities"] == answers[0]["probabilities"]
    assert len({a["request_id"] for a in answers}) == 3  # a cached answer is a new prediction

    keys = redis_client.keys(f"driftline:test:{server.service.name}:cache:{first}:*")
    assert len(keys) == 1 and 0 < redis_client.ttl(keys[0]) <= 60

    # One row cached, one new: each row gets its own answer, in order.
    other = {**ROW, "x3": 99.0}
    both = server.predict([other, ROW]).json()["predictions"]
    assert [p["probabilities"] for p in both][1] == answers[0]["probabilities"]
    assert both[0]["probabilities"] != answers[0]["probabilities"]
    assert counter(metrics.CACHE_TOTAL, result="hit") - hits == 3
    pattern = f"driftline:test:{server.service.name}:cache:{first}:*"
    wait_until(lambda: len(redis_client.keys(pattern)) == 2, 5, "the new row in the cache")

    store = RoutingStore(server.service.namespace, server.service.name)
    store.write(redis_client, RoutingTable(stable=second, revision=1))
    wait_until(lambda: server.predict(ROW).json()["model_version"] == second, 20, "the swap")
    again = server.predict(ROW).json()
    assert (again["model_version"], again["label"]) == (second, 1)  # not the cached version 1


def test_redis_down_still_serves_without_cache_and_routing(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    model_doc: dict[str, Any],
) -> None:
    version = publish(aliases=[ALIAS_CHAMPION])
    doc = copy.deepcopy(model_doc)
    doc["spec"]["inference"]["cache"] = {"enabled": True}
    dead = f"redis://127.0.0.1:{free_port()}/0"
    errors = counter(metrics.CACHE_TOTAL, result="error")
    bypass = counter(metrics.CACHE_TOTAL, result="bypass")
    server = serve(doc, redis_url=dead)  # no routing table readable: the champion serves
    for _ in range(20):
        answer = server.predict(ROW)
        assert answer.status_code == 200 and answer.json()["model_version"] == version
    failed = counter(metrics.CACHE_TOTAL, result="error") - errors
    skipped = counter(metrics.CACHE_TOTAL, result="bypass") - bypass
    assert failed >= 1 and failed + skipped == 20
    assert server.service.stats.unwritten()  # kept for when Redis returns


def test_the_baseline_is_scored_beside_and_logged(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    model_doc: dict[str, Any],
    kafka: KafkaBroker,
) -> None:
    baseline = publish(SAYS_1, aliases=[ALIAS_BASELINE])
    stable = publish(SAYS_0, aliases=[ALIAS_CHAMPION])
    doc = copy.deepcopy(model_doc)
    doc["spec"]["inference"]["baseline"] = True
    server = serve(doc)
    wait_until(lambda: server.service.pool.state.baseline, 20, "the baseline")  # type: ignore[union-attr]
    answer = server.predict(ROW).json()
    assert (answer["model_version"], answer["label"]) == (stable, 0)
    records = read_predictions(kafka, server.service.model.topics.predictions, 2)
    events = {decode(r.value(), Prediction).variant: decode(r.value(), Prediction) for r in records}
    assert events["baseline"].model_version == baseline and events["baseline"].output == 1.0
    assert events["baseline"].request_id == answer["request_id"]


def test_policy_actions_are_served_logged_and_counted(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    kafka: KafkaBroker,
    model_doc: dict[str, Any],
) -> None:
    version = publish(SAYS_1, aliases=[ALIAS_CHAMPION])
    doc = copy.deepcopy(model_doc)
    x1, x2, x3 = doc["spec"]["features"]
    x1.update(min=0, max=2, onInvalid={"outOfRange": "clip"})
    x2.update(max=1, onInvalid={"outOfRange": "flag", "missing": "impute", "imputeValue": 0.5})
    x3.update(max=1, onInvalid={"outOfRange": "refuse"})
    server = serve(doc)
    clipped = server.predict({**ROW, "x1": 9}).json()  # x1 beyond max: clipped to 2
    imputed = server.predict({"x1": 1.0, "x3": 0.25}).json()  # x2 absent: 0.5
    flagged = server.predict({**ROW, "x2": 3.0}).json()  # x2 beyond max: passed on, marked
    plain = server.predict(ROW).json()
    refused = server.predict({**ROW, "x3": 5})
    assert refused.status_code == 422
    assert refused.json()["field"] == "features.x3"
    assert "onInvalid.outOfRange: refuse" in refused.json()["error"]

    records = read_predictions(kafka, server.service.model.topics.predictions, 4)
    logged = {e.request_id: e for e in (decode(r.value(), Prediction) for r in records)}
    assert logged[clipped["request_id"]].features == {**ROW, "x1": 2.0}
    assert logged[clipped["request_id"]].flags == {"x1": "clip"}
    assert logged[imputed["request_id"]].features == {"x1": 1.0, "x2": 0.5, "x3": 0.25}
    assert logged[imputed["request_id"]].flags == {"x2": "impute"}
    assert logged[flagged["request_id"]].features == {**ROW, "x2": 3.0}
    assert logged[flagged["request_id"]].flags == {"x2": "flag"}
    assert logged[plain["request_id"]].flags is None
    for feature, action in (("x1", "clip"), ("x2", "impute"), ("x2", "flag")):
        labels = {"feature": feature, "version": version, "action": action}
        assert counter(metrics.VALUE_POLICY_TOTAL, **labels) == 1
    assert counter(metrics.VALUE_POLICY_TOTAL, feature="x3", version="", action="refuse") >= 1
