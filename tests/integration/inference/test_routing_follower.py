"""Following the routing table in Redis: canary stickiness, shadow, swaps under load."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.events import Prediction, decode
from driftline.api.routing import RoutingTable, serves_candidate
from driftline.common.redis_state import RoutingStore
from driftline.local.servers.kafka import KafkaBroker
from tests.integration.inference.harness import Running, wait_until

from .conftest import SAYS_0, SAYS_1, read_predictions

pytestmark = pytest.mark.integration

ROW = {"x1": 1.0, "x2": 2.0, "x3": 3.0}


def route(server: Running, redis_client: Any, table: RoutingTable) -> None:
    RoutingStore(server.service.namespace, server.service.name).write(redis_client, table)


def serving(server: Running, version: str) -> bool:
    state = server.service.pool.state
    return state is not None and state.table.stable == version


def test_canary_sends_each_entity_to_one_version(
    serve: Callable[..., Running], publish: Callable[..., str], redis_client: Any
) -> None:
    stable = publish(SAYS_0, aliases=[ALIAS_CHAMPION])
    candidate = publish(SAYS_1)
    server = serve()
    table = RoutingTable(stable=stable, candidate=candidate, mode="canary", weight=30, revision=1)
    route(server, redis_client, table)
    wait_until(
        lambda: server.service.pool.state and server.service.pool.state.table.mode == "canary",
        20,
        "the canary table",
    )
    entities = [f"user-{i}" for i in range(120)]
    seen: dict[str, set[tuple[str, str, int]]] = {e: set() for e in entities}
    for _ in range(2):
        for entity in entities:
            answer = server.predict(ROW, entity_id=entity).json()
            seen[entity].add((answer["model_version"], answer["variant"], answer["label"]))
    on_candidate = 0
    for entity, answers in seen.items():
        assert len(answers) == 1, f"{entity} saw {answers}"  # one entity, one version
        ((version, variant, label),) = answers
        expected = serves_candidate(table, entity)
        assert (version, variant, label) == (
            (candidate, "candidate", 1) if expected else (stable, "stable", 0)
        )
        on_candidate += expected
    assert 0 < on_candidate < len(entities)

    # A request with many entities is split by entity, each row to its own version.
    many = server.predict([ROW] * len(entities[:20]), entity_id=entities[:20]).json()
    for entity, row in zip(entities[:20], many["predictions"], strict=True):
        assert row["model_version"] == (candidate if serves_candidate(table, entity) else stable)


def test_the_canary_sticks_to_the_field_the_spec_names(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    redis_client: Any,
    model_doc: dict[str, Any],
) -> None:
    stable = publish(SAYS_0, aliases=[ALIAS_CHAMPION])
    candidate = publish(SAYS_1)
    server = serve(
        {**model_doc, "spec": {**model_doc["spec"], "rollout": {"stickyKey": "user_id"}}}
    )
    table = RoutingTable(stable=stable, candidate=candidate, mode="canary", weight=50, revision=1)
    route(server, redis_client, table)
    wait_until(
        lambda: server.service.pool.state and server.service.pool.state.table.mode == "canary",
        20,
        "the canary table",
    )
    users = [f"user-{i}" for i in range(40)]
    on_candidate = 0
    for user in users:
        expected = (candidate, "candidate") if serves_candidate(table, user) else (stable, "stable")
        on_candidate += expected[1] == "candidate"
        for entity in ("e-1", "e-2", "e-3"):  # the entity id plays no part
            answer = server.predict(ROW, entity_id=entity, user_id=user).json()
            assert (answer["model_version"], answer["variant"]) == expected, (user, entity)
        oip = httpx.post(
            f"{server.url}/v2/models/{server.name}/infer",
            json={
                "inputs": [
                    {"name": name, "shape": [1], "datatype": "FP32", "data": [value]}
                    for name, value in ROW.items()
                ],
                "parameters": {"entity_id": "e-4", "user_id": user},
            },
            timeout=10,
        ).json()
        assert (oip["model_version"], oip["parameters"]["variants"]) == (
            expected[0],
            [expected[1]],
        )
    assert 0 < on_candidate < len(users)
    # Without the key the request stays on stable, as one without entity_id does by default.
    answer = server.predict(ROW, entity_id="e-1").json()
    assert answer["variant"] == "stable"


def test_revisions_only_move_forward_and_a_candidate_that_fails_is_left_out(
    serve: Callable[..., Running], publish: Callable[..., str], redis_client: Any
) -> None:
    first = publish(SAYS_0, aliases=[ALIAS_CHAMPION])
    second = publish(SAYS_1)
    server = serve()
    route(server, redis_client, RoutingTable(stable=second, revision=5))
    wait_until(lambda: serving(server, second), 20, "revision 5")
    route(server, redis_client, RoutingTable(stable=first, revision=3))  # late and stale
    route(server, redis_client, RoutingTable(stable=second, revision=6))
    wait_until(lambda: server.service.follower and server.service.follower.wanted.revision == 6)
    assert serving(server, second)

    broken = publish(SAYS_0, sha256="f" * 64)
    table = RoutingTable(stable=second, candidate=broken, mode="canary", weight=100, revision=7)
    route(server, redis_client, table)
    wait_until(lambda: broken in server.service.pool.failures, 20, "the candidate to fail")
    answer = server.predict(ROW, entity_id="anyone").json()
    assert (answer["model_version"], answer["variant"]) == (second, "stable")


def test_shadow_scores_off_the_critical_path_and_is_never_returned(
    serve: Callable[..., Running],
    publish: Callable[..., str],
    redis_client: Any,
    kafka: KafkaBroker,
) -> None:
    stable = publish(SAYS_0, aliases=[ALIAS_CHAMPION])
    candidate = publish(SAYS_1)
    server = serve()
    route(
        server,
        redis_client,
        RoutingTable(stable=stable, candidate=candidate, mode="shadow", revision=1),
    )
    wait_until(
        lambda: server.service.pool.state and server.service.pool.state.candidate, 20, "shadow"
    )
    ids = []
    for i in range(10):
        answer = server.predict(ROW, entity_id=f"e{i}").json()
        assert (answer["model_version"], answer["variant"], answer["label"]) == (
            stable,
            "stable",
            0,
        )
        ids.append(answer["request_id"])
    records = read_predictions(kafka, server.service.model.topics.predictions, 20)
    events = [decode(m.value(), Prediction) for m in records]
    by_variant = Counter((e.variant, e.model_version, e.output) for e in events)
    assert by_variant == {("stable", stable, 0.0): 10, ("shadow", candidate, 1.0): 10}
    assert {e.request_id for e in events if e.variant == "shadow"} == set(ids)
    assert {m.key().decode() for m in records} == set(ids)


def test_a_swap_of_the_stable_version_under_load_loses_no_request(
    serve: Callable[..., Running], publish: Callable[..., str], redis_client: Any
) -> None:
    first = publish(SAYS_0, aliases=[ALIAS_CHAMPION])
    second = publish(SAYS_1)
    server = serve()
    url = f"{server.url}/v1/models/{server.service.name}/predict"
    stop = threading.Event()
    answers: list[tuple[int, str | None, int | None]] = []

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                response = http.post(url, json={"features": ROW})
                body = response.json()
                answers.append((response.status_code, body.get("model_version"), body.get("label")))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(answers) > 50, 20, "traffic on the first version")
        route(server, redis_client, RoutingTable(stable=second, revision=1))
        wait_until(lambda: answers and answers[-1][1] == second, 20, "the second version")
        mark = len(answers)
        wait_until(lambda: len(answers) > mark + 50, 20, "traffic on the second version")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert {status for status, _, _ in answers} == {200}
    assert {(v, label) for _, v, label in answers} == {(first, 0), (second, 1)}
    switch = next(i for i, (_, v, _) in enumerate(answers) if v == second)
    # After the switch the first version may finish what it had in hand, and no more.
    assert sum(v == first for _, v, _ in answers[switch + 8 :]) == 0
    wait_until(lambda: first not in server.service.pool.loaded, 10, "the old version to unload")
