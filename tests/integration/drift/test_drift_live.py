"""The drift monitor on a real broker, Redis and MLflow: quiet on the reference, one
event per shift, concept drift from the labeled stream, a reference that follows the
serving version, bad records kept aside."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY

from driftline.api.events import DriftEvent, decode
from driftline.api.routing import RoutingTable
from driftline.common.kafka import DeadLetters
from driftline.common.redis_state import RoutingStore, drift_key
from driftline.drift import metrics
from driftline.drift.worker import DriftWorker
from tests.drift.streams import NUMERIC, labeled, predictions, reference_arrays, rule
from tests.integration.drift.conftest import Harness, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*"),
]


def test_one_shift_makes_one_event_and_both_backends_agree(
    harness: Harness, calm_reference
) -> None:
    harness.registry.register(calm_reference, champion=True)
    models = {b: harness.model(f"{harness.name}-{b}", backend=b) for b in ("scipy", "alibi")}
    workers = {b: harness.start(harness.settings(m)) for b, m in models.items()}
    rng = np.random.default_rng(1)

    harness.send(models["scipy"].topics.predictions, predictions(rng, 2000))
    for m in models.values():
        wait_for(lambda m=m: harness.used(m.name, "predictions") >= 2000, 60, "the calm stream")
    assert all(harness.events(m, seconds=2) == [] for m in models.values())

    harness.send(
        models["scipy"].topics.predictions, predictions(rng, 2000, shift={"x2": 1.0}, start=2000)
    )
    for m in models.values():
        wait_for(lambda m=m: harness.used(m.name, "predictions") >= 4000, 60, "the shifted stream")
    events = {b: harness.events(m) for b, m in models.items()}
    for backend, sent in events.items():
        # Five windows drifted, in inputs and outputs: one event, naming x2.
        assert len(sent) == 1, (backend, sent)
        (event,) = sent
        assert event.kind == "covariate" and event.features == ["x2"]
        assert event.model_version == "1" and event.samples == 400
        assert event.window_start == 1000.0 + 2000 and event.window_end == 1000.0 + 2399
        suppressed = metrics.suppressed.labels(models[backend].name, "covariate")._value.get()
        assert suppressed == 4
        stored = redis.Redis.from_url(harness.redis_url).get(
            drift_key("test", models[backend].name)
        )
        assert decode(stored, DriftEvent) == event
    # Same windows, same tests: the scipy backend agrees with alibi-detect.
    a, s = events["alibi"][0], events["scipy"][0]
    assert a.detector == "alibi:ks+chi2" and s.detector == "scipy:ks+chi2"
    assert a.p_value == pytest.approx(s.p_value, rel=1e-4, abs=1e-30)
    assert a.score == pytest.approx(s.score, rel=1e-6)
    assert workers["alibi"].monitor is not None


def test_only_a_model_with_alert_sends_alerts(harness: Harness, calm_reference) -> None:
    """`drift.onDrift: [alert]` marks the event and counts it in the counter the chart's
    alert rule keys on; without `alert` the same shift sends an event, never an alert."""
    harness.registry.register(calm_reference, champion=True)
    models = {
        on: harness.model(f"{harness.name}-{on}", backend="scipy", onDrift=[on])
        for on in ("alert", "retrain")
    }
    for m in models.values():
        harness.start(harness.settings(m))
    rng = np.random.default_rng(3)
    for m in models.values():
        harness.send(m.topics.predictions, predictions(rng, 1000, shift={"x2": 1.0}))
    for on, m in models.items():
        wait_for(lambda m=m: bool(harness.events(m, seconds=2)), 90, f"the {on} model's event")
    alerting = {on: [e.alerting for e in harness.events(m)] for on, m in models.items()}
    assert alerting == {"alert": [True], "retrain": [False]}
    counted = {
        on: metrics.alerts.labels(m.name, "covariate")._value.get() for on, m in models.items()
    }
    assert counted == {"alert": 1.0, "retrain": 0.0}


def test_a_concept_switch_raises_a_concept_event(harness: Harness, calm_reference) -> None:
    harness.registry.register(calm_reference, champion=True)
    model = harness.model(backend="scipy", expectedRunTime=20_000)
    harness.start(harness.settings(model))
    rng = np.random.default_rng(2)
    # The inputs stay the same all along; only the labeling rule changes.
    harness.send(model.topics.predictions, predictions(rng, 1200))
    harness.send(model.topics.labeled, labeled(rng, 1500, noise=0.05))
    wait_for(lambda: harness.used(model.name, "labeled") >= 1500, 60, "the first labels")
    assert harness.events(model, seconds=2) == []
    harness.send(model.topics.labeled, labeled(rng, 1000, concept=1, noise=0.05, start=1500))
    wait_for(lambda: harness.used(model.name, "labeled") >= 2500, 60, "the switched labels")
    (event,) = harness.events(model)
    assert event.kind == "concept" and event.detector == "scipy:FETOnline"
    assert event.features == ["__error__"]
    assert 1000.0 + 1500 < event.window_end < 1000.0 + 1500 + 100  # tens of labels late


def test_the_reference_follows_the_stable_version(harness: Harness, calm_reference) -> None:
    harness.registry.register(calm_reference, champion=True)
    shifted = reference_arrays(np.random.default_rng(3), n=2000)
    shifted["x2"] = shifted["x2"] + 1.0
    shifted["__output__"] = rule(np.column_stack([shifted[f] for f in NUMERIC]))
    v2 = harness.registry.register(shifted)
    routing = RoutingStore("test", harness.name)
    client = redis.Redis.from_url(harness.redis_url)
    routing.write(client, RoutingTable(stable=v2, revision=1))
    model = harness.model(backend="scipy")
    worker = harness.start(harness.settings(model))
    assert worker.monitor is not None and worker.monitor.version == v2
    rng = np.random.default_rng(4)
    harness.send(model.topics.predictions, predictions(rng, 1200, shift={"x2": 1.0}, version=v2))
    wait_for(lambda: harness.used(model.name, "predictions") >= 1200, 60, "traffic on v2")
    assert harness.events(model, seconds=2) == []  # v2 was trained on this distribution

    routing.write(client, RoutingTable(stable="1", revision=2))  # rolled back to version 1
    wait_for(
        lambda: worker.monitor is not None and worker.monitor.version == "1",
        30,
        "the reference of version 1",
    )
    harness.send(
        model.topics.predictions, predictions(rng, 800, shift={"x2": 1.0}, version="1", start=1200)
    )
    wait_for(lambda: harness.used(model.name, "predictions") >= 2000, 60, "traffic on v1")
    sent = harness.events(model)
    assert len(sent) == 1, sent
    (event,) = sent
    assert event.model_version == "1" and event.features == ["x2"]
    assert metrics.reference_version.labels(model.name, "1")._value.get() == 1
    assert metrics.reference_version.labels(model.name, v2)._value.get() == 0


def test_bad_records_go_to_the_dead_letter_topic(harness: Harness, calm_reference) -> None:
    harness.registry.register(calm_reference, champion=True)
    model = harness.model(backend="scipy")
    harness.start(harness.settings(model))
    rng = np.random.default_rng(5)
    good = predictions(rng, 50)
    harness.send(model.topics.predictions, [b"{not json", b'{"v": 7, "request_id": "x"}', *good])
    wait_for(lambda: harness.used(model.name, "predictions") >= 50, 60, "the good records")
    topic = model.topics.dead_letter
    assert topic is not None
    dead = harness.read(topic, 4)
    assert [m.value() for m in dead] == [b"{not json", b'{"v": 7, "request_id": "x"}']
    reasons = [dict(m.headers())["driftline-error"].decode() for m in dead]
    assert reasons[0].startswith("not JSON") and "schema version 7" in reasons[1]
    assert DeadLetters.count(model.topics.predictions, "not JSON") == 1


def test_a_champion_without_a_reference_makes_the_monitor_wait(
    harness: Harness, calm_reference, caplog: pytest.LogCaptureFixture
) -> None:
    """An imported version registered without a sample has no reference: the monitor
    neither crashes nor reads traffic unwatched; it waits, not ready, says so once,
    and starts when a version with a reference serves."""
    import threading
    import time

    client = harness.registry.client
    run = client.create_run(harness.registry.experiment)
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version(
        harness.name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(harness.name, "champion", mv.version)
    model = harness.model(backend="scipy")
    worker = DriftWorker(harness.settings(model))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    harness.threads.append((thread, stop))
    with caplog.at_level("WARNING", logger="driftline.drift.worker"):
        thread.start()
        time.sleep(4)  # several reference checks
    assert thread.is_alive() and not worker.heartbeat.ready and worker.monitor is None
    said = [r for r in caplog.records if "reference unavailable" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]

    harness.registry.register(calm_reference, champion=True)
    wait_for(lambda: worker.heartbeat.ready, 60, "the monitor to start on version 2")
    assert worker.monitor is not None and worker.monitor.version == "2"


def test_a_version_imported_without_a_sample_takes_its_first_traffic_as_the_reference(
    harness: Harness,
) -> None:
    """`driftline.reference: none`: the monitor reads the version's first live predictions,
    says so in the note status shows, and then watches against them (a shift is found).
    The reference is kept in the registry: a restarted monitor does not collect again."""
    import threading

    from driftline.api.artifacts import TAG_REFERENCE
    from driftline.common.redis_state import drift_reference_key

    client = harness.registry.client
    run = client.create_run(harness.registry.experiment)
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version(
        harness.name,
        source=f"runs:/{run.info.run_id}/model",
        run_id=run.info.run_id,
        tags={TAG_REFERENCE: "none: no sample was given"},
    )
    client.set_registered_model_alias(harness.name, "champion", mv.version)
    model = harness.model(backend="scipy", window=200)
    worker = DriftWorker(harness.settings(model, live_reference_rows=300))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    harness.threads.append((thread, stop))
    thread.start()
    r = redis.Redis.from_url(harness.redis_url)
    key = drift_reference_key(model.metadata.namespace, model.name)

    rng = np.random.default_rng(11)
    wait_for(lambda: worker.collecting is not None, 60, "collecting from live traffic")
    assert b"collecting from live traffic: 0 of 300" in (r.get(key) or b"")
    assert not worker.heartbeat.ready
    harness.send(model.topics.predictions, predictions(rng, 150, version=mv.version))
    wait_for(lambda: b"150 of 300" in (r.get(key) or b""), 60, "half the reference")
    harness.send(model.topics.predictions, predictions(rng, 200, version=mv.version, start=150))
    wait_for(lambda: worker.heartbeat.ready, 120, "the monitor to start on live traffic")
    assert worker.monitor is not None and worker.monitor.version == mv.version
    assert (r.get(key) or b"").startswith(b"live traffic: the first 300 predictions")

    harness.send(
        model.topics.predictions,
        predictions(rng, 600, version=mv.version, shift={"x1": 3.0}, start=400),
    )
    events = harness.events(model, seconds=10)
    assert any(e.kind == "covariate" and "x1" in e.features for e in events), events

    # The reference is kept beside the version: a restarted monitor reads it at once.
    kept = client.get_model_version(harness.name, mv.version)
    assert kept.tags[TAG_REFERENCE] == f"live: the first 300 predictions of version {mv.version}"
    stop.set()
    thread.join(30)
    again = DriftWorker(harness.settings(model, live_reference_rows=300))
    stop = threading.Event()
    thread = threading.Thread(target=again.run, args=(stop,), daemon=True)
    harness.threads.append((thread, stop))
    thread.start()
    wait_for(lambda: again.heartbeat.ready, 60, "the restarted monitor on the kept reference")
    assert again.collecting is None and again.monitor is not None
    assert again.monitor.version == mv.version
    assert (r.get(key) or b"").startswith(b"live traffic: the first 300 predictions")


def test_accuracy_is_estimated_from_confidence_before_the_labels(
    harness: Harness, calm_reference
) -> None:
    """CBPE: the joiner's confidence bins (labeled) say version 1 is right 60 % of the
    time when 95 % sure; a bin without labels is taken at its word. Predictions with no
    label yet: 300 at 0.95 and 100 at 0.55 are estimated (300 * 0.6 + 100 * 0.55) / 400."""
    import time

    from msgspec.structs import replace

    from driftline.common.redis_state import EstimateStore, QualityStore, calibration_fields

    harness.registry.register(calm_reference, champion=True)
    model = harness.model()
    client = redis.Redis.from_url(harness.redis_url)
    counters = QualityStore(model.metadata.namespace, model.name).counters("1", "stable")
    pipe = client.pipeline()
    for i in range(100):
        counters.add(pipe, calibration_fields(0.95, i % 10 < 6))
    pipe.execute()
    worker = harness.start(harness.settings(model, estimate_interval_seconds=0.2))
    rng = np.random.default_rng(5)
    sent = []
    for i, p in enumerate(predictions(rng, 400)):
        confidence = 0.95 if i < 300 else 0.55
        scores = [confidence, 1 - confidence] if p.output == 0 else [1 - confidence, confidence]
        sent.append(replace(p, scores=scores))
    harness.send(model.topics.predictions, sent)

    def estimate() -> float | None:
        return metrics.estimated_accuracy.labels(model.name, "1")._value.get() or None

    wait_for(lambda: harness.used(model.name, "predictions") >= 400, 60, "the predictions")
    wait_for(
        lambda: metrics.estimate_rows.labels(model.name, "1")._value.get() == 400, 30, "400 rows"
    )
    assert worker.estimator is not None
    assert estimate() == pytest.approx((300 * 0.6 + 100 * 0.55) / 400)
    # The same estimate is in Redis, where the rollout reads it (`analysis.estimate`).
    store = EstimateStore(model.metadata.namespace, model.name)
    wait_for(
        lambda: getattr(store.read(client).get("1"), "rows", 0) == 400, 30, "the estimate in Redis"
    )
    written = store.read(client)["1"]
    assert written.accuracy == pytest.approx((300 * 0.6 + 100 * 0.55) / 400)
    assert abs(written.at - time.time()) < 60


def test_a_moved_mean_makes_a_data_quality_event_naming_the_feature(
    harness: Harness, calm_reference
) -> None:
    harness.registry.register(calm_reference, champion=True)
    model = harness.model(backend="scipy", dataQuality={"window": 200, "sigmas": 4})
    harness.start(harness.settings(model))
    rng = np.random.default_rng(7)
    calm = predictions(rng, 2000)
    # Rows an onInvalid policy acted on at serving carry flags; the monitor counts them.
    calm[5] = msgspec.structs.replace(calm[5], flags={"x1": "clip"})
    harness.send(model.topics.predictions, calm)
    wait_for(lambda: harness.used(model.name, "predictions") >= 2000, 60, "the calm stream")
    assert harness.events(model, seconds=2) == []
    flagged = {"model": model.name, "feature": "x1", "action": "clip"}
    assert REGISTRY.get_sample_value(metrics.FLAGGED_TOTAL, flagged) == 1
    # x3's mean moves by half a baseline std: about 7 standard errors of a 200-value mean.
    harness.send(model.topics.predictions, predictions(rng, 400, shift={"x3": 0.5}, start=2000))
    wait_for(lambda: harness.used(model.name, "predictions") >= 2400, 60, "the shifted stream")
    quality = [e for e in harness.events(model) if e.kind == "data-quality"]
    assert len(quality) == 1, quality  # one shift, one event (the cooldown holds repeats)
    (event,) = quality
    assert event.features == ["x3"] and event.detector == "mean-shift"
    assert event.score > 4 and event.samples == 200 and event.model_version == "1"
