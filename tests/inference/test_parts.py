"""Small pieces: cache keys and values, serving stats counts, hot route matching, settings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from driftline.api import parse_dynamic_model
from driftline.common.redis_state import LATENCY_BUCKETS_MS, ServingStore, latency_bucket
from driftline.inference.app import _match
from driftline.inference.cache import PredictionCache
from driftline.inference.contract import FeatureContract
from driftline.inference.settings import InferenceSettings
from driftline.inference.stats import ServingCounters
from driftline_testing.models import model_document, write_model_file


@pytest.fixture(scope="module")
def contract() -> FeatureContract:
    doc = model_document("m", categorical=("c",), classes=3)
    return FeatureContract(parse_dynamic_model(doc).spec)


def cache(contract: FeatureContract) -> PredictionCache:
    return PredictionCache(
        None, "driftline:ns:m", contract, ttl_seconds=60, timeout_seconds=0.05, retry_seconds=1
    )


def test_cache_keys_depend_on_version_artifact_and_features(contract: FeatureContract) -> None:
    c = cache(contract)
    rows = contract.arrange([(1.0, 2.0, 3.0, "a"), (1.0, 2.0, 3.0, "b")], "features")
    same = contract.arrange([(1, 2, 3, "a")], "features")  # ints and floats are one number
    k1 = c.keys("1", "aa" * 32, rows)
    assert k1[0] != k1[1]
    assert c.keys("1", "aa" * 32, same)[0] == k1[0]
    assert c.keys("2", "aa" * 32, same)[0] != k1[0]
    assert c.keys("1", "bb" * 32, same)[0] != k1[0]
    assert k1[0].startswith(b"driftline:ns:m:cache:1:")


def test_cached_values_round_trip(contract: FeatureContract) -> None:
    c = cache(contract)
    label = np.array([2, 0], np.int64)
    probabilities = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], np.float32)
    encoded = c.encode([label, probabilities], 2)
    assert all(len(e) == c.row_bytes == 8 + 12 for e in encoded)
    decoded = c.decode(encoded[::-1])
    assert decoded is not None
    assert decoded[0].tolist() == [0, 2]
    assert np.array_equal(decoded[1], probabilities[::-1])
    assert c.decode([b"short"]) is None


def test_serving_stats_sum_in_memory_and_export_to_prometheus() -> None:
    stats = ServingCounters("m", ServingStore("ns", "m"), None, 1.0)
    for ms in (0.2, 0.7, 4.0, 4.0, 10_000.0):
        stats.observe("1", "stable", "v1", ms / 1000)
    stats.observe("1", "stable", "v2", 0.004)
    stats.observe("2", "candidate", "v1", 0.003, error=True)
    pending = stats.unwritten()
    assert pending[("1", "stable")]["requests"] == 6  # both routes
    assert pending[("2", "candidate")] == {
        "requests": 1,
        "errors": 1,
        f"le_{latency_bucket(3.0)}": 1,
    }
    assert pending[("1", "stable")][f"le_{latency_bucket(4.0)}"] == 3
    assert pending[("1", "stable")][f"le_{len(LATENCY_BUCKETS_MS) - 1}"] == 1
    assert LATENCY_BUCKETS_MS[-1] == math.inf

    stats.response("v1", 200)
    stats.response("v1", 200)
    families = {f.name: f for f in stats.collect()}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    key = (("le", "+Inf"), ("model", "m"), ("route", "v1"), ("variant", "stable"), ("version", "1"))
    assert samples[("driftline_inference_request_seconds_bucket", key)] == 5
    assert samples[("driftline_inference_request_seconds_bucket", (("le", "0.001"), *key[1:]))] == 2
    assert samples[("driftline_inference_responses_total", (("code", "200"), ("route", "v1")))] == 2


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v1/models/sea/predict", ("v1", "sea", None)),
        ("/v2/models/sea/infer", ("v2", "sea", None)),
        ("/v2/models/sea/versions/7/infer", ("v2", "sea", "7")),
        ("/v2/models/sea/versions//infer", None),
        ("/v1/models/a/b/predict", None),
        ("/v2/models/sea", None),
        ("/v2/models//infer", None),
    ],
)
def test_hot_routes(path: str, target: tuple[str, str, str | None] | None) -> None:
    assert _match(path) == target


def test_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_model_file(tmp_path / "m.yaml", model_document("m"))
    monkeypatch.setenv("DRIFTLINE_INFERENCE_MODEL_FILE", str(path))
    monkeypatch.setenv("DRIFTLINE_INFERENCE_PORT", "9001")
    monkeypatch.setenv("DRIFTLINE_INFERENCE_WORKERS", "2")
    monkeypatch.setenv("DRIFTLINE_INFERENCE_REDIS_URL", "redis://127.0.0.1:1/0")
    settings = InferenceSettings()  # type: ignore[call-arg]
    assert (settings.port, settings.workers) == (9001, 2)
    assert settings.model.name == "m"
    assert settings.connections.redis.url == "redis://127.0.0.1:1/0"


def test_feasts_store_is_spec_feast_else_the_models_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = write_model_file(tmp_path / "plain.yaml", model_document("m"))
    document = model_document("m")
    document["spec"]["feast"] = {
        "redis": {"url": "redis://feast-redis:6390/2", "credentialsSecret": "feast-redis"}
    }
    with_store = write_model_file(tmp_path / "feast.yaml", document)
    secrets = tmp_path / "secrets"
    (secrets / "feast").mkdir(parents=True)
    (secrets / "feast" / "password").write_text("s3cret\n")
    monkeypatch.setenv("DRIFTLINE_INFERENCE_SECRETS_DIR", str(secrets))

    monkeypatch.setenv("DRIFTLINE_INFERENCE_MODEL_FILE", str(plain))
    assert InferenceSettings().feast_connection is None  # type: ignore[call-arg]

    monkeypatch.setenv("DRIFTLINE_INFERENCE_MODEL_FILE", str(with_store))
    store = InferenceSettings().feast_connection  # type: ignore[call-arg]
    assert store is not None
    assert (store.url, store.username, store.password) == (
        "redis://feast-redis:6390/2",
        None,
        "s3cret",
    )

    # The process's own setting (the local runtime, tests) wins over the spec.
    monkeypatch.setenv("DRIFTLINE_INFERENCE_FEAST_REDIS_URL", "redis://127.0.0.1:7000/0")
    store = InferenceSettings().feast_connection  # type: ignore[call-arg]
    assert store is not None and store.url == "redis://127.0.0.1:7000/0"
