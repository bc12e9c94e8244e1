"""Outages: Redis, the broker and MLflow stop answering in turn while the loop serves.

Each server is paused with SIGSTOP for a while and resumed: its connections hang,
the way a partition or a stalled host looks to a client (harder than a refused
connection, which fails fast). Throughout, the application's traffic flows and
its outcomes come back. What must hold:

- inference keeps answering from the models it holds (cache off; its prediction
  log spools to disk while the broker is away and replays it when it is back);
- no prediction is lost, the broker's outage included: every acknowledged outcome
  is one labeled example (the outage is far shorter than the join window, so no
  replayed prediction is too old to join), and nothing is counted as dropped;
- the joiner and the trainer resume when the dependency returns and lose nothing,
  and both consume their topics to the end;
- the rollout never promotes while Redis, its metrics source, is away: a rollout
  under way when Redis stops does not move the `champion` alias until it returns.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from driftline.inference.metrics import (
    PREDICTIONS_DROPPED_TOTAL,
    PREDICTIONS_REPLAYED_TOTAL,
    PREDICTIONS_SPOOLED_TOTAL,
)
from tests.chaos.loop import Loop, Paused
from tests.chaos.support import record, register_copy_candidate, scaled, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]


def _errors_in(log: Any, windows: list[tuple[float, float]]) -> tuple[int, int]:
    """(sent, failed) requests during the windows (run-seconds), a second of margin after."""
    sent = failed = 0
    for second, s in log.seconds.items():
        if any(a - 1 <= second <= b + 1 for a, b in windows):
            sent += s.sent
            failed += s.errors + s.shed
    return sent, failed


@pytest.mark.timeout(900)
def test_redis_broker_and_mlflow_outages_lose_nothing_and_promote_nothing(loop: Loop) -> None:
    # The long variant outlasts the Kafka client's delivery timeout (30 s): the
    # prediction log must keep what it could not deliver in its spool.
    outage = scaled(8, 40)
    registry = loop.model.spec.model.registry.name
    dropped_before = loop.inference_metric(PREDICTIONS_DROPPED_TOTAL)
    spooled_before = loop.inference_metric(PREDICTIONS_SPOOLED_TOTAL)
    replayed_before = loop.inference_metric(PREDICTIONS_REPLAYED_TOTAL)
    traffic = loop.traffic(rate=60)
    outages: dict[str, Paused] = {}
    try:
        time.sleep(5)
        # A rollout under way when Redis stops: a candidate as good as the champion.
        candidate = register_copy_candidate(loop.runtime.endpoints.mlflow_tracking_uri, registry)
        # This candidate, or a newer one the trainer published meanwhile.
        wait_for(
            lambda: any(
                t.mode != "stable"
                and t.candidate is not None
                and int(t.candidate) >= int(candidate)
                for _, t in loop.watch.tables
            ),
            180,
            f"a rollout of version {candidate} or newer",
        )
        for server in ("redis", "kafka", "mlflow"):
            with loop.pause(server) as paused:
                time.sleep(outage)
            outages[server] = paused
            loop.wait_all_ready(timeout=180)
            time.sleep(3)
    finally:
        log = traffic.stop()
    sent_at = traffic.delivered
    sent = set(sent_at)
    counts = loop.joined(set(sent), timeout=180)
    topics = [loop.model.topics.labeled]
    wait_for(lambda: loop.consumed_to_end("trainer", topics), 120, "the trainer")

    lost = sent - set(counts)
    unlogged = lost - loop.logged_predictions() if lost else set()
    dropped = loop.inference_metric(PREDICTIONS_DROPPED_TOTAL) - dropped_before
    twice = [k for k, n in counts.items() if n > 1]
    # Only predictions answered while the broker was away may be lost, and logging
    # must resume once it is back (an outcome goes out `outcome_delay` after its answer).
    broker = outages["kafka"]
    delay = traffic.generator.outcome_delay
    stray = [
        rid
        for rid in lost
        if not broker.since - 5 <= sent_at[rid] - delay <= (broker.until or broker.since) + 10
    ]
    joiner_lost = sorted(lost - unlogged)
    stranded = loop.in_outboxes() & set(joiner_lost)
    # When each example the joiner lost was answered, seconds after each outage began.
    lost_when = {
        rid: {n: round(sent_at[rid] - delay - p.since, 1) for n, p in outages.items()}
        for rid in joiner_lost[:5]
    }
    redis_out = outages["redis"]
    assert redis_out.until is not None
    # A decision taken on the last tick before the pause may still land in its first
    # seconds (one tick, and a Redis timeout): the window starts after them.
    since = redis_out.since + 3
    during = [v for t, v in loop.watch.champions if since <= t <= redis_out.until]
    champion = [v for t, v in loop.watch.champions if t < since][-1]
    totals = log.totals()
    windows = {
        name: (p.since - log.start, (p.until or p.since) - log.start) for name, p in outages.items()
    }
    figures: dict[str, Any] = {"outage_seconds": outage}
    for name, window in windows.items():
        window_sent, window_failed = _errors_in(log, [window])
        figures[f"{name}_requests"] = window_sent
        figures[f"{name}_failed"] = window_failed
    figures.update(
        requests=totals["sent"],
        answered=totals["answered"],
        server_errors=totals["errors"],
        shed=totals["shed"],
        outcomes_sent=len(sent),
        outcomes_unacknowledged=traffic.producer.failed,
        joined=len(counts),
        lost=len(lost),
        lost_unlogged_predictions=len(unlogged),
        lost_outside_broker_outage=len(stray),
        lost_by_joiner=len(joiner_lost),
        lost_by_joiner_left_in_outbox=len(stranded),
        lost_by_joiner_answered_after_outage_start_s=lost_when,
        predictions_dropped_counted=int(dropped),
        predictions_spooled=int(loop.inference_metric(PREDICTIONS_SPOOLED_TOTAL) - spooled_before),
        predictions_replayed=int(
            loop.inference_metric(PREDICTIONS_REPLAYED_TOTAL) - replayed_before
        ),
        duplicates=len(twice),
        rollout_candidate=candidate,
        champion_before=champion,
        champion_after=loop.watch.champions[-1][1],
    )
    record("outages", figures)

    assert totals["errors"] + totals["shed"] <= 0.01 * totals["sent"], figures
    assert not twice, f"{len(twice)} outcomes joined twice: {twice[:5]}"
    assert not unlogged, (
        f"{len(unlogged)} predictions never logged ({int(dropped)} counted dropped), "
        f"{len(set(stray) & unlogged)} of them outside the broker outage"
    )
    assert dropped == 0, f"{int(dropped)} predictions dropped: {figures}"
    assert during and set(during) == {champion}, f"promoted while Redis was away: {during}"
    versions = [v for _, v in loop.watch.champions]
    assert versions == sorted(versions), "the champion moved backwards"
    # What the joiner's state holds for each lost example says where it was lost
    # (see `Loop.join_states`); computed only when there are any.
    states = Counter(loop.join_states(set(joiner_lost)).values()) if joiner_lost else {}
    assert not joiner_lost, (f"the joiner lost {len(joiner_lost)} examples: {lost_when}; "
                             f"join state: {dict(states)}")  # fmt: skip
