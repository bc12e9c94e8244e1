"""The drift monitor in a real Pod on the rig's real node, on its default scipy backend.

The chart in dev mode as test_dev_mode.py installs it (its fixtures, reused here,
install a release of this module's own). Version 1 registered in that MLflow by a Pod,
with its reference sample (`reference/reference.npz`, as the trainer publishes one:
the inputs drawn here and the model's labels on them). A DynamicModel with training
off whose inference (1 replica), joiner and drift monitor run from the CPU inference
image (no torch: the drift monitor's scipy backend needs scipy only); the drift
monitor becomes Ready once it has read that reference.

A Pod of another namespace sends predictions through the inference Service: first
rows drawn from the reference's distribution, until the drift monitor has used them
all (its metrics endpoint) and tested its windows without an event; then rows whose
`x1` is shifted by 2 standard deviations, until the monitor sends a covariate event.
The DynamicModel's status then says so (`status.drift`, from the monitor's Redis key).

Measured and printed: the drift monitor's Ready time after the model's apply (and
after its container started), its memory (peak RSS of its process, the kubelet's
working set), the time from the shifted rows to the event.
"""

from __future__ import annotations

import base64
import io
import json
import time
from datetime import datetime
from typing import Any

import numpy as np
import pytest
import yaml

from driftline_testing.images import BuiltImage
from driftline_testing.node import NodeStack
from tests.integration.pods import cluster
from tests.integration.pods import test_dev_mode as dev
from tests.integration.pods.cluster import Kube, pod_memory, report

pytestmark = [pytest.mark.integration, pytest.mark.rig, pytest.mark.timeout(1200)]

# test_dev_mode.py's module fixtures, made again for this module.
dev_images = dev.dev_images
imported = dev.imported
installed = dev.installed

MODELS, CLIENTS = dev.MODELS, dev.CLIENTS
NAME = "watched"
TAG = "drift pod"
URL = f"http://{NAME}-inference.{MODELS}:8080/v1/models/{NAME}/predict"
WINDOW = 200  # rows per window test
ROWS = 2 * WINDOW  # rows per phase: two windows each
SHIFT = 2.0  # standard deviations added to x1

# Run in the MLflow image from another namespace: dev mode's REGISTER, with the
# reference sample (argv[4], an .npz) logged beside the model as the trainer does.
REGISTER = """
import base64, hashlib, os, sys, tempfile
from mlflow import MlflowClient
uri, name = sys.argv[1], sys.argv[2]
files = {"model/model.onnx": base64.b64decode(sys.argv[3]),
         "reference/reference.npz": base64.b64decode(sys.argv[4])}
client = MlflowClient(tracking_uri=uri)
run = client.create_run(client.create_experiment(name))
with tempfile.TemporaryDirectory() as tmp:
    for artifact, data in files.items():
        path = os.path.join(tmp, os.path.basename(artifact))
        with open(path, "wb") as f:
            f.write(data)
        client.log_artifact(run.info.run_id, path, os.path.dirname(artifact))
client.set_terminated(run.info.run_id)
client.create_registered_model(name)
version = client.create_model_version(
    name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
    tags={"driftline.sha256": hashlib.sha256(files["model/model.onnx"]).hexdigest()},
)
for alias in ("champion", "baseline"):
    client.set_registered_model_alias(name, alias, version.version)
print(version.version)
"""

# Run in the inference image from another namespace: sends the calm rows (argv[3]),
# waits until the drift monitor (metrics at argv[2]) has used them all, then sends the
# shifted rows (argv[4]) and waits (at most argv[5] seconds) for a covariate event.
# Prints one JSON object: the monitor's counters after each phase.
STREAM = """
import json, sys, time, urllib.request
url, metrics_url = sys.argv[1], sys.argv[2]
calm, shifted, timeout = json.loads(sys.argv[3]), json.loads(sys.argv[4]), float(sys.argv[5])

def counters():
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("driftline_drift_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out

def total(found, metric, **labels):
    want = ['%s="%s"' % kv for kv in labels.items()]
    return sum(v for k, v in found.items()
               if k.split("{")[0] == metric and all(w in k for w in want))

def send(rows, start):
    failed = 0
    for i, features in enumerate(rows):
        body = json.dumps({"entity_id": "e-%d" % (start + i), "features": features}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                r.read()
        except Exception:
            failed += 1
    return failed

def wait(until, seconds):
    deadline = time.monotonic() + seconds
    while True:
        found = counters()
        if until(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)

used = lambda f: total(f, "driftline_drift_samples_total", stream="predictions")
events = lambda f: total(f, "driftline_drift_events_total")
out = {"failed": send(calm, 0)}
calm_done = wait(lambda f: used(f) >= len(calm), timeout)
time.sleep(3)  # a batch's window tests and events, had there been any
calm_done = counters()
out.update(calm_used=used(calm_done), calm_events=events(calm_done),
           calm_tests=total(calm_done, "driftline_drift_tests_total", kind="covariate"))
started = time.monotonic()
out["failed"] += send(shifted, len(calm))
found = wait(lambda f: total(f, "driftline_drift_events_total", kind="covariate") > 0, timeout)
out.update(detected_s=time.monotonic() - started, used=used(found), events=events(found),
           covariate=total(found, "driftline_drift_events_total", kind="covariate"),
           x1_detected=total(found, "driftline_drift_feature_detected", feature="x1"),
           p_values={k: v for k, v in found.items() if k.startswith("driftline_drift_p_value")})
print(json.dumps(out))
"""


def draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Inputs of the reference's distribution (x1 moved by `shift`)."""
    cols = {name: rng.normal(size=n) for name in ("x1", "x2", "x3")}
    cols["x1"] = cols["x1"] + shift
    return {name: col.astype(np.float32) for name, col in cols.items()}


def rows(cols: dict[str, np.ndarray]) -> list[dict[str, float]]:
    return [
        dict(zip(cols, map(float, values), strict=True))
        for values in zip(*cols.values(), strict=True)
    ]


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def watched(installed: dict[str, float], kube: Kube, dev_images: dict[str, BuiltImage]) -> Any:
    """Version 1 with its reference in the in-cluster MLflow; a DynamicModel whose
    inference, joiner and drift monitor are Ready; the seconds each step took."""
    import onnxruntime as ort

    from driftline.api import parse_dynamic_model
    from driftline.api.artifacts import REFERENCE_OUTPUT_KEY
    from driftline.inference.contract import FeatureContract
    from driftline_testing.models import mlp_model

    document = dev.dev_model(NAME)
    # No backend named: the default, scipy. A stricter level than the default 0.01
    # keeps the calm phase's chance of a false event near 0.2 %.
    document["spec"]["drift"] = {"window": WINDOW, "pValue": 0.001}
    model = parse_dynamic_model(document)
    assert model.spec.drift.backend == "scipy"
    onnx = mlp_model(FeatureContract(model.spec), seed=7)
    reference = draw(np.random.default_rng(1), 1000)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    numeric = np.column_stack([reference[n] for n in ("x1", "x2", "x3")])
    labels, _ = session.run(None, {"numeric": numeric})
    buffer = io.BytesIO()
    np.savez(buffer, **reference, **{REFERENCE_OUTPUT_KEY: labels.astype(np.float64)})
    argv = [
        "python3",
        "-c",
        REGISTER,
        f"http://{dev.host('mlflow')}:5000",
        NAME,
        base64.b64encode(onnx).decode(),
        base64.b64encode(buffer.getvalue()).decode(),
    ]
    log, registered = dev.run_pod(
        kube, dev.client_pod("register-watched", dev_images["dev-mlflow"].ref, argv)
    )
    assert log.strip().splitlines()[-1] == "1", log

    started = time.monotonic()
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    ready = {}
    for part in ("inference", "drift"):
        cluster.wait_part_ready(kube, MODELS, NAME, part, count=1, timeout=240)
        ready[part] = time.monotonic() - started
    return {"register_s": registered, "ready_s": ready}


def test_the_drift_monitor_pod_sees_a_shift_and_nothing_on_calm_traffic(
    watched: dict[str, Any],
    kube: Kube,
    real_node: NodeStack,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    image = dev.node_ref("inference", dev_images)
    (drift,) = cluster.part_pods(kube, MODELS, NAME, "drift")
    container = drift["spec"]["containers"][0]
    assert container["image"] == image
    assert container["command"] == ["python", "-m", "driftline.drift"]
    status = drift["status"]
    assert status["containerStatuses"][0]["restartCount"] == 0, status
    ready_at = next(c for c in status["conditions"] if c["type"] == "Ready")
    started_at = status["containerStatuses"][0]["state"]["running"]["startedAt"]
    start_to_ready = timestamp(ready_at["lastTransitionTime"]) - timestamp(started_at)

    rng = np.random.default_rng(2)
    metrics_url = f"http://{status['podIP']}:9100/metrics"
    calm, shifted = rows(draw(rng, ROWS)), rows(draw(rng, ROWS, SHIFT))
    argv = ["python", "-c", STREAM, URL, metrics_url, json.dumps(calm), json.dumps(shifted), "60"]
    log, _ = dev.run_pod(kube, dev.client_pod("drift-stream", image, argv), timeout=240)
    out = json.loads(log.strip().splitlines()[-1])
    assert out["failed"] == 0, out
    # Calm: every row used, the windows tested, no event.
    assert out["calm_used"] >= ROWS and out["calm_tests"] >= 1, out
    assert out["calm_events"] == 0, out
    # Shifted: a covariate event, on x1.
    assert out["covariate"] >= 1 and out["x1_detected"] == 1, out

    deadline = time.monotonic() + 30
    while (
        not (seen := kube.json("get", "dynamicmodel", NAME, "-n", MODELS)["status"])
        .get("drift", {})
        .get("detected")
    ):
        assert time.monotonic() < deadline, seen
        time.sleep(1)
    assert seen["drift"]["kind"] == "covariate" and "x1" in seen["drift"]["features"], seen

    hwm = kube.kubectl(
        "exec", "-n", MODELS, drift["metadata"]["name"], "--", "grep", "VmHWM", "/proc/1/status"
    )
    peak_rss = int(hwm.split()[1]) / 1024  # kB
    assert real_node.node is not None
    stats = pod_memory(kube, real_node.node.name, MODELS)[drift["metadata"]["name"]]
    working_set = stats["workingSetBytes"] / 2**20
    assert 0 < peak_rss < 512, hwm
    report(
        request,
        f"version and reference registered by a Pod in {watched['register_s']:.1f} s; after "
        f"the model's apply, inference Ready in {watched['ready_s']['inference']:.1f} s and "
        f"the drift monitor (inference image, scipy) in {watched['ready_s']['drift']:.1f} s "
        f"({start_to_ready:.0f} s from its container's start); {out['calm_used']:.0f} calm "
        f"rows used, {out['calm_tests']:.0f} window tests, no event; x1 shifted by {SHIFT} sd: "
        f"a covariate event {out['detected_s']:.1f} s after the first shifted row; drift "
        f"monitor peak RSS {peak_rss:.0f} MiB, working set {working_set:.0f} MiB",
        TAG,
    )
