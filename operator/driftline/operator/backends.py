"""What the operator reads from a model's Redis besides the rollout: the latest drift.

The drift monitor keeps its latest event in the user's Redis (`driftline.common.redis_state`),
and a note of where its reference comes from; the operator mirrors both into `status` on
each tick. A Redis that cannot be reached
makes the mirror stale, never the operator fail: the next tick tries again, after
a backoff so an unreachable endpoint does not slow every tick down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from driftline.api import DynamicModel
from driftline.api.events import DriftEvent, EventError, decode
from driftline.api.status import DriftStatus
from driftline.common.connections import RedisConnection
from driftline.common.redis_state import drift_key, drift_reference_key

log = logging.getLogger(__name__)

SOCKET_TIMEOUT = 2.0
BACKOFF_SECONDS = 30.0


def drift_status(event: DriftEvent | None, stable: str | None, reference: str = "") -> DriftStatus:
    """Drift is "detected" while the version it was seen on still serves.

    Once a new version is promoted the old alarm no longer describes what serves;
    the drift monitor raises a new one if the change persists.
    """
    if event is None:
        return DriftStatus(reference=reference)
    return DriftStatus(
        reference=reference,
        detected=stable is None or event.model_version == stable,
        kind=event.kind,
        score=event.score,
        features=list(event.features),
        last_detected_at=datetime.fromtimestamp(event.detected_at, tz=UTC),
    )


class RedisBackends:
    """One client per model's Redis endpoint, with a backoff after a failure."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._down_until: dict[tuple[str, str | None], float] = {}

    def client(self, connection: RedisConnection) -> Any | None:
        key = (connection.url, connection.username)
        with self._lock:
            if self._down_until.get(key, 0.0) > self._clock():
                return None
            if key not in self._clients:
                self._clients[key] = connection.client(
                    socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
                )
            return self._clients[key]

    def failed(self, connection: RedisConnection, exc: Exception) -> None:
        key = (connection.url, connection.username)
        with self._lock:
            if self._down_until.get(key, 0.0) <= self._clock():
                log.warning(
                    "Redis %s unreachable (%s); retrying in %ss", key[0], exc, BACKOFF_SECONDS
                )
            self._down_until[key] = self._clock() + BACKOFF_SECONDS

    def drift(
        self, model: DynamicModel, connection: RedisConnection, stable: str | None
    ) -> DriftStatus | None:
        """The model's drift as status shows it, or None when Redis cannot be read."""
        client = self.client(connection)
        if client is None:
            return None
        namespace, name = model.metadata.namespace, model.metadata.name
        try:
            raw, note = client.mget(
                [drift_key(namespace, name), drift_reference_key(namespace, name)]
            )
        except Exception as exc:  # redis-py raises several families; all mean "not now"
            self.failed(connection, exc)
            return None
        event = None
        if raw:
            try:
                event = decode(raw, DriftEvent)
            except EventError as exc:
                log.warning("%s/%s: unreadable drift record: %s", namespace, name, exc.reason)
        reference = note.decode(errors="replace")[:500] if note else ""
        return drift_status(event, stable, reference)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
