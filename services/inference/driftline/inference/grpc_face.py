"""The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`), the
second face beside HTTP, on its own port (`settings.grpc_port`).

It runs on the HTTP server's event loop (grpc.aio) and serves through the same
`Routes` as REST: a `ModelInferRequest` becomes the same `OipRequest` REST's JSON
becomes (tensors' `contents`, or `raw_input_contents` laid out as Triton's binary
extension lays out REST bodies), and is served by the same routing, batching, cache,
prediction log and stats. Outputs go back as `raw_output_contents`, as Triton answers.

Errors keep their meaning: each `InferenceError` ends the call with the status code
of `STATUS_CODES` (REST's 422 is INVALID_ARGUMENT, 404 NOT_FOUND, 503 and 429
UNAVAILABLE...), its message prefixed by the field at fault, and trailing metadata
`field` and `retry-after` where REST sends them. ServerReady and ModelReady answer
`ready: false` where REST answers 503: the protocol's messages carry the flag.

gRPC parameters are scalars: `entity_id` (string or integer) names every row of a
request, and `request_id` can only be given for a request of one row. The response's
parameters `model_versions` and `variants` list each row's, comma-separated; the
prediction ids are the `request_id` output.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from driftline.inference.errors import InferenceError, InvalidInputError
from driftline.inference.oip import InferRequest, RequestedOutput, raw_tensor
from driftline.inference.oip_grpc import inference_pb2
from driftline.inference.oip_grpc.inference_pb2_grpc import (
    add_GRPCInferenceServiceServicer_to_server,
)
from driftline.inference.routes import PLATFORM, Routes
from driftline.inference.settings import InferenceSettings
from driftline.inference.tensors import TensorInput

log = logging.getLogger(__name__)

pb: Any = inference_pb2  # generated: its message classes are made at import, untyped
Message = Any

ROUTE = "grpc"
"""The route label of gRPC inference in the stats and metrics (REST's are v1 and v2)."""

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.UNAVAILABLE,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
"""REST's status -> gRPC's. Overload (429) is UNAVAILABLE: gRPC clients retry that one,
as HTTP clients retry a 429 after `retry-after`."""

# Which `InferTensorContents` field holds a datatype's values (FP16 has none: raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def status_of(exc: InferenceError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """(code, details, trailing metadata) of a domain error."""
    code = STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL)
    details = exc.message if exc.field is None else f"{exc.field}: {exc.message}"
    metadata = tuple(exc.headers.items())
    if exc.field is not None:
        metadata = (("field", exc.field), *metadata)
    return code, details, metadata


def parameters(entries: Any) -> dict[str, Any]:
    """A protobuf map of `InferParameter` as plain values."""
    out = {}
    for key, value in entries.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(value, choice)
    return out


def decode_request(message: Message) -> tuple[InferRequest, list[memoryview | None]]:
    """The `InferRequest` (and each input's raw bytes) REST's JSON would have decoded to."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInputError(
            f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs; send one per input",
            field="raw_input_contents",
        )
    inputs = []
    for i, tensor in enumerate(message.inputs):
        data = None
        if tensor.HasField("contents"):
            if raw:
                raise InvalidInputError(
                    "values both in contents and in raw_input_contents",
                    field=f"inputs[{i}].contents",
                )
            data = _contents(tensor.contents, tensor.datatype, i)
        inputs.append(
            TensorInput(
                name=tensor.name,
                shape=list(tensor.shape),
                datatype=tensor.datatype,
                data=data,
                parameters=parameters(tensor.parameters) if tensor.parameters else None,
            )
        )
    outputs = [
        RequestedOutput(
            name=out.name, parameters=parameters(out.parameters) if out.parameters else None
        )
        for out in message.outputs
    ]
    request = InferRequest(
        inputs=inputs,
        id=message.id or None,
        parameters=parameters(message.parameters) if message.parameters else None,
        outputs=outputs or None,
    )
    chunks: list[memoryview | None] = [memoryview(b) for b in raw] if raw else [None] * len(inputs)
    return request, chunks


def _contents(contents: Any, datatype: str, i: int) -> list[Any]:
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidInputError(
            f"{datatype} values travel in raw_input_contents only", field=f"inputs[{i}].datatype"
        )
    values = list(getattr(contents, field))
    if datatype != "BYTES":
        return values
    try:
        return [v.decode() for v in values]
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            "a BYTES element is not UTF-8 text", field=f"inputs[{i}].contents"
        ) from exc


class InferenceServicer:
    """`inference.GRPCInferenceService` over the shared `Routes`."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.service = routes.service

    async def ServerLive(  # noqa: N802 - the protocol's method names
        self, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ServerMetadata(  # noqa: N802
        self, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        return pb.ServerMetadataResponse(**self.routes.server_metadata())

    async def ModelReady(  # noqa: N802
        self, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        try:
            self.routes.check_model(request.name, request.version or None)
        except InferenceError as exc:
            await context.abort(*status_of(exc))
        return pb.ModelReadyResponse(ready=self.service.ready)

    async def ModelMetadata(  # noqa: N802
        self, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        try:
            metadata = self.routes.model_metadata(request.name, request.version or None)
        except InferenceError as exc:
            await context.abort(*status_of(exc))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=PLATFORM,
            inputs=[tensor(**t) for t in metadata["inputs"]],
            outputs=[tensor(**t) for t in metadata["outputs"]],
        )

    async def ModelInfer(  # noqa: N802
        self, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        started = time.perf_counter()
        routes, stats = self.routes, self.service.stats
        routes.inflight += 1
        try:
            response = await self._infer(request, started)
        except InferenceError as exc:
            stats.response(ROUTE, exc.status)
            await context.abort(*status_of(exc))
        except Exception:
            log.exception("unexpected error serving ModelInfer")
            stats.response(ROUTE, 500)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            routes.inflight -= 1
        stats.response(ROUTE, 200)
        return response

    async def _infer(self, message: Message, started: float) -> Message:
        routes, oip = self.routes, self.service.oip
        routes.check_name(message.model_name)
        decoded, chunks = decode_request(message)
        request = oip.request(decoded, chunks)
        version = message.model_version or None
        served = await routes.infer(request, route=ROUTE, version=version, started=started)
        outputs, raw = [], []
        for name, datatype, shape, values, _ in oip.outputs(request, served):
            outputs.append(pb.ModelInferResponse.InferOutputTensor(
                name=name, datatype=datatype, shape=shape
            ))  # fmt: skip
            raw.append(raw_tensor(values))
        return pb.ModelInferResponse(
            model_name=oip.model_name,
            model_version=oip.version(served),
            id=request.id if request.id is not None else served.request_ids[0],
            parameters={
                "model_versions": pb.InferParameter(string_param=",".join(served.versions)),
                "variants": pb.InferParameter(string_param=",".join(served.variants)),
            },
            outputs=outputs,
            raw_output_contents=raw,
        )


async def start_grpc(routes: Routes, settings: InferenceSettings) -> tuple[grpc.aio.Server, int]:
    """The gRPC server, listening on `settings.grpc_port`, and the port it got."""
    server = grpc.aio.server(
        options=[
            # REST's body limit; past it gRPC itself answers RESOURCE_EXHAUSTED.
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(routes), server)  # type: ignore[no-untyped-call]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    if not port:
        raise RuntimeError(f"the gRPC service cannot listen on {host}:{settings.grpc_port}")
    await server.start()
    log.info("gRPC (Open Inference Protocol) on %s:%d", host, port)
    return server, int(port)
