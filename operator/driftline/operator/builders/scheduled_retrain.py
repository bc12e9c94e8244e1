"""The retrain CronJob: `training.mode: scheduled` on Kubernetes.

A scheduled model has no trainer Deployment (`active_parts`): nothing learns between
retrains, so no process waits, holding torch and a checkpoint volume, for a timer. The
CronJob runs the trainer's own command, `python -m driftline.trainer retrain`, the one
`driftline up`'s timer runs: it reads the labeled topic's window, trains a fresh
network and, if it passes the gate, registers it as candidate; the rollout controller
takes it from there as it takes any candidate. Schedule: `training.schedule.cron`, or
`scheduleSeconds` as the nearest cron (`TrainingSpec.retrain_cron`). One run at a time
(`concurrencyPolicy: Forbid`); a failed run is retried by the Job, then by the next
schedule. Like the import Job it runs restricted, under its own ServiceAccount, with a
NetworkPolicy that takes no traffic in and lets out what the trainer's does.
"""

from __future__ import annotations

from typing import Any

from driftline.api.parts import TRAINER
from driftline.operator.builders.context import (
    BuildContext,
    child_name,
    metadata,
    part_labels,
    part_selector,
)
from driftline.operator.builders.network import DNS_PORT, egress_ports
from driftline.operator.builders.pods import (
    CONFIG_DIR,
    MODEL_FILE_NAME,
    config_map_name,
    container_security_context,
    pod_security_context,
    resources,
    scheduling,
)

COMPONENT = "retrain"
BACKOFF_LIMIT = 2
DEADLINE_SECONDS = 3 * 3600
HISTORY_LIMIT = 3
WORK_DIR = "/tmp/driftline-retrain"


def _wanted(ctx: BuildContext) -> bool:
    return ctx.model.spec.training.mode == "scheduled"


def retrain_service_account(ctx: BuildContext) -> dict[str, Any] | None:
    if not _wanted(ctx):
        return None
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(ctx, child_name(ctx.name, COMPONENT), part_labels(ctx, COMPONENT)),
        "automountServiceAccountToken": False,
    }


def retrain_policy(ctx: BuildContext) -> dict[str, Any] | None:
    """No ingress; the trainer's egress."""
    if not _wanted(ctx):
        return None
    egress = [
        {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]},
        {
            "ports": [
                {"protocol": "TCP", "port": p} for p in sorted(set(egress_ports(ctx, TRAINER)))
            ]
        },
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(ctx, child_name(ctx.name, COMPONENT), part_labels(ctx, COMPONENT)),
        "spec": {
            "podSelector": {"matchLabels": part_selector(ctx, COMPONENT)},
            "policyTypes": ["Ingress", "Egress"],
            "egress": egress,
        },
    }


def retrain_cron_job(ctx: BuildContext) -> dict[str, Any] | None:
    if not _wanted(ctx):
        return None
    prefix = TRAINER.env_prefix
    env = {
        f"{prefix}MODEL_FILE": f"{CONFIG_DIR}/{MODEL_FILE_NAME}",
        f"{prefix}LOG_LEVEL": ctx.settings.part_log_level,
        f"{prefix}{TRAINER.data_setting}": WORK_DIR,
        "HOME": "/tmp",  # the root filesystem is read-only; caches go to /tmp
    }
    container = {
        "name": COMPONENT,
        "image": ctx.settings.image_for(inference=False),
        "imagePullPolicy": ctx.settings.image_pull_policy,
        "command": ["python", "-m", TRAINER.module, "retrain"],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "resources": resources(ctx, TRAINER),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes = [
        {
            "name": "config",
            "configMap": {
                "name": config_map_name(ctx),
                "items": [{"key": MODEL_FILE_NAME, "path": MODEL_FILE_NAME}],
                "defaultMode": 0o444,
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": ctx.settings.trainer_resources.tmp}},
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(ctx, child_name(ctx.name, COMPONENT), part_labels(ctx, COMPONENT)),
        "spec": {
            "schedule": ctx.model.spec.training.retrain_cron(),
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": HISTORY_LIMIT,
            "failedJobsHistoryLimit": HISTORY_LIMIT,
            "jobTemplate": {
                "metadata": {"labels": part_labels(ctx, COMPONENT)},
                "spec": {
                    "backoffLimit": BACKOFF_LIMIT,
                    "activeDeadlineSeconds": DEADLINE_SECONDS,
                    "template": {
                        "metadata": {"labels": part_labels(ctx, COMPONENT)},
                        "spec": {
                            "serviceAccountName": child_name(ctx.name, COMPONENT),
                            "automountServiceAccountToken": False,
                            "enableServiceLinks": False,
                            "restartPolicy": "Never",
                            "securityContext": pod_security_context(),
                            "containers": [container],
                            "volumes": volumes,
                            **scheduling(ctx, TRAINER),
                        },
                    },
                },
            },
        },
    }
