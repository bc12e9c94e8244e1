"""`python -m driftline.drift`: the drift monitor of one DynamicModel.

Reads `DRIFTLINE_DRIFT_MODEL_FILE` (the DynamicModel YAML) and the endpoint overrides
from the environment; SIGTERM or SIGINT stops it after the batch in hand (exit 0).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from pydantic import ValidationError

from driftline.api import SpecError
from driftline.common.logs import configure_logging
from driftline.common.registry import configure_mlflow
from driftline.drift.settings import DriftSettings

log = logging.getLogger("driftline.drift")


def main() -> int:
    try:
        settings = DriftSettings()  # from the environment
        model = settings.model
    except (ValidationError, SpecError) as exc:
        print(f"driftline drift: cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging("drift", settings.log_level)
    configure_mlflow()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the batch in hand", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    from driftline.drift.worker import DriftWorker

    log.info("drift monitor for %s/%s starting", model.metadata.namespace, model.name)
    DriftWorker(settings).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
