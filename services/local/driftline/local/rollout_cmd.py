"""`driftline rollout approve|abort`: a person's decision, handed to the rollout driver.

The driver reads one queued command per tick from Redis (`RolloutStore.command_key`)
and ignores a command meant for another candidate, so the command names the
candidate it was given for: the one rolling out now unless `--version` says otherwise.
Approve advances a `manual` rollout past its current stage; abort rolls back any
rollout at its next tick.

On a cluster (`--model NAME`, with `--namespace` and `--context`) the same decision is
written as annotations on the DynamicModel, which the operator hands to the rollout
and removes (`driftline.operator.rollout_commands`): the user needs the right to patch
the model, never to write to Redis. Without `--version` it applies to the candidate
rolling out when the operator reads it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from driftline.api.resource import rollout_annotations
from driftline.api.spec import GROUP, PLURAL, VERSION
from driftline.local.runtime import RuntimeInfo
from driftline.rollout.snapshot import Command
from driftline.rollout.store import RolloutStore, read_rollout


class NoRolloutError(Exception):
    """There is no candidate rolling out to approve or abort."""


def send_rollout_command(
    info: RuntimeInfo,
    action: Literal["approve", "abort"],
    version: str | None = None,
    reason: str = "",
) -> Command:
    """Queues `action` for the running rollout's candidate (or `version`); returns it."""
    import redis

    client = redis.Redis.from_url(info.redis_url, socket_timeout=5)
    try:
        state = read_rollout(client, info.namespace, info.model)
        if version is None:
            if state is None or not state.active or state.candidate is None:
                stage = state.stage if state is not None else "no rollout yet"
                raise NoRolloutError(f"no candidate is rolling out ({stage})")
            version = state.candidate
        command = Command(action=action, version=version, reason=reason or f"{action} from CLI")
        RolloutStore(info.namespace, info.model).send_command(client, command)
        return command
    finally:
        client.close()


def annotate_on_cluster(
    name: str,
    namespace: str,
    action: Literal["approve", "abort"],
    version: str | None = None,
    reason: str = "",
    context: str | None = None,
) -> dict[str, str]:
    """Writes the decision as annotations on the DynamicModel; returns them."""
    try:
        from kubernetes import client, config
    except ImportError as exc:
        raise NoRolloutError(
            "--model needs the Kubernetes client: pip install 'driftline[operator]'"
        ) from exc
    from kubernetes.client.exceptions import ApiException

    try:
        config.load_kube_config(context=context)  # type: ignore[no-untyped-call]
    except Exception as exc:  # no kubeconfig, an unknown context: say which
        raise NoRolloutError(f"no cluster to talk to: {exc}") from exc
    annotations = rollout_annotations(action, version, reason or f"{action} from CLI")
    with client.ApiClient() as api:
        try:
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": annotations}}
            )
        except ApiException as exc:
            raise NoRolloutError(
                f"dynamicmodel {namespace}/{name}: {exc.status} {exc.reason}"
            ) from exc
    return annotations


def run(state_dir: Path, action: Literal["approve", "abort"], version: str | None,
        reason: str, model: str | None = None, namespace: str = "default",
        context: str | None = None) -> int:  # fmt: skip
    if model is not None:
        try:
            annotate_on_cluster(model, namespace, action, version, reason, context)
        except NoRolloutError as exc:
            print(f"driftline rollout: {exc}", file=sys.stderr)
            return 1
        target = f"version {version}" if version else "the candidate rolling out"
        print(f"{action} of {target} written on dynamicmodel {namespace}/{model}")
        return 0
    try:
        info = RuntimeInfo.read(state_dir)
        command = send_rollout_command(info, action, version, reason)
    except (FileNotFoundError, NoRolloutError) as exc:
        print(f"driftline rollout: {exc}", file=sys.stderr)
        return 1
    print(f"{action} queued for version {command.version}: the next rollout tick takes it")
    return 0
