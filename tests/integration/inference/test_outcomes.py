"""The outcomes route against a real broker, and the client against the real app.

An outcome is accepted (202) only once Kafka has acknowledged it: read back here from
the outcomes topic. A broker that is away gets a 503 with `Retry-After` naming every
request id not kept, never a 500, and the client sends them again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.events import Outcome, decode
from driftline.client import Client, OutcomesNotSentError, RequestError
from driftline.inference import metrics
from driftline.local.servers import TansuBroker, free_port
from driftline.local.servers.kafka import KafkaBroker
from tests.integration.inference.harness import Running
from tests.polling import wait_until

from .conftest import SAYS_1, read_predictions

pytestmark = pytest.mark.integration

ROW = {"x1": 1.5, "x2": -2.0, "x3": 0.25}


def counted(result: str) -> float:
    return REGISTRY.get_sample_value(metrics.OUTCOMES_TOTAL, {"result": result}) or 0.0


def outcomes_url(server: Running) -> str:
    return f"{server.url}/v1/models/{server.name}/outcomes"


def read_outcomes(kafka: KafkaBroker, server: Running, count: int) -> dict[str, float]:
    records = read_predictions(kafka, server.service.model.topics.outcomes, count)
    found = {}
    for record in records:
        outcome = decode(record.value(), Outcome)
        assert record.key().decode() == outcome.request_id
        found[outcome.request_id] = outcome.label
    return found


def test_outcomes_are_accepted_once_kafka_has_them(
    serve: Callable[..., Running], publish: Callable[..., str], kafka: KafkaBroker
) -> None:
    publish(SAYS_1, aliases=[ALIAS_CHAMPION])
    server = serve()
    ids = [p["request_id"] for p in server.predict([ROW, ROW, ROW]).json()["predictions"]]
    before = counted("accepted")
    one = httpx.post(outcomes_url(server), json={"request_id": ids[0], "label": 1}, timeout=10)
    assert (one.status_code, one.json()) == (202, {"accepted": 1})
    rows = [{"request_id": ids[1], "label": 0}, {"request_id": ids[2], "label": 1.0}]
    many = httpx.post(outcomes_url(server), json=rows, timeout=10)
    assert (many.status_code, many.json()) == (202, {"accepted": 2})
    # A retry of the same outcome is accepted again; the joiner keeps the first one.
    again = httpx.post(outcomes_url(server), json={"request_id": ids[0], "label": 1}, timeout=10)
    assert again.status_code == 202
    assert counted("accepted") - before == 4
    found = read_outcomes(kafka, server, 4)
    assert found == {ids[0]: 1.0, ids[1]: 0.0, ids[2]: 1.0}


def test_invalid_outcomes_are_refused_naming_the_field(serve: Callable[..., Running]) -> None:
    server = serve(wait_ready=False)  # outcomes need no model loaded
    before = counted("refused")
    cases: list[tuple[Any, str]] = [
        ({"request_id": "r", "label": 1, "score": 0.3}, "score"),
        ([{"request_id": "a", "label": 1}, {"request_id": "b", "label": 2}], "[1].label"),
        ([{"request_id": "a", "label": "yes"}], "[0].label"),
        ({"request_id": "r", "target": 3.5}, "target"),
        ([], "body"),
    ]
    for body, field in cases:
        answer = httpx.post(outcomes_url(server), json=body, timeout=10)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["field"] == field
        assert field.split(".")[-1] in answer.json()["error"] or field == "body"
    assert counted("refused") - before == 6  # rows, or 1 for an empty list
    wrong_model = httpx.post(
        f"{server.url}/v1/models/other/outcomes", json={"request_id": "r", "label": 1}, timeout=10
    )
    assert wrong_model.status_code == 404


@pytest.mark.timeout(120)
def test_a_broker_that_went_away_gets_503_with_retry_after_never_a_500(
    serve: Callable[..., Running], tmp_path: Path
) -> None:
    broker = TansuBroker(log_path=tmp_path / "tansu.log").start()  # this test stops it
    try:
        server = serve(
            wait_ready=False, kafka_bootstrap_servers=broker.bootstrap_servers,
            outcome_timeout_seconds=1.0, prediction_log=False,
        )  # fmt: skip
        # A fresh broker may not take the first record within the 1 s budget (metadata,
        # the topic's leader): that first answer is a 503, which the client retries.
        # Past the route's 2 s back-off, a retry while the broker is up gets its 202.
        wait_until(
            lambda: (
                httpx.post(
                    outcomes_url(server), json={"request_id": "a", "label": 1}, timeout=10
                ).status_code
                == 202
            ),
            timeout=30,
            what="the outcomes route to take a record while the broker is up",
            interval=2.5,
        )
    finally:
        broker.stop()
    before = counted("failed")
    rows = [{"request_id": "b", "label": 0}, {"request_id": "c", "label": 1}]
    started = time.monotonic()
    answer = httpx.post(outcomes_url(server), json=rows, timeout=10)
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["retry-after"]) >= 1
    body = answer.json()
    assert (body["failed"], body["accepted"]) == (["b", "c"], 0)
    assert "nothing was kept" in body["error"]
    assert time.monotonic() - started < 5
    # While the broker is taken for away, later requests are answered at once.
    started = time.monotonic()
    again = httpx.post(outcomes_url(server), json=rows[0], timeout=10)
    assert again.status_code == 503 and again.json()["failed"] == ["b"]
    assert time.monotonic() - started < 0.5
    assert counted("failed") - before == 3


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.outcome_requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/outcomes"):
            self.outcome_requests += 1
        return super().handle_request(request)


def test_the_client_predicts_and_sends_outcomes_in_batches(
    serve: Callable[..., Running], publish: Callable[..., str], kafka: KafkaBroker
) -> None:
    publish(SAYS_1, aliases=[ALIAS_CHAMPION])
    server = serve()
    transport = CountingTransport()
    with Client(
        server.url, server.name, batch_size=3, batch_seconds=60, transport=transport
    ) as client:
        answer = client.predict(ROW, entity_id="e-1")
        assert answer["label"] == 1
        answers = [answer, *client.predict_many([ROW] * 6, entity_ids=[f"e{i}" for i in range(6)])]
        for i, a in enumerate(answers):
            client.send_outcome(a["request_id"], i % 2)
        with pytest.raises(RequestError) as caught:
            client.predict({"x1": "a"})
        assert caught.value.status == 422 and caught.value.field == "features.x1"
    assert client.outcomes.sent == 7 and transport.outcome_requests == 3  # 3 + 3, then 1 at close
    found = read_outcomes(kafka, server, 7)
    assert found == {a["request_id"]: float(i % 2) for i, a in enumerate(answers)}


def test_the_client_waits_for_the_first_version_as_retry_after_says(
    serve: Callable[..., Running], publish: Callable[..., str]
) -> None:
    server = serve(wait_ready=False)
    first = server.predict(ROW)
    assert first.status_code == 503
    # A first run says how to register the first version, in one sentence.
    error = first.json()["error"]
    assert "python -m driftline.trainer bootstrap" in error and "driftline.trainer import" in error
    assert first.headers["retry-after"] == "1"
    threading.Timer(0.5, publish, kwargs={"bias": SAYS_1, "aliases": [ALIAS_CHAMPION]}).start()
    with Client(server.url, server.name, max_retries=30) as client:
        assert client.predict(ROW)["label"] == 1


def test_the_client_keeps_outcomes_the_server_could_not_send(
    serve: Callable[..., Running],
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    server = serve(
        wait_ready=False, kafka_bootstrap_servers=dead, outcome_timeout_seconds=0.5,
        prediction_log=False,
    )  # fmt: skip
    client = Client(server.url, server.name, batch_seconds=60, max_retries=1)
    client.send_outcomes([("a", 1), ("b", 0)])
    with pytest.raises(OutcomesNotSentError) as caught:
        client.flush()
    assert caught.value.request_ids == ["a", "b"] and "503" in caught.value.reason
    assert client.buffered == 2
    with pytest.raises(OutcomesNotSentError):
        client.close()


@pytest.mark.timeout(120)
def test_the_demo_traffic_sends_each_outcome_a_second_after_its_prediction(
    serve: Callable[..., Running], publish: Callable[..., str], kafka: KafkaBroker
) -> None:
    import asyncio

    from driftline.common.streams import SEAStream
    from driftline.local.traffic import TrafficGenerator

    publish(SAYS_1, aliases=[ALIAS_CHAMPION])
    server = serve()
    client = Client(server.url, server.name, batch_seconds=0.1)
    traffic = TrafficGenerator(
        inference_url=server.url,
        model_name=server.name,
        stream=SEAStream(seed=3, schedule=[(0, 0)]),
        outcomes=client,
        rate=40,
        concurrency=2,
    )

    async def run_for(seconds: float) -> None:
        task = asyncio.create_task(traffic.run())
        await asyncio.sleep(seconds)
        traffic.stop()
        await task

    asyncio.run(run_for(3.0))
    answered = traffic.log.totals()["answered"]
    assert answered >= 40 and traffic.log.outcomes_sent == answered
    assert client.outcomes.sent == answered
    predictions = {
        r.key().decode(): r.timestamp()[1]
        for r in read_predictions(kafka, server.service.model.topics.predictions, answered)
    }
    outcomes = read_predictions(kafka, server.service.model.topics.outcomes, answered)
    assert len(outcomes) == answered
    delays = [
        decode(r.value(), Outcome).ts - predictions[r.key().decode()] / 1000 for r in outcomes
    ]
    # A second after the prediction, but those still due when the traffic stops go at once.
    assert sorted(delays)[len(delays) // 2] >= 0.9
