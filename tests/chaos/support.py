"""What the chaos tests share: figures for the report, slow models, part processes.

Every test records its figures (events sent, joined, lost; kills survived;
requests shed; server errors) with `record`: they are printed, and `make chaos`
collects them into `benchmarks/results/chaos.{json,md}` (see `conftest.py`).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from driftline.api.artifacts import INPUT_NUMERIC, OUTPUT_LABEL, OUTPUT_PROBABILITIES
from driftline.local.parts import PartSpec
from driftline.local.runtime import Endpoints
from driftline.local.servers import ManagedProcess
from tests import polling

LONG = os.environ.get("DRIFTLINE_CHAOS_LONG", "") == "1"
"""`make chaos` runs the longer variant: more traffic, more kills."""

FIGURES: dict[str, dict[str, Any]] = {}
"""Test name -> its figures, in the order the tests ran."""


def scaled(short: float, long: float) -> float:
    return long if LONG else short


def record(test: str, figures: dict[str, Any]) -> None:
    FIGURES[test] = figures
    print(f"\n[chaos] {test}: {json.dumps(figures, sort_keys=False)}")


def slow_model(k: int, classes: int = 2, *, width: int = 256, layers: int = 200) -> bytes:
    """A classifier that costs about `layers * width**2` multiply-adds per row.

    One weight matrix is shared by every layer, so the artifact stays small (a
    quarter MiB at width 256) while a run takes long enough for the model, not
    HTTP, to bound what the service can do.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w_in = rng.standard_normal((k, width)).astype(np.float32) / np.sqrt(k)
    w_mid = np.linalg.qr(rng.standard_normal((width, width)))[0].astype(np.float32)
    w_out = rng.standard_normal((width, classes)).astype(np.float32) / np.sqrt(width)
    inits = [
        numpy_helper.from_array(w_in, "w_in"),
        numpy_helper.from_array(w_mid, "w_mid"),
        numpy_helper.from_array(w_out, "w_out"),
    ]
    nodes = [helper.make_node("MatMul", [INPUT_NUMERIC, "w_in"], ["h0"])]
    for i in range(layers):
        nodes += [
            helper.make_node("MatMul", [f"h{i}", "w_mid"], [f"m{i}"]),
            helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]),
        ]
    nodes += [
        helper.make_node("MatMul", [f"h{layers}", "w_out"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_PROBABILITIES], axis=1),
        helper.make_node("ArgMax", [OUTPUT_PROBABILITIES], [OUTPUT_LABEL], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "driftline-slow",
        [helper.make_tensor_value_info(INPUT_NUMERIC, TensorProto.FLOAT, ["N", k])],
        [
            helper.make_tensor_value_info(OUTPUT_LABEL, TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info(OUTPUT_PROBABILITIES, TensorProto.FLOAT, ["N", classes]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_part(
    part: PartSpec,
    model_file: Path,
    endpoints: Endpoints,
    directory: Path,
    *,
    metrics_port: int,
    http_port: int | None = None,
    extra: dict[str, str] | None = None,
) -> ManagedProcess:
    """`python -m driftline.<part>` configured the way the local runtime configures it."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(part.environment(model_file, endpoints, metrics_port, http_port, data_dir=directory))
    env.update(extra or {})
    return ManagedProcess(
        part.name, part.argv(), env=env, log_path=directory / f"{part.name}.log"
    ).start()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


wait_for = polling.wait_until


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of one Prometheus metric whose labels include `labels`."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric_name, _, label_text = head.partition("{")
        if metric_name != name:
            continue
        if labels and not all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            continue
        total += float(value)
    return total


def register_copy_candidate(tracking_uri: str, model_name: str) -> str:
    """Register the champion's files again as a new version under `candidate`.

    A candidate as good as the champion (the same graph): a rollout has every
    reason to promote it, which is what a test of "never promotes while its
    evidence is missing" needs.
    """
    import hashlib
    import tempfile

    from mlflow import MlflowClient

    from driftline.api.artifacts import ALIAS_CANDIDATE, ALIAS_CHAMPION, MODEL_ARTIFACT, TAG_SHA256

    client = MlflowClient(tracking_uri=tracking_uri)
    champion = client.get_model_version_by_alias(model_name, ALIAS_CHAMPION)
    run_id = str(champion.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(run_id, "", tmp))
        digest = hashlib.sha256((local / MODEL_ARTIFACT).read_bytes()).hexdigest()
        experiment = client.get_run(run_id).info.experiment_id
        run = client.create_run(experiment, run_name="chaos-copy-candidate")
        for child in local.iterdir():
            if child.is_dir():
                client.log_artifacts(run.info.run_id, str(child), artifact_path=child.name)
        client.set_terminated(run.info.run_id)
    model_dir = str(Path(MODEL_ARTIFACT).parent)
    version = client.create_model_version(
        model_name,
        source=f"runs:/{run.info.run_id}/{model_dir}",
        run_id=run.info.run_id,
        tags={TAG_SHA256: digest, "driftline.copy_of": str(champion.version)},
    )
    client.set_registered_model_alias(model_name, ALIAS_CANDIDATE, version.version)
    return str(version.version)
