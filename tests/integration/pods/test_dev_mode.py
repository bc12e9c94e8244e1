"""The chart's dev mode on the rig's real node: `helm install` with `dev.enabled=true`
into a namespace under the restricted Pod Security Standard runs Redis, Apache Kafka
and MLflow from the images built here (docker/dev/, nothing pulled). Each becomes
Ready, and answers by its Service's DNS name (the rig's CoreDNS) from Pods of another
namespace, as a model's parts would reach it: Redis a PING, MLflow /health, Kafka a
topic created and described through the address the broker advertises. The operator,
installed with them, reaches them for a DynamicModel that names them.

Then inference in real Pods: a version registered in that MLflow by a Pod, a
DynamicModel whose inference (the CPU image built here) runs with 2 replicas, both
Ready; predictions through its Service from another namespace, correct, also while
one of the 2 Pods is deleted mid-stream.

Measured and printed: each image's build (or reuse) and import into the node, each
server's Ready time after `helm install`, each Pod's memory (the kubelet's summary),
the inference Pods' Ready time and memory, the requests' latency.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from driftline_testing.images import DEV_IMAGES, BuiltImage, DockerDaemon, ImageBuilder
from driftline_testing.node import NodeStack
from tests.deploy.chart import CHART, ROOT, values_file
from tests.integration.pods.cluster import (
    SMALL_INFERENCE,
    SMALL_PARTS,
    Kube,
    apply_model,
    is_ready,
    part_pods,
    pod_memory,
    report,
    restricted_namespace,
    wait_part_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.rig, pytest.mark.timeout(2400)]

RELEASE = "driftline"
NAMESPACE = "driftline-dev"
CLIENTS = "dev-clients"
MODELS = "dev-models"
SERVERS = tuple(DEV_IMAGES)  # redis, kafka, mlflow
TAG = "dev mode"
SAMPLE = ROOT / "manifests" / "samples" / "minimal.yaml"
# Each server's memory limit in the chart's values (MiB).
LIMITS = {"redis": 256, "kafka": 1024, "mlflow": 1024}
# The operator's settings in the chart's values.
OPERATOR_SETTINGS: dict[str, Any] = {"tick_seconds": 2, **SMALL_PARTS}


def host(server: str) -> str:
    return f"driftline-{server}.{NAMESPACE}.svc.cluster.local"


def dev_model(name: str, replicas: int = 1, training: str = "off") -> dict[str, Any]:
    """A DynamicModel document using the dev-mode servers by their Service names, with
    `replicas` small inference replicas and training `training` (off by default)."""
    from driftline_testing.models import model_document

    document = model_document(
        name,
        tracking_uri=f"http://{host('mlflow')}:5000",
        kafka=f"{host('kafka')}:9092",
        redis=f"redis://{host('redis')}:6379/0",
        namespace=MODELS,
        inference={
            "replicas": {"min": replicas, "max": replicas},
            "resources": {"cpu": "250m", "memory": "512Mi"},
        },
    )
    document["spec"]["training"] = {"mode": training}
    return document


# Run in the MLflow image (Python) from another namespace: names resolved by the
# cluster DNS (a short name through the search domains too), a Redis PING, MLflow's
# /health. Prints one JSON object.
CHECKS = f"""
import json, socket, time, urllib.request
out = {{}}
started = time.monotonic()
for server in ("redis", "kafka", "mlflow"):
    name = "driftline-%s.{NAMESPACE}.svc.cluster.local" % server
    out[server + "_ip"] = socket.gethostbyname(name)
out["short_ip"] = socket.gethostbyname("driftline-redis.{NAMESPACE}")
out["dns_s"] = time.monotonic() - started
with socket.create_connection(("driftline-redis.{NAMESPACE}", 6379), timeout=10) as conn:
    conn.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
    out["redis"] = conn.recv(64).decode().strip()
with urllib.request.urlopen("http://driftline-mlflow.{NAMESPACE}:5000/health", timeout=10) as r:
    out["mlflow"] = r.read().decode().strip()
print(json.dumps(out))
"""

# Run in the Kafka image from another namespace: a topic created and described; the
# bootstrap name is short, the broker's metadata then names its advertised address.
TOPICS = (
    f"b=driftline-kafka.{NAMESPACE}:9092; "
    "kafka-topics.sh --bootstrap-server $b --create --topic dev-check --partitions 2 "
    "--replication-factor 1 && kafka-topics.sh --bootstrap-server $b --describe --topic dev-check"
)


def client_pod(name: str, image: str, command: list[str]) -> dict[str, Any]:
    """A one-shot Pod that the restricted Pod Security Standard admits."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": CLIENTS},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "env": [{"name": "KAFKA_HEAP_OPTS", "value": "-Xmx128m"}],
                    "resources": {"limits": {"memory": "512Mi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }


def run_pod(kube: Kube, manifest: dict[str, Any], timeout: float = 180) -> tuple[str, float]:
    """Create the Pod, wait until it has finished; its log and the seconds it took.
    A Pod that failed fails the test with its log."""
    started = time.monotonic()
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    return finish_pod(kube, manifest["metadata"]["name"], started, timeout)


def finish_pod(kube: Kube, name: str, started: float, timeout: float) -> tuple[str, float]:
    """Waits until the Pod `name`, created at `started`, has finished: as `run_pod`."""
    deadline = started + timeout
    phase = ""
    while phase not in ("Succeeded", "Failed"):
        if time.monotonic() > deadline:
            events = kube.kubectl("get", "events", "-n", CLIENTS, check=False)
            pytest.fail(f"Pod {name} not finished in {timeout:.0f} s:\n{events[-3000:]}")
        time.sleep(0.5)
        phase = kube.json("get", "pod", name, "-n", CLIENTS).get("status", {}).get("phase", "")
    elapsed = time.monotonic() - started
    log = kube.kubectl("logs", "-n", CLIENTS, name, check=False)
    assert phase == "Succeeded", f"Pod {name} {phase}:\n{log[-4000:]}"
    return log, elapsed


def server_pods(kube: Kube) -> dict[str, dict[str, Any]]:
    pods = kube.json("get", "pods", "-n", NAMESPACE)["items"]
    found = {}
    for pod in pods:
        name = pod["metadata"]["labels"].get("app.kubernetes.io/name", "")
        if name.startswith("driftline-"):
            found[name.removeprefix("driftline-")] = pod
    return found


def why_not_ready(kube: Kube) -> str:
    events = kube.kubectl("get", "events", "-n", NAMESPACE, check=False)
    parts = [f"--- events\n{events[-3000:]}"]
    for server, pod in server_pods(kube).items():
        name = pod["metadata"]["name"]
        log = kube.kubectl("logs", "-n", NAMESPACE, name, "--tail=40", check=False)
        status = json.dumps(pod.get("status", {}).get("containerStatuses", []), indent=1)
        parts.append(f"--- {server}: {status[-1500:]}\n{log}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def dev_images(image_builder: ImageBuilder) -> dict[str, BuiltImage]:
    """The operator's image, inference's (CPU, no torch) and dev mode's, built from
    this tree (or found by their content key)."""
    names = ("operator", "inference", *DEV_IMAGES.values())
    return {name: image_builder.build(name) for name in names}


def node_ref(name: str, dev_images: dict[str, BuiltImage]) -> str:
    """The image's reference on the node. The chart gives the operator and the parts
    one tag, so the parts' images (inference's, the services image) go there under the
    operator's."""
    if name in ("inference", "services"):
        return f"driftline/{name}:{dev_images['operator'].ref.rsplit(':', 1)[1]}"
    return str(dev_images[name].ref)


def put_image(
    real_node: NodeStack, docker_daemon: DockerDaemon, image: str, wanted: str
) -> float | None:
    """The image `image` of the docker engine into the node's containerd as `wanted`,
    streamed (`docker save | ctr images import -`: no tarball on disk); the seconds it
    took, None when the node already had that image under that name."""
    ref = f"docker.io/{wanted}"
    if real_node.image_id(ref) == docker_daemon.image_id(image):
        return None  # imported before in this session (the operator's, by its own tests)
    started = time.monotonic()
    if wanted != image:
        docker_daemon.docker("tag", image, wanted)
    try:
        with docker_daemon.saving(wanted) as stream:
            real_node.import_stream(stream)
    finally:
        if wanted != image:
            docker_daemon.docker("rmi", wanted)  # the tag only: the image keeps its own
    assert real_node.image_id(ref) == docker_daemon.image_id(image), ref
    return time.monotonic() - started


@pytest.fixture(scope="module")
def imported(
    real_node: NodeStack, dev_images: dict[str, BuiltImage], docker_daemon: DockerDaemon
) -> dict[str, float]:
    """The images in the node's containerd; the seconds each took (save and import)."""
    seconds = {}
    for name, image in dev_images.items():
        took = put_image(real_node, docker_daemon, image.ref, node_ref(name, dev_images))
        if took is not None:
            seconds[name] = took
    return seconds


@pytest.fixture(scope="module")
def installed(
    kube: Kube,
    imported: dict[str, float],
    dev_images: dict[str, BuiltImage],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, float]]:
    """`helm install` in dev mode with the images built here; the seconds until each
    server's Pod was Ready. Uninstalled at the end. The operator's settings are
    `OPERATOR_SETTINGS`, the test module's own where it has one; a module's
    `CHART_VALUES` adds values of other top-level keys."""
    operator_settings = getattr(request.module, "OPERATOR_SETTINGS", OPERATOR_SETTINGS)
    repository, tag = dev_images["operator"].ref.rsplit(":", 1)
    values = {
        "image": {"operator": repository, "tag": tag, "pullPolicy": "Never"},
        "operator": {"settings": operator_settings},
        "dev": {
            "enabled": True,
            **{server: {"image": dev_images[DEV_IMAGES[server]].ref} for server in SERVERS},
        },
        # More of the chart's values, the test module's own (other top-level keys).
        **getattr(request.module, "CHART_VALUES", {}),
    }
    path = values_file(values, tmp_path_factory.mktemp("values"), "dev-mode")
    for namespace in (NAMESPACE, CLIENTS, MODELS):
        restricted_namespace(kube, namespace)
    started = time.monotonic()
    try:
        kube.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(path))
        ready: dict[str, float] = {}
        deadline = started + 300
        while len(ready) < len(SERVERS) + 1:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"not Ready in 300 s: {set(SERVERS) - set(ready)}\n{why_not_ready(kube)}"
                )
            for server, pod in server_pods(kube).items():
                if server not in ready and is_ready(pod):
                    ready[server] = time.monotonic() - started
            if "operator" not in ready:
                pods = kube.json(
                    "get",
                    "pods",
                    "-n",
                    NAMESPACE,
                    "-l",
                    "app.kubernetes.io/name=driftline-operator",
                )["items"]
                if pods and is_ready(pods[0]):
                    ready["operator"] = time.monotonic() - started
            time.sleep(0.5)
        yield ready
    finally:
        kube.kubectl("delete", "dynamicmodels", "--all", "-n", MODELS, "--timeout=60s", check=False)
        kube.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
        kube.kubectl(
            "delete", "namespace", MODELS, CLIENTS, NAMESPACE, "--timeout=90s", check=False
        )


def test_dev_servers_become_ready_from_images_built_here(
    installed: dict[str, float],
    imported: dict[str, float],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    pods = server_pods(kube)
    assert set(SERVERS) <= pods.keys(), pods.keys()
    for server in SERVERS:
        pod = pods[server]
        assert is_ready(pod), why_not_ready(kube)
        container = pod["spec"]["containers"][0]
        assert container["image"] == dev_images[DEV_IMAGES[server]].ref
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, why_not_ready(kube)
    sizes = ", ".join(
        f"{name} {image.size_mb:.0f} MB ({'reused' if image.reused else 'built'} "
        f"{image.seconds:.0f} s)"
        for name, image in dev_images.items()
    )
    report(request, f"images: {sizes}", TAG)
    saved = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in imported.items())
    report(request, f"images saved and imported into the node: {saved}", TAG)
    report(
        request,
        "Ready after `helm install`: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(installed.items())),
        TAG,
    )


def test_each_server_answers_by_its_service_name_from_another_namespace(
    installed: dict[str, float],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    services = {
        server: kube.json("get", "service", f"driftline-{server}", "-n", NAMESPACE)["spec"][
            "clusterIP"
        ]
        for server in SERVERS
    }
    image = dev_images["dev-mlflow"].ref
    log, elapsed = run_pod(kube, client_pod("checks", image, ["python3", "-c", CHECKS]))
    out = json.loads(log.strip().splitlines()[-1])
    assert {server: out[f"{server}_ip"] for server in SERVERS} == services, out
    assert out["short_ip"] == services["redis"], out
    assert out["redis"] == "+PONG", out
    assert out["mlflow"] == "OK", out
    report(
        request,
        f"redis PING and MLflow /health by Service name: Pod done in {elapsed:.1f} s "
        f"(names resolved in {out['dns_s'] * 1000:.0f} ms)",
        TAG,
    )

    log, elapsed = run_pod(
        kube, client_pod("topics", dev_images["dev-kafka"].ref, ["sh", "-c", TOPICS])
    )
    assert "Created topic dev-check." in log, log
    assert "PartitionCount: 2" in log, log
    report(request, f"kafka topic created and described by Service name: {elapsed:.1f} s", TAG)


def test_dev_server_memory_is_recorded(
    installed: dict[str, float],
    kube: Kube,
    real_node: NodeStack,
    request: pytest.FixtureRequest,
) -> None:
    assert real_node.node is not None
    memory = pod_memory(kube, real_node.node.name, NAMESPACE)
    lines = []
    for server in SERVERS:
        stats = next(m for name, m in memory.items() if name.startswith(f"driftline-{server}-"))
        working_set = stats["workingSetBytes"] / 2**20
        assert 0 < working_set < LIMITS[server], (server, stats)
        rss = stats.get("rssBytes", 0) / 2**20
        lines.append(f"{server} working set {working_set:.0f} MiB, RSS {rss:.0f} MiB")
    report(request, "memory: " + "; ".join(lines), TAG)


def test_the_operator_reaches_the_dev_servers(
    installed: dict[str, float], kube: Kube, request: pytest.FixtureRequest
) -> None:
    """A model that names the dev servers: the operator reads Redis and MLflow for it
    and logs no outage (its inference finds no version; its joiner runs from the
    inference image; its drift monitor waits for the services image, not here)."""
    sample = yaml.safe_load(SAMPLE.read_text())
    sample["metadata"]["namespace"] = MODELS
    sample["spec"]["training"] = {"mode": "off"}
    sample["spec"]["model"]["registry"]["trackingUri"] = f"http://{host('mlflow')}:5000"
    sample["spec"]["kafka"] = {"bootstrapServers": f"{host('kafka')}:9092"}
    sample["spec"]["redis"] = {"url": f"redis://{host('redis')}:6379/0"}
    # Its registry has no version: its inference never becomes Ready, and asks little.
    sample["spec"]["inference"] = SMALL_INFERENCE
    name = sample["metadata"]["name"]
    request.addfinalizer(
        lambda: kube.kubectl("delete", "dynamicmodel", name, "-n", MODELS, check=False)
    )
    status = apply_model(kube, sample, MODELS)
    assert status.get("phase"), status
    time.sleep(10)  # a few ticks of the rollout, each reading Redis and the registry
    status = kube.json("get", "dynamicmodel", name, "-n", MODELS)["status"]
    report(request, f"model status with the dev servers: {json.dumps(status, sort_keys=True)}", TAG)
    pods = kube.json(
        "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=driftline-operator"
    )["items"]
    log = kube.kubectl("logs", "-n", NAMESPACE, pods[0]["metadata"]["name"])
    assert "Traceback" not in log, log[-3000:]
    warned = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
    report(request, "operator log, warnings and errors:\n" + "\n".join(warned[:10]), TAG)
    outages = [line for line in warned if "unavailable" in line]
    assert not outages, "\n".join(outages)
    assert "DependencyMissing" not in json.dumps(status), status


# --- inference in real Pods ------------------------------------------------------------

SCORER = "scorer"
INFERENCE_URL = f"http://{SCORER}-inference.{MODELS}:8080/v1/models/{SCORER}/predict"
ROWS = [{"x1": 0.5 * i - 2.0, "x2": 1.25 - 0.3 * i, "x3": (i % 5) - 2.5} for i in range(16)]

# Run in the MLflow image from another namespace: the version logged and registered
# the way the trainer publishes one (driftline_testing.models.register_version), the
# ONNX file made by the test. Prints the version.
REGISTER = """
import base64, hashlib, os, sys, tempfile
from mlflow import MlflowClient
uri, name, model = sys.argv[1], sys.argv[2], base64.b64decode(sys.argv[3])
client = MlflowClient(tracking_uri=uri)
run = client.create_run(client.create_experiment(name))
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "model.onnx")
    with open(path, "wb") as f:
        f.write(model)
    client.log_artifact(run.info.run_id, path, "model")
client.set_terminated(run.info.run_id)
client.create_registered_model(name)
version = client.create_model_version(
    name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
    tags={"driftline.sha256": hashlib.sha256(model).hexdigest()},
)
for alias in ("champion", "baseline"):
    client.set_registered_model_alias(name, alias, version.version)
print(version.version)
"""

# Run in the MLflow image from another namespace: predictions through the inference
# Service for argv[1] seconds, a new connection each (the Service picks a Pod per
# connection), each answer checked against the one the test computed. Prints a
# progress line every 20 requests, and one JSON object at the end.
TRAFFIC = """
import json, sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
rows, expected = json.loads(sys.argv[3]), json.loads(sys.argv[4])
ok, wrong, failed, latencies = 0, [], [], []
started = time.monotonic()
i = 0
while time.monotonic() - started < seconds:
    body = json.dumps({"entity_id": "e-%d" % i, "features": rows[i % len(rows)]}).encode()
    want = expected[i % len(rows)]
    sent = time.monotonic()
    try:
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            answer = json.loads(r.read())
        pairs = zip(answer["probabilities"], want["probabilities"])
        close = all(abs(a - b) < 1e-5 for a, b in pairs)
        if answer["label"] == want["label"] and close:
            ok += 1
        else:
            wrong.append([i, answer])
    except Exception as exc:
        failed.append("%.2f s: %r" % (sent - started, exc))
    latencies.append(time.monotonic() - sent)
    i += 1
    if i % 20 == 0:
        print("progress %d" % i, flush=True)
latencies.sort()
print(json.dumps({"requests": i, "ok": ok, "wrong": wrong[:5], "failed": failed,
                  "p50_ms": 1000 * latencies[len(latencies) // 2],
                  "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
                  "max_ms": 1000 * latencies[-1], "seconds": time.monotonic() - started}))
"""


def start_stream(
    kube: Kube,
    name: str,
    seconds: float,
    scorer: dict[str, Any],
    dev_images: dict[str, BuiltImage],
    progress: int = 0,
) -> float:
    """A client Pod `name` sending `TRAFFIC` to the inference Service for `seconds`;
    returns once it has sent `progress` requests (0: once created), with the time it
    was created (for `finish_pod`)."""
    argv = [
        "python3",
        "-c",
        TRAFFIC,
        INFERENCE_URL,
        str(seconds),
        json.dumps(scorer["rows"]),
        json.dumps(scorer["expected"]),
    ]
    manifest = client_pod(name, dev_images["dev-mlflow"].ref, argv)
    started = time.monotonic()
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    while progress and f"progress {progress}" not in kube.kubectl(
        "logs", "-n", CLIENTS, name, check=False
    ):
        assert time.monotonic() - started < 120, kube.kubectl(
            "get", "events", "-n", CLIENTS, check=False
        )
        time.sleep(0.25)
    return started


def inference_pods(kube: Kube) -> list[dict[str, Any]]:
    return part_pods(kube, MODELS, SCORER, "inference")


def wait_inference_ready(kube: Kube, count: int, timeout: float) -> float:
    return wait_part_ready(kube, MODELS, SCORER, "inference", count=count, timeout=timeout)


@pytest.fixture(scope="module")
def scorer(
    installed: dict[str, float],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> dict[str, Any]:
    """A version registered in the in-cluster MLflow, and a DynamicModel serving it
    with 2 inference replicas, both Ready; what the tests compare answers with and the
    seconds each step took."""
    import base64

    import numpy as np
    import onnxruntime as ort

    from driftline.api import parse_dynamic_model
    from driftline.inference.contract import FeatureContract
    from driftline_testing.models import mlp_model

    document = dev_model(SCORER, replicas=2)
    contract = FeatureContract(parse_dynamic_model(document).spec)
    model = mlp_model(contract, seed=3)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    numeric = np.array([[row[n] for n in ("x1", "x2", "x3")] for row in ROWS], np.float32)
    labels, probabilities = session.run(None, {"numeric": numeric})
    expected = [
        {"label": int(label), "probabilities": [float(p) for p in probs]}
        for label, probs in zip(labels, probabilities, strict=True)
    ]

    uri = f"http://{host('mlflow')}:5000"
    argv = ["python3", "-c", REGISTER, uri, SCORER, base64.b64encode(model).decode()]
    log, registered = run_pod(kube, client_pod("register", dev_images["dev-mlflow"].ref, argv))
    assert log.strip().splitlines()[-1] == "1", log

    started = time.monotonic()
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    ready = wait_inference_ready(kube, 2, timeout=240)
    return {
        "rows": ROWS,
        "expected": expected,
        "register_s": registered,
        "ready_s": time.monotonic() - started,
        "last_ready_s": ready,
    }


def test_inference_pods_serve_a_registered_version_to_another_namespace(
    scorer: dict[str, Any],
    kube: Kube,
    real_node: NodeStack,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    """The operator runs the model's inference from the CPU image (`driftline/inference`,
    no torch) with 2 replicas; both load version 1 from the in-cluster MLflow and become
    Ready, and a Pod of another namespace gets, through the inference Service, the
    answers the test computed from the same ONNX file. (The rig's CNI, a plain bridge,
    does not enforce NetworkPolicies: the model's policies are not tested here.)"""
    pods = inference_pods(kube)
    assert len(pods) == 2
    container = pods[0]["spec"]["containers"][0]
    assert container["image"] == node_ref("inference", dev_images)
    seconds = "3"
    argv = [
        "python3",
        "-c",
        TRAFFIC,
        INFERENCE_URL,
        seconds,
        json.dumps(scorer["rows"]),
        json.dumps(scorer["expected"]),
    ]
    log, _ = run_pod(kube, client_pod("predict", dev_images["dev-mlflow"].ref, argv))
    out = json.loads(log.strip().splitlines()[-1])
    assert out["requests"] > 0 and out["ok"] == out["requests"], out
    assert real_node.node is not None
    memory = pod_memory(kube, real_node.node.name, MODELS)
    sets = {
        name: stats["workingSetBytes"] / 2**20
        for name, stats in memory.items()
        if name.startswith(f"{SCORER}-inference-")
    }
    assert len(sets) == 2 and all(0 < m < 512 for m in sets.values()), sets
    report(
        request,
        f"version registered by a Pod in {scorer['register_s']:.1f} s; 2 inference Pods "
        f"Ready {scorer['ready_s']:.1f} s after the model's apply; {out['requests']} "
        f"predictions in {out['seconds']:.1f} s, all correct (p50 {out['p50_ms']:.1f} ms, "
        f"p99 {out['p99_ms']:.1f} ms, a new connection each); inference working sets "
        + ", ".join(f"{m:.0f} MiB" for m in sorted(sets.values())),
        TAG,
    )


def test_an_inference_pod_deleted_mid_stream_fails_no_request(
    scorer: dict[str, Any],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    """Traffic through the Service while one of the 2 inference Pods is deleted (the
    kubelet's SIGTERM, the grace period the operator gives): every request is
    answered, and correctly; the Deployment is back to 2 Ready Pods. The stream
    outlasts the deleted Pod's shutdown delay (the operator's 5 s) and the Service's
    change; without the delay, connections were refused here."""
    seconds = 10
    started = start_stream(kube, "stream", seconds, scorer, dev_images, progress=40)
    victim = inference_pods(kube)[0]["metadata"]["name"]
    deleted = time.monotonic()
    kube.kubectl("delete", "pod", victim, "-n", MODELS, "--wait=false")
    back = wait_inference_ready(kube, 2, timeout=120)
    log, _ = finish_pod(kube, "stream", started, timeout=seconds + 120)
    out = json.loads(log.strip().splitlines()[-1])
    assert not out["failed"], out
    assert not out["wrong"] and out["ok"] == out["requests"], out
    assert time.monotonic() - deleted < seconds + 120
    report(
        request,
        f"one of 2 inference Pods deleted mid-stream: {out['requests']} requests in "
        f"{out['seconds']:.1f} s, none failed (max {out['max_ms']:.0f} ms, p99 "
        f"{out['p99_ms']:.1f} ms); 2 Pods Ready again {back:.1f} s after the delete",
        TAG,
    )


def test_containerd_killed_and_restarted_mid_stream_fails_no_request(
    scorer: dict[str, Any],
    kube: Kube,
    real_node: NodeStack,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    """The node's containerd is SIGKILLed during a stream through the 2 inference Pods
    and started again: the containers run on under their shims, so every request is
    answered, correctly; after it the node still runs new Pods (an inference Pod
    deleted comes back Ready)."""
    assert real_node.node is not None
    seconds = 12
    started = start_stream(kube, "through-restart", seconds, scorer, dev_images, progress=40)
    down_s = real_node.node.restart_containerd()
    log, _ = finish_pod(kube, "through-restart", started, timeout=seconds + 120)
    out = json.loads(log.strip().splitlines()[-1])
    assert not out["failed"], out
    assert not out["wrong"] and out["ok"] == out["requests"], out
    victim = inference_pods(kube)[0]["metadata"]["name"]
    deleted = time.monotonic()
    kube.kubectl("delete", "pod", victim, "-n", MODELS, "--wait=false")
    back = wait_inference_ready(kube, 2, timeout=120)
    report(
        request,
        f"containerd killed and restarted mid-stream (answering again {down_s:.1f} s after "
        f"the kill): {out['requests']} requests in {out['seconds']:.1f} s, none failed "
        f"(max {out['max_ms']:.0f} ms); a Pod deleted after it Ready again in {back:.1f} s "
        f"({time.monotonic() - deleted:.1f} s)",
        TAG,
    )


# --- autoscaling on the node's resource metrics --------------------------------------


def hpa_status(kube: Kube) -> dict[str, Any]:
    out = kube.kubectl("get", "hpa", f"{SCORER}-inference", "-n", MODELS, "-o", "json", check=False)
    return dict(json.loads(out).get("status", {})) if out else {}


def cpu_utilization(status: dict[str, Any]) -> int | None:
    for metric in status.get("currentMetrics") or []:
        current = metric.get("resource", {}).get("current", {})
        if "averageUtilization" in current:
            return int(current["averageUtilization"])
    return None


def test_the_inference_hpa_scales_out_under_load_and_back_in(
    scorer: dict[str, Any],
    kube: Kube,
    real_node: NodeStack,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    """The operator's HPA for inference, on CPU, fed by the rig's metrics-server from
    the kubelet: the model (2 fixed replicas until now) gets 1 to 3 replicas of 100m
    CPU at a 50 % target and a 15 s scale-down window. Under a client's stream the HPA
    adds Pods, which become Ready and serve; once the stream ends it gives them back,
    down to 1. Every request of the stream is answered correctly."""
    assert real_node.node is not None
    node = real_node.node.metrics_ready(timeout=90)
    assert node["usage"]["cpu"] and node["usage"]["memory"], node
    patch = {
        "spec": {
            "inference": {
                "replicas": {"min": 1, "max": 3},
                "resources": {"cpu": "100m", "memory": "512Mi"},
                "autoscaling": {"metric": "cpu", "target": 50, "scaleDownSeconds": 15},
            }
        }
    }
    kube.kubectl(
        "patch", "dynamicmodel", SCORER, "-n", MODELS, "--type", "merge", "-p", json.dumps(patch)
    )
    # Calm first: the HPA reads a utilization (metrics flow) and holds one Pod.
    started = time.monotonic()
    status = hpa_status(kube)
    while not (cpu_utilization(status) is not None and status.get("currentReplicas") == 1):
        assert time.monotonic() - started < 240, (
            status,
            kube.kubectl("get", "events", "-n", MODELS),
        )
        time.sleep(2)
        status = hpa_status(kube)
    wait_inference_ready(kube, 1, timeout=120)
    calm_s = time.monotonic() - started

    seconds = 100
    load = start_stream(kube, "load", seconds, scorer, dev_images)
    peak, busiest, out_s = 1, 0, None
    while time.monotonic() - load < seconds - 10 and (out_s is None or peak < 2):
        status = hpa_status(kube)
        busiest = max(busiest, cpu_utilization(status) or 0)
        ready = sum(1 for pod in inference_pods(kube) if is_ready(pod))
        if ready > peak:
            peak = ready
            out_s = out_s or time.monotonic() - load
        time.sleep(2)
    log, _ = finish_pod(kube, "load", load, timeout=seconds + 120)
    ended = time.monotonic()
    out = json.loads(log.strip().splitlines()[-1])
    assert out["requests"] > 0 and out["ok"] == out["requests"], out
    assert peak >= 2, f"no scale-out: busiest {busiest} %, {hpa_status(kube)}"

    status = hpa_status(kube)
    while not (status.get("desiredReplicas") == 1 and len(inference_pods(kube)) == 1):
        assert time.monotonic() - ended < 180, status
        time.sleep(2)
        status = hpa_status(kube)
    in_s = time.monotonic() - ended
    report(
        request,
        f"HPA on CPU (metrics-server): calm with 1 Pod {calm_s:.0f} s after the patch; under "
        f"a stream ({out['requests']} requests in {out['seconds']:.0f} s, all correct) "
        f"{peak} Pods Ready, the second {out_s:.0f} s after it began (busiest reading "
        f"{busiest} % of the request); back to 1 Pod {in_s:.0f} s after it ended "
        "(scale-down window 15 s)",
        TAG,
    )
