"""`driftline status`: the loop of a local run at a glance.

Reads only what the parts publish for each other (the routing table, live quality,
serving stats and the latest drift event in Redis), so it shows what the rollout
controller sees, not a second opinion.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from driftline.api import SpecError, load_dynamic_model
from driftline.api.events import DriftEvent
from driftline.api.routing import RoutingTable
from driftline.api.spec import DriftSpec
from driftline.common.redis_state import (
    QualityStore,
    RoutingStore,
    ServingStore,
    drift_key,
    drift_reference_key,
)
from driftline.local.runtime import RuntimeInfo, default_state_dir
from driftline.rollout.rollout_state import RolloutState
from driftline.rollout.store import read_rollout

WINDOW_SECONDS = 300


@dataclass(frozen=True)
class VariantLine:
    variant: str
    version: str
    labeled: int
    accuracy: float | None
    requests: int
    p99_ms: float | None
    error_rate: float | None


@dataclass(frozen=True)
class Snapshot:
    routing: RoutingTable | None
    drift: DriftEvent | None
    variants: list[VariantLine]
    rollout: RolloutState | None = None
    reference: str = ""
    """Where the drift monitor's reference comes from (its note in Redis)."""


def read_snapshot(info: RuntimeInfo, window_seconds: float = WINDOW_SECONDS) -> Snapshot:
    import redis

    client = redis.Redis.from_url(info.redis_url, socket_timeout=2)
    try:
        routing = RoutingStore(info.namespace, info.model).read(client)
        raw_drift = client.get(drift_key(info.namespace, info.model))
        drift = msgspec.json.decode(raw_drift, type=DriftEvent) if raw_drift else None
        note = client.get(drift_reference_key(info.namespace, info.model))
        reference = note.decode(errors="replace") if note else ""
        quality = QualityStore(info.namespace, info.model)
        serving = ServingStore(info.namespace, info.model)
        lines: list[VariantLine] = []
        if routing is not None:
            pairs = [("stable", routing.stable), ("baseline", routing.baseline)]
            if routing.candidate:
                pairs.append(
                    ("candidate" if routing.mode == "canary" else "shadow", routing.candidate)
                )
            for variant, version in pairs:
                if version is None:
                    continue
                q = quality.read(client, version, variant, window_seconds)
                s = serving.read(client, version, variant, window_seconds)
                lines.append(
                    VariantLine(
                        variant=variant,
                        version=version,
                        labeled=q.count,
                        accuracy=q.accuracy,
                        requests=s.requests,
                        p99_ms=s.quantile_ms(0.99),
                        error_rate=s.error_rate,
                    )
                )
        rollout = read_rollout(client, info.namespace, info.model)
        return Snapshot(routing, drift, lines, rollout, reference)
    finally:
        client.close()


def drift_line(event: DriftEvent | None, on_drift: Sequence[str], now: float) -> str:
    """The `drift` line: the last drift alert, when `drift.onDrift` asks for alerts."""
    if "alert" not in on_drift:
        return f"drift: no alerts (drift.onDrift: {', '.join(on_drift) or 'none'})"
    if event is None:
        return "drift alert: none yet"
    ago = max(0.0, now - event.detected_at)
    return (
        f"drift alert: [red]{event.kind}[/red] by {event.detector} score {event.score:.3g} "
        f"features {', '.join(event.features) or '-'} ({_ago(ago)} ago, "
        f"version {event.model_version})"
    )


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _on_drift(info: RuntimeInfo) -> list[str]:
    """`drift.onDrift` of the running model (the spec's default when the file is gone)."""
    try:
        return list(load_dynamic_model(info.model_file).spec.drift.on_drift)
    except (OSError, SpecError):
        return list(DriftSpec().on_drift)


def _first_run(info: RuntimeInfo) -> list[str]:
    """What to do when nothing is registered (nothing when the model file is gone)."""
    from driftline.local.first_run import next_steps, serves_nothing_yet

    try:
        model = load_dynamic_model(info.model_file)
    except (OSError, SpecError):
        return []
    if not serves_nothing_yet(info.mlflow_tracking_uri, model.spec.model.registry.name):
        return []
    return next_steps(model, info.model_file, info.mlflow_tracking_uri)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def find_state_dir(model_file: Path | None, state_dir: Path | None) -> Path | None:
    """The state directory of a local run: given, the model's, or the only one here."""
    if state_dir is not None:
        return state_dir
    if model_file is not None:
        return default_state_dir(load_dynamic_model(model_file))
    runs = sorted(Path(".driftline").glob("*/runtime.json"))
    if len(runs) != 1:
        print(f"give -f MODEL.yaml or --state-dir (found {len(runs)} runs)", file=sys.stderr)
        return None
    return runs[0].parent


def print_status(model_file: Path | None, state_dir: Path | None) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    state_dir = find_state_dir(model_file, state_dir)
    if state_dir is None:
        return 2
    try:
        info = RuntimeInfo.read(state_dir)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    snap = read_snapshot(info)

    console.print(f"[bold]{info.namespace}/{info.model}[/bold]  inference {info.inference_url}")
    if snap.routing is None:
        console.print("routing: none yet (no model published)")
    else:
        r = snap.routing
        console.print(
            f"routing: stable [green]{r.stable}[/green]  candidate {r.candidate or '-'}  "
            f"mode {r.mode}  weight {r.weight}%  baseline {r.baseline or '-'}  (rev {r.revision})"
        )
    if snap.routing is None or snap.routing.stable is None:
        for step in _first_run(info):
            console.print(step, markup=False, highlight=False, soft_wrap=True)
    if snap.rollout is not None and snap.rollout.stage != "idle":
        ro = snap.rollout
        console.print(
            f"rollout: {ro.stage}  candidate {ro.candidate or '-'}  weight {ro.weight}%  "
            f"{ro.reason}".rstrip()
        )
    console.print(drift_line(snap.drift, _on_drift(info), time.time()))
    if snap.reference:
        console.print(f"drift reference: {snap.reference}")

    table = Table(title=f"live, last {WINDOW_SECONDS // 60} min")
    for col in ("variant", "version", "labeled", "accuracy", "requests", "p99 ms", "errors"):
        table.add_column(col)
    for line in snap.variants:
        table.add_row(
            line.variant, line.version, str(line.labeled), _fmt(line.accuracy, ".3f"),
            str(line.requests), _fmt(line.p99_ms, "g"), _fmt(line.error_rate, ".2%"),
        )  # fmt: skip
    console.print(table)

    parts = Table(title="parts")
    parts.add_column("part")
    parts.add_column("pid")
    parts.add_column("state")
    for name, pid in info.pids.items():
        parts.add_row(name, str(pid), "running" if _alive(pid) else "[red]gone[/red]")
    console.print(parts)
    return 0
