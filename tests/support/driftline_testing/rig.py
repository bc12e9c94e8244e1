"""Where the test rig lives: the real Kubernetes control plane and Apache Kafka.

`make rig` (tests/rig/build.sh) builds kube-apiserver, kube-controller-manager,
kube-scheduler, kubelet, kube-proxy, etcd, kwok and CoreDNS from the Go module
proxy, and resolves Apache Kafka's jars from Maven Central, into a cache outside
the repository:
`${DRIFTLINE_RIG_CACHE:-~/.cache/driftline-rig}/<key>`. The key names the pinned
versions and a hash of tests/rig's inputs (pins, build script), so a checkout
always finds the rig built from its own pins and never a stale one.

`DRIFTLINE_RIG_DIR` names a rig directory directly (one built elsewhere).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# What build.sh hashes into the key, in this order.
PIN_FILES = (
    "go.mod",
    "go.sum",
    "pom.xml",
    "log4j2.properties",
    "coredns/go.mod",
    "coredns/go.sum",
    "coredns/main.go",
    "metrics-server/go.mod",
    "metrics-server/go.sum",
    "prometheus/go.mod",
    "prometheus/go.sum",
    "prometheus/plugins.go.in",
    "build.sh",
)


class RigLayout:
    """The paths inside one built rig directory (see tests/rig/build.sh)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.kafka = root / "kafka"

    @property
    def kubernetes_built(self) -> bool:
        return (self.root / "k8s.done").is_file()

    @property
    def coredns_built(self) -> bool:
        return (self.root / "coredns.done").is_file()

    @property
    def kafka_built(self) -> bool:
        return (self.root / "kafka.done").is_file()

    def binary(self, name: str) -> Path:
        return self.bin / name


def pin_dir() -> Path:
    """tests/rig of this checkout: the pins the rig is built from."""
    return Path(__file__).resolve().parents[2] / "rig"


def rig_key(pins: Path) -> str:
    """The cache key build.sh uses: pinned versions plus a hash of its inputs."""
    go_mod = (pins / "go.mod").read_text()
    pom = (pins / "pom.xml").read_text()
    k8s = re.search(r"^\s*k8s\.io/kubernetes\s+(v\S+)", go_mod, re.MULTILINE)
    kafka = re.search(r"<kafka\.version>(.+?)</kafka\.version>", pom)
    if k8s is None or kafka is None:
        raise ValueError(f"{pins}: cannot read the pinned Kubernetes and Kafka versions")
    digest = hashlib.sha256(b"".join((pins / name).read_bytes() for name in PIN_FILES))
    return f"k8s-{k8s.group(1)}-kafka-{kafka.group(1)}-{digest.hexdigest()[:10]}"


def rig_layout() -> RigLayout:
    """The rig this checkout would use, built or not."""
    explicit = os.environ.get("DRIFTLINE_RIG_DIR")
    if explicit:
        return RigLayout(Path(explicit))
    pins = pin_dir()
    cache = Path(os.environ.get("DRIFTLINE_RIG_CACHE") or Path.home() / ".cache/driftline-rig")
    return RigLayout(cache / rig_key(pins))
