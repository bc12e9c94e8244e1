"""The operator's settings: images, defaults for the parts, and how to reach the cluster.

Built once in the startup handler (`DRIFTLINE_OPERATOR_...` environment) and handed
to handlers through kopf's memo; builders receive the values they need from it.
The operator is a face, not a part: it serves no DynamicModel file, so it does not
subclass `PartSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from driftline.api.parts import PartName

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"
# The parts whose dependencies fit the inference image (no torch): they run from
# `inference_image`; the others from `image`. The drift monitor joins them on its
# scipy backend (`image_for`).
LIGHT_PARTS: frozenset[PartName] = frozenset({"inference", "joiner"})


class PartResources(BaseModel):
    """Requests (and the memory limit) of a worker part; inference takes its own from the spec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: str = Field(pattern=QUANTITY)
    memory: str = Field(pattern=QUANTITY)
    tmp: str = Field(default="1Gi", pattern=QUANTITY, description="Size of the /tmp emptyDir.")


class KarpenterNodeClass(BaseModel):
    """The cloud's node class a Karpenter NodePool points at (EC2NodeClass on EKS)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str = "karpenter.k8s.aws"
    kind: str = "EC2NodeClass"
    name: str = "default"


class OperatorSettings(BaseSettings):
    """Every knob of the operator; each has a safe default for a production cluster."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_OPERATOR_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    # --- reaching the cluster ------------------------------------------------------------
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file; unset: the in-cluster service account.",
    )
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch; empty: all namespaces."
    )
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    operator_metrics_port: int = Field(
        default=9100, ge=0, le=65535, description="The operator's own /metrics; 0 turns it off."
    )
    field_manager: str = Field(
        default="driftline-operator",
        description="Server-side apply field manager: the fields this operator owns.",
    )

    # --- what the parts run ----------------------------------------------------------------
    operator_image: str = Field(
        default="driftline/operator", description="The operator's own image (install manifests)."
    )
    image: str = Field(
        default="driftline/services",
        description="Image of the trainer, the drift monitor on alibi-detect and the import "
        "Job (torch inside).",
    )
    inference_image: str = Field(
        default="driftline/inference",
        description="Image of inference on CPUs, the joiner and the drift monitor on its "
        "scipy backend: ONNX Runtime, scipy and the core dependencies, no torch (smaller, "
        "faster to pull).",
    )
    gpu_image: str = Field(
        default="driftline/inference-gpu", description="Inference image when the spec asks GPUs."
    )
    image_tag: str = Field(default="0.1.0", description="Tag of the parts' images.")
    image_pull_policy: str = Field(default="IfNotPresent", pattern=r"^(Always|IfNotPresent|Never)$")
    part_log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    inference_port: int = Field(default=8080, ge=1, le=65535)
    metrics_port: int = Field(default=9100, ge=1, le=65535)
    joiner_resources: PartResources = PartResources(cpu="250m", memory="512Mi")
    trainer_resources: PartResources = PartResources(cpu="1", memory="2Gi", tmp="4Gi")
    drift_resources: PartResources = PartResources(cpu="500m", memory="2Gi")
    inference_tmp: str = Field(default="1Gi", pattern=QUANTITY)
    inference_shutdown_delay_seconds: float = Field(
        default=5.0,
        ge=0,
        le=10,
        description="SIGTERM: inference keeps serving this long (readiness 503) before it "
        "closes its listener, while the Service's endpoints drop the Pod; without it, "
        "connections still sent to a deleted Pod are refused. At most 10: with the 20 s "
        "drain it fits the Pod's 30 s grace period.",
    )
    inference_spool_mib: int = Field(
        default=512,
        ge=16,
        le=1_048_576,
        description="Cap of inference's prediction-log spool (MiB), kept while Kafka is "
        "away; its emptyDir is a quarter larger, so the spool sheds its oldest records "
        "(counted) before the kubelet would evict the pod.",
    )
    trainer_checkpoints: Literal["persistent", "ephemeral"] = Field(
        default="persistent",
        description="persistent: a PersistentVolumeClaim keeps the trainer's checkpoint "
        "across pod restarts and moves; ephemeral: an emptyDir (lost with the pod).",
    )
    trainer_checkpoint_size: str = Field(default="10Gi", pattern=QUANTITY)
    trainer_storage_class: str | None = Field(
        default=None,
        description="StorageClass of the checkpoint claim; unset: the cluster default; "
        "empty: a statically provisioned volume without a class.",
    )
    artifact_store_ports: list[int] = Field(
        default_factory=lambda: [443],
        description="Egress ports of the MLflow artifact store (object storage over HTTPS), "
        "opened for the parts that load or store models.",
    )

    # --- autoscaling -----------------------------------------------------------------------
    gpu_metric: str = Field(
        default="DCGM_FI_DEV_GPU_UTIL",
        description="Per-pod GPU utilisation (percent) served by the custom metrics adapter "
        "from NVIDIA's DCGM exporter.",
    )
    inflight_metric: str = Field(
        default="driftline_inference_inflight_requests",
        description="Per-pod in-flight requests served by the custom metrics adapter.",
    )
    rps_metric: str = Field(
        default="driftline_inference_requests_per_second",
        description="Per-pod request rate served by the custom metrics adapter.",
    )
    lag_threshold: int = Field(
        default=1000, ge=1, description="KEDA: consumer lag per replica that adds a replica."
    )
    worker_cpu_utilization: int = Field(
        default=70, ge=1, le=100, description="HPA target for workers when KEDA is absent."
    )

    # --- optional integrations -------------------------------------------------------------
    karpenter_node_class: KarpenterNodeClass = KarpenterNodeClass()

    registry_timeout_seconds: float = Field(
        default=5.0, gt=0, description="HTTP timeout of the rollout's MLflow calls."
    )
    registry_retries: int = Field(
        default=1, ge=0, le=10, description="MLflow retries per call; the next tick retries."
    )

    # --- timing ----------------------------------------------------------------------------
    tick_seconds: float = Field(
        default=10.0, gt=0, description="How often status is refreshed and the rollout stepped."
    )
    capabilities_ttl_seconds: float = Field(
        default=60.0, ge=0, description="How long a discovery of optional CRDs is trusted."
    )
    retry_seconds: float = Field(
        default=30.0, gt=0, description="Backoff when a dependency (a Secret) is missing."
    )
    handler_threads: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Threads that run reconciles and ticks; they wait on the API server "
        "mostly, so more than the CPUs (kopf's default is the CPUs + 4).",
    )
    full_apply_seconds: float = Field(
        default=900.0,
        ge=0,
        description="A reconcile applies only the children its spec change touched; the "
        "first one after this long (and after a restart) applies every child again, "
        "taking back hand edits. 0: every reconcile applies every child.",
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):  # DRIFTLINE_OPERATOR_NAMESPACES=a,b
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    def image_for(
        self,
        part: PartName,
        *,
        gpu: bool = False,
        drift_backend: Literal["alibi", "scipy"] = "scipy",
    ) -> str:
        """The image `part` runs: inference on GPUs the GPU image (`gpu`: the model's
        inference asks GPUs); inference on CPUs, the joiner and the drift monitor on
        its scipy backend (`drift_backend`, the model's `spec.drift.backend`), none of
        which needs torch, the light inference image; the trainer and the drift monitor
        on alibi-detect the services image."""
        if part == "inference" and gpu:
            return f"{self.gpu_image}:{self.image_tag}"
        if part in LIGHT_PARTS or (part == "drift" and drift_backend == "scipy"):
            return f"{self.inference_image}:{self.image_tag}"
        return f"{self.image}:{self.image_tag}"
