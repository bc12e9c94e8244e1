"""`python -m driftline.rollout`: the rollout controller as a process.

Reads `DRIFTLINE_ROLLOUT_MODEL_FILE` (the DynamicModel YAML) and the endpoint
overrides, ticks the driver every `DRIFTLINE_ROLLOUT_TICK_SECONDS`, serves
`/metrics`, `/healthz`, `/readyz` on `DRIFTLINE_ROLLOUT_METRICS_PORT`, and stops
cleanly on SIGTERM or SIGINT: the tick in hand finishes, queued events are flushed,
exit 0. The local runtime starts it this way; the operator runs the same driver from
a timer instead.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType

from pydantic import ValidationError

from driftline.api import SpecError
from driftline.common.health import Heartbeat, serve_health
from driftline.common.logs import configure_logging
from driftline.common.registry import configure_mlflow
from driftline.rollout.driver import build
from driftline.rollout.settings import RolloutSettings

log = logging.getLogger("driftline.rollout")


def main() -> int:
    try:
        settings = RolloutSettings()
        model = settings.model
    except (ValidationError, SpecError, OSError) as exc:
        print(f"driftline rollout: cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging("rollout", settings.log_level)
    # Read by the MLflow client on each call: a tick must not hang on an unreachable
    # registry for minutes of retries; the next tick retries anyway.
    configure_mlflow(settings.registry_timeout_seconds, settings.registry_retries)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current tick", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    heartbeat = Heartbeat(timeout_seconds=max(60.0, 10 * settings.tick_seconds))
    driver = build(settings)
    server = serve_health(settings.metrics_port, heartbeat, ready=lambda: driver.ready)
    heartbeat.ready = True  # readiness then follows the driver (`ready` above)
    log.info(
        "rollout controller for %s/%s: strategy %s, tick %gs",
        model.metadata.namespace,
        model.name,
        driver.policy.strategy,
        settings.tick_seconds,
    )
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                driver.tick()
                heartbeat.beat()
            except Exception:  # a bug in one tick is logged; liveness fails if it repeats
                log.exception("rollout tick failed")
            stop.wait(max(0.0, settings.tick_seconds - (time.monotonic() - started)))
    finally:
        driver.close()
        if server is not None:
            server.shutdown()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
