"""Run a server command and take its whole process group down with it.

    python -m driftline.local.servers.guard -- mlflow server ...

Some servers start their own children (`mlflow server` runs uvicorn in a child
process). The kernel's parent-death signal reaches only a direct child, so a
grandchild would outlive a parent that was killed with SIGKILL. The guard is the
direct child: it receives SIGTERM when the parent dies (or when `stop()` is
called) and then ends every process of its group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from types import FrameType


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m driftline.local.servers.guard -- COMMAND...", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv)

    def shutdown(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)
        os.killpg(0, signal.SIGKILL)  # what is left, the guard included

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
