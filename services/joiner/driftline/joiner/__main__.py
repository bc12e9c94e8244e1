"""`python -m driftline.joiner`: the feedback joiner as a process.

Settings come from `DRIFTLINE_JOINER_*` (see `settings.py`); `/metrics`, `/healthz`
and `/readyz` are served on `DRIFTLINE_JOINER_METRICS_PORT`. SIGTERM (and Ctrl-C)
finish the batch in hand, commit it and leave the consumer group: exit status 0.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from types import FrameType

from driftline.common.health import Heartbeat, serve_health
from driftline.common.logs import configure_logging
from driftline.joiner.settings import JoinerSettings
from driftline.joiner.worker import JoinerWorker

log = logging.getLogger("driftline.joiner")


def main() -> int:
    settings = JoinerSettings()  # model_file and the rest come from the environment
    configure_logging("joiner", settings.log_level)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("%s: finishing the batch in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    heartbeat = Heartbeat()
    serve_health(settings.metrics_port, heartbeat)
    worker = JoinerWorker(settings, heartbeat)
    # Every batch makes thousands of short-lived objects, and each full collection
    # would walk everything the imports and clients made too: freeze those once
    # (they live as long as the process), so collections see the batches only.
    gc.freeze()
    worker.run(stop)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
