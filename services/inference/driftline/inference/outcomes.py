"""The outcomes route: `POST /v1/models/{name}/outcomes`, feedback without a Kafka client.

    {"request_id": "3f2a...-1c", "label": 1}                      classification
    {"request_id": "3f2a...-1d", "target": 12.7}                  regression
    [{"request_id": ..., "label": 0}, {"request_id": ..., "label": 1}]

Each outcome becomes one `driftline.api.events.Outcome` on the model's outcomes
topic, keyed by its request id, exactly what an application producing to Kafka
itself would send; the joiner reads it from there.

Unlike the prediction log, nothing here is fire-and-forget: the answer is 202 only
once the broker has acknowledged every record (acks=all, idempotent producer), and
503 with `Retry-After` otherwise, naming the request ids that were not accepted.
Sending them all again is always safe: the joiner keeps the first outcome of a
request id and ignores the repeats, so a client may retry without creating a
problem. The outcomes have a producer of their own: waiting for acknowledgements
must never hold back the prediction log, and the predict path never touches it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import orjson

from driftline.api.events import Outcome, encode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_producer
from driftline.inference import metrics
from driftline.inference.contract import non_finite_field
from driftline.inference.errors import BadRequestError, InferenceError, InvalidInputError
from driftline.inference.plain import MAX_ID_LENGTH

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2
"""What a 503 asks the client to wait; also how long a broker that failed every record of
a request is taken for away (later requests are answered at once, nothing produced)."""


class OutcomesNotAcceptedError(InferenceError):
    """The broker did not acknowledge some outcomes (503): `failed` names them."""

    status = 503

    def __init__(self, message: str, failed: list[str], accepted: int) -> None:
        super().__init__(message, headers={"retry-after": str(RETRY_AFTER_SECONDS)})
        self.failed = failed
        self.accepted = accepted

    def body(self) -> dict[str, Any]:
        return {**super().body(), "accepted": self.accepted, "failed": self.failed}


class OutcomeDecoder:
    """Validates an outcomes body against the model's task; every refusal names its field."""

    def __init__(self, task: str, classes: int, max_rows: int) -> None:
        self.classification = task == "classification"
        self.classes = classes
        self.max_rows = max_rows
        self.value_field = "label" if self.classification else "target"
        self.fields = ("request_id", self.value_field) + (() if self.classification else ("label",))
        self._refused = metrics.outcomes_total.labels("refused")

    def decode(self, body: bytes, now: float | None = None) -> list[Outcome]:
        """The outcomes of `body`, one per distinct request id (the first one wins)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self._refused.inc()
            field = non_finite_field(body)
            if field is not None:
                raise InvalidInputError(f"{field} must be a finite number", field=field) from exc
            raise BadRequestError(f"the body is not valid JSON: {exc}") from exc
        rows = doc if isinstance(doc, list) else [doc]
        try:
            if not rows:
                raise InvalidInputError("the list of outcomes is empty", field="body")
            if len(rows) > self.max_rows:
                raise InvalidInputError(
                    f"{len(rows)} outcomes; at most {self.max_rows} per request", field="body"
                )
            ts = time.time() if now is None else now
            seen: set[str] = set()
            outcomes = []
            for i, row in enumerate(rows):
                where = f"[{i}]." if isinstance(doc, list) else ""
                request_id, label = self._row(row, where)
                if request_id not in seen:
                    seen.add(request_id)
                    outcomes.append(Outcome(request_id=request_id, label=label, ts=ts))
        except InvalidInputError:
            self._refused.inc(max(1, len(rows)))
            raise
        return outcomes

    def _row(self, row: Any, where: str) -> tuple[str, float]:
        at = f"row {where[1:-2]}: " if where else ""
        if not isinstance(row, dict):
            raise InvalidInputError(
                f"{at}an outcome is an object {{request_id, {self.value_field}}}",
                field=where.rstrip(".") or "body",
            )
        for name in row:
            if name not in self.fields:
                hint = (
                    f" (a {'regression' if self.classification else 'classification'} field: "
                    f"this model's outcome is `{self.value_field}`)"
                    if name in ("label", "target")
                    else ""
                )
                raise InvalidInputError(f"{at}unknown field {name!r}{hint}", field=where + name)
        request_id = row.get("request_id")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID_LENGTH:
            raise InvalidInputError(
                f"{at}request_id must be the request id of a prediction "
                f"(a string of 1 to {MAX_ID_LENGTH} characters)",
                field=where + "request_id",
            )
        if self.classification:
            return request_id, self._class_index(row, where, at)
        return request_id, self._target(row, where, at)

    def _class_index(self, row: dict[str, Any], where: str, at: str) -> float:
        if "label" not in row:
            raise InvalidInputError(f"{at}label is missing", field=where + "label")
        label = row["label"]
        # 1.0 is the integer 1 to JSON Schema (and to applications that keep labels as floats)
        integral = isinstance(label, int) or (isinstance(label, float) and label.is_integer())
        if isinstance(label, bool) or not integral or not 0 <= label < self.classes:
            raise InvalidInputError(
                f"{at}label must be a class index, an integer from 0 to {self.classes - 1} "
                f"(got {label!r})",
                field=where + "label",
            )
        return float(label)

    def _target(self, row: dict[str, Any], where: str, at: str) -> float:
        if ("target" in row) == ("label" in row):
            raise InvalidInputError(
                f"{at}give the observed value as `target`", field=where + "target"
            )
        name = "target" if "target" in row else "label"
        value = row[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or abs(value) > 1.7e308
        ):
            raise InvalidInputError(
                f"{at}{name} must be a finite number (got {value!r})", field=where + name
            )
        return float(value)


class OutcomeSender:
    """A producer of its own for outcomes, awaiting the broker's acknowledgement per request."""

    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        timeout_seconds: float,
        producer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.timeout_seconds = timeout_seconds
        self._kafka = kafka
        self._overrides = dict(producer_overrides or {})
        self._away_until = 0.0
        self._broken = False
        self._accepted = metrics.outcomes_total.labels("accepted")
        self._failed = metrics.outcomes_total.labels("failed")
        self.producer = self._new_producer()

    def _new_producer(self) -> Any:
        return make_producer(
            self._kafka,
            **{
                # librdkafka gives up on a record within the wait, so a 503 is never
                # followed by a late delivery of the same attempt (which would be harmless).
                "message.timeout.ms": max(1, int(self.timeout_seconds * 1000)),
                "linger.ms": 1,
                "error_cb": self._on_error,
                "logger": logging.getLogger("driftline.inference.kafka"),
                **self._overrides,
            },
        )

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._broken = True

    async def send(self, outcomes: list[Outcome]) -> None:
        """Produce every outcome and wait for its delivery report; raise
        `OutcomesNotAcceptedError` naming those the broker did not acknowledge."""
        ids = [o.request_id for o in outcomes]
        if time.monotonic() < self._away_until:
            self._failed.inc(len(ids))
            raise OutcomesNotAcceptedError(
                "the Kafka broker is unreachable; nothing was kept: send them again later",
                failed=ids,
                accepted=0,
            )
        if self._broken:
            self._replace_producer()
        loop = asyncio.get_running_loop()
        reports: list[asyncio.Future[Any]] = []
        producer = self.producer
        for outcome in outcomes:
            report: asyncio.Future[Any] = loop.create_future()
            reports.append(report)
            try:
                producer.produce(
                    self.topic,
                    encode(outcome),
                    outcome.request_id,
                    on_delivery=lambda err, _msg, r=report: r.done() or r.set_result(err),
                )
            except Exception as exc:  # BufferError (queue full), KafkaException
                report.set_result(exc)
        # Delivery reports arrive through poll(), on this thread: poll until all are in.
        deadline = time.monotonic() + self.timeout_seconds + 1.0
        while not all(r.done() for r in reports) and time.monotonic() < deadline:
            producer.poll(0)
            await asyncio.sleep(0.002)
        failed = [i for i, r in zip(ids, reports, strict=True) if not r.done() or r.result()]
        accepted = len(ids) - len(failed)
        self._accepted.inc(accepted)
        if not failed:
            return
        self._failed.inc(len(failed))
        errors = {str(r.result()) for r in reports if r.done() and r.result()}
        if any(getattr(r.result(), "fatal", lambda: False)() for r in reports if r.done()):
            self._broken = True
        log.warning(
            "%d of %d outcome(s) not acknowledged by Kafka: %s",
            len(failed),
            len(ids),
            "; ".join(sorted(errors)) or "no delivery report in time",
        )
        if not accepted:
            self._away_until = time.monotonic() + RETRY_AFTER_SECONDS
            message = "the Kafka broker did not acknowledge the outcomes; nothing was kept"
        else:
            message = f"{len(failed)} of {len(ids)} outcomes were not kept"
        raise OutcomesNotAcceptedError(
            f"{message}: send the `failed` ones again (a repeat is ignored)",
            failed=failed,
            accepted=accepted,
        )

    def _replace_producer(self) -> None:
        self._broken = False
        self.producer.purge()
        self.producer = self._new_producer()
        log.warning("the outcomes producer failed for good; sending through a new one")

    async def close(self, timeout: float) -> None:
        await asyncio.to_thread(self.producer.flush, timeout)
