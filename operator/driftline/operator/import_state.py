"""What became of the import Job of `spec.model.initial`, in one status a user can act on.

A failed import leaves a model whose parts are all up and whose inference answers
every request with "no model version is loaded yet"; without this the only trace is
a Job somewhere in the namespace. The Job's container ends with
`terminationMessagePolicy: FallbackToLogsOnError`, so the import's own last words
(the error it printed) are on the failed Pod, and status quotes them.

An import that exits 2 was refused (a file that is not the format it claims, an
untrusted pickle, a sample that does not fit): trying again cannot help, so the Job's
pod failure policy fails it at once instead of after `backoffLimit` retries.

A pure function of the Job and its Pods, like `part_problems`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from driftline.api.status import InitialImportStatus

MAX_MESSAGE = 1000
"""Of a container's last words: their end, where the error is."""
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def import_state(job: dict[str, Any], pods: Iterable[dict[str, Any]]) -> InitialImportStatus:
    name = job.get("metadata", {}).get("name", "?")
    status = job.get("status") or {}
    conditions = {
        c.get("type"): c for c in status.get("conditions", []) if c.get("status") == "True"
    }
    if "Complete" in conditions or int(status.get("succeeded", 0)) > 0:
        return InitialImportStatus(job=name, state="Succeeded")
    last_words = _last_failure(pods)
    failed = conditions.get("Failed")
    if failed is not None:
        reason = failed.get("reason") or "Failed"
        said = failed.get("message") or ""
        head = f"{reason}: {said}".rstrip(": ")
        return InitialImportStatus(
            job=name, state="Failed", message=f"{head}; {last_words}" if last_words else head
        )
    attempts = int(status.get("failed", 0))
    message = f"{attempts} failed attempt(s), last: {last_words}" if attempts and last_words else ""
    return InitialImportStatus(job=name, state="Running", message=message)


def _last_failure(pods: Iterable[dict[str, Any]]) -> str:
    """The most recent failed container's exit code and termination message."""
    ended: list[tuple[str, str]] = []
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses", []):
            done = (container.get("state") or {}).get("terminated") or {}
            if not done or done.get("exitCode", 0) == 0:
                continue
            words = _short(" ".join(str(done.get("message") or done.get("reason") or "").split()))
            text = f"exit {done.get('exitCode')}" + (f": {words}" if words else "")
            ended.append((str(done.get("finishedAt") or ""), text))
    return max(ended)[1] if ended else ""


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else "..." + text[-(MAX_MESSAGE - 3) :]
