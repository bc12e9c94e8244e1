"""The loop under SIGKILL: parts die at seeded random times while traffic flows.

The joiner, the trainer, the drift monitor and the inference process are killed
with SIGKILL in a seeded random order, at seeded random moments, while the
application sends 60 requests a second and their outcomes; the local runtime's
supervisor restarts each. A candidate is registered at the start, so the
rollout is at work too. What must hold:

- every outcome the broker acknowledged is in exactly one labeled example, except
  the few predictions answered in the instant before inference was killed and not
  yet handed to the broker (the prediction log is asynchronous by design: a request
  never waits for Kafka); those are counted and must lie right at a kill;
- the joiner and the trainer consume their topics to the end;
- versions only move forward: the `champion` alias, the routing table's stable
  version and its revision never go back;
- routing always names registered versions, every answer came from a version the
  routing named, and the versions of the last table are loaded;
- inference's error budget: requests fail only while inference itself restarts;
  outside those windows (a couple of seconds of margin) at most 1% fail.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from typing import Any

import pytest

from tests.chaos.loop import Loop
from tests.chaos.support import LONG, record, register_copy_candidate, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

SEED = 20261122
PARTS = ("joiner", "trainer", "drift", "inference")
ROUNDS = 4 if LONG else 1
"""Each round kills every part once, in a random order."""
MARGIN = 2.0


def _monotonic(values: list[int]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(values))


@pytest.mark.timeout(1500)
def test_sigkilled_parts_lose_nothing_and_versions_only_move_forward(loop: Loop) -> None:
    rng = random.Random(SEED)
    schedule = [part for _ in range(ROUNDS) for part in rng.sample(PARTS, len(PARTS))]
    supervisor = loop.runtime.supervisor
    registry = loop.model.spec.model.registry.name
    watched_from = len(loop.watch.tables), len(loop.watch.champions)
    kills: list[tuple[str, float, float]] = []  # part, killed at, ready again at
    traffic = loop.traffic(rate=60)
    try:
        time.sleep(3)
        register_copy_candidate(loop.runtime.endpoints.mlflow_tracking_uri, registry)
        for part in schedule:
            time.sleep(rng.uniform(2.0, 8.0))
            restarts = supervisor.parts()[part].restarts
            killed_at = time.time()
            supervisor.process(part).kill()
            wait_for(
                lambda p=part, r=restarts: supervisor.parts()[p].restarts > r and loop.ready(p),  # type: ignore[misc]
                180,
                f"{part} to come back",
            )
            kills.append((part, killed_at, time.time()))
        time.sleep(5)
    finally:
        log = traffic.stop()
    sent = traffic.delivered
    counts = loop.joined(set(sent), timeout=180)
    topics = [loop.model.topics.labeled]
    wait_for(lambda: loop.consumed_to_end("trainer", topics), 120, "the trainer")

    # -- exactly once -----------------------------------------------------------------
    lost = set(sent) - set(counts)
    logged = loop.logged_predictions() if lost else set()
    joiner_lost = lost & logged
    inference_kills = [at for part, at, _ in kills if part == "inference"]
    # An outcome goes out `outcome_delay` after its answer; an unlogged prediction
    # must have been answered in the moments before an inference kill.
    delay = traffic.generator.outcome_delay
    stray = [
        rid
        for rid in lost - logged
        if not any(at - 5 <= sent[rid] - delay <= at + 1 for at in inference_kills)
    ]
    twice = [k for k, n in counts.items() if n > 1]
    joiner_kills = [at for part, at, _ in kills if part == "joiner"]
    # When each example the joiner lost was answered, seconds after each joiner kill.
    lost_when = {
        rid: [round(sent[rid] - delay - at, 1) for at in joiner_kills]
        for rid in sorted(joiner_lost)[:5]
    }
    before_kill_ms = [
        1000 * min(abs(at - (sent[rid] - delay)) for at in inference_kills)
        for rid in lost - logged
        if inference_kills
    ]

    # -- versions and routing ---------------------------------------------------------
    tables = [t for _, t in loop.watch.tables[watched_from[0] :]]
    champions = [v for _, v in loop.watch.champions[watched_from[1] :]]
    registered = loop.registered_versions()
    named = set().union(*(t.versions() for t in tables)) | {str(v) for v in champions}
    current = loop.routing.read(loop.redis)
    assert current is not None
    wait_for(lambda: current.versions() <= loop.loaded_versions(), 60, "the routed versions")
    served = {v for v in log.versions_seen if v != "None"}

    # -- error budget -----------------------------------------------------------------
    windows = [
        (at - log.start - MARGIN, ready - log.start + MARGIN)
        for part, at, ready in kills
        if part == "inference"
    ]
    inside = outside = failed_inside = failed_outside = 0
    for second, s in log.seconds.items():
        if any(a <= second <= b for a, b in windows):
            inside += s.sent
            failed_inside += s.errors + s.shed
        else:
            outside += s.sent
            failed_outside += s.errors + s.shed

    figures: dict[str, Any] = {
        "kills": len(kills),
        "kills_by_part": {p: sum(1 for k in kills if k[0] == p) for p in PARTS},
        "kills_survived": sum(1 for _ in kills),
        "longest_restart_s": round(max(ready - at for _, at, ready in kills), 1),
        "requests": log.totals()["sent"],
        "failed_during_inference_restarts": failed_inside,
        "requests_during_inference_restarts": inside,
        "failed_outside_restarts": failed_outside,
        "requests_outside_restarts": outside,
        "outcomes_sent": len(sent),
        "outcomes_unacknowledged": traffic.producer.failed,
        "joined": len(counts),
        "lost_by_joiner": len(joiner_lost),
        "lost_by_joiner_answered_after_joiner_kills_s": lost_when,
        "lost_unlogged_at_inference_kill": len(lost - logged),
        "unlogged_answered_within_ms_of_kill": round(max(before_kill_ms, default=0.0)),
        "duplicates": len(twice),
        "champions_seen": sorted(set(champions)),
        "routing_revisions_seen": len({t.revision for t in tables}),
        "versions_served": sorted(served, key=int),
    }
    record("kills", figures)

    assert not twice, f"{len(twice)} outcomes joined twice: {twice[:5]}"
    assert not stray, f"unlogged predictions away from any inference kill: {stray[:5]}"
    assert _monotonic(champions), f"the champion moved backwards: {champions}"
    assert _monotonic([t.revision for t in tables]), "a routing revision went backwards"
    assert _monotonic([int(t.stable) for t in tables if t.stable]), "stable went backwards"
    assert named <= registered, f"routing named unregistered versions {named - registered}"
    assert served <= named, f"answers from versions routing never named: {served - named}"
    assert failed_outside <= 0.01 * max(1, outside), figures
    # What the joiner's state holds for each lost example says where it was lost
    # (see `Loop.join_states`); computed only when there are any.
    states = Counter(loop.join_states(set(joiner_lost)).values()) if joiner_lost else {}
    assert not joiner_lost, (f"the joiner lost {len(joiner_lost)} examples: {lost_when}; "
                             f"join state: {dict(states)}")  # fmt: skip
