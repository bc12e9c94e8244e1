"""Dynamic batching: requests that meet in the queue share one ONNX Runtime run.

A batch starts as soon as the model is free. It takes what queued while the model
was busy, up to `max_batch_rows`, so a lone request at low load runs at once and
pays nothing for batching, while under load each run serves many requests and
the per-run overhead is shared. `max_delay` only lets a batch wait for requests
that are already inside the server (received, still being parsed or looked up in
the cache), never for requests that have not arrived.

The queue is bounded in rows: when it is full a request is refused at once (429
with Retry-After), instead of waiting behind a queue that grows without bound.

Small models run inline on the event loop (a thread hand-off costs more than their
run); large ones run on one worker thread per model, where ONNX Runtime releases
the GIL and the loop goes on parsing requests meanwhile.

Rows scored off the critical path (shadow, baseline) go through the same queue
with a callback instead of a waiting request, and are the first to be refused
when it is full.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from driftline.inference import metrics
from driftline.inference.contract import Array, Rows
from driftline.inference.errors import ModelFailedError, OverloadedError
from driftline.inference.onnx_session import OnnxModel

log = logging.getLogger(__name__)

Outputs = list[Array]
SideCallback = Callable[[Rows, Outputs | None], None]


class NonFiniteOutputError(Exception):
    """The model answered NaN or infinity for the rows marked in `rows`."""

    def __init__(self, rows: Array) -> None:
        super().__init__(f"the model answered NaN or infinity for {int(rows.sum())} row(s)")
        self.rows = rows


def _non_finite_rows(outputs: Outputs) -> Array:
    """Per row, whether any float output of it is NaN or infinite."""
    bad = np.zeros(len(outputs[0]), dtype=bool)
    for output in outputs:
        if output.dtype.kind == "f":
            bad |= ~np.isfinite(output.reshape(len(output), -1)).all(axis=1)
    return bad


@dataclass(slots=True)
class _Item:
    rows: Rows
    future: asyncio.Future[Outputs] | None
    callback: SideCallback | None
    enqueued: float


class Batcher:
    """The run queue of one loaded model version."""

    def __init__(
        self,
        model: OnnxModel,
        *,
        name: str,
        version: str,
        max_batch_rows: int,
        max_queue_rows: int,
        max_delay_seconds: float,
        inline: bool,
        arrivals: Callable[[], int] = lambda: 0,
    ) -> None:
        self.model = model
        self.version = version
        self.max_batch_rows = max_batch_rows
        self.max_queue_rows = max_queue_rows
        self.max_delay = max_delay_seconds
        self.inline = inline
        self._arrivals = arrivals
        self._queue: deque[_Item] = deque()
        self.queued_rows = 0
        self._busy = False
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = (
            None if inline else ThreadPoolExecutor(1, thread_name_prefix=f"onnx-{version}")
        )
        self._batch_rows = metrics.batch_rows.labels(name, version)
        self._shed = metrics.shed_total.labels("queue_full")  # exported from 0, before any shed

    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue

    def submit(self, rows: Rows) -> asyncio.Future[Outputs]:
        """Queue rows for the next batch; the future resolves to their output arrays."""
        if self.queued_rows and self.queued_rows + rows.n > self.max_queue_rows:
            self._shed.inc()
            raise OverloadedError(
                f"the batch queue of version {self.version} is full "
                f"({self.queued_rows} rows waiting); retry shortly"
            )
        loop = self._loop or self._bind()
        future: asyncio.Future[Outputs] = loop.create_future()
        self._queue.append(_Item(rows, future, None, loop.time()))
        self.queued_rows += rows.n
        if not self._busy and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return future

    def submit_side(self, rows: Rows, callback: SideCallback) -> bool:
        """Queue rows whose result only goes to `callback`; False when refused (queue full)."""
        if self.queued_rows + rows.n > self.max_queue_rows // 2:
            return False  # side scoring never takes the last half of the queue
        loop = self._loop or self._bind()
        self._queue.append(_Item(rows, None, callback, loop.time()))
        self.queued_rows += rows.n
        if not self._busy and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return True

    def close(self) -> None:
        """Stop the worker thread once the queue is empty (callers check `idle`)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    # --- the loop side -------------------------------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _dispatch(self) -> None:
        self._scheduled = False
        if self._busy or not self._queue:
            return
        loop = self._loop
        assert loop is not None
        if (
            self.max_delay > 0
            and self.queued_rows < self.max_batch_rows
            and self._arrivals() > 0
            and loop.time() - self._queue[0].enqueued < self.max_delay
        ):
            # Requests already received are still on their way here: one more turn.
            self._scheduled = True
            loop.call_soon(self._dispatch)
            return
        batch = self._take()
        self._busy = True
        if self._executor is None:
            outputs, error = self._run(batch)
            self._complete(batch, outputs, error)
        else:
            self._executor.submit(self._run_in_thread, batch, loop)

    def _take(self) -> list[_Item]:
        batch = [self._queue.popleft()]
        rows = batch[0].rows.n
        while self._queue and rows + self._queue[0].rows.n <= self.max_batch_rows:
            item = self._queue.popleft()
            rows += item.rows.n
            batch.append(item)
        self.queued_rows -= rows
        return batch

    def _run(self, batch: list[_Item]) -> tuple[Outputs | None, Exception | None]:
        if len(batch) == 1:
            numeric, categorical = batch[0].rows.numeric, batch[0].rows.categorical
        else:
            first = batch[0].rows
            numeric = (
                None
                if first.numeric is None
                else np.concatenate([item.rows.numeric for item in batch])
            )
            categorical = (
                None
                if first.categorical is None
                else np.concatenate([item.rows.categorical for item in batch])
            )
        try:
            outputs = self.model.run(numeric, categorical)
        except Exception as exc:  # ORT's errors are not typed; the batch fails, the server lives
            log.exception("version %s failed a batch of %d request(s)", self.version, len(batch))
            return None, exc
        if not all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f"):
            # NaN or infinity is no answer: served, it would reach the client as null and
            # the prediction log as an event no consumer can decode. Failing the rows
            # counts them as serving errors, which is what aborts such a canary.
            bad = _non_finite_rows(outputs)
            log.error(
                "version %s answered NaN or infinity for %d of %d row(s)",
                self.version,
                int(bad.sum()),
                len(bad),
            )
            return outputs, NonFiniteOutputError(bad)
        return outputs, None

    def _run_in_thread(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        outputs, error = self._run(batch)
        loop.call_soon_threadsafe(self._complete, batch, outputs, error)

    def _complete(
        self, batch: list[_Item], outputs: Outputs | None, error: Exception | None
    ) -> None:
        self._busy = False
        self._batch_rows.observe(sum(item.rows.n for item in batch))
        start = 0
        bad_rows = error.rows if isinstance(error, NonFiniteOutputError) else None
        for item in batch:
            part: Outputs | None = None
            if outputs is not None:
                stop = start + item.rows.n
                part = [o[start:stop] for o in outputs] if len(batch) > 1 else outputs
                if bad_rows is not None and bad_rows[start:stop].any():
                    part = None  # only the requests holding such a row fail
                start = stop
            if item.future is not None:
                if item.future.done():  # the client went away
                    continue
                if part is None:
                    item.future.set_exception(
                        ModelFailedError(f"version {self.version} failed to run: {error}")
                    )
                else:
                    item.future.set_result(part)
            elif item.callback is not None:
                try:
                    item.callback(item.rows, part)
                except Exception:
                    log.exception("side scoring callback failed")
        if self._queue and not self._scheduled:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._dispatch)
