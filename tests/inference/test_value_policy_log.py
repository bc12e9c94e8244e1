"""Rows an `onInvalid` policy acted on: their flags reach the prediction log and the counter."""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np
from prometheus_client import REGISTRY

from driftline.api.events import Prediction, decode
from driftline.common.connections import KafkaConnection
from driftline.inference import metrics
from driftline.inference.contract import MarkedRow
from driftline.inference.predlog import PredictionLog
from driftline.inference.service import count_flags


def test_flags_go_into_the_record_and_old_records_still_decode() -> None:
    log = PredictionLog(
        KafkaConnection("127.0.0.1:1"), "t.predictions", "m", ["x1", "c"], "regression",
        flagged=True, capacity=10, flush_seconds=0.01, producer_overrides={"log_level": 0},
    )  # fmt: skip
    try:
        rows = [(0.5, "a"), MarkedRow([10.0, "a"], {"x1": "clip"})]
        outputs = [np.array([1.0, 2.0], np.float32)]
        record = (["r1", "r2"], [None, None], rows, "3", "stable", outputs, 1.0, None)
        payloads = log._payloads(record)  # type: ignore[arg-type]
    finally:
        asyncio.run(log.close(timeout=0.1))
    plain, marked = (decode(p, Prediction) for _, p, _ in payloads)
    assert plain.flags is None
    assert marked.flags == {"x1": "clip"} and marked.features == {"x1": 10.0, "c": "a"}
    old = msgspec.json.encode({k: v for k, v in msgspec.to_builtins(plain).items() if k != "flags"})
    assert decode(old, Prediction) == plain


def test_actions_are_counted_per_feature_version_and_action() -> None:
    def count() -> float:
        labels = {"feature": "x9", "version": "7", "action": "impute"}
        return REGISTRY.get_sample_value(metrics.VALUE_POLICY_TOTAL, labels) or 0.0

    before = count()
    count_flags(
        [(1.0,), MarkedRow([2.0], {"x9": "impute"}), MarkedRow([2.0], {"x9": "impute"})], "7"
    )
    assert count() - before == 2
