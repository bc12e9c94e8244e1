"""`driftline rollout approve|abort`: a person's decision, handed to the rollout driver.

The driver reads one queued command per tick from Redis (`RolloutStore.command_key`)
and ignores a command meant for another candidate, so the command names the
candidate it was given for: the one rolling out now unless `--version` says otherwise.
Approve advances a `manual` rollout past its current stage; abort rolls back any
rollout at its next tick.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

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


def run(state_dir: Path, action: Literal["approve", "abort"], version: str | None,
        reason: str) -> int:  # fmt: skip
    try:
        info = RuntimeInfo.read(state_dir)
        command = send_rollout_command(info, action, version, reason)
    except (FileNotFoundError, NoRolloutError) as exc:
        print(f"driftline rollout: {exc}", file=sys.stderr)
        return 1
    print(f"{action} queued for version {command.version}: the next rollout tick takes it")
    return 0
