"""The pod template of a part: how it runs, what it reads, where it may be scheduled.

Every part runs `python -m driftline.<part>` under the restricted Pod Security
Standard (non-root, read-only root filesystem, no privilege escalation, no
capabilities, RuntimeDefault seccomp). It reads its DynamicModel from a mounted
ConfigMap and its credentials from mounted Secrets (`driftline.common.connections`
reads them as files): no secret value ever appears in the pod spec.
"""

from __future__ import annotations

from typing import Any

from driftline.api.parts import INFERENCE, TRAINER, Part
from driftline.common.model_signature import SIGNING_KEY, SIGNING_VERIFY
from driftline.operator.builders.context import (
    CONFIG_HASH_ANNOTATION,
    BuildContext,
    child_name,
    part_labels,
    part_selector,
)
from driftline.operator.builders.cost import cost_labels, spot_scheduling
from driftline.operator.builders.parts import trainer_ranks
from driftline.operator.settings import PartResources

CONFIG_DIR = "/etc/driftline"
MODEL_FILE_NAME = "model.yaml"
SECRETS_DIR = "/var/run/secrets/driftline"
CHECKPOINT_DIR = "/var/lib/driftline/trainer"
RENDEZVOUS_PORT = 29500  # torch.distributed's env:// store on rank 0 (training.workers > 1)
SPOOL_DIR = "/var/lib/driftline/inference"
RUN_AS = 10001
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

# Seconds a part may take to stop after SIGTERM: inference drains in-flight requests;
# the trainer may be finishing a publish (export, register, commit offsets).
GRACE_SECONDS = {"inference": 30, "joiner": 30, "trainer": 90, "drift": 30}


def config_map_name(ctx: BuildContext) -> str:
    return child_name(ctx.name, "config")


def checkpoint_claim_name(ctx: BuildContext) -> str:
    return child_name(ctx.name, "trainer-checkpoints")


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(ctx: BuildContext, part: Part) -> list[dict[str, Any]]:
    prefix = part.env_prefix
    values = {
        f"{prefix}MODEL_FILE": f"{CONFIG_DIR}/{MODEL_FILE_NAME}",
        f"{prefix}SECRETS_DIR": SECRETS_DIR,
        f"{prefix}METRICS_PORT": str(ctx.settings.metrics_port),
        f"{prefix}LOG_LEVEL": ctx.settings.part_log_level,
        # The root filesystem is read-only; libraries that cache under $HOME use /tmp.
        "HOME": "/tmp",
    }
    if part is INFERENCE:
        values[f"{prefix}PORT"] = str(ctx.settings.inference_port)
        values[f"{prefix}{INFERENCE.data_setting}"] = SPOOL_DIR
        values[f"{prefix}SPOOL_MAX_BYTES"] = str(ctx.settings.inference_spool_mib * 1024 * 1024)
        grpc = ctx.model.spec.inference.grpc
        if grpc.enabled:
            values[f"{prefix}GRPC_PORT"] = str(grpc.port)
        # Served on after SIGTERM until the Service has dropped the Pod (see the setting).
        values[f"{prefix}SHUTDOWN_DELAY_SECONDS"] = (
            f"{ctx.settings.inference_shutdown_delay_seconds:g}"
        )
    if part is TRAINER:
        values[f"{prefix}{TRAINER.data_setting}"] = CHECKPOINT_DIR
    ranked = part is TRAINER and trainer_ranks(ctx.model) > 1
    if ranked:
        # Rank 0's pod, by its stable name under the headless Service, hosts the rendezvous.
        service = child_name(ctx.name, TRAINER.name)
        values[f"{prefix}MASTER_ADDR"] = f"{service}-0.{service}.{ctx.namespace}.svc"
        values[f"{prefix}MASTER_PORT"] = str(RENDEZVOUS_PORT)
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(values.items())]
    # Which pod wrote a metric or a log line (and the Kafka client id).
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    if ranked:  # the StatefulSet's ordinal is the rank
        index = "metadata.labels['apps.kubernetes.io/pod-index']"
        env.append({"name": f"{prefix}RANK", "valueFrom": {"fieldRef": {"fieldPath": index}}})
    return env


def _tmp_size(ctx: BuildContext, part: Part) -> str:
    if part is INFERENCE:
        return ctx.settings.inference_tmp
    return _worker_resources(ctx, part).tmp


def _worker_resources(ctx: BuildContext, part: Part) -> PartResources:
    own: PartResources = getattr(ctx.settings, f"{part.name}_resources")
    return own


def _volumes(ctx: BuildContext, part: Part) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": config_map_name(ctx),
                "items": [{"key": MODEL_FILE_NAME, "path": MODEL_FILE_NAME}],
                "defaultMode": 0o444,
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": _tmp_size(ctx, part)}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if part is INFERENCE:
        # Survives a container restart (kill -9, OOM): the restarted process replays it.
        # A quarter larger than the spool's cap, so the cap (which sheds the oldest
        # predictions, counted) is reached before the kubelet's limit (which evicts).
        size = f"{ctx.settings.inference_spool_mib * 5 // 4}Mi"
        volumes.append({"name": "spool", "emptyDir": {"sizeLimit": size}})
        mounts.append({"name": "spool", "mountPath": SPOOL_DIR})
    if part is TRAINER and trainer_ranks(ctx.model) > 1:
        # Each rank's own volume, from the StatefulSet's claim template (rank 0 writes).
        if ctx.settings.trainer_checkpoints != "persistent":
            size = ctx.settings.trainer_checkpoint_size
            volumes.append({"name": "checkpoints", "emptyDir": {"sizeLimit": size}})
        mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_DIR})
    elif part is TRAINER:
        checkpoints: dict[str, Any] = (
            {"persistentVolumeClaim": {"claimName": checkpoint_claim_name(ctx)}}
            if ctx.settings.trainer_checkpoints == "persistent"
            else {"emptyDir": {"sizeLimit": ctx.settings.trainer_checkpoint_size}}
        )
        volumes.append({"name": "checkpoints", **checkpoints})
        mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_DIR})
    secrets = {
        "kafka": ctx.model.spec.kafka.credentials_secret,
        "redis": ctx.model.spec.redis.credentials_secret,
    }
    feast = ctx.model.spec.feast
    if part is INFERENCE and feast is not None:
        # Only inference reads Feast's online store (features with source.feast).
        secrets["feast"] = feast.redis.credentials_secret
    for backend, secret in secrets.items():
        if secret is None:
            continue
        volume = f"{backend}-credentials"
        # Group-readable only; the pod's fsGroup makes the files readable to the part.
        volumes.append({"name": volume, "secret": {"secretName": secret, "defaultMode": 0o440}})
        mounts.append({"name": volume, "mountPath": f"{SECRETS_DIR}/{backend}", "readOnly": True})
    signing = signing_volumes(ctx, verify=part is INFERENCE, key=part is TRAINER)
    return volumes + signing[0], mounts + signing[1]


def signing_volumes(
    ctx: BuildContext, *, verify: bool, key: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Secrets of spec.model.signing a part reads (`driftline.common.model_signature`):
    the PEM that checks signatures (inference, the import Job), the key that signs
    published versions (trainer, the import Job). Only the key named is mounted."""
    signing = ctx.model.spec.model.signing
    wanted = []
    if signing is not None and verify and signing.public_key_secret_ref is not None:
        wanted.append((SIGNING_VERIFY, signing.public_key_secret_ref))
    if signing is not None and key and signing.signing_key_secret_ref is not None:
        wanted.append((SIGNING_KEY, signing.signing_key_secret_ref))
    volumes, mounts = [], []
    for mount, ref in wanted:
        items = [{"key": ref.key, "path": ref.key}]
        volumes.append(
            {
                "name": mount,
                "secret": {"secretName": ref.name, "items": items, "defaultMode": 0o440},
            }
        )
        mounts.append({"name": mount, "mountPath": f"{SECRETS_DIR}/{mount}", "readOnly": True})
    return volumes, mounts


def _http_probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _probes(part: Part) -> dict[str, Any]:
    if part is INFERENCE:
        live, ready, port = "/v2/health/live", "/v2/health/ready", "http"
    else:
        live, ready, port = "/healthz", "/readyz", "metrics"
    return {
        # Loading a model from MLflow (or importing torch) may take a while; liveness
        # only starts counting once the process has answered once.
        "startupProbe": _http_probe(live, port, period=2, failures=90),
        "livenessProbe": _http_probe(live, port, period=10, failures=3),
        "readinessProbe": _http_probe(ready, port, period=5, failures=2),
    }


def _ports(ctx: BuildContext, part: Part) -> list[dict[str, Any]]:
    ports = [{"name": "metrics", "containerPort": ctx.settings.metrics_port, "protocol": "TCP"}]
    if part is INFERENCE:
        http = {"name": "http", "containerPort": ctx.settings.inference_port, "protocol": "TCP"}
        ports.insert(0, http)
        grpc = ctx.model.spec.inference.grpc
        if grpc.enabled:
            ports.insert(1, {"name": "grpc", "containerPort": grpc.port, "protocol": "TCP"})
    if part is TRAINER and trainer_ranks(ctx.model) > 1:
        ports.append({"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"})
    return ports


def resources(ctx: BuildContext, part: Part) -> dict[str, Any]:
    if part is INFERENCE:
        spec = ctx.model.spec.inference.resources
        amounts: dict[str, Any] = {"cpu": spec.cpu, "memory": spec.memory}
        if spec.gpu:
            amounts[GPU_RESOURCE] = str(spec.gpu)
        return {"requests": dict(amounts), "limits": dict(amounts)}
    own = _worker_resources(ctx, part)
    # No CPU limit for workers: throttling a consumer only grows its lag.
    return {"requests": {"cpu": own.cpu, "memory": own.memory}, "limits": {"memory": own.memory}}


def _gpu_pool_labels(ctx: BuildContext) -> dict[str, str]:
    """Labels that pick the GPU pool, when inference runs on one."""
    return dict(ctx.model.spec.inference.node_pool.node_selector) if ctx.gpu else {}


def scheduling(ctx: BuildContext, part: Part) -> dict[str, Any]:
    """nodeSelector, tolerations, affinity and spreading of a part's pods.

    Inference follows `spec.inference.nodePool` (and tolerates the `nvidia.com/gpu`
    taint when it asks GPUs). Every other part is kept off that GPU pool: without a
    toleration it cannot land on tainted GPU nodes, and a required node affinity
    keeps it off pool nodes that carry the pool's labels but no taint.
    """
    out: dict[str, Any] = {}
    if part is INFERENCE:
        pool = ctx.model.spec.inference.node_pool
        if pool.node_selector:
            out["nodeSelector"] = dict(sorted(pool.node_selector.items()))
        tolerations = [t.model_dump(exclude_none=True) for t in pool.tolerations]
        if ctx.gpu and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
            tolerations.append(dict(GPU_TOLERATION))
        if tolerations:
            out["tolerations"] = tolerations
        out["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": part_selector(ctx, part.name)},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        }
        out["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": part_selector(ctx, part.name)},
            }
        ]
        return out
    avoid = _gpu_pool_labels(ctx)
    if avoid:
        expressions = [
            {"key": key, "operator": "NotIn", "values": [value]}
            for key, value in sorted(avoid.items())
        ]
        out["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": expressions}]
                }
            }
        }
    return out


def pod_template(ctx: BuildContext, part: Part, config_hash: str) -> dict[str, Any]:
    volumes, mounts = _volumes(ctx, part)
    container: dict[str, Any] = {
        "name": part.name,
        "image": ctx.settings.image_for(
            part.name, gpu=ctx.gpu > 0, drift_backend=ctx.model.spec.drift.backend
        ),
        "imagePullPolicy": ctx.settings.image_pull_policy,
        "command": ["python", "-m", part.module],
        "ports": _ports(ctx, part),
        "env": _env(ctx, part),
        "resources": resources(ctx, part),
        **_probes(part),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        "serviceAccountName": child_name(ctx.name, part.name),
        # The parts never call the Kubernetes API: no token in their pods.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS[part.name],
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        **scheduling(ctx, part),
        **spot_scheduling(ctx, part),  # the trainer's only placement rule when asked
    }
    return {
        "metadata": {
            "labels": {**part_labels(ctx, part.name), **cost_labels(ctx, part)},
            # A changed DynamicModel rolls the pods: the config is read at start.
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
        },
        "spec": spec,
    }
