"""`Client`: the plain JSON predict route and the outcomes route, with retries and batching.

Retries are bounded (`max_retries`) and back off exponentially with jitter; a 429 or
503 that says `Retry-After` is waited for as it asks (up to `max_backoff_seconds`).
A prediction is retried only when it was surely not served (429, 503, no
connection); outcomes on any transport error too, since the joiner keeps the first
outcome of a request id and ignores its repeats.

Outcomes are buffered and sent by a background thread, `batch_size` at a time or
after `batch_seconds`, so `send_outcome` never waits for the network; `flush()` sends
what is buffered now, and `close()` (or leaving the `with` block) flushes the rest.
An outcome the server refuses (422) is dropped and logged (the other outcomes of its
batch are sent); one that could not be sent after the retries stays buffered for the
next batch, up to `max_buffered`, beyond which the oldest are dropped and counted.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

log = logging.getLogger(__name__)

Label = int | float
_ROW = re.compile(r"^\[(\d+)\]")
_RETRYABLE = frozenset({429, 503})


class ClientError(Exception):
    """Base of the client's errors."""


class RequestError(ClientError):
    """The server answered with an error (after any retries): its status, message and field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(f"{status}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.message = message
        self.field = field


class OutcomesNotSentError(ClientError):
    """Some outcomes were not kept by the server: `request_ids` names them."""

    def __init__(self, request_ids: list[str], reason: str) -> None:
        super().__init__(f"{len(request_ids)} outcome(s) not sent: {reason}")
        self.request_ids = request_ids
        self.reason = reason


@dataclass
class OutcomeCounts:
    sent: int = 0
    """Acknowledged by the server (202)."""
    rejected: int = 0
    """Refused as invalid (422) and dropped."""
    dropped: int = 0
    """Dropped because the buffer was full while the server could not take them."""


class Client:
    """One model's inference API: `predict`, `predict_many`, `send_outcome(s)`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        timeout_seconds: float = 10.0,
        batch_size: int = 500,
        batch_seconds: float = 1.0,
        max_buffered: int = 100_000,
        max_retries: int = 5,
        backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if batch_size < 1 or batch_seconds <= 0 or max_buffered < batch_size or max_retries < 0:
            raise ValueError(
                "need batch_size >= 1, batch_seconds > 0, max_buffered >= batch_size "
                "and max_retries >= 0"
            )
        base = base_url.rstrip("/")
        self.model = model
        self.predict_url = f"{base}/v1/models/{model}/predict"
        self.outcomes_url = f"{base}/v1/models/{model}/outcomes"
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.max_buffered = max_buffered
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.outcomes = OutcomeCounts()
        self._http = httpx.Client(timeout=timeout_seconds, transport=transport, headers=headers)
        self._buffer: deque[tuple[str, Label]] = deque()
        self._oldest = 0.0
        """When the oldest buffered outcome came in (monotonic)."""
        self._cond = threading.Condition()
        self._sending = threading.Lock()
        self._closing = False
        self._flusher: threading.Thread | None = None

    # --- predictions -----------------------------------------------------------------------

    def predict(
        self,
        features: Mapping[str, Any],
        entity_id: str | int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """One row's answer: `label`/`probabilities` or `value`, `request_id`, `model_version`,
        `variant`. Keep `request_id`: the outcome of this row is sent with it."""
        body: dict[str, Any] = {"features": dict(features)}
        if entity_id is not None:
            body["entity_id"] = entity_id
        if request_id is not None:
            body["request_id"] = request_id
        answer: dict[str, Any] = self._post(self.predict_url, body).json()
        return answer

    def predict_many(
        self,
        rows: Sequence[Mapping[str, Any]],
        entity_ids: Sequence[str | int | None] | None = None,
    ) -> list[dict[str, Any]]:
        """One answer per row, in order (one request)."""
        body: dict[str, Any] = {"features": [dict(r) for r in rows]}
        if entity_ids is not None:
            body["entity_id"] = list(entity_ids)
        predictions: list[dict[str, Any]] = self._post(self.predict_url, body).json()["predictions"]
        return predictions

    # --- outcomes --------------------------------------------------------------------------

    def send_outcome(self, request_id: str, label: Label) -> None:
        """Buffer the true label (class index, or observed value) of one prediction."""
        self.send_outcomes([(request_id, label)])

    def send_outcomes(self, outcomes: Iterable[tuple[str, Label]]) -> None:
        """Buffer several (request id, label) pairs; a background thread sends them."""
        with self._cond:
            if self._closing:
                raise ClientError("the client is closed")
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.extend(outcomes)
            self._trim()
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_in_background, name="driftline-outcomes", daemon=True
                )
                self._flusher.start()
            self._cond.notify()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def flush(self) -> None:
        """Send every buffered outcome now; raise `OutcomesNotSentError` naming those the
        server did not keep (refused ones are dropped, the others stay buffered)."""
        not_sent: list[str] = []
        reasons: list[str] = []
        while True:
            batch = self._take()
            if not batch:
                break
            left, reason = self._send_batch(batch)
            if left:
                not_sent += [request_id for request_id, _ in left]
                reasons.append(reason)
                self._put_back(left)
                break  # the server is not taking outcomes now: keep the rest for later
        if not_sent:
            raise OutcomesNotSentError(not_sent, "; ".join(reasons))

    def close(self) -> None:
        """Flush what is buffered (raising as `flush` does), then release the connections."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._flusher is not None:
            self._flusher.join()
        try:
            self.flush()
        finally:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------

    def _flush_in_background(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._due():
                    wait = self._oldest + self.batch_seconds - time.monotonic()
                    self._cond.wait(wait if self._buffer else None)
                if self._closing:
                    return
            batch = self._take()
            if batch:
                left, reason = self._send_batch(batch)
                if left:
                    log.warning("%d outcome(s) kept for later: %s", len(left), reason)
                    self._put_back(left)
                    # Not due again at once: the next try waits a whole batch period.
                    with self._cond:
                        self._oldest = time.monotonic()

    def _due(self) -> bool:
        return len(self._buffer) >= self.batch_size or (
            bool(self._buffer) and time.monotonic() - self._oldest >= self.batch_seconds
        )

    def _take(self) -> list[tuple[str, Label]]:
        with self._cond:
            n = min(self.batch_size, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(n)]
            if self._buffer:
                self._oldest = time.monotonic()
            return batch

    def _put_back(self, outcomes: list[tuple[str, Label]]) -> None:
        with self._cond:
            self._buffer.extendleft(reversed(outcomes))
            self._trim()

    def _trim(self) -> None:
        over = len(self._buffer) - self.max_buffered
        if over > 0:
            for _ in range(over):
                self._buffer.popleft()
            self.outcomes.dropped += over
            log.warning("the outcome buffer is full: %d oldest outcome(s) dropped", over)

    def _send_batch(self, batch: list[tuple[str, Label]]) -> tuple[list[tuple[str, Label]], str]:
        """Send one batch with retries: (the outcomes not kept, why)."""
        with self._sending:
            pending = batch
            reason = ""
            attempt = 0
            while True:
                body = [{"request_id": r, "label": label} for r, label in pending]
                try:
                    response = self._http.post(self.outcomes_url, json=body)
                except httpx.TransportError as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    wait = self._backoff(attempt, None)
                else:
                    if response.status_code == 202:
                        self.outcomes.sent += len(pending)
                        return [], ""
                    error = _error_of(response)
                    if response.status_code == 422:  # not a failure to retry: drop, send the rest
                        pending = self._without_refused(pending, error)
                        if not pending:
                            return [], ""
                        continue
                    reason = f"{response.status_code}: {error.get('error', response.text[:200])}"
                    if response.status_code not in _RETRYABLE:
                        return pending, reason
                    failed = error.get("failed")
                    if isinstance(failed, list) and failed:  # retry only what was not kept
                        keep = set(map(str, failed))
                        self.outcomes.sent += sum(1 for r, _ in pending if r not in keep)
                        pending = [o for o in pending if o[0] in keep]
                    wait = self._backoff(attempt, response.headers.get("retry-after"))
                if attempt == self.max_retries:
                    return pending, reason
                attempt += 1
                time.sleep(wait)

    def _without_refused(
        self, pending: list[tuple[str, Label]], error: dict[str, Any]
    ) -> list[tuple[str, Label]]:
        """The batch less the row a 422 names (all of it when it names none)."""
        field = str(error.get("field") or "")
        match = _ROW.match(field)
        index = int(match[1]) if match else -1
        refused = [pending[index]] if 0 <= index < len(pending) else pending
        self.outcomes.rejected += len(refused)
        log.warning("outcome(s) refused and dropped: %s", error.get("error", error))
        return [o for o in pending if o not in refused]

    def _post(self, url: str, body: Any) -> httpx.Response:
        wait = 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(wait)
            try:
                response = self._http.post(url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # surely not served
                if attempt == self.max_retries:
                    raise ClientError(f"{url}: {exc}") from exc
                wait = self._backoff(attempt, None)
                continue
            except httpx.HTTPError as exc:  # e.g. no answer in time: it may have been served
                raise ClientError(f"{url}: {type(exc).__name__}: {exc}") from exc
            if response.status_code in _RETRYABLE and attempt < self.max_retries:
                wait = self._backoff(attempt, response.headers.get("retry-after"))
                continue
            if response.status_code >= 400:
                error = _error_of(response)
                raise RequestError(
                    response.status_code,
                    str(error.get("error", response.text[:500])),
                    error.get("field"),
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """What the server asked for, else exponential with jitter; never above the cap."""
        if retry_after is not None:
            try:
                return min(self.max_backoff_seconds, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: rare from Driftline, back off as usual
        exponential: float = min(self.max_backoff_seconds, self.backoff_seconds * 2.0**attempt)
        # Jitter: clients that failed together do not all come back together.
        return exponential * random.uniform(0.5, 1.0)


def _error_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
