"""The prediction cache in Redis: same model, same version, same features -> same answer.

Key: `driftline:<ns>:<model>:cache:<version>:<sha256 prefix>:<hash of the row>`.
The version and the artifact's own sha256 are part of every key, so an answer of
one version can never be served for another (not even for a re-registered
version number with different bytes). The row hash covers the features exactly as
the model receives them (float32 numbers, the category strings).

Lookups of concurrent requests are merged into one MGET per event-loop turn
(`driftline.inference.turn_batch`) and the turn's writes go in the same round trip,
so the cache costs one round trip per batch, not one per request. When Redis fails,
the cache pauses (`retry_seconds`) and requests are served without it; lookups are
counted as hit, miss, error or bypass.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import orjson

from driftline.inference import metrics
from driftline.inference.contract import Array, FeatureContract, Rows, scatter
from driftline.inference.turn_batch import TurnBatch

log = logging.getLogger(__name__)

Answer = asyncio.Future[list[Array]]


class PredictionCache:
    def __init__(
        self,
        client: Any,
        prefix: str,
        contract: FeatureContract,
        *,
        ttl_seconds: int,
        timeout_seconds: float,
        retry_seconds: float,
    ) -> None:
        self.client = client
        self.prefix = f"{prefix}:cache:"
        self.ttl = ttl_seconds
        self.timeout = timeout_seconds
        self.retry_seconds = retry_seconds
        self._layout = [(np.dtype(dtype), max(width, 1)) for _, dtype, width in contract.outputs]
        self._shapes = [width for _, _, width in contract.outputs]
        self.row_bytes = sum(dtype.itemsize * width for dtype, width in self._layout)
        # One cached row read in place: (dtype, count, byte offset, shape) per output.
        self._single: list[tuple[np.dtype[Any], int, int, tuple[int, ...]]] = []
        offset = 0
        for (dtype, width), shape in zip(self._layout, self._shapes, strict=True):
            self._single.append((dtype, width, offset, (1, shape) if shape else (1,)))
            offset += dtype.itemsize * width
        self._paused_until = 0.0
        self._writes: list[tuple[bytes, bytes]] = []
        self._batch: TurnBatch[bytes, list[bytes | None], list[bytes | None]] = TurnBatch(
            self._exchange,
            lambda values, start, stop: values[start:stop],
            timeout_seconds=timeout_seconds,
            errors=(Exception,),  # connection refused, timeout, ...: serve without the cache
            on_failure=self._failed,
        )
        self._hit = metrics.cache_total.labels("hit")
        self._miss = metrics.cache_total.labels("miss")
        self._error = metrics.cache_total.labels("error")
        self._bypass = metrics.cache_total.labels("bypass")

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._paused_until

    async def answer(
        self, version: str, sha256: str, rows: Rows, submit: Callable[[Rows], Answer]
    ) -> Answer:
        """The rows' outputs as a future: from the cache, from `submit` (the batch queue),
        or both; fresh answers are written back once they are known."""
        keys = self.keys(version, sha256, rows)
        cached = await self.lookup(keys)
        if cached is None:  # the cache is paused
            return submit(rows)
        misses = [i for i, value in enumerate(cached) if value is None]
        self.count(rows.n - len(misses), len(misses))
        if not misses:
            decoded = self.decode(cached)  # type: ignore[arg-type]
            if decoded is not None:
                done: Answer = asyncio.get_running_loop().create_future()
                done.set_result(decoded)
                return done
            misses = list(range(rows.n))
        if len(misses) == rows.n:
            fresh = submit(rows)
            fresh.add_done_callback(partial(self._store_answer, keys))  # a callback, not a task
            return fresh
        hits = [i for i in range(rows.n) if cached[i] is not None]
        decoded = self.decode([cached[i] for i in hits])  # type: ignore[misc]
        if decoded is None:  # entries of another shape: answer them all afresh
            return submit(rows)
        return self._merge(
            submit(rows.take(misses)), [keys[i] for i in misses], misses, hits, decoded, rows.n
        )

    def _merge(
        self,
        fresh: Answer,
        keys: list[bytes],
        misses: list[int],
        hits: list[int],
        decoded: list[Array],
        n: int,
    ) -> Answer:
        """A future of all rows once the missing ones are answered."""
        merged: Answer = asyncio.get_running_loop().create_future()

        def combine(answered: Answer) -> None:
            if merged.done():
                return
            if answered.cancelled():
                merged.cancel()
                return
            error = answered.exception()
            if error is not None:
                merged.set_exception(error)
                return
            self.store(keys, answered.result())
            merged.set_result(scatter([(misses, answered.result()), (hits, decoded)], n))

        fresh.add_done_callback(combine)
        return merged

    def _store_answer(self, keys: list[bytes], answered: Answer) -> None:
        if not answered.cancelled() and answered.exception() is None:
            self.store(keys, answered.result())

    def keys(self, version: str, sha256: str, rows: Rows) -> list[bytes]:
        base = f"{self.prefix}{version}:{sha256[:16]}:".encode()
        keys = []
        for i in range(rows.n):
            digest = hashlib.blake2b(digest_size=16)
            if rows.numeric is not None:
                digest.update(rows.numeric[i].tobytes())
            if rows.categorical is not None:
                digest.update(orjson.dumps(rows.categorical[i].tolist()))
            keys.append(base + digest.hexdigest().encode())
        return keys

    async def lookup(self, keys: list[bytes]) -> list[bytes | None] | None:
        """Cached values per key (None: miss); None for all when the cache is paused."""
        if not self.available:
            self._bypass.inc(len(keys))
            return None
        return await self._batch.submit(keys)

    def store(self, keys: list[bytes], outputs: list[Array]) -> None:
        """Queue the rows' answers for writing (fire and forget)."""
        if not self.available:
            return
        encoded = self.encode(outputs, len(keys))
        self._writes.extend(zip(keys, encoded, strict=True))
        self._batch.kick()

    def encode(self, outputs: list[Array], n: int) -> list[bytes]:
        parts = [np.ascontiguousarray(o).reshape(n, -1).view(np.uint8) for o in outputs]
        joined = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        return [row.tobytes() for row in joined]

    def decode(self, values: list[bytes]) -> list[Array] | None:
        """Output arrays of cached rows; None when an entry is not of this model's shape."""
        if any(len(v) != self.row_bytes for v in values):
            return None
        if len(values) == 1:  # the usual request: read the row in place, no copies
            row = values[0]
            return [
                np.frombuffer(row, dtype, count, offset).reshape(shape)
                for dtype, count, offset, shape in self._single
            ]
        raw = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), -1)
        outputs = []
        start = 0
        for (dtype, width), shape in zip(self._layout, self._shapes, strict=True):
            stop = start + dtype.itemsize * width
            column = np.ascontiguousarray(raw[:, start:stop]).view(dtype)
            outputs.append(column.reshape(len(values), shape) if shape else column.reshape(-1))
            start = stop
        return outputs

    def count(self, hits: int, misses: int) -> None:
        if hits:
            self._hit.inc(hits)
        if misses:
            self._miss.inc(misses)

    # --- one round trip per loop turn -------------------------------------------------------

    async def _exchange(self, keys: list[bytes]) -> list[bytes | None]:
        """The turn's lookups, and its writes in the same round trip (dropped if it fails)."""
        writes, self._writes = self._writes, []
        values: list[bytes | None] = await self.client.mget(keys) if keys else []
        if writes:
            pipe = self.client.pipeline(transaction=False)
            for key, value in writes:
                pipe.set(key, value, ex=self.ttl)
            await pipe.execute()
        return values

    def _failed(self, exc: BaseException, lookups: int) -> None:
        self._pause(exc)
        if lookups:
            self._error.inc(lookups)

    def _pause(self, exc: BaseException) -> None:
        if self.available:
            log.warning(
                "prediction cache failed (%s); serving without it for %.0fs",
                exc or type(exc).__name__,
                self.retry_seconds,
            )
        self._paused_until = time.monotonic() + self.retry_seconds

    async def close(self) -> None:
        await self._batch.close()
