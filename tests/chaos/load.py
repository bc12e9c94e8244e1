"""An HTTP load client lean enough to offer ten times what one inference process serves.

httpx spends more CPU per request than the service does to shed one, so a client
built on it cannot overload the server it measures on a two-core machine. This
one speaks just enough HTTP/1.1 over asyncio streams: keep-alive connections, a
fixed body, the status line, `Content-Length` and `Retry-After`.

`closed(...)` keeps N requests in flight (what the server can do: its capacity);
`open_loop(...)` sends at a fixed rate whatever the answers (what overload is):
each connection keeps its own schedule and skips the slots it missed while it
waited, so a slow server lowers the offered rate only as far as the connections
allow, and the achieved rate is reported, not assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reply:
    sent_at: float
    """Seconds since the start of the run."""
    status: int
    """HTTP status; 0 when the connection failed or timed out."""
    latency: float
    retry_after: str | None


@dataclass
class Run:
    seconds: float = 0.0
    replies: list[Reply] = field(default_factory=list)

    def with_status(self, *codes: int) -> list[Reply]:
        return [r for r in self.replies if r.status in codes]

    @property
    def offered_rate(self) -> float:
        return len(self.replies) / self.seconds if self.seconds else 0.0

    def rate(self, *codes: int) -> float:
        return len(self.with_status(*codes)) / self.seconds if self.seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Client:
    """POSTs one JSON body to one path, over `connections` keep-alive connections."""

    def __init__(self, host: str, port: int, path: str, body: bytes, timeout: float = 10.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout=self.timeout
        )

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    ) -> tuple[int, str | None]:
        reader, writer = conn
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, retry_after = 0, None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            if key == "content-length":
                length = int(value)
            elif key == "retry-after":
                retry_after = value.strip()
        if length:
            await reader.readexactly(length)
        return status, retry_after

    async def _one(
        self, conn: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], start: float
    ) -> Reply:
        sent = time.monotonic()
        try:
            if not conn:
                conn.append(await self._connect())
            status, retry_after = await asyncio.wait_for(
                self._exchange(conn[0]), timeout=self.timeout
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            if conn:
                conn.pop()[1].close()
            status, retry_after = 0, None
        return Reply(sent - start, status, time.monotonic() - sent, retry_after)

    async def _worker(
        self, run: Run, start: float, stop_at: float, interval: float | None, offset: float
    ) -> None:
        conn: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        next_at = start + offset
        try:
            while True:
                now = time.monotonic()
                if interval is not None:
                    if next_at > now:
                        await asyncio.sleep(next_at - now)
                    elif now - next_at > interval:  # missed slots: skip them, never burst
                        next_at += interval * int((now - next_at) / interval)
                    next_at += interval
                if time.monotonic() >= stop_at:
                    return
                run.replies.append(await self._one(conn, start))
        finally:
            for _, writer in conn:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _run(self, connections: int, seconds: float, rate: float | None) -> Run:
        run = Run()
        start = time.monotonic()
        interval = connections / rate if rate else None
        offsets = [(interval or 0.0) * i / connections for i in range(connections)]
        await asyncio.gather(
            *(self._worker(run, start, start + seconds, interval, o) for o in offsets)
        )
        run.seconds = time.monotonic() - start
        return run

    def closed(self, connections: int, seconds: float) -> Run:
        """Each connection sends its next request as soon as the last is answered."""
        return asyncio.run(self._run(connections, seconds, None))

    def open_loop(self, rate: float, connections: int, seconds: float) -> Run:
        """`rate` requests per second in all, spread over `connections`."""
        return asyncio.run(self._run(connections, seconds, rate))
