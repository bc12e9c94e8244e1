"""The Feast-backed sample model, served in a real Pod on the rig's real node.

The chart in dev mode as test_dev_mode.py installs it (Redis, Kafka and MLflow in
the cluster; its fixtures, reused here, install a release of this module's own).
Real Feast (its own venv, tests/rig/feast), run inside the node's network namespace,
applies a feature repository with the sample's views (project `fraud`: `user_stats`
and `user_risk`, join key `user_id`) whose online store is the dev-mode Redis,
database 1, and materializes a few users into it. `manifests/samples/feast-features.yaml`
is applied as it is, but for its servers (the dev-mode ones by their Service names;
`spec.feast.redis` that Redis's database 1, with no Secret, as the dev-mode Redis has
no password) and a small inference without training: what the operator gives the
inference Pod decides where Feast's values are read, with nothing set by hand (the
model's own Redis, database 0, holds no Feast data).

A Pod of another namespace sends predictions through the inference Service for users
Feast knows and one it does not, each twice; a Pod then reads the prediction log (the
model's predictions topic) back. What is checked: every request answered; each logged
row's Feast features are the values Feast materialized (as float32, the model's input
type), also as Feast's own `get_online_features` reads them back from that Redis; an
unknown user's txn_count_7d is its default, while its risk score, which the sample
refuses to serve without, is its default too (a missing entity is no outage); the
sample's per-entity request count is 0 then 1 for each user; the request's own
features as sent.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from driftline_testing.feast import PREAMBLE, FeastRepo, feast_built
from driftline_testing.images import BuiltImage
from driftline_testing.node import NodeStack
from tests.deploy.chart import ROOT
from tests.integration.pods import cluster
from tests.integration.pods import test_dev_mode as dev
from tests.integration.pods.cluster import Kube, report

pytestmark = [pytest.mark.integration, pytest.mark.rig, pytest.mark.timeout(1800)]

# test_dev_mode.py's module fixtures, made again for this module: the images (found by
# their content key, already in the node) and a dev-mode release of this module's own.
dev_images = dev.dev_images
imported = dev.imported
installed = dev.installed

MODELS, CLIENTS = dev.MODELS, dev.CLIENTS
SAMPLE = ROOT / "manifests" / "samples" / "feast-features.yaml"
NAME = "card-fraud-feast"  # the sample's
TAG = "feast pod"
URL = f"http://{NAME}-inference.{MODELS}:8080/v1/models/{NAME}/predict"
FEAST_DB = 1  # the model's own Redis is database 0 of the same server

# The sample's Feast project, as its features name it.
PROJECT = "fraud"
VIEWS = (
    PREAMBLE
    + """

user_stats = FeatureView(
    name="user_stats", entities=[user], ttl=timedelta(days=3650), online=True,
    schema=[Field(name="txn_count_7d", dtype=Int64)], source=source("user_stats"),
)
user_risk = FeatureView(
    name="user_risk", entities=[user], ttl=timedelta(days=3650), online=True,
    schema=[Field(name="score", dtype=Float64)], source=source("user_risk"),
)
"""
)
DTYPES = {
    "user_stats": {"user_id": "int64", "txn_count_7d": "Int64"},
    "user_risk": {"user_id": "int64", "score": "float64"},
}
# The sample's Feast features: name -> (view, Feast's feature, the sample's default).
FROM_FEAST = {
    "txn_count_7d": ("user_stats", "txn_count_7d", -1.0),
    "risk_score": ("user_risk", "score", 0.5),
}
USERS = [(1, 12, 0.25), (2, 0, 0.9), (2**40, 2**40, 0.125)]  # user_id, txn_count_7d, score
UNKNOWN = "999"
ROW = {"amount": 42.5, "hour": 13}  # the request's own features
F32 = struct.Struct("<f")


def f32(x: float) -> float:
    return float(F32.unpack(F32.pack(x))[0])


# Run in the inference image from another namespace: one prediction per entity id of
# argv[2] (a JSON list), each with the request id "feast-<i>" and the row argv[3];
# one JSON object at the end: the answers' request ids and any failure.
SEND = """
import json, sys, urllib.error, urllib.request
url, entities, row = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
answered, failed = [], []
for i, entity in enumerate(entities):
    body = {"request_id": "feast-%d" % i, "entity_id": entity, "features": row}
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            answered.append(json.loads(r.read())["request_id"])
    except urllib.error.HTTPError as exc:
        failed.append("%s: %s" % (exc.code, exc.read().decode()[:200]))
    except Exception as exc:
        failed.append(repr(exc))
print(json.dumps({"answered": answered, "failed": failed}))
"""

# Run in the inference image from another namespace: the predictions topic argv[2]
# read from its start until it holds the request ids of argv[3] (at most 120 s); the
# logged features and entity id of each stable prediction, as one JSON object.
READ_LOG = """
import json, sys, time
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from driftline.api.events import Prediction, decode
bootstrap, topic, wanted = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "read-%f" % time.time(),
                     "enable.auto.commit": False})
meta = consumer.list_topics(topic, timeout=10).topics[topic]
consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
found = {}
deadline = time.monotonic() + 120
while not wanted <= set(found) and time.monotonic() < deadline:
    m = consumer.poll(1.0)
    if m is None or m.error():
        continue
    event = decode(m.value(), Prediction)
    if event.variant == "stable":
        found[event.request_id] = {"features": event.features, "entity": event.entity_id}
consumer.close()
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def feast_store(
    installed: dict[str, float],
    kube: Kube,
    real_node: NodeStack,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[FeastRepo, float]:
    """Feast's repository of the sample's views applied and `USERS` materialized into
    the dev-mode Redis (database `FEAST_DB`), Feast run inside the node's network
    namespace, where the Redis Pod's address is reachable; the seconds it took."""
    if not feast_built():
        pytest.fail("Feast's venv is not built: run `make rig` (tests/rig/feast/build.sh)")
    (redis,) = [
        p
        for p in kube.json("get", "pods", "-n", dev.NAMESPACE)["items"]
        if p["metadata"]["labels"].get("app.kubernetes.io/name") == "driftline-redis"
    ]
    repo = FeastRepo(
        tmp_path_factory.mktemp("feast") / "repo",
        6379,
        project=PROJECT,
        redis_host=redis["status"]["podIP"],
        redis_db=FEAST_DB,
        wrap=real_node.network.nsenter,
        definitions=VIEWS,
        dtypes=DTYPES,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    at = now - timedelta(minutes=5)  # fresh for risk_score's maxAgeSeconds (a day)
    started = time.monotonic()
    repo.materialize(
        {
            "user_stats": [
                {"user_id": u, "txn_count_7d": count, "event_timestamp": at}
                for u, count, _ in USERS
            ],
            "user_risk": [
                {"user_id": u, "score": score, "event_timestamp": at} for u, _, score in USERS
            ],
        },
        start=now - timedelta(days=30),
        end=now + timedelta(minutes=1),
    )
    return repo, time.monotonic() - started


def sample_model() -> dict[str, Any]:
    """The sample as it is, but for its servers (the dev-mode ones; Feast's store the
    dev-mode Redis's database `FEAST_DB`, which has no password, so no Secret) and a
    small inference without training (the services image is not on the node here)."""
    document = yaml.safe_load(SAMPLE.read_text())
    assert document["metadata"]["name"] == NAME
    document["metadata"]["namespace"] = MODELS
    spec = document["spec"]
    redis = f"redis://{dev.host('redis')}:6379"
    spec["model"]["registry"]["trackingUri"] = f"http://{dev.host('mlflow')}:5000"
    spec["kafka"]["bootstrapServers"] = f"{dev.host('kafka')}:9092"
    spec["redis"] = {"url": f"{redis}/0"}
    assert spec["feast"]["redis"]["credentialsSecret"]  # the sample's, left out here
    spec["feast"] = {"redis": {"url": f"{redis}/{FEAST_DB}"}}
    spec["inference"] = {
        "replicas": {"min": 1, "max": 1},
        "resources": {"cpu": "250m", "memory": "512Mi"},
    }
    spec["training"] = {"mode": "off"}
    return document


@pytest.fixture(scope="module")
def served(
    installed: dict[str, float],
    feast_store: tuple[FeastRepo, float],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
) -> dict[str, Any]:
    """A version registered in the in-cluster MLflow (inputs: the sample's features,
    the request's own and the sourced ones), and the sample serving it with 1 inference
    replica, Ready."""
    from driftline.api import parse_dynamic_model
    from driftline.inference.contract import FeatureContract
    from driftline_testing.models import mlp_model

    document = sample_model()
    model = parse_dynamic_model(document)
    onnx = mlp_model(FeatureContract(model.spec), seed=7)
    uri = f"http://{dev.host('mlflow')}:5000"
    argv = ["python3", "-c", dev.REGISTER, uri, NAME, base64.b64encode(onnx).decode()]
    log, _ = dev.run_pod(kube, dev.client_pod("register-feast", dev_images["dev-mlflow"].ref, argv))
    assert log.strip().splitlines()[-1] == "1", log
    started = time.monotonic()
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    cluster.wait_part_ready(kube, MODELS, NAME, "inference", count=1, timeout=240)
    return {
        "ready_s": time.monotonic() - started,
        "bootstrap": f"{dev.host('kafka')}:9092",
        "predictions": model.topics.predictions,
    }


def test_the_feast_sample_serves_and_logs_what_feast_wrote(
    served: dict[str, Any],
    feast_store: tuple[FeastRepo, float],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    repo, materialized_s = feast_store
    # Feast's own reading of its store, for the users it knows.
    refs = [f"{view}:{feature}" for view, feature, _ in FROM_FEAST.values()]
    online = repo.online_features(refs, [{"user_id": u[0]} for u in USERS])
    wanted: dict[str, dict[str, float]] = {}
    for i, (user, *values) in enumerate(USERS):
        for (_, feature, _), value in zip(FROM_FEAST.values(), values, strict=True):
            assert online[feature][i] == value, (feature, online[feature][i], value)
        wanted[str(user)] = {n: f32(v) for n, v in zip(FROM_FEAST, values, strict=True)}
    wanted[UNKNOWN] = {name: f32(default) for name, (_, _, default) in FROM_FEAST.items()}

    entities = [*wanted, *wanted]  # each user twice
    image = dev.node_ref("inference", dev_images)
    argv = ["python", "-c", SEND, URL, json.dumps(entities), json.dumps(ROW)]
    log, sent_s = dev.run_pod(kube, dev.client_pod("feast-send", image, argv))
    sent = json.loads(log.strip().splitlines()[-1])
    ids = [f"feast-{i}" for i in range(len(entities))]
    assert sent["failed"] == [] and sent["answered"] == ids, sent

    argv = ["python", "-c", READ_LOG, served["bootstrap"], served["predictions"], json.dumps(ids)]
    log, _ = dev.run_pod(kube, dev.client_pod("feast-log", image, argv), timeout=240)
    found = json.loads(log.strip().splitlines()[-1])
    assert sorted(found) == sorted(ids), f"not logged: {sorted(set(ids) - set(found))}"
    for i, entity in enumerate(entities):
        event = found[f"feast-{i}"]
        assert event["entity"] == entity
        logged = {name: event["features"][name] for name in FROM_FEAST}
        assert logged == wanted[entity], (entity, logged, wanted[entity])
        assert {k: event["features"][k] for k in ROW} == ROW  # as the client sent them
        # The sample's own aggregate: the user's requests before this one, in the hour.
        assert event["features"]["card_requests_1h"] == (0 if i < len(wanted) else 1), event
    report(
        request,
        f"Feast applied and materialized {len(USERS)} users into the dev-mode Redis "
        f"(database {FEAST_DB}) in {materialized_s:.1f} s; the Feast sample's inference "
        f"Ready {served['ready_s']:.1f} s after the apply; {len(ids)} predictions answered "
        f"in {sent_s:.1f} s, each logged with Feast's values (defaults for user {UNKNOWN})",
        TAG,
    )
