"""One way for tests to wait: poll a condition until it holds or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "",
    interval: float = 0.2,
    on_timeout: Callable[[], None] | None = None,
) -> Any:
    """Polls `condition` every `interval` seconds and returns its first truthy value;
    after `timeout` seconds calls `on_timeout` (to record where things were stuck)
    and fails with `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    if on_timeout is not None:
        on_timeout()
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or condition}")
