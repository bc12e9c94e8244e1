"""Run by the tritonclient venv's Python (build.sh here), never imported by Driftline's.

Drives a server with Triton's gRPC client, unchanged, and prints one JSON line.

    python driver.py calls HOST:PORT CALLS.json   each call's result, in order
    python driver.py bench HOST:PORT BENCH.json   throughput and latency of ModelInfer
    python driver.py fields                       the wire numbers of tritonclient's messages

CALLS.json: [{"call": "live" | "ready" | "model_ready" | "metadata" | "infer", ...}];
`infer` takes "model", "version", "inputs" ([{"name", "shape", "datatype", "data"}]),
"outputs" (names), "parameters", "id". Each result is {"ok": ...} or {"error":
{"status": "StatusCode.X", "message": ...}}. BENCH.json: {"model", "inputs",
"seconds", "concurrency", "protocol": "grpc" | "http"} (requests in flight on one
client: tritonclient.grpc.aio's channel, or tritonclient.http.aio's connections).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import numpy as np

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def _inputs(module: Any, specs: list[dict[str, Any]]) -> list[Any]:
    tensors = []
    for spec in specs:
        tensor = module.InferInput(spec["name"], spec["shape"], spec["datatype"])
        if spec["datatype"] == "BYTES":
            array = np.array([v.encode() for v in spec["data"]], dtype=np.object_)
        else:
            array = np.array(spec["data"], dtype=DTYPES[spec["datatype"]])
        tensor.set_data_from_numpy(array.reshape(spec["shape"]))
        tensors.append(tensor)
    return tensors


def _jsonable(array: Any) -> Any:
    if array.dtype == np.object_:
        return [v.decode() for v in array.reshape(-1)]
    return array.tolist()


def one_call(client: Any, module: Any, call: dict[str, Any]) -> Any:
    kind = call["call"]
    if kind == "live":
        return client.is_server_live()
    if kind == "ready":
        return client.is_server_ready()
    if kind == "model_ready":
        return client.is_model_ready(call["model"], call.get("version", ""))
    if kind == "metadata":
        return client.get_model_metadata(call["model"], call.get("version", ""), as_json=True)
    if kind == "infer":
        outputs = None
        if "outputs" in call:
            outputs = [module.InferRequestedOutput(name) for name in call["outputs"]]
        result = client.infer(
            call["model"],
            _inputs(module, call["inputs"]),
            model_version=call.get("version", ""),
            outputs=outputs,
            request_id=call.get("id", ""),
            parameters=call.get("parameters"),
        )
        response = result.get_response(as_json=True)
        return {
            "model_name": response["model_name"],
            "model_version": response["model_version"],
            "id": response.get("id", ""),
            "parameters": {
                k: next(iter(v.values())) for k, v in response.get("parameters", {}).items()
            },
            "outputs": {
                o["name"]: {
                    "datatype": o["datatype"],
                    "shape": [int(d) for d in o["shape"]],
                    "data": _jsonable(result.as_numpy(o["name"])),
                }
                for o in response["outputs"]
            },
        }
    raise ValueError(f"unknown call {kind!r}")


def calls(url: str, path: str) -> None:
    import tritonclient.grpc as module
    from tritonclient.utils import InferenceServerException

    with open(path) as f:
        todo = json.load(f)
    client = module.InferenceServerClient(url)
    results = []
    for call in todo:
        try:
            results.append({"ok": one_call(client, module, call)})
        except InferenceServerException as exc:
            results.append({"error": {"status": exc.status(), "message": exc.message()}})
    print(json.dumps(results))


async def _bench(url: str, spec: dict[str, Any]) -> dict[str, float]:
    if spec.get("protocol", "grpc") == "grpc":
        import tritonclient.grpc as sync_module
        import tritonclient.grpc.aio as module
    else:  # REST, with the binary tensor extension (tritonclient's default)
        import tritonclient.http as sync_module
        import tritonclient.http.aio as module

    client = (
        module.InferenceServerClient(url, conn_limit=spec["concurrency"])
        if spec.get("protocol") == "http"
        else module.InferenceServerClient(url)
    )
    inputs = _inputs(sync_module, spec["inputs"])
    model = spec["model"]
    for _ in range(20):  # warm: the channel, the server's first batches
        await client.infer(model, inputs)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + spec["seconds"]

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await client.infer(model, inputs)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    elapsed = time.perf_counter() - began
    await client.close()
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "throughput": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def bench(url: str, path: str) -> None:
    with open(path) as f:
        spec = json.load(f)
    print(json.dumps(asyncio.run(_bench(url, spec))))


def fields() -> None:
    """{message: {field: number}} of every message tritonclient's stubs know."""
    from tritonclient.grpc import service_pb2

    out: dict[str, dict[str, int]] = {}

    def walk(descriptor: Any) -> None:
        out[descriptor.full_name] = {f.name: f.number for f in descriptor.fields}
        for nested in descriptor.nested_types:
            walk(nested)

    for descriptor in service_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(descriptor)
    methods = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    out["methods"] = {m.name: i for i, m in enumerate(methods)}
    print(json.dumps(out))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "calls":
        calls(sys.argv[2], sys.argv[3])
    elif command == "bench":
        bench(sys.argv[2], sys.argv[3])
    elif command == "fields":
        fields()
    else:
        raise SystemExit(f"unknown command {command!r}")
