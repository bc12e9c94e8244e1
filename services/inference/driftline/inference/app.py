"""The HTTP face: a FastAPI app, with the three inference routes served by a thin front door.

FastAPI's per-request machinery (middleware stack, router, dependency solving,
response classes) costs more than a small model's whole prediction: measured on
one core, the same handler behind a FastAPI route served ~3k requests/s and as a
bare ASGI function ~11k. So the front door matches the hot routes by prefix and
serves them directly (body read with a size limit, orjson, the shared handlers);
everything else, and the same three routes for OpenAPI, stays with FastAPI.

    POST /v1/models/{name}/predict                    plain JSON
    POST /v2/models/{name}[/versions/{v}]/infer       Open Inference Protocol v2
    POST /v1/models/{name}/outcomes                   true labels (FastAPI only: not hot)
    GET  /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{v}][/ready]
    GET  /metrics, /healthz, /readyz
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from driftline.inference import metrics
from driftline.inference.errors import (
    BadRequestError,
    InferenceError,
    PayloadTooLargeError,
)
from driftline.inference.openapi import install as install_openapi
from driftline.inference.routes import Routes, package_version
from driftline.inference.service import InferenceService

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]

JSON = b"application/json"


class ClientGoneError(Exception):
    """The client disconnected before sending its whole body."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refused with 413 before reading when it is (or grows) too large."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise BadRequestError("Content-Length is not a number") from None
            if declared > limit:
                raise PayloadTooLargeError(
                    f"the body has {declared} bytes; the limit is {limit}", field="body"
                )
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        # The usual request: its whole body in one message (no copy, no loop).
        body = message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLargeError(f"the body exceeds the limit of {limit} bytes", field="body")
        return body if type(body) is bytes else bytes(body)
    body = b""
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        body += bytes(message.get("body", b""))
        if len(body) > limit:
            raise PayloadTooLargeError(f"the body exceeds the limit of {limit} bytes", field="body")
        if not message.get("more_body", False):
            return body
        message = await receive()


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class Handlers:
    """The inference routes, independent of how the HTTP layer reached them."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.service = routes.service
        self.limit = self.service.settings.max_body_bytes

    async def plain(self, scope: Scope, receive: Receive, name: str, started: float) -> Reply:
        self.routes.check_name(name)
        body = await read_body(scope, receive, self.limit)
        service = self.service
        request = service.plain.decode(body)
        served = await service.predict(
            request.rows,
            request.entity_ids,
            request.request_ids,
            route="v1",
            started=started,
            sticky_keys=request.sticky_keys,
            fields=request.fields,
        )
        payload = service.plain.encode(request, served)
        return 200, [(b"content-type", JSON)], payload

    async def oip(
        self, scope: Scope, receive: Receive, name: str, version: str | None, started: float
    ) -> Reply:
        self.routes.check_name(name)
        body = await read_body(scope, receive, self.limit)
        header = _header(scope, b"inference-header-content-length")
        header_length = None
        if header is not None:
            try:
                header_length = int(header)
            except ValueError:
                raise BadRequestError("Inference-Header-Content-Length is not a number") from None
            if not 0 < header_length <= len(body):
                raise BadRequestError("Inference-Header-Content-Length is outside the body")
        service = self.service
        request = service.oip.decode(body, header_length)
        served = await self.routes.infer(request, route="v2", version=version, started=started)
        payload, json_length = service.oip.encode(request, served)
        if json_length is None:
            return 200, [(b"content-type", JSON)], payload
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(json_length).encode()),
        ]
        return 200, headers, payload

    async def outcomes(self, scope: Scope, receive: Receive, name: str) -> Reply:
        """202 once Kafka acknowledged every outcome (see `driftline.inference.outcomes`)."""
        self.routes.check_name(name)
        body = await read_body(scope, receive, self.limit)
        outcomes = self.service.outcome_decoder.decode(body)
        await self.service.outcomes.send(outcomes)
        return 202, [(b"content-type", JSON)], orjson.dumps({"accepted": len(outcomes)})


def _match(path: str) -> tuple[str, str, str | None] | None:
    """(route, model name, version) of a hot route, else None."""
    if path.startswith("/v1/models/") and path.endswith("/predict"):
        name = path[11:-8]
        return ("v1", name, None) if name and "/" not in name else None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[11:-6].split("/")
        if len(parts) == 1 and parts[0]:
            return "v2", parts[0], None
        if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            return "v2", parts[0], parts[2]
    return None


class FrontDoor:
    """The ASGI app uvicorn runs: hot routes here, the rest to FastAPI."""

    def __init__(self, service: InferenceService, api: FastAPI, routes: Routes) -> None:
        self.service = service
        self.api = api
        self.routes = routes
        self.handlers = Handlers(routes)
        self.grpc_port: int | None = None
        """The gRPC service's port once it listens (`settings.grpc_port`; 0 picks one)."""
        metrics.inflight_requests.set_function(lambda: routes.inflight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = _match(scope["path"])
            if target is not None:
                await self._serve(target, scope, receive, send)
                return
        await self.api(scope, receive, send)

    async def _serve(
        self, target: tuple[str, str, str | None], scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        route, name, version = target
        self.routes.inflight += 1
        try:
            if route == "v1":
                status, headers, body = await self.handlers.plain(scope, receive, name, started)
            else:
                status, headers, body = await self.handlers.oip(
                    scope, receive, name, version, started
                )
        except ClientGoneError:
            return
        except InferenceError as exc:
            status, headers, body = error_reply(exc)
        except Exception:
            log.exception("unexpected error serving %s", scope["path"])
            status, headers, body = 500, [(b"content-type", JSON)], b'{"error":"internal error"}'
        finally:
            self.routes.inflight -= 1
        self.service.stats.response(route, status)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def error_reply(exc: InferenceError) -> Reply:
    headers = [(b"content-type", JSON)]
    headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    return exc.status, headers, orjson.dumps(exc.body())


def create_app(service: InferenceService) -> FrontDoor:
    """The whole application for one service (started and stopped by its lifespan): HTTP,
    and the gRPC service on its own port when `settings.grpc_port` is set."""
    routes = Routes(service)
    door: FrontDoor

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        grpc_server = None
        try:
            if service.settings.grpc_port is not None:
                from driftline.inference.grpc_face import start_grpc

                grpc_server, door.grpc_port = await start_grpc(routes, service.settings)
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(service.settings.drain_timeout_seconds)
            await service.stop()

    api = FastAPI(
        title=f"Driftline inference: {service.name}",
        version=package_version(),
        lifespan=lifespan,
    )
    install_openapi(api, service.name, service.contract, service.settings.max_rows)
    door = FrontDoor(service, api, routes)
    handlers = door.handlers

    @api.exception_handler(InferenceError)
    async def inference_error(_: Request, exc: InferenceError) -> Response:
        status, headers, body = error_reply(exc)
        return Response(
            body, status_code=status, headers={k.decode(): v.decode() for k, v in headers}
        )

    def reply(result: Reply) -> Response:
        status, headers, body = result
        return Response(
            body, status_code=status, headers={k.decode(): v.decode() for k, v in headers}
        )

    @api.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return routes.server_metadata()

    @api.get("/v2/health/live")
    @api.get("/healthz")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    @api.get("/readyz")
    async def ready() -> dict[str, bool]:
        routes.check_ready()
        return {"ready": True}

    @api.get("/v2/models/{name}")
    @api.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return routes.model_metadata(name, version)

    @api.get("/v2/models/{name}/ready")
    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        routes.check_model(name, version)
        routes.check_ready()
        return {"name": name, "ready": True}

    @api.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # The hot routes, for OpenAPI and for callers of the FastAPI app itself; uvicorn
    # reaches them through the front door, which shares these handlers.
    @api.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request) -> Response:
        """Plain JSON: {"entity_id": ..., "features": {...} or [{...}, ...]}."""
        started = time.perf_counter()
        return reply(await handlers.plain(request.scope, request.receive, name, started))

    @api.post("/v2/models/{name}/infer")
    @api.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        """Open Inference Protocol v2 inference (JSON or Triton's binary tensor extension)."""
        started = time.perf_counter()
        return reply(await handlers.oip(request.scope, request.receive, name, version, started))

    @api.post("/v1/models/{name}/outcomes", status_code=202)
    async def outcomes(name: str, request: Request) -> Response:
        """True labels of served requests: {"request_id": ..., "label": ...} or a list."""
        try:
            return reply(await handlers.outcomes(request.scope, request.receive, name))
        except ClientGoneError:
            return Response(status_code=499)

    return door
