"""The rig's real node: containers run, talk to each other, are held to their
limits, and nothing of the node is left once it is gone.

Every test sends traffic only inside the node's own network namespace (from Pod
to Pod, to a Service) or over the node's veth; the host's own network namespace
gets no rule and no route.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from typing import Any

import pytest

from driftline_testing import node as node_infra
from driftline_testing.node import NodeStack
from driftline_testing.rig import RigLayout
from tests.integration.rig.kube_helpers import eventually

pytestmark = [pytest.mark.integration, pytest.mark.rig]

NAMESPACE = "node-tests"


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line in the test output (also without -s), and in the JUnit properties."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n[real node] {line}")
    request.node.user_properties.append(("real-node", line))


@pytest.fixture(scope="module")
def stack(real_node: NodeStack) -> NodeStack:
    assert real_node.plane is not None
    real_node.plane.create_namespace(NAMESPACE)
    return real_node


def plane(stack: NodeStack) -> Any:
    assert stack.plane is not None
    return stack.plane


def busybox(stack: NodeStack) -> str:
    assert stack.node is not None
    return stack.node.busybox


def pod(
    name: str,
    image: str,
    command: str,
    *,
    restart: str = "Never",
    labels: dict[str, str] | None = None,
    memory: str | None = None,
    probe_port: int | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", command],
    }
    if memory:
        container["resources"] = {"limits": {"memory": memory, "cpu": "200m"}}
    if probe_port:
        container["readinessProbe"] = {
            "tcpSocket": {"port": probe_port},
            "periodSeconds": 1,
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "containers": [container],
        },
    }


def create(stack: NodeStack, manifest: dict[str, Any]) -> None:
    kind = manifest["kind"].lower() + "s"
    plane(stack).request("POST", f"/api/v1/namespaces/{NAMESPACE}/{kind}", manifest)


def get_pod(stack: NodeStack, name: str) -> dict[str, Any]:
    result: dict[str, Any] = plane(stack).request(
        "GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}"
    )
    return result


def ready(stack: NodeStack, name: str) -> bool:
    conditions = get_pod(stack, name).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def finished(stack: NodeStack, name: str) -> dict[str, Any] | None:
    status = get_pod(stack, name).get("status", {})
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def logs(stack: NodeStack, name: str) -> str:
    return str(plane(stack).get_text(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/log"))


def test_node_is_ready_with_real_parts(stack: NodeStack, request: pytest.FixtureRequest) -> None:
    assert stack.node is not None
    node = plane(stack).request("GET", f"/api/v1/nodes/{stack.node.name}")
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert info["kubeletVersion"] == "v1.36.3"
    assert info["kubeProxyVersion"] in ("", "v1.36.3")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == stack.network.node_ip
    timings = ", ".join(f"{key} {value:.1f}" for key, value in stack.timings.items())
    report(request, f"started: {timings}")


def test_busybox_pod_runs_and_its_logs_come_through_the_api(
    stack: NodeStack, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    create(stack, pod("first", busybox(stack), "echo ready; sleep 600", restart="Always"))
    eventually(lambda: ready(stack, "first"), 60, "the first Pod Ready")
    report(request, f"first pod Ready in {time.monotonic() - started:.1f} s")
    create(stack, pod("hello", busybox(stack), "echo hello from $(hostname); uname -s"))
    status = eventually(lambda: finished(stack, "hello"), 60, "Pod hello finished")
    assert status["phase"] == "Succeeded", status
    assert logs(stack, "hello").split("\n")[:2] == ["hello from hello", "Linux"]
    assert logs(stack, "first").strip() == "ready"


def test_exec_in_a_pod_through_the_api(stack: NodeStack) -> None:
    """The official client's exec: API server -> kubelet -> containerd's stream server."""
    from kubernetes import client
    from kubernetes.stream import stream

    eventually(lambda: ready(stack, "first"), 60, "Pod first Ready")
    api_client = plane(stack).api_client()
    try:
        out = stream(
            client.CoreV1Api(api_client).connect_get_namespaced_pod_exec,
            "first",
            NAMESPACE,
            command=["sh", "-c", "echo $((6 * 7)) from $(hostname)"],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )
    finally:
        api_client.close()
    assert out.strip() == "42 from first"


def test_pods_and_a_cluster_ip_service_answer(stack: NodeStack) -> None:
    image = busybox(stack)
    serve = (
        "mkdir -p /www && echo hello from $(hostname) > /www/index.html && httpd -f -p 8080 -h /www"
    )
    create(
        stack, pod("web", image, serve, restart="Always", labels={"app": "web"}, probe_port=8080)
    )
    create(
        stack,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    eventually(lambda: ready(stack, "web"), 60, "Pod web Ready")
    pod_ip = get_pod(stack, "web")["status"]["podIP"]
    service = plane(stack).request("GET", f"/api/v1/namespaces/{NAMESPACE}/services/web")
    cluster_ip = service["spec"]["clusterIP"]
    # An HTTP GET with nc (the static busybox's wget needs NSS it cannot load), each
    # address asked until it answers, a bounded number of times, nc's complaints left
    # out of the log: kube-proxy programs the Service shortly after its endpoints
    # (before, the node has no route to it: "Network is unreachable"), and on a busy
    # machine the first connection to the Pod may time out.
    fetch = (
        "get() { printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $1 $2 2>/dev/null | tail -n 1; }; "
        "ask() { for i in $(seq 1 30); do out=$(get $1 $2); "
        'case "$out" in hello*) echo "$out"; return 0;; esac; sleep 0.5; done; '
        'echo "no answer from $1:$2"; return 1; }; '
        f"ask {pod_ip} 8080 && ask {cluster_ip} 80"
    )
    create(stack, pod("client", image, fetch))
    status = eventually(lambda: finished(stack, "client"), 180, "Pod client finished")
    assert status["phase"] == "Succeeded", (status, logs(stack, "client"))
    assert logs(stack, "client").split("\n")[:2] == ["hello from web", "hello from web"]


def test_pods_resolve_service_names_through_the_cluster_dns(
    stack: NodeStack, request: pytest.FixtureRequest
) -> None:
    """kubelet gives Pods the `kube-dns` Service as their name server and the
    cluster's search domains; CoreDNS answers the API server's Service, and a
    Service of the Pod's own namespace by its short name."""
    create(
        stack,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "named"},
            "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 80}]},
        },
    )
    services = {
        name: plane(stack).request("GET", f"/api/v1/namespaces/{namespace}/services/{name}")
        for namespace, name in (("default", "kubernetes"), (NAMESPACE, "named"))
    }
    lookup = (
        "cat /etc/resolv.conf; "
        "for name in kubernetes.default.svc.cluster.local named; do "
        # busybox's nslookup asks every search domain and fails when one has no
        # answer: an answer is a "Name:" line.
        "for i in $(seq 1 20); do out=$(nslookup $name 2>&1); "
        'case "$out" in *Name:*) break;; esac; sleep 0.5; done; '
        'echo "$out" | sed -n "s/^Address: *\\([0-9.]*\\)$/$name \\1/p"; done'
    )
    started = time.monotonic()
    create(stack, pod("resolver", busybox(stack), lookup))
    status = eventually(lambda: finished(stack, "resolver"), 60, "Pod resolver finished")
    elapsed = time.monotonic() - started
    out = logs(stack, "resolver")
    assert status["phase"] == "Succeeded", (status, out)
    lines = out.splitlines()
    assert f"nameserver {node_infra.CLUSTER_DNS}" in lines, out
    assert f"search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local" in lines, out
    answers = dict(line.split() for line in lines if line.startswith(("kubernetes.", "named ")))
    assert answers == {
        "kubernetes.default.svc.cluster.local": services["kubernetes"]["spec"]["clusterIP"],
        "named": services["named"]["spec"]["clusterIP"],
    }, out
    report(request, f"cluster DNS: a Pod resolved two Service names, {elapsed:.1f} s to finish")


def test_pods_reach_the_api_server_through_the_kubernetes_service(stack: NodeStack) -> None:
    """The `kubernetes` Service points at the host's end of the veth, and Pods get
    there (their traffic leaves the namespace as the node's address)."""
    endpoints = plane(stack).request("GET", "/api/v1/namespaces/default/endpoints/kubernetes")
    assert endpoints["subsets"][0]["addresses"][0]["ip"] == stack.network.host_ip
    service = plane(stack).request("GET", "/api/v1/namespaces/default/services/kubernetes")
    # Plain HTTP to the TLS port: Go's server answers that it wants HTTPS, which is
    # enough to know the connection went all the way.
    probe = (
        "for i in $(seq 1 20); do "
        "out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
        f"nc -w 2 {service['spec']['clusterIP']} 443); "
        'case "$out" in *HTTPS*) echo reached; exit 0;; esac; sleep 0.5; done; exit 1'
    )
    create(stack, pod("to-api", busybox(stack), probe))
    status = eventually(lambda: finished(stack, "to-api"), 60, "Pod to-api finished")
    assert status["phase"] == "Succeeded", (status, logs(stack, "to-api"))
    assert logs(stack, "to-api").strip() == "reached"


def test_a_pod_over_its_memory_limit_is_oom_killed(stack: NodeStack) -> None:
    # dd's 96 MiB buffer is filled from /dev/zero: resident far beyond 32 MiB.
    hog = "dd if=/dev/zero of=/dev/null bs=96M count=1 && echo survived"
    create(stack, pod("hog", busybox(stack), hog, memory="32Mi"))
    status = eventually(lambda: finished(stack, "hog"), 60, "Pod hog finished")
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert status["phase"] == "Failed", status
    assert terminated["reason"] == "OOMKilled", terminated
    assert terminated["exitCode"] == 137


def test_the_resource_metrics_api_reads_a_busy_pods_cpu(
    stack: NodeStack, request: pytest.FixtureRequest
) -> None:
    """metrics-server (a daemon of the node) answers `metrics.k8s.io` through the API
    server, as the HPA reads it: the node's usage, and a Pod spinning on a CPU held
    to 100m reads close to its limit."""
    assert stack.node is not None
    started = time.monotonic()
    node = stack.node.metrics_ready(timeout=90)
    node_s = time.monotonic() - started
    assert node["usage"]["cpu"].endswith("n") and node["usage"]["memory"].endswith("Ki"), node
    spin = pod("spin", busybox(stack), "while :; do :; done", memory="16Mi")
    spin["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "100m"
    create(stack, spin)
    path = f"{node_infra.METRICS_API}/namespaces/{NAMESPACE}/pods/spin"

    def busy() -> float | None:
        try:
            usage = plane(stack).request("GET", path)["containers"][0]["usage"]["cpu"]
        except OSError:  # no sample yet: 404 until metrics-server scraped the Pod twice
            return None
        millicores = int(usage.removesuffix("n")) / 1e6
        return millicores if millicores > 60 else None

    millicores = eventually(busy, 90, "the Pod's CPU in the resource metrics API")
    assert millicores < 130, millicores
    plane(stack).request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/spin")
    report(
        request,
        f"resource metrics: node usage {node_s:.1f} s after asked; a spinning Pod held to "
        f"100m read {millicores:.0f}m, {time.monotonic() - started:.0f} s after asked",
    )


def test_prometheus_on_the_node_finds_a_service_and_scrapes_its_pod(
    stack: NodeStack, request: pytest.FixtureRequest
) -> None:
    """`RealNode.start_prometheus`: Kubernetes discovery through the API server as
    `system:prometheus`, the relabelling given, and a Pod's metrics scraped from the
    node's network; started twice (the second with a TSDB of its own)."""
    image = busybox(stack)
    serve = "mkdir -p /www && echo 'rig_probe_value 7' > /www/metrics && httpd -f -p 9100 -h /www"
    labels = {"app": "probe"}
    create(stack, pod("probe", image, serve, restart="Always", labels=labels, probe_port=9100))
    create(
        stack,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "probe", "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "metrics", "port": 9100, "targetPort": 9100}],
            },
        },
    )
    config = {
        "job_name": "probe",
        # busybox's httpd names no text format; Prometheus 3 then needs a fallback.
        "fallback_scrape_protocol": "PrometheusText0.0.4",
        "kubernetes_sd_configs": [{"role": "endpoints", "namespaces": {"names": [NAMESPACE]}}],
        "relabel_configs": [
            {"source_labels": [f"__meta_kubernetes_{meta}"], "regex": value, "action": "keep"}
            for meta, value in (("service_label_app", "probe"), ("endpoint_port_name", "metrics"))
        ]
        + [
            {"source_labels": [f"__meta_kubernetes_{meta}"], "target_label": label}
            for meta, label in (("service_name", "job"), ("pod_name", "pod"))
        ],
    }
    assert stack.node is not None
    eventually(lambda: ready(stack, "probe"), 60, "Pod probe Ready")
    for attempt in range(2):
        started = time.monotonic()
        server = stack.node.start_prometheus([config], scrape_interval="1s")
        try:

            def scraped(server: Any = server) -> list[Any] | None:
                now = time.time()
                found = server.query_range("rig_probe_value", now - 5, now, 1.0)
                return list(found) or None

            series = eventually(scraped, 60, "rig_probe_value scraped")
        finally:
            server.stop()
        (only,) = series
        assert only["metric"]["job"] == "probe" and only["metric"]["pod"] == "probe"
        assert only["values"][-1][1] == "7"
        took = time.monotonic() - started
        report(request, f"Prometheus {attempt + 1}: the Pod's value read {took:.1f} s after start")


def test_the_host_network_namespace_stays_untouched(stack: NodeStack) -> None:
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30).stdout
    assert "KUBE-" not in rules and "CNI-" not in rules
    routes = subprocess.run(
        ["ip", "-4", "route", "show"], capture_output=True, text=True, timeout=30
    ).stdout
    assert node_infra.POD_CIDR not in routes and "cni0" not in routes
    mine = [line for line in routes.splitlines() if stack.network.veth in line]
    veth_net = ipaddress.ip_interface(f"{stack.network.host_ip}/{stack.network.prefix}").network
    assert [line.split()[0] for line in mine] == [str(veth_net)]


def test_the_stack_memory_is_recorded(stack: NodeStack, request: pytest.FixtureRequest) -> None:
    assert stack.node is not None
    usage = stack.node.memory_mib()
    parts = {"kubelet", "containerd", "kube-proxy", "coredns", "metrics-server", "kube-apiserver"}
    assert parts <= usage.keys()
    detail = ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(usage.items()))
    report(request, f"memory: {sum(usage.values()):.0f} MiB ({detail})")


def test_a_killed_run_is_swept_by_the_next(rig: RigLayout, tmp_path: Any) -> None:
    """Daemons killed with Pods running (as when pytest is killed): the next run
    finds the dead owner's state file and removes everything."""
    stack = NodeStack(log_dir=tmp_path, layout=rig).start()
    try:
        assert stack.node is not None and stack.plane is not None
        stack.plane.create_namespace(NAMESPACE)
        create(stack, pod("orphan", stack.node.busybox, "sleep 600", restart="Always"))
        eventually(lambda: ready(stack, "orphan"), 60, "Pod orphan Ready")
        stack.node.kill()
        stack.plane.stop()
    except BaseException:
        stack.close()
        raise
    left = stack.leftovers()
    assert any("process" in item for item in left), left  # the shim and the Pod live on
    assert any(item.startswith("mount") for item in left), left
    # The owner is gone: a pid that has exited.
    gone = subprocess.Popen(["true"])
    gone.wait()
    stack.state.owner_pid = gone.pid
    stack.state.save()
    try:
        assert stack.state.run_id in node_infra.sweep_leftovers()
        assert stack.leftovers() == []
    finally:
        stack.close()
