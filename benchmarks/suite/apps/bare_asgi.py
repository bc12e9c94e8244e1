"""The bare ASGI floor: uvicorn + ONNX Runtime and nothing else (no framework, no
validation, no side effects), with or without a micro-batcher.

    python -m benchmarks.suite.apps.bare_asgi MODEL.onnx PORT [batch]

The most a Python HTTP server on this stack can give for this model; the
Driftline service is compared against it. POST any path with
`{"numeric": [32 floats]}`; GET answers 200 (ready).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn

MAX_BATCH = 64


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class Batcher:
    """Rows that arrive while a batch runs wait and go together in the next one."""

    def __init__(self, sess: ort.InferenceSession) -> None:
        self.session = sess
        self.queue: list[tuple[list[float], asyncio.Future[list[float]]]] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def predict(self, row: list[float]) -> list[float]:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.loop())
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self.queue.append((row, future))
        self.wake.set()
        return await future

    async def loop(self) -> None:
        while True:
            await self.wake.wait()
            await asyncio.sleep(0)  # let requests already read join this batch
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            if not self.queue:
                self.wake.clear()
            x = np.asarray([row for row, _ in batch], dtype=np.float32)
            probabilities = self.session.run(["probabilities"], {"numeric": x})[0].tolist()
            for (_, future), p in zip(batch, probabilities, strict=True):
                future.set_result(p)


def make_app(path: str, batching: bool) -> Any:
    sess = session(path)
    batcher = Batcher(sess) if batching else None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            row = orjson.loads(body)["numeric"]
            if batcher is not None:
                probabilities = await batcher.predict(row)
            else:
                x = np.asarray([row], dtype=np.float32)
                probabilities = sess.run(["probabilities"], {"numeric": x})[0][0].tolist()
            payload = orjson.dumps({"probabilities": probabilities})
        else:
            payload = b'{"ready": true}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


if __name__ == "__main__":
    model, port = sys.argv[1], int(sys.argv[2])
    batching = len(sys.argv) > 3 and sys.argv[3] == "batch"
    uvicorn.run(
        make_app(model, batching),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
