"""The chart's dev mode on the rig's real node: `helm install` with `dev.enabled=true`
into a namespace under the restricted Pod Security Standard runs Redis, Apache Kafka
and MLflow from the images built here (docker/dev/, nothing pulled). Each becomes
Ready, and answers by its Service's DNS name (the rig's CoreDNS) from Pods of another
namespace, as a model's parts would reach it: Redis a PING, MLflow /health, Kafka a
topic created and described through the address the broker advertises. The operator,
installed with them, reaches them for a DynamicModel that names them.

Measured and printed: each image's build (or reuse) and import into the node, each
server's Ready time after `helm install`, and each Pod's memory (the kubelet's
summary).
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
    Kube,
    apply_model,
    is_ready,
    pod_memory,
    report,
    restricted_namespace,
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


def host(server: str) -> str:
    return f"driftline-{server}.{NAMESPACE}.svc.cluster.local"


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
    name = manifest["metadata"]["name"]
    started = time.monotonic()
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
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
    """The operator's image and dev mode's, built from this tree (or found by their
    content key)."""
    return {name: image_builder.build(name) for name in ("operator", *DEV_IMAGES.values())}


@pytest.fixture(scope="module")
def imported(
    real_node: NodeStack,
    dev_images: dict[str, BuiltImage],
    docker_daemon: DockerDaemon,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, float]:
    """The images in the node's containerd; the seconds each took (save and import)."""
    folder = tmp_path_factory.mktemp("dev-images")
    seconds = {}
    for name, image in dev_images.items():
        ref = f"docker.io/{image.ref}"
        if ref in real_node.image_refs():
            continue  # the operator's, imported by the operator's own tests
        started = time.monotonic()
        tarball = docker_daemon.save(image.ref, folder / f"{name}.tar")
        real_node.import_image(tarball)
        tarball.unlink()
        seconds[name] = time.monotonic() - started
        assert ref in real_node.image_refs()
    return seconds


@pytest.fixture(scope="module")
def installed(
    kube: Kube,
    imported: dict[str, float],
    dev_images: dict[str, BuiltImage],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, float]]:
    """`helm install` in dev mode with the images built here; the seconds until each
    server's Pod was Ready. Uninstalled at the end."""
    repository, tag = dev_images["operator"].ref.rsplit(":", 1)
    values = {
        "image": {"operator": repository, "tag": tag, "pullPolicy": "Never"},
        "operator": {"settings": {"tick_seconds": 2}},
        "dev": {
            "enabled": True,
            **{server: {"image": dev_images[DEV_IMAGES[server]].ref} for server in SERVERS},
        },
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
    and logs no outage (the parts' Pods wait for their images, which are not here)."""
    sample = yaml.safe_load(SAMPLE.read_text())
    sample["metadata"]["namespace"] = MODELS
    sample["spec"]["training"] = {"mode": "off"}
    sample["spec"]["model"]["registry"]["trackingUri"] = f"http://{host('mlflow')}:5000"
    sample["spec"]["kafka"] = {"bootstrapServers": f"{host('kafka')}:9092"}
    sample["spec"]["redis"] = {"url": f"redis://{host('redis')}:6379/0"}
    name = sample["metadata"]["name"]
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
