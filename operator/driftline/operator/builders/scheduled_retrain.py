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

from driftline.operator.builders.context import BuildContext, child_name, metadata, part_labels
from driftline.operator.builders.trainer_jobs import network_policy, pod_template, service_account

COMPONENT = "retrain"
BACKOFF_LIMIT = 2
DEADLINE_SECONDS = 3 * 3600
HISTORY_LIMIT = 3
WORK_DIR = "/tmp/driftline-retrain"


def _wanted(ctx: BuildContext) -> bool:
    return ctx.model.spec.training.mode == "scheduled"


def retrain_service_account(ctx: BuildContext) -> dict[str, Any] | None:
    return service_account(ctx, COMPONENT) if _wanted(ctx) else None


def retrain_policy(ctx: BuildContext) -> dict[str, Any] | None:
    """No ingress; the trainer's egress."""
    return network_policy(ctx, COMPONENT) if _wanted(ctx) else None


def retrain_cron_job(ctx: BuildContext) -> dict[str, Any] | None:
    if not _wanted(ctx):
        return None
    # A version it registers is signed when the spec names a signing key.
    template = pod_template(ctx, COMPONENT, ["retrain"], WORK_DIR, verify_signatures=False)
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
                    "template": template,
                },
            },
        },
    }
