"""Shared Redis state: windowed counters, routing table, quality and serving stats."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.api.routing import RoutingTable
from driftline.common.redis_state import (
    LATENCY_BUCKETS_MS,
    QualityStats,
    QualityStore,
    RoutingStore,
    ServingStats,
    WindowedCounters,
    latency_bucket,
    quality_fields,
)

pytestmark = pytest.mark.integration


def test_windowed_counters_sum_only_the_window(redis_client: Any) -> None:
    counters = WindowedCounters("t:c", bucket_seconds=10)
    for now, n in [(1000.0, 1), (1015.0, 2), (1095.0, 4)]:
        pipe = redis_client.pipeline()
        counters.add(pipe, {"count": n, "zero": 0}, now=now)
        pipe.execute()
    assert counters.read(redis_client, 100, now=1099.0) == {"count": 7.0}
    assert counters.read(redis_client, 30, now=1099.0) == {"count": 4.0}
    assert redis_client.ttl("t:c:100") > 0


def test_routing_store_round_trip_and_notification(redis_client: Any) -> None:
    store = RoutingStore("ns", "m")
    assert store.read(redis_client) is None
    pubsub = redis_client.pubsub()
    pubsub.subscribe(store.channel)
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    table = RoutingTable(stable="1", candidate="2", mode="shadow", revision=3)
    store.write(redis_client, table)
    assert store.read(redis_client) == table
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["type"] == "message"


def test_quality_counts_are_exact(redis_client: Any) -> None:
    store = QualityStore("ns", "m")
    pipe = redis_client.pipeline()
    for output, label in [(1, 1), (0, 1), (1, 1), (0, 0)]:
        store.counters("7", "stable").add(
            pipe, quality_fields("classification", output, label, [0.3, 0.7])
        )
    pipe.execute()
    stats = store.read(redis_client, "7", "stable", window_seconds=60)
    assert stats.count == 4 and stats.accuracy == 0.75
    assert stats.mean_log_loss is not None and stats.mean_log_loss > 0
    assert store.read(redis_client, "7", "candidate", 60) == QualityStats(count=0)


def test_regression_quality() -> None:
    f = quality_fields("regression", 3.0, 1.0, None)
    stats = QualityStats.from_fields(f)
    assert stats.mae == 2.0 and stats.rmse == 2.0 and stats.accuracy == 0.0


def test_serving_quantile_from_buckets() -> None:
    counts = [0] * len(LATENCY_BUCKETS_MS)
    for ms in [1] * 98 + [40, 400]:
        counts[latency_bucket(ms)] += 1
    stats = ServingStats(requests=100, errors=1, latency_counts=tuple(counts))
    assert stats.quantile_ms(0.5) == 1
    assert stats.quantile_ms(0.99) == 50
    assert stats.quantile_ms(1.0) == 500
    assert stats.error_rate == 0.01
