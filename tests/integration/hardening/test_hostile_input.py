"""Hostile input against the real inference server: schemathesis, then the classics.

Builds on `tests/integration/inference/test_serving.py` (a 4xx naming the field for
wrong types, missing features, NaN in a row, out-of-range numbers; 413 for a large
body with or without Content-Length; 400 for broken JSON) and on the unit fuzzing
of the decoders in `tests/hardening/test_hostile_input.py`.

Here schemathesis reads the server's own OpenAPI document (request bodies from the
same msgspec types the decoders use, `driftline.inference.openapi`) and sends
positive and negative data to every operation with every built-in check: no server
error, status codes, content types and bodies as documented, negative data
refused, valid data accepted. Then explicit cases for the attacks a fuzzer is
unlikely to find by itself: huge and deeply nested bodies, NaN and Infinity in both
protocols, wrong and missing content types, lying length headers.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer
from driftline_testing.models import mlp_model, register_version
from tests.integration.inference.harness import Running

pytestmark = [
    pytest.mark.integration,
    # numbers beyond float32 are refused by name; numpy's warning about the cast is noise
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

EXAMPLES_PER_MODE = 40
ROW = {"x1": 0.5, "x2": -1.25, "x3": 3.0, "channel": "web"}


@pytest.fixture
def server(
    serving: Callable[..., Running],
    model_doc: dict[str, Any],
    contract: FeatureContract,
    mlflow_server: MlflowServer,
) -> Running:
    name = model_doc["spec"]["model"]["registry"]["name"]
    model = clipped(mlp_model(contract), 1e6)
    register_version(mlflow_server.tracking_uri, name, model, aliases=[ALIAS_CHAMPION])
    return serving(model_doc, max_body_bytes=64 * 1024)


def clipped(onnx_bytes: bytes, bound: float) -> bytes:
    """The graph with its numeric input clipped to [-bound, bound] first.

    The HTTP layer is under test here, not the model: an MLP overflows to NaN on
    inputs near the float32 limit (which the server answers with a 500 that says
    so, `test_a_model_overflowing_on_extreme_input_says_so`), and schemathesis
    would find that again and again."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["numeric_clipped" if i == "numeric" else i for i in node.input]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(-bound, np.float32), "clip_low"),
            numpy_helper.from_array(np.array(bound, np.float32), "clip_high"),
        ]
    )
    graph.node.insert(
        0, helper.make_node("Clip", ["numeric", "clip_low", "clip_high"], ["numeric_clipped"])
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def consistent(case: Any) -> bool:
    """Whether a schema-valid body also keeps the rules JSON Schema cannot state:
    one entity_id and request_id per row when they are lists."""
    body = case.body if isinstance(case.body, dict) else {}
    features = body.get("features")
    rows = len(features) if isinstance(features, list) else 1
    ids = [body.get("entity_id"), body.get("request_id")]
    if isinstance(body.get("request_id"), str) and rows > 1:
        return False
    return all(not isinstance(v, list) or len(v) == rows for v in ids)


def exercise(operation: Any, mode: Any, url: str, statuses: dict[int, int]) -> None:
    """Up to EXAMPLES_PER_MODE cases of one operation, each checked by every check."""
    from hypothesis import HealthCheck, given, reject, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import positive_data_acceptance

    # The OIP's rules across fields (a tensor per feature, data as long as the shape
    # says) cannot be stated in JSON Schema: its "valid" cases are refused, rightly.
    excluded = [] if operation.path.endswith("/predict") else [positive_data_acceptance]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if mode == GenerationMode.POSITIVE and not consistent(case):
            reject()
        response = case.call(base_url=url, timeout=10)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if mode == GenerationMode.NEGATIVE and response.status_code == 413:
            # A body over the server's limit (e.g. more outcomes than `maxItems`, which
            # are small enough for a fuzzer to make) is refused before it is read: a
            # rejection too, as the engine's run below is told.
            return
        case.validate_response(response, excluded_checks=excluded)

    check()


def test_schemathesis_finds_no_server_error(server: Running) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    statuses: dict[int, int] = {}
    operations = 0
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        modes = [GenerationMode.POSITIVE]
        if operation.path_parameters or operation.body:  # else nothing can be made invalid
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            exercise(operation, mode, server.url, statuses)
    print(
        f"schemathesis: {sum(statuses.values())} requests, {operations} operations, "
        f"{time.monotonic() - started:.1f}s; statuses {dict(sorted(statuses.items()))}"
    )
    assert operations >= 10 and sum(statuses.values()) >= 300
    assert not [s for s in statuses if s >= 500]


def test_the_schemathesis_engine_with_every_phase_finds_nothing(
    server: Running, tmp_path: Path
) -> None:
    """The CLI's engine adds what the run above does not: its coverage phase (boundary
    values, every unsupported method, missing and malformed parts) and every check
    once more. Schema-valid OIP bodies are refused rightly (see above), and valid plain
    bodies are accepted in the run above, so `positive_data_acceptance` stays there."""
    report = tmp_path / "report.xml"
    config = tmp_path / "schemathesis.toml"
    # A body over the server's limit is refused (413) before it is read: a rejection too.
    rejected = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
    config.write_text(
        "[checks.negative_data_rejection]\n"
        f"expected-statuses = {json.dumps([str(s) for s in rejected])}\n"
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            *("--config-file", str(config)),
            "run",
            f"{server.url}/openapi.json",
            *("--checks", "all", "--exclude-checks", "positive_data_acceptance"),
            *("--mode", "all", "--phases", "examples,coverage,fuzzing,stateful"),
            *("--max-examples", "25", "--seed", "7", "--workers", "1"),
            *("--request-timeout", "10", "--report", "junit", "--report-junit-path", str(report)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
        cwd=tmp_path,  # its cache of crashes stays out of the checkout
    )
    summary = result.stdout[-3000:]
    assert result.returncode == 0, result.stdout[:20000]
    generated = re.search(r"(\d+) generated", summary)
    assert generated and int(generated.group(1)) >= 300, summary
    assert report.exists()
    print(f"schemathesis engine: {generated.group(1)} cases generated, none failed")


def test_a_model_overflowing_on_extreme_input_says_so(
    serving: Callable[..., Running],
    model_doc: dict[str, Any],
    contract: FeatureContract,
    mlflow_server: MlflowServer,
) -> None:
    """Found by schemathesis: an MLP without input scaling overflows to NaN on numbers
    near the float32 limit. The answer is a 500 that says so (it was a 200 with null
    probabilities, and a prediction event no consumer could decode)."""
    name = model_doc["spec"]["model"]["registry"]["name"]
    version = register_version(mlflow_server.tracking_uri, name, mlp_model(contract))
    server = serving(model_doc, model_version=version)
    predict = f"{server.url}/v1/models/{server.name}/predict"
    extreme = httpx.post(predict, json={"features": {**ROW, "x3": 3.4e38}}, timeout=10)
    assert extreme.status_code == 500, extreme.text
    assert "NaN or infinity" in extreme.json()["error"]
    assert httpx.post(predict, json={"features": ROW}, timeout=10).status_code == 200


def post(server: Running, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=content, headers=headers, timeout=10)


def test_hostile_bodies_get_a_clear_4xx_and_the_server_goes_on(server: Running) -> None:
    predict = f"/v1/models/{server.name}/predict"
    infer = f"/v2/models/{server.name}/infer"
    deep = b"[" * 20_000 + b"]" * 20_000  # 40 KB, under the body limit

    def tensor(value: str) -> bytes:
        return (
            b'{"inputs": [{"name": "numeric", "shape": [1, 3], "datatype": "FP32", '
            b'"data": [1, ' + value.encode() + b", 3]}]}"
        )

    binary_nan = struct.pack("<3f", 1.0, math.nan, 3.0)
    binary_head = (
        b'{"inputs": [{"name": "numeric", "shape": [1, 3], "datatype": "FP32", '
        b'"parameters": {"binary_data_size": 12}}]}'
    )
    binary_length = {"inference-header-content-length": str(len(binary_head))}
    cases: list[tuple[str, str, bytes, dict[str, str], int]] = [
        # deep nesting: arrays in arrays, far deeper than any decoder follows
        ("deep, plain route", predict, b'{"extra": ' + deep + b"}", {}, 400),
        ("deep, OIP route", infer, b'{"inputs": [], "parameters": {"a": ' + deep + b"}}", {}, 400),
        ("deep features", predict, b'{"features": ' + deep + b"}", {}, 422),
        # non-finite numbers, in every spelling and both protocols
        (
            "Infinity, plain",
            predict,
            json.dumps({"features": {**ROW, "x1": math.inf}}).encode(),
            {},
            422,
        ),
        (
            "-Infinity, plain",
            predict,
            json.dumps({"features": {**ROW, "x2": -math.inf}}).encode(),
            {},
            422,
        ),
        (
            "1e400, plain",
            predict,
            b'{"features": {"x1": 1e400, "x2": 1, "x3": 1, "channel": "a"}}',
            {},
            422,
        ),
        ("NaN, OIP JSON", infer, tensor("NaN"), {}, 422),
        ("Infinity, OIP JSON", infer, tensor("Infinity"), {}, 422),
        ("1e39, OIP JSON", infer, tensor("1e39"), {}, 422),
        ("NaN, OIP binary", infer, binary_head + binary_nan, binary_length, 422),
        # wrong or lying framing
        (
            "form body",
            predict,
            b"features=1&entity_id=2",
            {"content-type": "application/x-www-form-urlencoded"},
            400,
        ),
        (
            "multipart body",
            predict,
            b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--",
            {"content-type": "multipart/form-data; boundary=x"},
            400,
        ),
        ("XML", infer, b"<inputs/>", {"content-type": "application/xml"}, 400),
        ("empty body", predict, b"", {}, 400),
        ("not UTF-8", predict, b'{"features": {"x1": "\xff\xfe"}}', {}, 422),
        (
            "binary garbage",
            infer,
            bytes(range(256)),
            {"content-type": "application/octet-stream"},
            400,
        ),
        (
            "header length past the body",
            infer,
            tensor("2"),
            {"inference-header-content-length": "100000"},
            400,
        ),
        (
            "header length not a number",
            infer,
            tensor("2"),
            {"inference-header-content-length": "ten"},
            400,
        ),
        (
            "negative header length",
            infer,
            tensor("2"),
            {"inference-header-content-length": "-5"},
            400,
        ),
        # a tensor that claims more data than it has
        (
            "shape of 2**40 rows",
            infer,
            b'{"inputs": [{"name": "numeric", "shape": [1099511627776, 3], "datatype": "FP32", '
            b'"data": [1, 2, 3]}]}',
            {},
            422,
        ),
    ]
    for what, path, body, headers, status in cases:
        response = post(server, path, body, **headers)
        assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
        assert response.json()["error"], what

    # Larger than the limit, on both routes, declared or streamed without a length.
    huge = b'{"features": [' + b'{"x1": 1, "x2": 2, "x3": 3, "channel": "a"},' * 4000 + b"{}]}"
    for path in (predict, infer):
        assert post(server, path, huge).status_code == 413
        assert (
            httpx.post(f"{server.url}{path}", content=iter([huge]), timeout=10).status_code == 413
        )

    assert httpx.get(f"{server.url}{predict}").status_code == 405
    ok = httpx.post(f"{server.url}{predict}", json={"features": ROW}, timeout=10)
    assert ok.status_code == 200, ok.text
