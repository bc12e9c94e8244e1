"""Settings of the inference process, read once from the environment (`DRIFTLINE_INFERENCE_*`).

The DynamicModel (`..._MODEL_FILE`) says what to serve and how to batch and cache;
these settings say how this process runs: where it listens, how many workers and
threads, the limits that protect it, and the knobs of its background work.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftline.common.connections import RedisConnection
from driftline.common.settings import PartSettings

ProviderChoice = Literal["auto", "cpu", "cuda", "tensorrt"]
ExecutionMode = Literal["auto", "inline", "thread"]


class InferenceSettings(PartSettings):
    """Everything the inference process needs besides the DynamicModel itself."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_INFERENCE_", extra="ignore", frozen=True
    )

    host: str = Field(default="0.0.0.0", description="Address the HTTP server binds.")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port (0: any free port).")
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the Open Inference Protocol's gRPC service "
        "(inference.GRPCInferenceService), served beside HTTP on the same host by the same "
        "process, routes and batches. Unset: no gRPC; 0: any free port.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Server processes sharing the port; each holds its own sessions. "
        "In Kubernetes prefer one worker per pod and scale pods.",
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Larger request bodies are refused with 413 before parsing.",
    )
    max_rows: int = Field(default=4096, ge=1, description="Most rows one request may carry.")
    keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        le=3600,
        description="How long an idle HTTP connection stays open. Longer than the idle "
        "timeout of what sits in front (load balancers and ingresses keep 60 s): a server "
        "that closes first races a request sent on the connection it is closing, and the "
        "client sees a reset instead of an answer.",
    )
    drain_timeout_seconds: float = Field(
        default=20.0, ge=0, description="SIGTERM: longest wait for in-flight requests."
    )
    shutdown_delay_seconds: float = Field(
        default=0.0,
        ge=0,
        description="SIGTERM: keep serving this long with readiness 503 before closing the "
        "listener, so load balancers stop sending first.",
    )

    # --- model runtime -------------------------------------------------------------------
    model_version: str | None = Field(
        default=None,
        description="Serve this registered version instead of following the routing table "
        "(pinned deployments, debugging).",
    )
    providers: ProviderChoice = Field(
        default="auto",
        description="ONNX Runtime execution providers: auto picks TensorRT, then CUDA, "
        "then CPU from what this machine has.",
    )
    intra_op_threads: int = Field(
        default=0, ge=0, le=256, description="ONNX Runtime threads per run; 0: the CPUs we may use."
    )
    execution: ExecutionMode = Field(
        default="auto",
        description="Where a batch runs: inline on the event loop (cheapest for small models), "
        "in a worker thread (large models, GPUs), or auto by the measured batch time.",
    )
    inline_max_ms: float = Field(
        default=2.0,
        gt=0,
        description="auto: a model whose full batch runs within this many ms runs inline.",
    )
    model_dir: str | None = Field(
        default=None, description="Where downloaded models are kept (default: a temp dir)."
    )
    alias_poll_seconds: float = Field(
        default=5.0, gt=0, description="Without a routing table: how often `champion` is re-read."
    )
    routing_poll_seconds: float = Field(
        default=1.0, gt=0, le=1.0, description="Routing table poll (beside pub/sub)."
    )
    load_retry_seconds: float = Field(
        default=10.0, gt=0, description="First wait before a failed load is tried again."
    )
    load_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="Cap of the doubling wait between load attempts."
    )
    unload_grace_seconds: float = Field(
        default=5.0, ge=0, description="A version leaving the table is unloaded after this long."
    )

    # --- side effects ----------------------------------------------------------------------
    prediction_log: bool = Field(default=True, description="Send every prediction to Kafka.")
    log_buffer: int = Field(
        default=100_000, ge=100, description="Predictions held for Kafka before dropping."
    )
    log_flush_ms: float = Field(
        default=5.0, gt=0, le=1000, description="How often the buffer drains."
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Where the prediction log spools predictions while Kafka cannot take "
        "them (one subdirectory per worker), replayed in order when it is back and after a "
        "restart. Unset: no spool; what the buffer cannot hold is dropped and counted.",
    )
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Cap of the spool (per worker); past it the oldest predictions are "
        "shed and counted. Keep it under the volume's size.",
    )
    spool_fsync: Literal["off", "segment", "interval", "always"] = Field(
        default="interval",
        description="When the spool is synced to disk: every write (always), every "
        "SPOOL_FSYNC_MS (interval), when a segment is full (segment), or never (off). A "
        "killed process loses nothing either way; this bounds what a machine crash takes.",
    )
    spool_fsync_ms: float = Field(default=1000.0, gt=0, description="`interval`: how often.")
    log_stall_ms: float = Field(
        default=2000.0,
        gt=0,
        description="With a spool: a prediction unacknowledged this long means the broker "
        "is away; the log spools from then on.",
    )
    create_topics: bool = Field(
        default=True,
        description="Create the predictions and outcomes topics at start when they are missing.",
    )
    outcome_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="The outcomes route waits this long for Kafka to acknowledge every "
        "outcome; what is not acknowledged by then is answered 503.",
    )
    stats_flush_seconds: float = Field(
        default=1.0, gt=0, description="Serving stats go to Redis this often (one pipeline)."
    )
    cache_timeout_ms: float = Field(
        default=50.0, gt=0, description="A cache call slower than this counts as a failure."
    )
    cache_retry_seconds: float = Field(
        default=5.0, gt=0, description="After a cache failure, serve without it this long."
    )
    feature_source_timeout_ms: float = Field(
        default=100.0,
        gt=0,
        description="Reading a batch's per-entity aggregates (or Feast features) slower "
        "than this counts as the store unavailable (source.onUnavailable applies).",
    )
    feast_redis_url: str | None = Field(
        default=None,
        description="Overrides spec.feast.redis.url: Feast's Redis online store "
        "(redis://...), read for features with source.feast.",
    )
    redis_timeout_seconds: float = Field(
        default=1.0, gt=0, description="Socket timeout of the routing and stats connections."
    )

    @cached_property
    def feast_connection(self) -> RedisConnection | None:
        """Feast's online store: this process's override, else spec.feast.redis, with
        the credentials mounted under `secrets_dir`/feast; None: the model's own Redis
        (spec.redis) holds Feast's features too."""
        store = self.model.spec.feast
        url = self.feast_redis_url or (store.redis.url if store is not None else None)
        if url is None:
            return None
        return RedisConnection.from_secrets(url, self.secrets_dir / "feast")
