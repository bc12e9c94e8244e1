"""The operator's I/O in one place: what it reads from the cluster and what it writes.

Handlers call this module and the pure builders; nothing else talks to the API
server. Here: discovery of optional CRDs (passed to builders as `Capabilities`),
non-secret facts about the credential Secrets, server-side apply of the children,
pruning of children the spec no longer asks for, and reading Deployment status.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.api import GROUP, PLURAL, VERSION, DynamicModel
from driftline.api.status import InitialImportStatus
from driftline.common.connections import KafkaConnection, RedisConnection
from driftline.operator.builders import Capabilities, Children, KafkaAuth
from driftline.operator.builders.context import (
    COMPONENT_LABEL,
    MANAGED_BY,
    MODEL_LABEL,
    NAMESPACE_LABEL,
)
from driftline.operator.import_state import JOB_NAME_LABEL, import_state
from driftline.operator.kinds import (
    CAPABILITY_APIS,
    CHILD_KINDS,
    POD,
    SECRET,
    Kind,
    kind_of,
    path_of,
)
from driftline.operator.kube import Kube, KubeError, NotFoundError
from driftline.operator.part_problems import part_problems
from driftline.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

# Kafka's SASL mechanism names -> KEDA's; the default matches driftline.common.connections.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
DEFAULT_MECHANISM = "SCRAM-SHA-512"


class MissingDependencyError(Exception):
    """Something the model needs that is not there yet (a Secret): retried later."""


@dataclass(frozen=True)
class DeploymentState:
    part: str
    name: str
    desired: int
    ready: int
    available: int
    updated: int
    current: bool  # the controller has seen the latest spec
    available_condition: bool

    @property
    def is_available(self) -> bool:
        return self.current and self.available_condition and self.available >= self.desired

    @property
    def is_rolling(self) -> bool:
        return not self.current or self.updated < self.desired


def workload_state(kind: str, item: dict[str, Any]) -> DeploymentState:
    """A Deployment's or a StatefulSet's (`kind`; list items do not name it) rollout
    state, in one shape.

    A StatefulSet has no Available condition: it counts as available when all its
    replicas are (available, or ready on an API server that does not report it), and
    it is rolling while its pods are not all of the update revision."""
    meta, spec, status = item["metadata"], item.get("spec", {}), item.get("status", {})
    desired = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas", 0))
    current = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    if kind == "StatefulSet":
        available = int(status.get("availableReplicas", ready))
        updated = int(status.get("updatedReplicas", 0))
        revision = status.get("updateRevision")
        if revision is not None and status.get("currentRevision") == revision:
            updated = max(updated, int(status.get("currentReplicas", 0)))
        available_condition = available >= desired
    else:
        available = int(status.get("availableReplicas", 0))
        updated = int(status.get("updatedReplicas", 0))
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        available_condition = conditions.get("Available") == "True"
    return DeploymentState(
        part=meta.get("labels", {}).get(COMPONENT_LABEL, meta["name"]),
        name=meta["name"],
        desired=desired,
        ready=ready,
        available=available,
        updated=updated,
        current=current,
        available_condition=available_condition,
    )


def kafka_security(secret: str, data: dict[str, str]) -> dict[str, str]:
    """librdkafka security settings from the Secret's keys.

    The rules of `driftline.common.connections.KafkaConnection.from_secrets`, which
    reads the same keys as mounted files; the CA is passed as PEM text here.
    """
    security: dict[str, str] = {}
    has_ca = bool(data.get("ca.crt"))
    protocol = data.get("security.protocol")
    if data.get("username") and data.get("password"):
        mechanism = (data.get("mechanism") or DEFAULT_MECHANISM).upper()
        if mechanism not in KEDA_SASL:
            raise MissingDependencyError(
                f"Secret {secret}: mechanism {mechanism!r} is not one of {sorted(KEDA_SASL)}"
            )
        security["sasl.username"] = data["username"]
        security["sasl.password"] = data["password"]
        security["sasl.mechanism"] = mechanism
        protocol = protocol or ("SASL_SSL" if has_ca else "SASL_PLAINTEXT")
    if has_ca:
        security["ssl.ca.pem"] = data["ca.crt"]
        protocol = protocol or "SSL"
    if protocol:
        security["security.protocol"] = protocol
    return security


def kafka_auth_from_secret(secret: str, data: dict[str, str]) -> KafkaAuth:
    """What the Secret's keys say about Kafka auth, in the terms KEDA's scaler takes."""
    security = kafka_security(secret, data)
    mechanism = security.get("sasl.mechanism")
    return KafkaAuth(
        secret=secret,
        sasl=KEDA_SASL[mechanism] if mechanism else None,
        tls=security.get("security.protocol") in {"SSL", "SASL_SSL"},
        has_ca="ssl.ca.pem" in security,
    )


def model_selector(name: str) -> str:
    return f"{MODEL_LABEL}={name},app.kubernetes.io/managed-by={MANAGED_BY}"


class Cluster:
    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._capabilities: tuple[float, Capabilities] | None = None

    # --- reading --------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """Which optional APIs are served; discovery is repeated after a TTL (CRDs come and go)."""
        with self._lock:
            cached = self._capabilities
            now = self._clock()
            if cached is not None and now - cached[0] < self.settings.capabilities_ttl_seconds:
                return cached[1]
        served = self.kube.served_group_versions()
        found = Capabilities(**{cap: api in served for cap, api in CAPABILITY_APIS.items()})
        with self._lock:
            if self._capabilities is None or self._capabilities[1] != found:
                log.info("optional APIs: %s", found)
            self._capabilities = (now, found)
        return found

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        secret = self.kube.get(SECRET.path(name, namespace))
        if secret is None:
            raise MissingDependencyError(f"Secret {namespace}/{name} does not exist yet")
        raw: dict[str, str] = secret.get("data") or {}
        out = {k: base64.b64decode(v).decode("utf-8", "replace").strip() for k, v in raw.items()}
        out |= {k: str(v).strip() for k, v in (secret.get("stringData") or {}).items()}
        return out

    def kafka_auth(self, model: DynamicModel) -> KafkaAuth | None:
        """Checks that the model's Secrets exist; returns the Kafka auth facts for builders."""
        namespace = model.metadata.namespace
        feast = model.spec.feast
        for secret in (
            model.spec.redis.credentials_secret,
            feast.redis.credentials_secret if feast is not None else None,
        ):
            if secret is not None:
                self.secret_data(namespace, secret)
        kafka_secret = model.spec.kafka.credentials_secret
        if kafka_secret is None:
            return None
        return kafka_auth_from_secret(kafka_secret, self.secret_data(namespace, kafka_secret))

    def kafka_connection(self, model: DynamicModel) -> KafkaConnection:
        servers = model.spec.kafka.bootstrap_servers
        secret = model.spec.kafka.credentials_secret
        if secret is None:
            return KafkaConnection(servers)
        data = self.secret_data(model.metadata.namespace, secret)
        return KafkaConnection(servers, kafka_security(secret, data))

    def redis_connection(self, model: DynamicModel) -> RedisConnection:
        spec = model.spec.redis
        if spec.credentials_secret is None:
            return RedisConnection(spec.url)
        data = self.secret_data(model.metadata.namespace, spec.credentials_secret)
        return RedisConnection(spec.url, data.get("username") or None, data.get("password") or None)

    def deployments(
        self, namespace: str, name: str, statefulsets: bool = False
    ) -> list[DeploymentState]:
        """The state of each part's workload: its Deployment, and with `statefulsets`
        the StatefulSet of a trainer with several ranks (`training.workers`), listed
        only then: one list call per tick for every other model."""
        out = []
        for kind in ("Deployment", "StatefulSet") if statefulsets else ("Deployment",):
            path = kind_of({"apiVersion": "apps/v1", "kind": kind}).collection(namespace)
            out += [workload_state(kind, i) for i in self.kube.list(path, model_selector(name))]
        return sorted(out, key=lambda d: d.part)

    def part_problems(self, namespace: str, name: str, parts: Sequence[str]) -> dict[str, str]:
        """Why each of `parts` (not available) is not: read from its Pods and claims.

        Two list calls, made only while some part is unavailable.
        """
        selector = model_selector(name)
        claims = kind_of({"apiVersion": "v1", "kind": "PersistentVolumeClaim"})
        return part_problems(
            self.kube.list(POD.collection(namespace), selector),
            self.kube.list(claims.collection(namespace), selector),
            parts,
        )

    def import_state(self, namespace: str, name: str, job: str) -> InitialImportStatus | None:
        """The import Job `job` of model `name`, with its Pods' last words once one failed;
        None while the Job does not exist (yet). One list call, two after a failure."""
        jobs = kind_of({"apiVersion": "batch/v1", "kind": "Job"}).collection(namespace)
        found = [
            j for j in self.kube.list(jobs, model_selector(name)) if j["metadata"]["name"] == job
        ]
        if not found:
            return None
        status = found[0].get("status") or {}
        failed = int(status.get("failed", 0)) > 0
        pods = (
            self.kube.list(POD.collection(namespace), f"{JOB_NAME_LABEL}={job}") if failed else []
        )
        return import_state(found[0], pods)

    # --- writing --------------------------------------------------------------------------

    def clear_annotations(self, model: DynamicModel, keys: Sequence[str]) -> None:
        """Removes `keys` from the model's annotations (those that were taken)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{model.metadata.namespace}/{PLURAL}"
        patch = {"metadata": {"annotations": dict.fromkeys(keys)}}
        try:
            self.kube.merge_patch(f"{path}/{model.name}", patch)
        except KubeError as exc:  # taken again next tick: approve and abort are idempotent
            log.warning("cannot remove the annotations %s of %s: %s", keys, model.name, exc)

    def apply(self, children: Children) -> list[dict[str, Any]]:
        return self.apply_manifests(children.all())

    def apply_manifests(self, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        manager = self.settings.field_manager
        return [self.kube.apply(path_of(m), m, manager) for m in manifests]

    def _kinds_served(self) -> list[Kind]:
        caps = self.capabilities()
        return [k for k in CHILD_KINDS if k.capability is None or getattr(caps, k.capability)]

    def prune(self, model: DynamicModel, children: Children) -> list[str]:
        """Deletes children of this model that the current spec no longer asks for."""
        namespace, name, uid = model.metadata.namespace, model.metadata.name, model.metadata.uid
        wanted = {(m["kind"], m["metadata"]["name"]) for m in children.all()}
        deleted = []
        for kind in self._kinds_served():
            if not kind.prune:
                continue
            selector = model_selector(name)
            if not kind.namespaced:
                selector += f",{NAMESPACE_LABEL}={namespace}"
            try:
                items = self.kube.list(kind.collection(namespace), selector)
            except NotFoundError:
                continue  # the API went away between discovery and now
            for item in items:
                meta = item["metadata"]
                if (kind.kind, meta["name"]) in wanted:
                    continue
                owners = {o.get("uid") for o in meta.get("ownerReferences", [])}
                if kind.namespaced and uid not in owners:
                    continue  # same labels, another owner: not ours to delete
                if self.kube.delete(kind.path(meta["name"], namespace)):
                    deleted.append(f"{kind.kind}/{meta['name']}")
        return deleted

    def delete_cluster_children(self, namespace: str, name: str) -> list[str]:
        """Cluster-scoped children (a Karpenter NodePool) have no owner to collect them."""
        deleted = []
        for kind in self._kinds_served():
            if kind.namespaced:
                continue
            selector = f"{model_selector(name)},{NAMESPACE_LABEL}={namespace}"
            try:
                items = self.kube.list(kind.collection(), selector)
            except KubeError as exc:
                if exc.status == 404:
                    continue
                raise
            for item in items:
                if self.kube.delete(kind.path(item["metadata"]["name"])):
                    deleted.append(f"{kind.kind}/{item['metadata']['name']}")
        return deleted
