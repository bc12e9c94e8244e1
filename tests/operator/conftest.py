"""Models and build contexts shared by the operator's unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from driftline.api import DynamicModel, load_dynamic_model, parse_dynamic_model
from driftline.operator.builders import BuildContext, Capabilities, KafkaAuth
from driftline.operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"
GOLDEN = Path(__file__).resolve().parent / "golden"
UID = "6b1f3a52-0c1d-4e8e-9d7a-3f1b2c4d5e6f"

ALL = Capabilities(keda=True, prometheus_operator=True, karpenter=True)
# KEDA with its HTTP add-on: every part may scale to zero.
ALL_HTTP = Capabilities(keda=True, keda_http=True, prometheus_operator=True, karpenter=True)
SASL_TLS = KafkaAuth(secret="kafka-sasl", sasl="scram_sha512", tls=True, has_ca=True)


def sample(name: str, **spec_changes: Any) -> DynamicModel:
    """A sample DynamicModel with a fixed uid, its spec changed by dotted paths."""
    manifest = load_dynamic_model(SAMPLES / f"{name}.yaml").to_manifest()
    manifest["metadata"] |= {"uid": UID, "generation": 1}
    manifest["metadata"].setdefault("namespace", "default")
    for path, value in spec_changes.items():
        node = manifest["spec"]
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_dynamic_model(manifest)


def defaults() -> OperatorSettings:
    """Settings as the defaults say, whatever the test process's environment holds."""
    return OperatorSettings.model_construct()


def scenarios() -> dict[str, BuildContext]:
    """Each golden scenario: a model and what the cluster has installed."""
    settings = defaults()
    gpu_pool = {
        "nodeSelector": {"driftline.io/pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "karpenter": True,
    }
    return {
        # Everything defaulted; no optional APIs, no credentials.
        "minimal": BuildContext(sample("minimal"), settings),
        # The demo: fixed replicas, two partitions; gRPC beside REST.
        "sea-demo": BuildContext(sample("sea-demo", inference__grpc={"enabled": True}), settings),
        # GPU inference on a labelled, tainted pool; KEDA, Prometheus Operator; SASL over TLS.
        "fraud-detector": BuildContext(sample("fraud-detector"), settings, ALL, SASL_TLS),
        # Karpenter launches the GPU pool; HPA on GPU utilisation (DCGM).
        "gpu-karpenter": BuildContext(
            sample(
                "fraud-detector",
                inference__nodePool=gpu_pool,
                inference__resources={"cpu": "4", "memory": "16Gi", "gpu": 2},
                inference__autoscaling={"metric": "gpu", "target": 75},
            ),
            settings,
            ALL,
            SASL_TLS,
        ),
        # Idle parts scale to zero (inference through the HTTP add-on); GPUs capped;
        # the trainer on spot; a team that pays.
        "idle-spot": BuildContext(
            sample(
                "fraud-detector",
                inference__nodePool=gpu_pool,
                scaling={"idle": {"afterSeconds": 900}},
                cost={"team": "risk", "maxGpus": 6, "spotTrainer": True, "monthlyBudget": 2000},
            ),
            settings,
            ALL_HTTP,
            SASL_TLS,
        ),
        # Two trainer ranks: a StatefulSet with a claim per rank, a rendezvous port, ranks
        # that may reach each other.
        "trainer-workers": BuildContext(sample("sea-demo", training__workers=2), settings),
        # Scheduled retraining: a CronJob (cron from scheduleSeconds), no trainer Deployment.
        "scheduled": BuildContext(
            sample("minimal", training__mode="scheduled", training__scheduleSeconds=3600),
            settings,
        ),
        # Signed models: the verifying key mounted into inference and the import Job, the
        # signing key into the trainer and the import Job.
        "signed-models": BuildContext(
            sample(
                "fraud-detector",
                model__signing={
                    "publicKeySecretRef": {"name": "model-keys", "key": "public.pem"},
                    "required": True,
                    "signingKeySecretRef": {"name": "model-signer", "key": "private.pem"},
                },
            ),
            settings,
            ALL,
            SASL_TLS,
        ),
        # Features from Feast's own Redis: its credentials mounted into inference alone.
        "feast-store": BuildContext(sample("feast-features"), settings),
        # No KEDA: workers scale on CPU; training off: no trainer.
        "training-off": BuildContext(
            sample(
                "minimal",
                training__mode="off",
                kafka__partitions=6,
                inference__replicas={"min": 2, "max": 6},
                inference__autoscaling={"metric": "rps", "target": 150.5},
            ),
            settings,
        ),
    }


def dump(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=True, width=100)
