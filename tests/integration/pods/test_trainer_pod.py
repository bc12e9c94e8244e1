"""The trainer in a real Pod on the rig's real node, with every other part of a model.

The chart in dev mode as test_dev_mode.py installs it (its fixtures, reused here,
install a release of this module's own), with the services image (torch inside,
~6 GB) on the node too: streamed from the docker engine into the node's containerd
(`docker save | ctr images import -`, no tarball on disk), once per session.

A DynamicModel with training on and `spec.model.initial` naming an ONNX file and a
labelled sample, both logged by a Pod as artifacts of a run in the in-cluster MLflow:
the operator's import Job (the services image) registers version 1 from them, and
every part's Pod (inference, joiner, trainer, drift monitor) becomes Ready, all
admitted under the restricted Pod Security Standard. The trainer's checkpoint claim
binds to a volume of the node (the rig has no StorageClass nor provisioner: the
operator is told `trainer_storage_class: ""`, a statically provisioned volume, and
the test makes one); `kubectl get dynamicmodels` shows the printer columns filled.

Measured and printed: the services image's import, the model's time to Ready after
its apply (the import Job's, and each part's), the trainer Pod's peak memory.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from driftline_testing.images import DEV_IMAGES, BuiltImage, ImageBuilder
from driftline_testing.node import NodeStack
from tests.integration.pods import test_dev_mode as dev
from tests.integration.pods.cluster import (
    Kube,
    is_ready,
    part_pods,
    pod_memory,
    report,
    wait_part_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.rig, pytest.mark.timeout(1800)]

# test_dev_mode.py's module fixtures, made again for this module.
imported = dev.imported
installed = dev.installed

MODELS, CLIENTS = dev.MODELS, dev.CLIENTS
NAME = "learner"
TAG = "trainer pod"
PARTS = ("inference", "joiner", "trainer", "drift")
SAMPLE_ROWS = 400
# The trainer asks little CPU (the node's 2 are shared) and memory enough for its
# process (torch imported, a small learner): its measured peak, 808 MiB, is printed
# (docs/deploy.md).
TRAINER = {"cpu": "100m", "memory": "1536Mi", "tmp": "256Mi"}
CHECKPOINT_SIZE = "1Gi"
OPERATOR_SETTINGS: dict[str, Any] = {
    **dev.OPERATOR_SETTINGS,
    "trainer_resources": TRAINER,
    "trainer_checkpoint_size": CHECKPOINT_SIZE,
    # No StorageClass on the rig: the claim binds to the volume the test makes.
    "trainer_storage_class": "",
}

# Run in the MLflow image from another namespace: the model file and its sample logged
# as artifacts of a run (nothing registered); prints the run's id.
UPLOAD = """
import base64, os, sys, tempfile
from mlflow import MlflowClient
uri, name = sys.argv[1], sys.argv[2]
files = {"model/model.onnx": base64.b64decode(sys.argv[3]),
         "sample/sample.csv": base64.b64decode(sys.argv[4])}
client = MlflowClient(tracking_uri=uri)
run = client.create_run(client.create_experiment(name + "-upload"))
with tempfile.TemporaryDirectory() as tmp:
    for artifact, data in files.items():
        path = os.path.join(tmp, os.path.basename(artifact))
        with open(path, "wb") as f:
            f.write(data)
        client.log_artifact(run.info.run_id, path, os.path.dirname(artifact))
client.set_terminated(run.info.run_id)
print(run.info.run_id)
"""


@pytest.fixture(scope="module")
def dev_images(image_builder: ImageBuilder) -> dict[str, BuiltImage]:
    """test_dev_mode.py's images and the services image (the trainer's, the import
    Job's), built from this tree (or found by their content key)."""
    names = ("operator", "inference", "services", *DEV_IMAGES.values())
    return {name: image_builder.build(name) for name in names}


def model_files() -> tuple[dict[str, Any], bytes, bytes]:
    """The model's document, an ONNX file for it and a sample of rows labelled by it."""
    import numpy as np
    import onnxruntime as ort

    from driftline.api import parse_dynamic_model
    from driftline.inference.contract import FeatureContract
    from driftline_testing.models import mlp_model

    document = dev.dev_model(NAME, training="online")
    contract = FeatureContract(parse_dynamic_model(document).spec)
    model = mlp_model(contract, seed=5)
    rows = np.random.default_rng(5).normal(size=(SAMPLE_ROWS, 3)).astype(np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    labels = session.run(None, {"numeric": rows})[0]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["x1", "x2", "x3", "label"])
    for row, label in zip(rows.tolist(), labels.tolist(), strict=True):
        writer.writerow([*(f"{v:.6f}" for v in row), int(label)])
    return document, model, out.getvalue().encode()


def checkpoint_volume(real_node: NodeStack, claim: str) -> dict[str, Any]:
    """A volume of the node (a folder of the run's, removed with it) for `claim`."""
    folder = real_node.state.root + "/volumes/trainer-checkpoints"
    os.makedirs(folder, exist_ok=True)
    os.chmod(folder, 0o777)  # the trainer runs as 10001; fsGroup does not reach hostPath
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{MODELS}-{claim}"},
        "spec": {
            "capacity": {"storage": CHECKPOINT_SIZE},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": MODELS, "name": claim},
            "hostPath": {"path": folder, "type": "Directory"},
        },
    }


def model_ready(kube: Kube) -> bool:
    """The model's Ready condition is True and its phase Serving."""
    status = kube.json("get", "dynamicmodel", NAME, "-n", MODELS).get("status", {})
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    return status.get("phase") == "Serving" and bool(ready) and ready[0]["status"] == "True"


@pytest.fixture(scope="module")
def learner(
    installed: dict[str, float],
    kube: Kube,
    real_node: NodeStack,
    dev_images: dict[str, BuiltImage],
) -> Iterator[dict[str, Any]]:
    """The model applied with its initial model in MLflow and its checkpoint volume;
    the seconds until its version 1 was registered and each part's Pods were Ready."""
    from driftline.operator.builders.context import child_name

    document, model, sample = model_files()
    argv = [
        "python3",
        "-c",
        UPLOAD,
        f"http://{dev.host('mlflow')}:5000",
        NAME,
        base64.b64encode(model).decode(),
        base64.b64encode(sample).decode(),
    ]
    log, uploaded = dev.run_pod(kube, dev.client_pod("upload", dev_images["dev-mlflow"].ref, argv))
    run_id = log.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{32}", run_id), log
    document["spec"]["model"]["initial"] = {
        "uri": f"runs:/{run_id}/model/model.onnx",
        "sample": f"runs:/{run_id}/sample/sample.csv",
    }
    volume = checkpoint_volume(real_node, child_name(NAME, "trainer-checkpoints"))
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(volume))
    try:
        started = time.monotonic()
        kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
        seconds: dict[str, float] = {"upload": uploaded}
        deadline = started + 600
        while "version 1" not in seconds:
            status = kube.json("get", "dynamicmodel", NAME, "-n", MODELS).get("status", {})
            if status.get("stableVersion") == "1":
                seconds["version 1"] = time.monotonic() - started
            elif time.monotonic() > deadline:
                events = kube.kubectl("get", "events", "-n", MODELS, check=False)
                jobs = kube.kubectl(
                    "logs",
                    "-n",
                    MODELS,
                    "-l",
                    "app.kubernetes.io/component=import",
                    "--tail=60",
                    check=False,
                )
                pytest.fail(f"no version 1 in 600 s: {status}\n{events[-3000:]}\n{jobs}")
            time.sleep(1)
        for part in PARTS:
            wait_part_ready(
                kube, MODELS, NAME, part, count=1, timeout=max(deadline - time.monotonic(), 60)
            )
            seconds[part] = time.monotonic() - started
        while not model_ready(kube):
            assert time.monotonic() < deadline, kube.json("get", "dynamicmodel", NAME, "-n", MODELS)
            time.sleep(1)
        seconds["model Ready"] = time.monotonic() - started
        yield {"seconds": seconds, "volume": volume}
    finally:
        kube.kubectl("delete", "dynamicmodel", NAME, "-n", MODELS, "--timeout=60s", check=False)
        kube.kubectl("delete", "pvc", "--all", "-n", MODELS, "--timeout=60s", check=False)
        kube.kubectl("delete", "pv", volume["metadata"]["name"], "--timeout=60s", check=False)


def test_import_job_registers_version_1_and_every_part_becomes_ready(
    learner: dict[str, Any],
    imported: dict[str, float],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    jobs = kube.json("get", "jobs", "-n", MODELS, "-l", "app.kubernetes.io/component=import")
    assert [j["status"].get("succeeded") for j in jobs["items"]] == [1], jobs
    services = dev.node_ref("services", dev_images)
    restarts = {}
    for part in PARTS:
        (pod,) = part_pods(kube, MODELS, NAME, part)
        assert is_ready(pod)
        restarts[part] = pod["status"]["containerStatuses"][0]["restartCount"]
        image = pod["spec"]["containers"][0]["image"]
        assert (image == services) == (part == "trainer"), (part, image)
    # Admitted under `restricted`: the namespace enforces it, and nothing was refused.
    namespace = kube.json("get", "namespace", MODELS)["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    events = kube.kubectl("get", "events", "-n", MODELS)
    assert "violates PodSecurity" not in events, events
    image = dev_images["services"]
    took = imported.get("services")
    report(
        request,
        f"services image {image.size_mb:.0f} MB "
        + (f"streamed into the node in {took:.1f} s" if took else "already on the node"),
        TAG,
    )
    report(
        request,
        "after the model's apply: "
        + ", ".join(f"{what} {s:.1f} s" for what, s in learner["seconds"].items())
        + f"; restarts {restarts}",
        TAG,
    )


def test_the_trainer_checkpoint_claim_binds_to_the_node_volume(
    learner: dict[str, Any], kube: Kube, request: pytest.FixtureRequest
) -> None:
    volume = learner["volume"]
    claim = volume["spec"]["claimRef"]["name"]
    pvc = kube.json("get", "pvc", claim, "-n", MODELS)
    assert pvc["status"]["phase"] == "Bound", pvc["status"]
    assert pvc["spec"]["volumeName"] == volume["metadata"]["name"]
    (pod,) = part_pods(kube, MODELS, NAME, "trainer")
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [claim], pod["spec"]["volumes"]
    mount = next(
        m["mountPath"]
        for m in pod["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == "checkpoints"
    )
    probe = f"{mount}/.written-by-test"
    kube.kubectl(
        "exec",
        "-n",
        MODELS,
        pod["metadata"]["name"],
        "--",
        "python",
        "-c",
        f"open({probe!r}, 'w').write('ok')",
    )
    path = volume["spec"]["hostPath"]["path"] + "/.written-by-test"
    with open(path) as handle:
        assert handle.read() == "ok"
    report(request, f"checkpoint claim {claim} Bound to a node volume, written by the trainer", TAG)


def test_the_printer_columns_show_the_model(
    learner: dict[str, Any], kube: Kube, request: pytest.FixtureRequest
) -> None:
    table = kube.kubectl("get", "dynamicmodels", "-n", MODELS)
    header, *rows = table.strip().splitlines()
    columns = re.split(r"\s{2,}", header.strip())
    assert columns == ["NAME", "PHASE", "STABLE", "CANDIDATE", "CANARY%", "DRIFT", "AGE"], table
    (row,) = rows
    # Fixed-width columns (an unset one is blank): each value starts under its header.
    starts = [header.index(c) for c in columns]
    ends = [*starts[1:], None]
    values = {c: row[a:b].strip() for c, a, b in zip(columns, starts, ends, strict=True)}
    assert values["NAME"] == NAME and values["PHASE"] == "Serving" and values["STABLE"] == "1", (
        table
    )
    assert values["AGE"], table
    report(request, "kubectl get dynamicmodels:\n" + table.rstrip(), TAG)


def test_the_trainer_memory_is_recorded(
    learner: dict[str, Any], kube: Kube, real_node: NodeStack, request: pytest.FixtureRequest
) -> None:
    (pod,) = part_pods(kube, MODELS, NAME, "trainer")
    name = pod["metadata"]["name"]
    hwm = kube.kubectl("exec", "-n", MODELS, name, "--", "grep", "VmHWM", "/proc/1/status")
    peak = int(hwm.split()[1]) / 1024  # kB
    assert real_node.node is not None
    working_set = pod_memory(kube, real_node.node.name, MODELS)[name]["workingSetBytes"] / 2**20
    limit = int(TRAINER["memory"].removesuffix("Mi"))
    assert 0 < peak < limit and 0 < working_set < limit, (peak, working_set)
    report(request, f"trainer peak RSS {peak:.0f} MiB, working set {working_set:.0f} MiB", TAG)
