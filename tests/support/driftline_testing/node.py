"""A real Kubernetes node for the test rig: containerd, kubelet and kube-proxy.

The control plane in `kube.py` simulates its nodes with kwok; this adds one node
where containers really run, for the tests that need real Pods (images built
here, the chart, traffic between Pods and through Services, OOM kills):

    NodeNetwork   a network namespace of the rig's own, joined to the host by a
                  veth with a /30 from 100.64.0.0/10 and no default route: all
                  cluster traffic stays inside it and on the veth
    ControlPlane  started with `address=network.host_ip`: the API server listens
                  on the host's end of the veth, where the node reaches it
    RealNode      containerd (own root, state and socket), kubelet (cgroupfs, a
                  cgroup root of its own, a client certificate from the control
                  plane's CA), kube-proxy (iptables) and CoreDNS (the cluster DNS:
                  the `kube-dns` Service at `CLUSTER_DNS`, which Pods get as their
                  name server) and metrics-server (the resource metrics API the
                  HPA reads, from the kubelet), each started inside the namespace
                  with `nsenter --net`; the pause and busybox images
                  (`node_images.py`) imported with `ctr`

The mount namespace stays the host's (kubelet and containerd need it for
volumes); the host's own network namespace gets no iptables rules and no route
beyond the veth's. The daemons' settings are those that proved necessary on our
machines (hybrid cgroup v1, no systemd, no AppArmor), noted where they are set.

Clean-up is the same for a clean stop, a failed start and a run that was killed:
every run records what it made in a state file under /run/driftline-rig/nodes/,
and `sweep()` removes it in order (Pods' processes, daemons and shims, mounts,
cgroups depth first, CNI and containerd leftovers, the namespace and the veth).
A new node first sweeps the runs whose owner process is gone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from driftline.local.servers.process import InfraError, ManagedProcess
from driftline_testing.kube import ControlPlane
from driftline_testing.kube_files import write_cert_kubeconfig, write_client_cert
from driftline_testing.node_images import ImageArchive, busybox_image, pause_image
from driftline_testing.prometheus import PrometheusServer
from driftline_testing.rig import RigLayout, rig_layout

PREFIX = "driftline-node-"  # netns, cgroup root, temp folder, CNI network
VETH_PREFIX = "dlnode"  # + 8 hex: the host's end of the veth (15 characters at most)
STATE_DIR = Path("/run/driftline-rig/nodes")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/var/run/netns")
CNI_CACHE = Path("/var/lib/cni")
SHIM_SOCKETS = Path("/run/containerd/s")
# Host paths containerd 1.6 and kubelet 1.36 write whatever their own folders are:
# runc's state per container, kubelet's links to Pod logs, its device-plugin socket.
RUNC_STATE = Path("/run/containerd/runc")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
TRANSIT = ipaddress.ip_network("100.64.0.0/10")  # shared address space, never routed here
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
# The cluster DNS: a Service IP of the control plane's range (kube.SERVICE_CIDR), as
# kubeadm chooses it; kubelet gives it to Pods (dnsPolicy ClusterFirst) as their
# name server, kube-proxy sends it to CoreDNS on the node's address.
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
COREDNS_READY_PORT = 8181
DNS_PORTS = (("dns", "UDP"), ("dns-tcp", "TCP"))
METRICS_PORT = 4443
METRICS_API = "/apis/metrics.k8s.io/v1beta1"
PROMETHEUS_PORT = 9090
HOST_PACKAGES = "containerd runc containernetworking-plugins iptables conntrack busybox-static"
# kubelet sets these host-wide on start (protectKernelDefaults=false); put back after.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")


def _run(argv: list[str], timeout: float = 30.0, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise InfraError(f"{' '.join(argv)}: exit {result.returncode}\n{result.stderr.strip()}")
    return result.stdout


def missing_parts(layout: RigLayout | None = None) -> list[str]:
    """What the node needs and lacks: the rig's kubelet and kube-proxy (`make rig`),
    the host's packages (`.ci/run` installs them) and root. Empty when complete."""
    layout = layout or rig_layout()
    missing = [
        f"{layout.binary(name)} (make rig)"
        for name in ("kubelet", "kube-proxy", "coredns", "metrics-server", "prometheus")
        if not layout.binary(name).is_file()
    ]
    missing += [
        tool
        for tool in (
            *("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "conntrack"),
            *("nsenter", "gcc"),
        )
        if shutil.which(tool) is None
    ]
    missing += [
        path
        for path in ("/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/bin/busybox")
        if not Path(path).exists()
    ]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


# -- what one run made, and how to remove it ----------------------------------------


@dataclass
class RunState:
    """Everything one node run creates outside its Python objects, by name."""

    run_id: str
    owner_pid: int
    root: str = ""
    netns: str = ""
    veth: str = ""
    cgroup: str = ""
    cni_network: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.run_id}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> RunState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers() -> list[str]:
    """Remove what killed runs left behind (their owner process is gone)."""
    swept = []
    for path in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []:
        state = RunState.load(path)
        if state is None:
            path.unlink(missing_ok=True)
        elif not _alive(state.owner_pid):
            sweep(state)
            swept.append(state.run_id)
    return swept


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names `text` (the run's own folder)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(proc.name))
    return pids


def _cgroup_dirs(name: str) -> list[Path]:
    """The run's cgroup root under every mounted hierarchy."""
    if not name:
        return []
    return [hierarchy / name for hierarchy in CGROUP_ROOT.iterdir() if (hierarchy / name).is_dir()]


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for top in _cgroup_dirs(name):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in procs.read_text().split())
    return pids


def _mounts_under(root: str) -> list[str]:
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if root and (point == root or point.startswith(root + "/")):
                mounts.append(point)
    return mounts


def _kill(pids: set[int] | list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def leftovers(state: RunState) -> list[str]:
    """What of this run still exists; empty after a complete clean-up."""
    found = []
    if state.netns and (NETNS_DIR / state.netns).exists():
        found.append(f"network namespace {state.netns}")
    if state.veth and Path(f"/sys/class/net/{state.veth}").exists():
        found.append(f"veth {state.veth}")
    if state.root:
        found += [f"process {pid}" for pid in _pids_mentioning(state.root)]
        found += [f"mount {point}" for point in _mounts_under(state.root)]
        if Path(state.root).exists():
            found.append(f"folder {state.root}")
    found += [f"process {pid} in the node's cgroups" for pid in _cgroup_pids(state.cgroup)]
    found += [f"cgroup {path}" for path in _cgroup_dirs(state.cgroup)]
    found += [f"host file {path}" for path in _host_files(state)]
    return found


def _mentions(path: Path, text: str) -> bool:
    with contextlib.suppress(OSError):
        return text.encode() in path.read_bytes()
    return False


def _host_files(state: RunState) -> list[Path]:
    """What containerd, runc, CNI and kubelet left of this run outside its folder,
    recognised by the run's folder or network name in them."""
    if not state.root:
        return []
    found = [
        path
        for path in (*CNI_CACHE.glob("results/*"), *RUNC_STATE.glob("*/*/state.json"))
        if _mentions(path, state.root)
        or (state.cni_network and path.name.startswith(f"{state.cni_network}-"))
    ]
    found += [
        link
        for link in (CONTAINER_LOG_LINKS.iterdir() if CONTAINER_LOG_LINKS.is_dir() else [])
        if link.is_symlink() and os.readlink(link).startswith(state.root + "/")
    ]
    return found


def sweep(state: RunState) -> None:
    """Remove everything a run made, whatever state it was left in. Idempotent."""
    # 1. Processes: the daemons and shims (their command lines name the run's
    #    folder), then whatever still runs in the Pods' cgroups. Twice, in case a
    #    shim started a container between the two.
    for _ in range(2):
        if state.root:
            _kill(_pids_mentioning(state.root))
        _kill(_cgroup_pids(state.cgroup))
        time.sleep(0.2)
    # 2. Mounts under the run's folder, deepest first (kubelet bind-mounts its root
    #    onto itself; Pods' volumes, rootfs overlays and netns files sit below it).
    for point in sorted(_mounts_under(state.root), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    # 3. Cgroups, depth first: a cgroup goes only once it has no children.
    for top in _cgroup_dirs(state.cgroup):
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
    # 4. Host files of the run (CNI's result cache, runc's state, links to Pod
    #    logs), and sockets that nothing listens on any more.
    for path in _host_files(state):
        if path.name == "state.json":
            shutil.rmtree(path.parent, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    _remove_dead_sockets(SHIM_SOCKETS)
    _remove_dead_sockets(DEVICE_PLUGINS)
    for folder in (DEVICE_PLUGINS, DEVICE_PLUGINS.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: kubelet made it for this run
    # 5. Network: the namespace (which takes its end of the veth along), the veth.
    if state.netns:
        subprocess.run(["ip", "netns", "delete", state.netns], capture_output=True)
    if state.veth and Path(f"/sys/class/net/{state.veth}").exists():
        subprocess.run(["ip", "link", "delete", state.veth], capture_output=True)
    # 6. Host-wide settings kubelet changed, where nobody changed them since.
    for key, (before, kubelet_value) in _sysctl_pairs(state).items():
        path = Path("/proc/sys") / key
        with contextlib.suppress(OSError):
            if path.read_text().strip() == kubelet_value:
                path.write_text(before)
    if state.root:
        shutil.rmtree(state.root, ignore_errors=True)
    state.path.unlink(missing_ok=True)


def _sysctl_pairs(state: RunState) -> dict[str, tuple[str, str]]:
    kubelet_values = {
        "vm/overcommit_memory": "1",
        "kernel/panic": "10",
        "kernel/panic_on_oops": "1",
    }
    return {
        key: (before, kubelet_values[key])
        for key, before in state.sysctls.items()
        if key in kubelet_values and before != kubelet_values[key]
    }


def _remove_dead_sockets(folder: Path) -> None:
    """Sockets nobody listens on: containerd 1.6 puts shim sockets under
    /run/containerd/s, kubelet its device-plugin socket under /var/lib/kubelet,
    whatever their own folders are."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if not path.is_socket():
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
            except OSError:
                pass


# -- the network ----------------------------------------------------------------------


def _free_transit_net() -> ipaddress.IPv4Network:
    """A /30 of 100.64.0.0/10 that no address or route of the host overlaps."""
    taken = []
    for line in _run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        word = line.split()[0] if line.split() else ""
        with contextlib.suppress(ValueError):
            if word not in ("default", "broadcast", "local", "unreachable"):
                taken.append(ipaddress.ip_network(word, strict=False))
    for line in _run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        taken.append(ipaddress.ip_interface(line.split()[3]).network)
    rng = random.SystemRandom()
    for _ in range(100):
        index = rng.randrange(TRANSIT.num_addresses // 4)
        net = ipaddress.ip_network(f"{TRANSIT.network_address + index * 4}/30")
        if not any(net.overlaps(other) for other in taken):
            return net  # type: ignore[return-value]
    raise InfraError("no free /30 in 100.64.0.0/10 for the node's veth")


class NodeNetwork:
    """A network namespace joined to the host by a veth: the node's whole world.

    `host_ip` is the host's end (the API server listens there), `node_ip` the
    namespace's end (the node's InternalIP). Neither side gets a default route.
    """

    def __init__(self, state: RunState) -> None:
        self.state = state
        suffix = state.run_id
        self.netns = f"{PREFIX}{suffix}"
        self.veth = f"{VETH_PREFIX}{suffix}"
        self.inner = "eth0"
        net = _free_transit_net()
        host, node = list(net.hosts())
        self.host_ip, self.node_ip = str(host), str(node)
        self.prefix = net.prefixlen

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    def nsenter(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace (network only: mounts stay shared)."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def create(self) -> None:
        self.state.netns, self.state.veth = self.netns, self.veth
        self.state.save()  # before anything exists: a kill from here on is swept
        peer = f"dlpeer{self.state.run_id}"
        _run(["ip", "netns", "add", self.netns])
        _run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", peer])
        _run(["ip", "link", "set", peer, "netns", self.netns])
        _run(["ip", "addr", "add", f"{self.host_ip}/{self.prefix}", "dev", self.veth])
        _run(["ip", "link", "set", self.veth, "up"])
        inside = [
            ["ip", "link", "set", peer, "name", self.inner],
            ["ip", "addr", "add", f"{self.node_ip}/{self.prefix}", "dev", self.inner],
            ["ip", "link", "set", self.inner, "up"],
            ["ip", "link", "set", "lo", "up"],
        ]
        for argv in inside:
            _run(["ip", "netns", "exec", self.netns, *argv])
        # Per-namespace settings (these files belong to the namespace that writes
        # them): routing between Pods and the veth, bridged traffic through
        # iptables (Services between Pods on the one bridge), localnet for NodePorts.
        for key in (
            "net/ipv4/ip_forward",
            "net/bridge/bridge-nf-call-iptables",
            "net/ipv4/conf/all/route_localnet",
        ):
            _run(self.nsenter(["sh", "-c", f"echo 1 > /proc/sys/{key}"]))
        # Pods reach the host's end of the veth (the API server) as the node's
        # address: the host has no route to the Pod network and gets none.
        _run(
            self.nsenter(
                [
                    "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", CLUSTER_CIDR,
                    "-o", self.inner, "-j", "MASQUERADE",
                ]
            )
        )  # fmt: skip


# -- the node -------------------------------------------------------------------------


class RealNode:
    """One real node (containerd, kubelet, kube-proxy) in its own network namespace.

    `NodeStack` starts one together with its control plane; by hand, pass a
    `ControlPlane` started with `address=network.host_ip`.
    """

    def __init__(
        self,
        plane: ControlPlane,
        network: NodeNetwork,
        *,
        name: str = "rig-node",
        log_dir: str | Path | None = None,
        layout: RigLayout | None = None,
    ) -> None:
        self._layout = layout or rig_layout()
        self.plane = plane
        self.network = network
        self.state = network.state
        self.name = name
        self.root = Path(self.state.root)
        self.log_dir = Path(log_dir) if log_dir else self.root / "logs"
        self._processes: list[ManagedProcess] = []
        self.images: dict[str, ImageArchive] = {}
        self.timings: dict[str, float] = {}
        self._prometheus_granted = False

    # -- paths --------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def busybox(self) -> str:
        """The busybox test image's reference (imported; `imagePullPolicy: Never`)."""
        return self.images["busybox"].ref

    # -- a run ------------------------------------------------------------------------

    @classmethod
    def new_state(cls) -> RunState:
        """A fresh run: leftovers of killed runs swept, a folder of its own made."""
        missing = missing_parts()
        if missing:
            raise InfraError(
                f"the real node needs {', '.join(missing)} "
                f"(apt-get install {HOST_PACKAGES} gcc libc6-dev; `.ci/run` does)"
            )
        sweep_leftovers()
        run_id = uuid.uuid4().hex[:8]
        state = RunState(run_id=run_id, owner_pid=os.getpid())
        state.root = tempfile.mkdtemp(prefix=f"{PREFIX}{run_id}-")
        state.cgroup = f"{PREFIX}{run_id}"
        state.cni_network = f"{PREFIX}{run_id}"
        state.save()
        return state

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> Self:
        started = time.monotonic()
        deadline = started + timeout
        try:
            self._write_files()
            self._make_cgroups()
            self._start_containerd(deadline)
            self._import_images()
            self._start_kubelet(deadline)
            self._start_kube_proxy(deadline)
            self.timings["node_ready_s"] = time.monotonic() - started
            self._start_coredns(deadline)
            self.timings["dns_ready_s"] = time.monotonic() - started
            self._start_metrics_server(deadline)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Pods first (or their shims outlive containerd), then the daemons.

        What is left after that (mounts, cgroups, the network) is `sweep()`'s,
        which `NodeStack.close()` runs once the control plane is down too.
        """
        with contextlib.suppress(Exception):
            if self._processes:
                self._delete_pods(timeout=20)
        while self._processes:
            self._processes.pop().stop(timeout=10)

    def kill(self) -> None:
        """SIGKILL the daemons, as a killed test run would: shims, Pods and mounts stay."""
        for process in self._processes:
            process.kill()
        self._processes.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files ----------------------------------------------------------------------------

    def _write_files(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pki = self.root / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        plane_pki = self.plane.root / "pki"
        for who, user, groups in (
            ("kubelet", f"system:node:{self.name}", ("system:nodes",)),
            ("kube-proxy", "system:kube-proxy", ()),
            ("coredns", "system:coredns", ()),
            ("metrics-server", "system:metrics-server", ()),
            ("prometheus", "system:prometheus", ()),
        ):
            cert, key = pki / f"{who}.crt", pki / f"{who}.key"
            write_client_cert(
                plane_pki / "client-ca.crt", plane_pki / "client-ca.key", cert, key, user, groups
            )
            write_cert_kubeconfig(
                self.root / f"{who}.kubeconfig",
                self.plane.server,
                self.plane.ca_file,
                user,
                cert,
                key,
            )
        # The resolver configuration Pods get with dnsPolicy Default: no name server
        # anywhere (ClusterFirst gets CLUSTER_DNS and the cluster's search domains).
        (self.root / "resolv.conf").write_text("options ndots:1\n")
        # CoreDNS: the cluster's names from the API server, nothing forwarded (there
        # is no resolver beyond the node); `ready` answers once it has synced.
        (self.root / "Corefile").write_text(
            f""".:53 {{
    errors
    log
    ready {self.network.node_ip}:{COREDNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.root / "coredns.kubeconfig"} driftline-rig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loadbalance
}}
"""
        )
        cni = self.root / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "0.4.0",
            "name": self.state.cni_network,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "net.d" / "10-driftline.conflist").write_text(json.dumps(conflist, indent=2))

    def _make_cgroups(self) -> None:
        """kubelet's cgroup root (`cgroupRoot`), under every hierarchy: Pods live
        below it, and it goes depth first at the end."""
        for hierarchy in CGROUP_ROOT.iterdir():
            if not hierarchy.is_dir():
                continue
            path = hierarchy / self.state.cgroup
            with contextlib.suppress(OSError):
                path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset" and path.is_dir():
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((hierarchy / name).read_text())
        # Host-wide values kubelet will change, to put back afterwards.
        for key in KUBELET_SYSCTLS:
            with contextlib.suppress(OSError):
                self.state.sysctls[key] = (Path("/proc/sys") / key).read_text().strip()
        self.state.save()

    # -- daemons --------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(
            name, self.network.nsenter(argv), cwd=self.root, log_path=self.log_dir / f"{name}.log"
        )
        self._processes.append(process)
        return process.start()

    def _wait(self, deadline: float, what: str, probe: Any, process: ManagedProcess) -> None:
        remaining = max(deadline - time.monotonic(), 1.0)
        try:
            process.wait_ready(probe, timeout=remaining, what=what, interval=0.2)
        except InfraError as exc:
            logs = "\n".join(p.log_tail(20) for p in self._processes if p is not process)
            raise InfraError(f"{exc}\n{logs}") from exc

    def _ctr(self, *args: str, timeout: float = 60.0) -> str:
        return _run(["ctr", "-a", str(self.socket), "-n", "k8s.io", *args], timeout=timeout)

    def _start_containerd(self, deadline: float) -> None:
        base = self.root / "containerd"
        pause = pause_image()
        self.images["pause"] = pause
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{self.socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

[{cri}]
  # Never pulled: imported from the rig's own tarball.
  sandbox_image = "{pause.ref}"
  # Sandboxes here lack CAP_SYS_RESOURCE: without this every Pod fails in runc
  # with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Pod network namespaces under the state folder, not in /var/run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  # No systemd here: plain cgroupfs, as kubelet's cgroupDriver says.
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{self.root / "cni" / "net.d"}"
"""
        (base).mkdir(parents=True, exist_ok=True)
        (base / "config.toml").write_text(config)
        containerd = self._spawn(
            "containerd", ["containerd", "--config", str(base / "config.toml"), "--log-level=warn"]
        )
        self._wait(
            deadline,
            "containerd's socket",
            lambda: bool(self._ctr("version", timeout=5)),
            containerd,
        )

    def restart_containerd(self, timeout: float = 60.0) -> float:
        """SIGKILL containerd, as a crash would, and start it again with the same
        configuration: the Pods' containers run on under their shims (each in a
        process group of its own), and the kubelet reconnects to the socket. The
        seconds from the kill until containerd answered again."""
        process = next(p for p in self._processes if p.name == "containerd")
        killed = time.monotonic()
        process.kill()
        process.start()
        self._wait(
            killed + timeout,
            "containerd's socket after its restart",
            lambda: bool(self._ctr("version", timeout=5)),
            process,
        )
        return time.monotonic() - killed

    def _import_images(self) -> None:
        self.images["busybox"] = busybox_image()
        for image in self.images.values():
            self._ctr("images", "import", str(image.path), timeout=120)

    def import_image(self, tarball: str | Path, timeout: float = 300.0) -> list[str]:
        """Imports (and unpacks) an image tarball, as `docker save` writes it, into the
        node's containerd, where the kubelet finds it: Pods use it with
        `imagePullPolicy: Never`, or `IfNotPresent` and a tag other than `latest`.
        Returns the references it added, as containerd names them
        (`docker.io/driftline/operator:TAG` for `driftline/operator:TAG`)."""
        before = set(self._ctr("images", "ls", "-q", timeout=30).split())
        self._ctr("images", "import", str(tarball), timeout=timeout)
        after = set(self._ctr("images", "ls", "-q", timeout=30).split())
        return sorted(after - before)

    def import_stream(self, stream: IO[bytes], timeout: float = 900.0) -> list[str]:
        """`import_image` from a stream (the standard output of `docker save REF`):
        the tarball never lands on disk, only the layers containerd keeps."""
        before = self.image_refs()
        argv = ["ctr", "-a", str(self.socket), "-n", "k8s.io", "images", "import", "-"]
        result = subprocess.run(
            argv, stdin=stream, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise InfraError(f"ctr images import - exited {result.returncode}: {result.stderr}")
        return sorted(self.image_refs() - before)

    def image_id(self, ref: str) -> str | None:
        """The image id (its config's digest, what `docker image inspect` calls Id) of
        `ref` in the node's containerd; None when the node has no such image."""
        listed = self._ctr("images", "ls", f"name=={ref}", timeout=30).splitlines()[1:]
        if not listed:
            return None
        digest = listed[0].split()[2]
        document = json.loads(self._ctr("content", "get", digest, timeout=30))
        if "manifests" in document:  # an index: its first manifest
            digest = document["manifests"][0]["digest"]
            document = json.loads(self._ctr("content", "get", digest, timeout=30))
        return str(document["config"]["digest"])

    def image_refs(self) -> set[str]:
        """The references of every image in the node's containerd."""
        return set(self._ctr("images", "ls", "-q", timeout=30).split())

    def _start_kubelet(self, deadline: float) -> None:
        kubelet_root = self.root / "kubelet"
        kubelet_root.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # No systemd; the cgroup v1 hierarchies are what this host has.
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.state.cgroup}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "imageServiceEndpoint": f"unix://{self.socket}",
            "address": self.network.node_ip,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "resolvConf": str(self.root / "resolv.conf"),
            "clusterDNS": [CLUSTER_DNS],
            "clusterDomain": CLUSTER_DOMAIN,
            "podLogsDir": str(self.root / "pod-logs"),
            "volumePluginDir": str(kubelet_root / "volume-plugins"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.root / "pki" / "client-ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            # A shared disk: evict only when it is nearly full.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "maxPods": 30,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "serializeImagePulls": False,
            "containerLogMaxSize": "1Mi",
        }
        (self.root / "kubelet.yaml").write_text(json.dumps(config, indent=2))
        self.timings["kubelet_started"] = time.monotonic()
        kubelet = self._spawn(
            "kubelet",
            [
                str(self._layout.binary("kubelet")),
                f"--config={self.root / 'kubelet.yaml'}",
                f"--kubeconfig={self.root / 'kubelet.kubeconfig'}",
                f"--root-dir={kubelet_root}",
                f"--cert-dir={kubelet_root / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.network.node_ip}",
                "--v=1",
            ],
        )
        self._wait(deadline, f"node {self.name} Ready", self._ready, kubelet)

    def _start_kube_proxy(self, deadline: float) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clusterCIDR": CLUSTER_CIDR,
            "hostnameOverride": self.name,
            "bindAddress": self.network.node_ip,
            "healthzBindAddress": f"{self.network.node_ip}:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "clientConnection": {"kubeconfig": str(self.root / "kube-proxy.kubeconfig")},
            # Zero everywhere: kube-proxy leaves the (host-wide) conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s"},
        }
        (self.root / "kube-proxy.yaml").write_text(json.dumps(config, indent=2))
        proxy = self._spawn(
            "kube-proxy",
            [str(self._layout.binary("kube-proxy")), f"--config={self.root / 'kube-proxy.yaml'}"],
        )
        self._wait(
            deadline,
            "kube-proxy /healthz",
            lambda: self.plane._get_ok(f"http://{self.network.node_ip}:10256/healthz"),
            proxy,
        )

    def _node_service(
        self, name: str, ports: list[dict[str, Any]], cluster_ip: str | None = None
    ) -> None:
        """A Service of kube-system for a daemon of the node: no selector, and an
        EndpointSlice of the rig's naming the node's address (each port its own target)."""
        spec: dict[str, Any] = {"ports": [{**port, "targetPort": port["port"]} for port in ports]}
        if cluster_ip:
            spec["clusterIP"] = cluster_ip
        self.plane.request(
            "POST",
            "/api/v1/namespaces/kube-system/services",
            {"metadata": {"name": name, "labels": {"k8s-app": name}}, "spec": spec},
        )
        self.plane.request(
            "POST",
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
            {
                "metadata": {
                    "name": f"{name}-rig",
                    "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": "driftline-rig",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [
                    {
                        "addresses": [self.network.node_ip],
                        "conditions": {"ready": True},
                        "nodeName": self.name,
                    }
                ],
                "ports": ports,
            },
        )

    def _start_coredns(self, deadline: float) -> None:
        """CoreDNS as a daemon of the node (like kube-proxy, not a Pod: no image to
        build, and no Pod of the tests' can evict it), behind the `kube-dns` Service.

        Its identity `system:coredns` may read what it serves (kubeadm's ClusterRole
        of that name); the Service has no selector, and an EndpointSlice of the rig's
        names the node's address, where CoreDNS listens.
        """
        rules = [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],
            },
        ]
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        self.plane.request(
            "POST",
            f"{rbac}/clusterroles",
            {"metadata": {"name": "system:coredns"}, "rules": rules},
        )
        self.plane.request(
            "POST",
            f"{rbac}/clusterrolebindings",
            {
                "metadata": {"name": "system:coredns"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:coredns",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "system:coredns",
                    }
                ],
            },
        )
        dns = [{"name": name, "port": 53, "protocol": proto} for name, proto in DNS_PORTS]
        self._node_service("kube-dns", dns, cluster_ip=CLUSTER_DNS)
        coredns = self._spawn(
            "coredns", [str(self._layout.binary("coredns")), "-conf", str(self.root / "Corefile")]
        )
        ready = f"http://{self.network.node_ip}:{COREDNS_READY_PORT}/ready"
        self._wait(deadline, "CoreDNS /ready", lambda: self.plane._get_ok(ready), coredns)

    def _start_metrics_server(self, deadline: float) -> None:
        """metrics-server as a daemon of the node (like CoreDNS), serving the resource
        metrics API (`metrics.k8s.io`, what the HPA and `kubectl top` read) from the
        kubelet's /metrics/resource, registered as kubeadm's add-on registers it: an
        APIService in front of the `metrics-server` Service of kube-system, whose
        EndpointSlice names the node's address.

        Its identity `system:metrics-server` gets the add-on's own grants: read nodes'
        metrics and list Pods and nodes, delegate authentication and authorization to
        the API server, read the API server's request-header CA. It scrapes every 10 s
        (the shortest it allows); the kubelet's serving certificate is self-signed.
        The node does not wait for a first scrape: a test that needs metrics waits for
        them (`metrics_ready`).
        """
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        user = {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": "system:metrics-server",
        }
        rules = [
            {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
        ]
        self.plane.request(
            "POST",
            f"{rbac}/clusterroles",
            {"metadata": {"name": "system:metrics-server"}, "rules": rules},
        )
        for binding, role in (
            ("system:metrics-server", "system:metrics-server"),
            ("metrics-server:system:auth-delegator", "system:auth-delegator"),
        ):
            self.plane.request(
                "POST",
                f"{rbac}/clusterrolebindings",
                {
                    "metadata": {"name": binding},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role,
                    },
                    "subjects": [user],
                },
            )
        self.plane.request(
            "POST",
            f"{rbac}/namespaces/kube-system/rolebindings",
            {
                "metadata": {"name": "metrics-server-auth-reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "extension-apiserver-authentication-reader",
                },
                "subjects": [user],
            },
        )
        self._node_service(
            "metrics-server", [{"name": "https", "port": METRICS_PORT, "protocol": "TCP"}]
        )
        self.plane.request(
            "POST",
            "/apis/apiregistration.k8s.io/v1/apiservices",
            {
                "metadata": {"name": "v1beta1.metrics.k8s.io"},
                "spec": {
                    "service": {
                        "name": "metrics-server",
                        "namespace": "kube-system",
                        "port": METRICS_PORT,
                    },
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    # Its serving certificate is self-signed (written at its start).
                    "insecureSkipTLSVerify": True,
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        )
        kubeconfig = str(self.root / "metrics-server.kubeconfig")
        metrics = self._spawn(
            "metrics-server",
            [
                str(self._layout.binary("metrics-server")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={self.network.node_ip}",
                f"--secure-port={METRICS_PORT}",
                f"--cert-dir={self.root / 'metrics-server-certs'}",
                "--kubelet-insecure-tls",
                "--kubelet-preferred-address-types=InternalIP",
                "--metric-resolution=10s",
                # Shorter than the resolution, which it must be.
                "--kubelet-request-timeout=5s",
            ],
        )
        # /livez answers anyone (the API server's default `system:public-info-viewer`).
        live = f"https://{self.network.node_ip}:{METRICS_PORT}/livez"
        self._wait(
            deadline,
            "metrics-server /livez",
            lambda: self.plane._get_ok(live, verify=False),
            metrics,
        )

    def start_prometheus(
        self, scrape_configs: list[dict[str, Any]], scrape_interval: str = "2s"
    ) -> PrometheusServer:
        """Prometheus (the rig's, from its Go module) in the node's network namespace,
        scraping with `scrape_configs` as a user's Prometheus inside the cluster would:
        each Kubernetes discovery gets the API server and the identity
        `system:prometheus` (a kubeconfig) where in a Pod it has its ServiceAccount,
        with the grants Prometheus' own install asks (get, list and watch on
        services, endpoints, endpoint slices, pods and namespaces). Stops with the
        node (or `stop()`); its API answers on the node's address (reachable from the
        host). One at a time: each listens on PROMETHEUS_PORT."""
        if not self._prometheus_granted:
            self._grant_prometheus()
            self._prometheus_granted = True
        kubeconfig = str(self.root / "prometheus.kubeconfig")
        configs = []
        for config in scrape_configs:
            config = dict(config)
            if "kubernetes_sd_configs" in config:
                config["kubernetes_sd_configs"] = [
                    {**sd, "kubeconfig_file": kubeconfig} for sd in config["kubernetes_sd_configs"]
                ]
            configs.append(config)
        server = PrometheusServer(
            Path(tempfile.mkdtemp(prefix="prometheus-", dir=self.root)),  # a TSDB of its own
            scrape_interval,
            scrape_configs=configs,
            binary=str(self._layout.binary("prometheus")),
            host=self.network.node_ip,
            port=PROMETHEUS_PORT,
            wrap=self.network.nsenter,
        )
        self._processes.append(server.process)
        return server.start()

    def _grant_prometheus(self) -> None:
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        rules = [
            {
                "apiGroups": [""],
                "resources": ["services", "endpoints", "pods", "namespaces"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["get", "list", "watch"],
            },
        ]
        self.plane.request(
            "POST", f"{rbac}/clusterroles", {"metadata": {"name": "rig:prometheus"}, "rules": rules}
        )
        self.plane.request(
            "POST",
            f"{rbac}/clusterrolebindings",
            {
                "metadata": {"name": "rig:prometheus"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "rig:prometheus",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "system:prometheus",
                    }
                ],
            },
        )

    def metrics_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """The node's entry of the resource metrics API, once metrics-server has scraped
        the kubelet and the API server routes to it."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                return dict(self.plane.request("GET", f"{METRICS_API}/nodes/{self.name}"))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = exc
            time.sleep(1)
        logs = "\n".join(p.log_tail(20) for p in self._processes if p.name == "metrics-server")
        raise InfraError(
            f"no resource metrics for node {self.name} after {timeout:.0f} s: {last}\n{logs}"
        )

    # -- state ----------------------------------------------------------------------------

    def _ready(self) -> bool:
        try:
            node = self.plane.request("GET", f"/api/v1/nodes/{self.name}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        conditions = node.get("status", {}).get("conditions", [])
        taints = {taint["key"] for taint in node["spec"].get("taints", [])}
        return (
            any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            and "node.kubernetes.io/not-ready" not in taints
        )

    def _delete_pods(self, timeout: float) -> None:
        """Delete every Pod on the node and wait until containerd runs none."""
        pods = self.plane.request("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.name}")[
            "items"
        ]
        for pod in pods:
            meta = pod["metadata"]
            with contextlib.suppress(urllib.error.HTTPError):
                self.plane.request(
                    "DELETE",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    {"gracePeriodSeconds": 1},
                )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = self._ctr("tasks", "ls", "-q", timeout=5).split()
            if not tasks:
                return
            time.sleep(0.3)

    def memory_mib(self) -> dict[str, float]:
        """Resident memory of the node's daemons, its shims and the control plane."""
        usage: dict[str, float] = {}
        roots = [str(self.root), str(self.plane.root)]
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                status = (proc / "status").read_text()
            except OSError:
                continue
            text = b" ".join(cmdline).decode(errors="replace")
            if not any(root in text for root in roots) or cmdline[0].endswith(b"nsenter"):
                continue
            rss = next((line for line in status.splitlines() if line.startswith("VmRSS:")), "")
            if not rss:
                continue
            name = Path(cmdline[0].decode(errors="replace")).name
            usage[name] = usage.get(name, 0.0) + int(rss.split()[1]) / 1024
        for pid in _cgroup_pids(self.state.cgroup):
            with contextlib.suppress(OSError, StopIteration):
                status = Path(f"/proc/{pid}/status").read_text()
                rss = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
                usage["pods"] = usage.get("pods", 0.0) + int(rss.split()[1]) / 1024
        return usage


class NodeStack:
    """A control plane and one real node in a fresh network namespace, as one."""

    def __init__(self, log_dir: str | Path | None = None, layout: RigLayout | None = None) -> None:
        self._layout = layout or rig_layout()
        self._log_dir = Path(log_dir) if log_dir else None
        self.state = RealNode.new_state()
        self.network = NodeNetwork(self.state)
        self.plane: ControlPlane | None = None
        self.node: RealNode | None = None
        self.timings: dict[str, float] = {}

    def start(self) -> Self:
        started = time.monotonic()
        try:
            self.network.create()
            self.plane = ControlPlane(
                root=Path(self.state.root) / "control-plane",
                node_pools=(),
                log_dir=self._log_dir / "kube" if self._log_dir else None,
                layout=self._layout,
                address=self.network.host_ip,
            ).start()
            plane_ready = time.monotonic()
            self.node = RealNode(
                self.plane,
                self.network,
                log_dir=self._log_dir / "node" if self._log_dir else None,
                layout=self._layout,
            ).start()
            self.timings = {
                "control_plane_s": plane_ready - started,
                "node_ready_s": self.node.timings["node_ready_s"],
                "dns_ready_s": self.node.timings["dns_ready_s"],
                "total_s": time.monotonic() - started,
            }
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.node is not None:
            self.node.close()
        if self.plane is not None:
            self.plane.stop()
        sweep(self.state)

    def leftovers(self) -> list[str]:
        return leftovers(self.state)

    def import_image(self, tarball: str | Path, timeout: float = 300.0) -> list[str]:
        """An image tarball into the node's containerd (`RealNode.import_image`)."""
        if self.node is None:
            raise InfraError("the real node is not started")
        return self.node.import_image(tarball, timeout=timeout)

    def import_stream(self, stream: IO[bytes], timeout: float = 900.0) -> list[str]:
        """An image tarball streamed into the node's containerd (`RealNode.import_stream`)."""
        if self.node is None:
            raise InfraError("the real node is not started")
        return self.node.import_stream(stream, timeout=timeout)

    def image_id(self, ref: str) -> str | None:
        """The id of the image `ref` in the node's containerd (`RealNode.image_id`)."""
        if self.node is None:
            raise InfraError("the real node is not started")
        return self.node.image_id(ref)

    def image_refs(self) -> set[str]:
        """The references of every image in the node's containerd."""
        if self.node is None:
            raise InfraError("the real node is not started")
        return self.node.image_refs()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
