"""A real Kubernetes control plane on loopback, with simulated nodes.

The operator is tested against what a cluster really does: CRD schema and CEL
validation, defaulting, server-side apply with field managers, optimistic
concurrency, garbage collection of owned objects, Deployments rolled out by the
controller-manager and Pods placed by the scheduler (taints, tolerations, GPU
capacity). An emulator has none of that, so this starts the real binaries that
`make rig` built from the Go module proxy:

    etcd -> kube-apiserver -> kube-controller-manager, kube-scheduler -> kwok

kwok plays the kubelets: it keeps the nodes of a CPU pool and a GPU pool
(`nvidia.com/gpu` capacity and taint) Ready and marks the Pods bound to them as
running. No container ever runs; everything up to that point is the real thing.

Every component listens on 127.0.0.1 only, unless `address` names another local
address for the API server: the host's end of a real node's veth (see `node.py`),
where the node's kubelet, kube-proxy and Pods reach it. The API server has its own
service-account keys and static bearer tokens: one for an admin (system:masters)
and one each for the controller-manager and the scheduler, which RBAC authorises
through their bootstrap roles as in any kubeadm cluster.
"""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, Self

from driftline.local.servers.process import InfraError, ManagedProcess, free_port
from driftline_testing.kube_files import (
    DEFAULT_NODE_POOLS,
    KWOK_NODE_ANNOTATION,
    Identity,
    NodePool,
    write_ca,
    write_client_cert,
    write_kubeconfig,
    write_service_account_key,
    write_token_file,
)
from driftline_testing.rig import RigLayout, rig_layout

SERVICE_CIDR = "10.96.0.0/12"
ISSUER = "https://kubernetes.default.svc.cluster.local"
NOT_READY_TAINTS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


def available() -> bool:
    """The control plane's binaries are built (`make rig`)."""
    layout = rig_layout()
    return layout.kubernetes_built


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok."""

    kind = "kubernetes"

    def __init__(
        self,
        root: str | Path | None = None,
        node_pools: tuple[NodePool, ...] = DEFAULT_NODE_POOLS,
        log_dir: str | Path | None = None,
        layout: RigLayout | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        layout = layout or rig_layout()
        if not layout.kubernetes_built:
            raise InfraError("the Kubernetes control plane is not built: run `make rig` first")
        self._layout = layout
        self.node_pools = node_pools
        self._owns_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="driftline-kube-"))
        if self._owns_root:
            weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)
        self.log_dir = Path(log_dir) if log_dir else self.root / "logs"
        # The API server's address: loopback, or a real node's way in (its serving
        # certificate names it, and it is the `kubernetes` Service's endpoint then).
        self.address = address
        self.port = free_port(address)
        self.server = f"https://{address}:{self.port}"
        self.admin = Identity("driftline-admin", ("system:masters",))
        self._controller_manager = Identity("system:kube-controller-manager")
        self._scheduler = Identity("system:kube-scheduler")
        self._processes: list[ManagedProcess] = []

    # -- paths ----------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig: give it to kubectl, kopf or the Python client."""
        return self.root / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        """The API server's self-signed serving certificate (with its CA)."""
        return self.root / "pki" / "apiserver.crt"

    @property
    def token(self) -> str:
        return self.admin.token

    def _bin(self, name: str) -> str:
        return str(self._layout.binary(name))

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> Self:
        deadline = time.monotonic() + timeout
        try:
            self._write_files()
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            self._start_controllers(deadline)
            self._start_nodes(deadline)
            self._wait(deadline, "the default service account", self._default_account_exists)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every component, newest first; nothing is left running."""
        while self._processes:
            self._processes.pop().stop(timeout=10)

    def close(self) -> None:
        self.stop()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- components -----------------------------------------------------------------

    def _write_files(self) -> None:
        pki = self.root / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        write_service_account_key(pki / "sa.key", pki / "sa.pub")
        write_ca(pki / "client-ca.crt", pki / "client-ca.key", "driftline-rig-client-ca")
        write_ca(
            pki / "front-proxy-ca.crt", pki / "front-proxy-ca.key", "driftline-rig-front-proxy"
        )
        # The API server's client certificate towards aggregated API servers
        # (metrics-server): the name --requestheader-allowed-names lets through.
        write_client_cert(
            pki / "front-proxy-ca.crt",
            pki / "front-proxy-ca.key",
            pki / "front-proxy-client.crt",
            pki / "front-proxy-client.key",
            "front-proxy-client",
            (),
        )
        # The API server's client certificate towards the kubelets (logs, exec).
        write_client_cert(
            pki / "client-ca.crt",
            pki / "client-ca.key",
            pki / "apiserver-kubelet-client.crt",
            pki / "apiserver-kubelet-client.key",
            "kube-apiserver-kubelet-client",
            ("system:masters",),
        )
        write_token_file(
            pki / "tokens.csv", [self.admin, self._controller_manager, self._scheduler]
        )
        for name, who in (
            ("admin", self.admin),
            ("controller-manager", self._controller_manager),
            ("scheduler", self._scheduler),
        ):
            write_kubeconfig(self.root / f"{name}.kubeconfig", self.server, self.ca_file, who)

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, cwd=self.root, log_path=self.log_dir / f"{name}.log")
        self._processes.append(process)
        return process.start()

    def _start_etcd(self, deadline: float) -> None:
        client, peer = free_port(), free_port()
        self._etcd_url = f"http://127.0.0.1:{client}"
        etcd = self._spawn(
            "etcd",
            [
                self._bin("etcd"),
                "--name=rig",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={self._etcd_url}",
                f"--advertise-client-urls={self._etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=rig=http://127.0.0.1:{peer}",
                # A throwaway test store: durability is not what is under test.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait(deadline, "etcd /health", lambda: self._get_ok(f"{self._etcd_url}/health"), etcd)

    def _start_apiserver(self, deadline: float) -> None:
        pki = self.root / "pki"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                self._bin("kube-apiserver"),
                f"--etcd-servers={self._etcd_url}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.port}",
                # A self-signed serving certificate, written here, for the address,
                # the first Service IP and kubernetes.default.svc.
                f"--cert-dir={pki}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                f"--client-ca-file={pki / 'client-ca.crt'}",
                # Request-header authentication as kubeadm sets it up (aggregated APIs).
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                # An aggregated API (metrics-server) is reached at its endpoints'
                # addresses: the API server runs outside the node, where no kube-proxy
                # routes Service addresses.
                "--enable-aggregator-routing=true",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-account-issuer={ISSUER}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # The default admission chain (NamespaceLifecycle, LimitRanger,
                # ServiceAccount, PodSecurity, ResourceQuota, webhooks, ...) plus
                # NodeRestriction, as kubeadm configures it.
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                # By address, as kubeadm sets it: a node's name is no DNS name here.
                "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
                "--allow-privileged=true",
                # Endpoints may not hold loopback addresses, and on loopback no Pod
                # could reach the API server through the `kubernetes` Service anyway.
                "--endpoint-reconciler-type="
                + ("none" if self.address.startswith("127.") else "lease"),
                "--profiling=false",
            ],
        )
        self._wait(deadline, "kube-apiserver /readyz", self._apiserver_ready, apiserver)

    def _start_controllers(self, deadline: float) -> None:
        cm_port, scheduler_port = free_port(), free_port()
        cm_config = str(self.root / "controller-manager.kubeconfig")
        controller_manager = self._spawn(
            "kube-controller-manager",
            [
                self._bin("kube-controller-manager"),
                f"--kubeconfig={cm_config}",
                f"--authentication-kubeconfig={cm_config}",
                f"--authorization-kubeconfig={cm_config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                f"--cert-dir={self.root / 'pki' / 'controller-manager'}",
                # Each controller acts as its own service account, as in kubeadm.
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.root / 'pki' / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # One replica: no lease to win, the controllers start at once.
                "--leader-elect=false",
                # The HPA looks at its metrics every 5 s (15 s by default): tests see
                # a scale-out within seconds of the metrics moving.
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--profiling=false",
            ],
        )
        scheduler_config = str(self.root / "scheduler.kubeconfig")
        scheduler = self._spawn(
            "kube-scheduler",
            [
                self._bin("kube-scheduler"),
                f"--kubeconfig={scheduler_config}",
                f"--authentication-kubeconfig={scheduler_config}",
                f"--authorization-kubeconfig={scheduler_config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                f"--cert-dir={self.root / 'pki' / 'scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        for process, port in ((controller_manager, cm_port), (scheduler, scheduler_port)):
            self._wait(
                deadline,
                f"{process.name} /healthz",
                lambda port=port: self._get_ok(f"https://127.0.0.1:{port}/healthz", verify=False),
                process,
            )

    def _start_nodes(self, deadline: float) -> None:
        stages = sorted((self._layout.bin / "kwok-stages").glob("*.yaml"))
        kwok = self._spawn(
            "kwok",
            [
                self._bin("kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                # The node heartbeat stage updates a node's status only every 10 to
                # 20 minutes and relies on the node's Lease for liveness, as a kubelet
                # does. kwok renews Leases only when given their duration (its flag
                # defaults to 0: no Leases). Without them the node lifecycle controller
                # finds every node NotReady each grace period (50 s) and marks every
                # Pod on them not ready, and kwok never readies a Running Pod again.
                "--node-lease-duration-seconds=40",
                f"--config={','.join(str(stage) for stage in stages)}",
            ],
        )
        names = []
        for pool in self.node_pools:
            for node in pool.manifests():
                self.request("POST", "/api/v1/nodes", node)
                names.append(node["metadata"]["name"])
        self._wait(deadline, f"nodes {names} Ready", lambda: self._nodes_ready(names), kwok)

    # -- the API --------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One call to the API server as the admin; returns the decoded JSON."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.server}{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return json.loads(resp.read() or b"null")

    def get_text(self, path: str) -> str:
        """One GET as the admin whose answer is text (a Pod's log, say)."""
        req = urllib.request.Request(
            f"{self.server}{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return str(resp.read().decode())

    def create_namespace(self, name: str, timeout: float = 30.0) -> None:
        """Create a namespace and wait until Pods can be created in it."""
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        deadline = time.monotonic() + timeout
        while not self._default_account_exists(name):
            if time.monotonic() > deadline:
                raise InfraError(f"namespace {name}: no default service account after {timeout}s")
            time.sleep(0.1)

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace; the namespace controller empties it in the background."""
        try:
            self.request("DELETE", f"/api/v1/namespaces/{name}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for the admin (the official Python client)."""
        from kubernetes import config

        new_client: Any = config.new_client_from_config  # the client has no type hints
        return new_client(config_file=str(self.kubeconfig))

    # -- readiness ------------------------------------------------------------------

    def _get_ok(self, url: str, verify: bool = True) -> bool:
        context = None
        if url.startswith("https:") and verify:
            context = ssl.create_default_context(cafile=str(self.ca_file))
        elif url.startswith("https:"):
            # The controller-manager's and scheduler's own self-signed certificates:
            # only their health is asked for, nothing is sent.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)

    def _apiserver_ready(self) -> bool:
        return self.ca_file.is_file() and self._get_ok(f"{self.server}/readyz")

    def _nodes_ready(self, names: list[str]) -> bool:
        """Ready, and the node lifecycle controller has lifted its not-ready taint."""
        ready = set()
        for node in self.request("GET", "/api/v1/nodes")["items"]:
            conditions = node.get("status", {}).get("conditions", [])
            taints = {taint["key"] for taint in node["spec"].get("taints", [])}
            if (
                any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
                and not taints & NOT_READY_TAINTS
            ):
                ready.add(node["metadata"]["name"])
        return ready >= set(names)

    def _default_account_exists(self, namespace: str = "default") -> bool:
        """Pods are refused until the controller-manager made this account."""
        try:
            self.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def _wait(
        self,
        deadline: float,
        what: str,
        probe: Any,
        process: ManagedProcess | None = None,
    ) -> None:
        """Poll `probe` until the shared deadline; a component that dies fails at once."""
        process = process or self._processes[-1]
        remaining = max(deadline - time.monotonic(), 1.0)
        try:
            process.wait_ready(probe, timeout=remaining, what=what, interval=0.2)
        except InfraError as exc:
            logs = "\n".join(p.log_tail(15) for p in self._processes if p is not process)
            raise InfraError(f"{exc}\n{logs}") from exc
