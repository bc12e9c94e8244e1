"""The trainer's one-off runs: the import of `spec.model.initial` (a Job) and the
scheduled retrain (a CronJob's Job).

Both run one of the trainer's own commands with the parts' image and the trainer's
resources and scheduling, under the restricted Pod Security Standard, with a
ServiceAccount of their own (a cloud role that reads the model's bucket binds to it)
and a NetworkPolicy that takes no traffic in and lets out what the trainer's does,
plus the ports a run needs besides. Both sign what they register when the spec names
a signing key; the import also checks the signature of what it reads.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    signing_volumes,
)


def service_account(ctx: BuildContext, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(ctx, child_name(ctx.name, component), part_labels(ctx, component)),
        "automountServiceAccountToken": False,
    }


def network_policy(
    ctx: BuildContext, component: str, extra_ports: Iterable[int] = ()
) -> dict[str, Any]:
    """No ingress; DNS, the trainer's egress and `extra_ports`."""
    ports = sorted(set(egress_ports(ctx, TRAINER)) | set(extra_ports))
    egress = [
        {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]},
        {"ports": [{"protocol": "TCP", "port": p} for p in ports]},
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(ctx, child_name(ctx.name, component), part_labels(ctx, component)),
        "spec": {
            "podSelector": {"matchLabels": part_selector(ctx, component)},
            "policyTypes": ["Ingress", "Egress"],
            "egress": egress,
        },
    }


def pod_template(
    ctx: BuildContext,
    component: str,
    args: list[str],
    work_dir: str,
    *,
    verify_signatures: bool,
) -> dict[str, Any]:
    """The pod of one run of `python -m driftline.trainer <args>`, never restarted in
    place (the Job retries). Its container ends with its last log lines as the
    termination message, so a failure can be quoted in status."""
    prefix = TRAINER.env_prefix
    env = {
        f"{prefix}MODEL_FILE": f"{CONFIG_DIR}/{MODEL_FILE_NAME}",
        f"{prefix}LOG_LEVEL": ctx.settings.part_log_level,
        f"{prefix}{TRAINER.data_setting}": work_dir,
        "HOME": "/tmp",  # the root filesystem is read-only; caches go to /tmp
    }
    signing, signing_mounts = signing_volumes(ctx, verify=verify_signatures, key=True)
    container = {
        "name": component,
        "image": ctx.settings.image_for(TRAINER.name),
        "imagePullPolicy": ctx.settings.image_pull_policy,
        "command": ["python", "-m", TRAINER.module, *args],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "resources": resources(ctx, TRAINER),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *signing_mounts,
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
        *signing,
    ]
    return {
        "metadata": {"labels": part_labels(ctx, component)},
        "spec": {
            "serviceAccountName": child_name(ctx.name, component),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "restartPolicy": "Never",
            "securityContext": pod_security_context(),
            "containers": [container],
            "volumes": volumes,
            **scheduling(ctx, TRAINER),
        },
    }
