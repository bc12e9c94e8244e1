"""The import Job: `spec.model.initial`, a model made elsewhere, becomes version 1.

When the spec names an initial model, the operator runs the trainer's own command,
`python -m driftline.trainer import <uri> ... --if-no-version`, once, as a Job with
the parts' image: the same code path as `driftline import` on a laptop. The command
itself asks the registry whether a champion exists and then imports nothing (exit 0),
so the Job is safe to run again and the operator never reads the registry to decide.

The Job's name carries a hash of `spec.model.initial`: a Job's pod template cannot
change, so a changed initial model is a new Job (the old one is pruned), which again
does nothing once the model has a version. Its pod runs under the restricted Pod
Security Standard like every part, with its own ServiceAccount (a cloud role that
reads the model's bucket binds to it) and a NetworkPolicy that takes no traffic in and
lets out what the trainer's does (DNS, the spec's endpoints, MLflow and its artifact
store) and the ports of the model's and sample's URIs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from driftline.api.parts import TRAINER
from driftline.common.import_command import import_arguments
from driftline.operator.builders.context import (
    BuildContext,
    child_name,
    metadata,
    part_labels,
    part_selector,
)
from driftline.operator.builders.network import DNS_PORT, egress_ports, url_port
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

COMPONENT = "import"
BACKOFF_LIMIT = 3
DEADLINE_SECONDS = 3600
WORK_DIR = "/tmp/driftline-import"
REFUSED_EXIT_CODE = 2
"""The import command's exit status for input it refuses (`driftline.trainer.__main__`)."""


def _wanted(ctx: BuildContext) -> bool:
    return ctx.model.spec.model.initial is not None


def import_job_name(ctx: BuildContext) -> str:
    initial = ctx.model.spec.model.initial
    assert initial is not None
    # Fields added later are left out while unset, so a Job's name survives an upgrade.
    fields = initial.model_dump(
        mode="json", exclude={"signature"} if not initial.signature else None
    )
    text = json.dumps(fields, sort_keys=True)
    return child_name(ctx.name, f"import-{hashlib.sha256(text.encode()).hexdigest()[:8]}")


def import_service_account(ctx: BuildContext) -> dict[str, Any] | None:
    if not _wanted(ctx):
        return None
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(ctx, child_name(ctx.name, COMPONENT), part_labels(ctx, COMPONENT)),
        "automountServiceAccountToken": False,
    }


def import_policy(ctx: BuildContext) -> dict[str, Any] | None:
    """No ingress; the trainer's egress and the URIs' ports."""
    initial = ctx.model.spec.model.initial
    if initial is None:
        return None
    ports = set(egress_ports(ctx, TRAINER))
    for uri in (initial.uri, initial.sample):
        port = url_port(uri) if uri is not None else None
        if port is not None:
            ports.add(port)
    egress = [
        {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]},
        {"ports": [{"protocol": "TCP", "port": p} for p in sorted(ports)]},
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


def import_job(ctx: BuildContext) -> dict[str, Any] | None:
    initial = ctx.model.spec.model.initial
    if initial is None:
        return None
    prefix = TRAINER.env_prefix
    env = {
        f"{prefix}MODEL_FILE": f"{CONFIG_DIR}/{MODEL_FILE_NAME}",
        f"{prefix}LOG_LEVEL": ctx.settings.part_log_level,
        f"{prefix}{TRAINER.data_setting}": WORK_DIR,
        "HOME": "/tmp",  # the root filesystem is read-only; caches go to /tmp
    }
    # The model's signature is checked, and the imported version signed, as the spec says.
    signing_volumes_, signing_mounts = signing_volumes(ctx, verify=True, key=True)
    container = {
        "name": COMPONENT,
        "image": ctx.settings.image_for(inference=False),
        "imagePullPolicy": ctx.settings.image_pull_policy,
        "command": [
            "python",
            "-m",
            TRAINER.module,
            "import",
            *import_arguments(initial),
        ],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "resources": resources(ctx, TRAINER),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",  # status quotes the error
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
        *signing_volumes_,
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(ctx, import_job_name(ctx), part_labels(ctx, COMPONENT)),
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            # Exit 2 is a refusal (wrong format, untrusted pickle, a sample that does
            # not fit): another try cannot help. Anything else (a registry that is
            # down) is tried again, up to the backoff limit.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": COMPONENT,
                            "operator": "In",
                            "values": [REFUSED_EXIT_CODE],
                        },
                    }
                ]
            },
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
    }
