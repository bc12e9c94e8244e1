"""The files a Kubernetes control plane starts from: keys, tokens, kubeconfigs, nodes.

Kept apart from the launcher (`kube.py`) so that what the cluster *is* (who may
talk to it, which nodes it has) reads in one place.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Annotation kwok selects the nodes it simulates by (the one kwokctl uses).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
POOL_LABEL = "driftline.io/node-pool"


@dataclass(frozen=True)
class NodePool:
    """A group of identical simulated nodes, as a cloud node pool would create them."""

    name: str
    count: int
    cpu: str = "8"
    memory: str = "32Gi"
    pods: str = "110"
    gpus: int = 0
    gpu_product: str = "NVIDIA-L4"
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()

    def node_names(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(self.count)]

    def manifests(self) -> list[dict[str, Any]]:
        """Node objects with their capacity: what a kubelet would register."""
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        labels = {POOL_LABEL: self.name, **self.labels}
        taints = list(self.taints)
        if self.gpus:
            capacity[GPU_RESOURCE] = str(self.gpus)
            # The labels NVIDIA's GPU feature discovery puts on a GPU node.
            labels |= {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": self.gpu_product,
                "nvidia.com/gpu.count": str(self.gpus),
            }
            taints.append(GPU_TAINT)
        nodes = []
        for name in self.node_names():
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                        "labels": {
                            **labels,
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "node.kubernetes.io/instance-type": f"rig-{self.name}",
                        },
                    },
                    "spec": {"taints": taints} if taints else {},
                    "status": {"capacity": capacity, "allocatable": capacity},
                }
            )
        return nodes


DEFAULT_NODE_POOLS = (
    NodePool("cpu", count=2),
    NodePool("gpu", count=2, cpu="16", memory="64Gi", gpus=2),
)


@dataclass(frozen=True)
class Identity:
    """A user of the API server with a static bearer token (`--token-auth-file`)."""

    user: str
    groups: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))


def write_token_file(path: Path, identities: list[Identity]) -> None:
    lines = []
    for who in identities:
        groups = ",".join(who.groups)
        lines.append(f'{who.token},{who.user},{who.user},"{groups}"\n')
    path.write_text("".join(lines))
    path.chmod(0o600)


def write_service_account_key(private: Path, public: Path) -> None:
    """An EC key pair the API server signs service-account tokens with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_ca(cert: Path, key: Path, common_name: str) -> None:
    """A self-signed CA, for `--client-ca-file` and `--requestheader-client-ca-file`.

    The client CA also signs the kubelets' and kube-proxy's certificates (see
    `write_client_cert`). With both CAs the API server publishes the complete
    `extension-apiserver-authentication` ConfigMap that the controller-manager and
    the scheduler read to authenticate their own callers (without it they retry and
    log errors all along).
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    _write_pem(cert, key, certificate, private)


def write_client_cert(
    ca_cert: Path,
    ca_key: Path,
    cert: Path,
    key: Path,
    common_name: str,
    organizations: tuple[str, ...] = (),
) -> None:
    """A client certificate signed by one of the CAs above (`--client-ca-file`).

    The API server takes the user from the common name and the groups from the
    organizations: `system:node:<name>` in `system:nodes` is a kubelet, which the
    Node authorizer and NodeRestriction then hold to its own node.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    private = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(issuer.subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_pem(cert, key, certificate, private)


def write_cert_kubeconfig(
    path: Path, server: str, ca_file: Path, user: str, cert: Path, key: Path
) -> None:
    """A kubeconfig that authenticates with a client certificate (kubelet, kube-proxy)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "driftline-rig",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [
            {"name": "driftline-rig", "context": {"cluster": "driftline-rig", "user": user}}
        ],
        "current-context": "driftline-rig",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def write_kubeconfig(path: Path, server: str, ca_file: Path, who: Identity) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "driftline-rig",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": who.user, "user": {"token": who.token}}],
        "contexts": [
            {"name": "driftline-rig", "context": {"cluster": "driftline-rig", "user": who.user}}
        ],
        "current-context": "driftline-rig",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _write_pem(cert: Path, key: Path, certificate: Any, private: Any) -> None:
    """A certificate and its private key as PEM files, the key readable by us only."""
    from cryptography.hazmat.primitives import serialization

    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
