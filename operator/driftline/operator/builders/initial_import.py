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

from driftline.common.import_command import import_arguments
from driftline.operator.builders.context import BuildContext, child_name, metadata, part_labels
from driftline.operator.builders.network import url_port
from driftline.operator.builders.trainer_jobs import network_policy, pod_template, service_account

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
    return service_account(ctx, COMPONENT) if _wanted(ctx) else None


def import_policy(ctx: BuildContext) -> dict[str, Any] | None:
    """No ingress; the trainer's egress and the URIs' ports."""
    initial = ctx.model.spec.model.initial
    if initial is None:
        return None
    uris = (initial.uri, initial.sample)
    ports = [p for p in (url_port(u) for u in uris if u is not None) if p is not None]
    return network_policy(ctx, COMPONENT, ports)


def import_job(ctx: BuildContext) -> dict[str, Any] | None:
    initial = ctx.model.spec.model.initial
    if initial is None:
        return None
    # The model's signature is checked, and the imported version signed, as the spec says.
    template = pod_template(
        ctx, COMPONENT, ["import", *import_arguments(initial)], WORK_DIR, verify_signatures=True
    )
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
            "template": template,
        },
    }
