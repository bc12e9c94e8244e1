"""The rollout's Redis side: evidence sums, settled-bucket reuse, commands, records."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.common.redis_state import QualityStore, ServingStore, drift_key, quality_fields
from driftline.rollout import Command, RolloutState
from driftline.rollout.store import SETTLE_SECONDS, MetricsSource, Record, RolloutStore

pytestmark = pytest.mark.integration

T0 = 1_000_000.0  # on a bucket boundary, on purpose


def labeled(client: Any, version: str, variant: str, at: float, n: int = 1) -> None:
    pipe = client.pipeline()
    for _ in range(n):
        QualityStore("ns", "m").counters(version, variant).add(
            pipe, quality_fields("classification", 1, 1, None), at
        )
    pipe.execute()


def candidate_labeled(source: MetricsSource, client: Any, since: float, now: float) -> int:
    return source.evidence(
        client, stable="1", candidate="2", since=since, now=now
    ).candidate.labeled


def test_evidence_sums_every_bucket_from_the_rollouts_first(redis_client: Any) -> None:
    labeled(redis_client, "2", "candidate", T0 - 1)  # the bucket before: not counted
    for offset in (0.0, 9.99, 10.0, 55.0, 100.0):
        labeled(redis_client, "2", "candidate", T0 + offset)
    labeled(redis_client, "2", "shadow", T0 + 3, n=2)  # shadow scoring counts too
    labeled(redis_client, "1", "stable", T0 + 3, n=4)
    labeled(redis_client, "1", "baseline", T0 + 3, n=8)  # the baseline never counts
    source = MetricsSource("ns", "m")
    for now in (T0 + 100.0, T0 + 105.0, T0 + 109.999):
        evidence = source.evidence(redis_client, stable="1", candidate="2", since=T0, now=now)
        assert (evidence.candidate.labeled, evidence.stable.labeled) == (7, 4)
    assert candidate_labeled(MetricsSource("ns", "m"), redis_client, T0 + 9, T0 + 100) == 7


def test_settled_buckets_are_read_once(redis_client: Any) -> None:
    source = MetricsSource("ns", "m")
    labeled(redis_client, "2", "candidate", T0 + 1)
    now = T0 + 10 + SETTLE_SECONDS + 1  # the first bucket has settled
    assert candidate_labeled(source, redis_client, T0, now) == 1
    labeled(redis_client, "2", "candidate", T0 + 2)  # a late write into a settled bucket
    labeled(redis_client, "2", "candidate", now)  # a write into the current bucket
    assert candidate_labeled(source, redis_client, T0, now + 1) == 2  # undercounts, never more
    assert candidate_labeled(MetricsSource("ns", "m"), redis_client, T0, now + 1) == 3
    # Another rollout (another start) reads afresh.
    assert candidate_labeled(source, redis_client, T0 + 0.5, now + 1) == 3


def test_serving_counters_and_agreement(redis_client: Any) -> None:
    pipe = redis_client.pipeline()
    ServingStore("ns", "m").counters("2", "candidate").add(
        pipe, {"requests": 10, "errors": 1, "le_2": 10}, T0 + 1
    )
    QualityStore("ns", "m").agreement("1", "2").add(pipe, {"compared": 8, "agreed": 6}, T0 + 1)
    pipe.execute()
    evidence = MetricsSource("ns", "m").evidence(
        redis_client, stable="1", candidate="2", since=T0, now=T0 + 5
    )
    assert (evidence.candidate.requests, evidence.candidate.errors) == (10, 1)
    assert evidence.candidate.p99_ms() == 2
    assert (evidence.compared, evidence.agreed) == (8, 6)


def test_commands_are_taken_once_and_bad_ones_ignored(redis_client: Any) -> None:
    store = RolloutStore("ns", "m")
    assert store.take_command(redis_client) is None
    store.send_command(redis_client, Command(action="approve", version="2"))
    assert store.take_command(redis_client) == Command(action="approve", version="2")
    assert store.take_command(redis_client) is None
    redis_client.set(store.command_key, b'{"action": "promote-now"}')
    assert store.take_command(redis_client) is None
    assert redis_client.get(store.command_key) is None


def test_records_round_trip_and_an_unreadable_one_is_ignored(redis_client: Any) -> None:
    store = RolloutStore("ns", "m")
    record = Record(state=RolloutState(stage="idle", stable="1"), revision=3)
    store.save(redis_client, record)
    assert store.load(redis_client) == record
    redis_client.set(store.key, b"{not json")
    assert store.load(redis_client) is None


def test_an_unreadable_drift_event_is_ignored(redis_client: Any) -> None:
    redis_client.set(drift_key("ns", "m"), b'{"v": 1, "kind": "concept"}')
    assert MetricsSource("ns", "m").drift(redis_client) is None
