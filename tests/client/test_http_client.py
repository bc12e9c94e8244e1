"""The client's retries, backoff and batching against scripted answers (the real app's
answers are in tests/integration/inference/test_outcomes.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from driftline.client import Client, ClientError, OutcomesNotSentError, RequestError

Handler = Callable[[httpx.Request], httpx.Response]


def client_with(handler: Handler, **options: object) -> Client:
    defaults: dict[str, object] = {"backoff_seconds": 0.01, "batch_seconds": 0.05}
    return Client(
        "http://model:8080/",
        "churn",
        transport=httpx.MockTransport(handler),
        **{**defaults, **options},
    )


def bodies_of(requests: list[httpx.Request]) -> list[list[dict[str, object]]]:
    return [json.loads(r.content) for r in requests]


def test_a_503_is_retried_after_what_retry_after_says() -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return httpx.Response(503, headers={"retry-after": "0.3"}, json={"error": "no model"})
        return httpx.Response(200, json={"request_id": "r1", "label": 1})

    client = client_with(handler)
    assert client.predict({"x": 1.0}, entity_id="e")["request_id"] == "r1"
    assert times[1] - times[0] >= 0.29
    client.close()


def test_retries_are_bounded_and_the_last_error_says_what_happened() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, headers={"retry-after": "0"}, json={"error": "no model"})

    client = client_with(handler, max_retries=2)
    with pytest.raises(RequestError) as caught:
        client.predict({"x": 1.0})
    assert len(calls) == 3 and caught.value.status == 503 and "no model" in str(caught.value)
    client.close()


def test_a_422_is_not_retried_and_names_the_field() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"error": "x must be a number", "field": "features.x"})

    client = client_with(handler)
    with pytest.raises(RequestError) as caught:
        client.predict({"x": "a"})
    assert caught.value.field == "features.x"
    client.close()


def test_outcomes_go_in_batches_of_n_and_the_rest_on_close() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"accepted": len(json.loads(request.content))})

    client = client_with(handler, batch_size=4, batch_seconds=60)
    client.send_outcomes([(f"r{i}", i % 2) for i in range(9)])
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(b) for b in bodies_of(seen)] == [4, 4]
    assert client.buffered == 1
    client.close()
    assert [len(b) for b in bodies_of(seen)] == [4, 4, 1]
    assert bodies_of(seen)[2] == [{"request_id": "r8", "label": 0}]
    assert client.outcomes.sent == 9


def test_outcomes_go_after_t_seconds_when_fewer_than_n() -> None:
    sent = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        sent.set()
        return httpx.Response(202, json={"accepted": 1})

    client = client_with(handler, batch_size=100, batch_seconds=0.2)
    started = time.monotonic()
    client.send_outcome("r1", 1)
    assert sent.wait(5)
    assert 0.15 <= time.monotonic() - started < 3
    client.close()


def test_only_the_outcomes_not_kept_are_sent_again() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            body = {"error": "1 of 3 outcomes were not kept", "accepted": 2, "failed": ["b"]}
            return httpx.Response(503, headers={"retry-after": "0"}, json=body)
        return httpx.Response(202, json={"accepted": 1})

    client = client_with(handler)
    client.send_outcomes([("a", 0), ("b", 1), ("c", 0)])
    client.flush()
    assert bodies_of(seen)[1] == [{"request_id": "b", "label": 1}]
    assert client.outcomes.sent == 3
    client.close()


def test_a_refused_outcome_is_dropped_and_the_rest_of_its_batch_is_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        rows = json.loads(request.content)
        bad = [i for i, row in enumerate(rows) if row["label"] not in (0, 1)]
        if bad:
            return httpx.Response(422, json={"error": "no", "field": f"[{bad[0]}].label"})
        return httpx.Response(202, json={"accepted": len(rows)})

    client = client_with(handler)
    client.send_outcomes([("a", 0), ("b", 7), ("c", 1)])
    client.flush()
    assert bodies_of(seen)[-1] == [{"request_id": "a", "label": 0}, {"request_id": "c", "label": 1}]
    assert (client.outcomes.sent, client.outcomes.rejected) == (2, 1)
    client.close()


def test_outcomes_that_cannot_be_sent_stay_buffered_and_close_says_which() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = client_with(handler, max_retries=1, batch_seconds=60)
    client.send_outcomes([("a", 0), ("b", 1)])
    with pytest.raises(OutcomesNotSentError) as caught:
        client.flush()
    assert caught.value.request_ids == ["a", "b"] and "ConnectError" in caught.value.reason
    assert client.buffered == 2
    with pytest.raises(OutcomesNotSentError):
        client.close()


def test_the_buffer_is_bounded() -> None:
    client = client_with(lambda r: httpx.Response(202), batch_size=2, max_buffered=3)
    client._closing = True  # no background sends: only the bound is under test
    client._buffer.extend([("x", 0)] * 3)
    client._closing = False
    client._flusher = threading.Thread()  # taken as started
    client.send_outcomes([("y", 1), ("z", 1)])
    assert client.buffered == 3 and client.outcomes.dropped == 2
    assert list(client._buffer)[-1] == ("z", 1)


def test_a_prediction_that_may_have_been_served_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("no answer", request=request)

    client = client_with(handler)
    with pytest.raises(ClientError, match="ReadTimeout"):
        client.predict({"x": 1.0})
    assert len(calls) == 1
    client.close()
