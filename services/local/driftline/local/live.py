"""The demo's live view in the terminal (rich), or a line every few seconds in a log."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Self


class LiveView:
    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._live: Any = None
        self._last = 0.0

    def __enter__(self) -> Self:
        if sys.stdout.isatty():
            from rich.live import Live

            self._live = Live(refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def update(self, watcher: Any) -> None:
        s = watcher.status
        routing, rollout, drift = s.get("routing"), s.get("rollout"), s.get("drift")
        cells = {
            "t": f"{s.get('t', 0):5.0f} s",
            "phase": s.get("phase", ""),
            "stable": getattr(routing, "stable", None) or "-",
            "candidate": getattr(routing, "candidate", None) or "-",
            "mode": f"{getattr(routing, 'mode', '-')} {getattr(routing, 'weight', 0)}%",
            "rollout": getattr(rollout, "stage", "-"),
            "drift": f"{drift.kind} ({drift.detector})" if drift else "-",
            "served acc": _pct(s.get("served_accuracy")),
            "baseline acc": _pct(s.get("baseline_accuracy")),
        }
        if self._live is not None:
            from rich.table import Table

            table = Table(title=f"Driftline demo: {watcher.scenario}", show_header=True)
            for key in cells:
                table.add_column(key)
            table.add_row(*cells.values())
            reason = getattr(rollout, "reason", "")
            table.caption = f"rollout: {reason}" if reason else None
            self._live.update(table)
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            print("  ".join(f"{k}={v}" for k, v in cells.items()), flush=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
