"""The feedback joiner in a real Pod on the rig's real node, deleted mid-stream.

The chart in dev mode as test_dev_mode.py installs it (Redis, Kafka and MLflow in
the cluster, namespaces under the restricted Pod Security Standard; its fixtures,
reused here, install a release of this module's own). A version registered in that
MLflow by a Pod; a DynamicModel whose inference (1 replica) and joiner both run from
the CPU inference image (`driftline/inference`, no torch: the operator runs the joiner
from it) and become Ready. Its training is off (no trainer); its drift monitor, which
the spec cannot switch off, runs from the same image (its default scipy backend needs
no torch) but stays not ready: the version carries no reference sample
(test_drift_pod.py registers one).

A Pod of another namespace sends predictions with request ids of its own through the
inference Service and, every 10 answers, their outcomes to the outcomes route (202:
the broker acknowledged each); the joiner's Pod is deleted a third of the way into
the stream, and its Deployment starts another: once with the grace period the
operator gives (SIGTERM), once with none (`--force`, the container killed).
Accounted as the chaos suite does (tests/chaos): once the joiner's group has
committed both topics to their ends, every acknowledged outcome is in exactly one
labeled example (read from the labeled topic by a Pod: no request id missing, none
twice).

Measured and printed: the joiner's Ready time after the model's apply and after the
delete, its memory (the kubelet's summary), the stream's size and the time until the
labeled topic held every example.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import yaml

from driftline_testing.images import BuiltImage
from driftline_testing.node import NodeStack
from tests.integration.pods import cluster
from tests.integration.pods import test_dev_mode as dev
from tests.integration.pods.cluster import Kube, is_ready, pod_memory, report

pytestmark = [pytest.mark.integration, pytest.mark.rig, pytest.mark.timeout(1800)]

# test_dev_mode.py's module fixtures, made again for this module: the images (found by
# their content key, already in the node) and a dev-mode release of this module's own.
dev_images = dev.dev_images
imported = dev.imported
installed = dev.installed

MODELS, CLIENTS = dev.MODELS, dev.CLIENTS
NAME = "labeler"
TAG = "joiner pod"
URL = f"http://{NAME}-inference.{MODELS}:8080/v1/models/{NAME}"
STREAM_SECONDS = 20
RATE = 40  # predictions a second, one row each
# The joiner's HPA acts on real CPU readings here (the node's metrics-server): with the
# small profile's 10m it adds a second joiner under the stream (the model has 2
# partitions), and these tests delete the one joiner; it asks a CPU it stays well under.
OPERATOR_SETTINGS: dict[str, Any] = {
    **dev.OPERATOR_SETTINGS,
    "joiner_resources": {**dev.OPERATOR_SETTINGS["joiner_resources"], "cpu": "250m"},
}

# Run in the inference image from another namespace: predictions for argv[3] seconds
# at argv[4] a second, each with a request id of its own (argv[5] and a number), and
# every 10 answers their outcomes in one POST to the outcomes route, sent again (up to
# 5 times) until it answers 202; `delivered` are the outcomes it acknowledged. A progress line every
# 20 predictions, one JSON object at the end.
STREAM = """
import json, sys, time, urllib.error, urllib.request
base, rows = sys.argv[1], json.loads(sys.argv[2])
seconds, rate, prefix = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]

def post(path, doc):
    request = urllib.request.Request(
        base + path, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()[:200]
    except Exception as exc:
        return None, repr(exc)

answered, delivered, failed, retries, pending = 0, [], [], 0, []

def send_outcomes():
    global retries
    body = [{"request_id": prefix + str(i), "label": i % 2} for i in pending]
    for attempt in range(5):
        status, answer = post("/outcomes", body)
        if status == 202:
            delivered.extend(pending)
            break
        retries += 1
        failed.append("outcomes %s: %s" % (status, str(answer)[:120]))
        time.sleep(1)
    pending.clear()

started = time.monotonic()
i = 0
while time.monotonic() - started < seconds:
    rid = prefix + str(i)
    status, answer = post("/predict", {"entity_id": "e-%d" % (i % 50), "request_id": rid,
                                       "features": rows[i % len(rows)]})
    if status == 200 and answer.get("request_id") == rid:
        answered += 1
        pending.append(i)
    else:
        failed.append("predict %s: %s" % (status, str(answer)[:120]))
    if len(pending) >= 10:
        send_outcomes()
    i += 1
    if i % 20 == 0:
        print("progress %d" % i, flush=True)
    time.sleep(max(0.0, started + i / rate - time.monotonic()))
if pending:
    send_outcomes()
print(json.dumps({"sent": i, "answered": answered, "delivered": delivered,
                  "failed": failed[:20], "retries": retries,
                  "seconds": time.monotonic() - started}))
"""

# Run in the inference image from another namespace: waits (at most argv[7] seconds)
# until the joiner's group (argv[2]) has committed the predictions and outcomes topics
# (argv[3]) to their ends and the labeled topic (argv[4]) holds an example of every
# delivered request id (argv[6]), then counts the labeled examples per request id. For
# an id with none, whether its served prediction is in the predictions topic (argv[5]).
ACCOUNT = """
import json, sys, time
from collections import Counter
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from driftline.api.events import Prediction, decode
bootstrap, group, topics, labeled, predictions = sys.argv[1:6]
topics, ids, timeout = json.loads(topics), set(json.loads(sys.argv[6])), float(sys.argv[7])
conf = {"bootstrap.servers": bootstrap, "enable.auto.commit": False}

def partitions(consumer, topic):
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    return [TopicPartition(topic, p) for p in sorted(meta.partitions)]

def read_all(topic):
    consumer = Consumer({**conf, "group.id": "account-%f" % time.time()})
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in partitions(consumer, topic)}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    left, out = {p for p, end in ends.items() if end > 0}, []
    deadline = time.monotonic() + 60
    while left and time.monotonic() < deadline:
        m = consumer.poll(1.0)
        if m is None or m.error():
            continue
        out.append(m)
        if m.offset() + 1 >= ends[m.partition()]:
            left.discard(m.partition())
    consumer.close()
    assert not left, "%s not read to its end in 60 s" % topic
    return out

def behind():
    # The joiner's group, read without joining it (no subscribe).
    consumer = Consumer({**conf, "group.id": group})
    lag = 0
    for topic in topics:
        parts = partitions(consumer, topic)
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        for tp in parts:
            end = consumer.get_watermark_offsets(tp, timeout=10)[1]
            lag += max(0, end - max(committed[tp.partition], 0))
    consumer.close()
    return lag

started = time.monotonic()
while True:
    lag = behind()
    counts = Counter(m.key().decode() for m in read_all(labeled) if m.key())
    if (lag == 0 and ids <= set(counts)) or time.monotonic() - started > timeout:
        break
    time.sleep(2)
lost = sorted(ids - set(counts))
logged = set()
if lost:
    for m in read_all(predictions):
        if decode(m.value(), Prediction).variant in ("stable", "candidate"):
            logged.add(m.key().decode())
print(json.dumps({
    "behind": lag, "labeled": sum(counts.values()), "ids": len(ids),
    "lost": lost[:50], "lost_count": len(lost), "lost_logged": sorted(set(lost) & logged)[:50],
    "twice": sorted(k for k in ids if counts[k] > 1)[:50],
    "twice_count": sum(1 for k in ids if counts[k] > 1),
    "strangers": sum(1 for k in counts if k not in ids),
    "seconds": time.monotonic() - started,
}))
"""


def part_pods(kube: Kube, part: str) -> list[dict[str, Any]]:
    """The model's Pods of `part` that are not being deleted, oldest first."""
    return cluster.part_pods(kube, MODELS, NAME, part)


def wait_ready(kube: Kube, part: str, timeout: float, other_than: str = "") -> float:
    """Waits until one Pod of `part` (not the uid `other_than`) is Ready; the seconds."""
    return cluster.wait_part_ready(
        kube, MODELS, NAME, part, count=1, timeout=timeout, other_than=other_than
    )


@pytest.fixture(scope="module")
def labeler(
    installed: dict[str, float],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
) -> dict[str, Any]:
    """A version registered in the in-cluster MLflow, and a DynamicModel serving it
    with 1 inference replica and its joiner, both Ready; the seconds each step took."""
    from driftline.api import parse_dynamic_model
    from driftline.api.parts import JOINER
    from driftline.inference.contract import FeatureContract
    from driftline_testing.models import mlp_model

    document = dev.dev_model(NAME)
    document["spec"]["kafka"]["partitions"] = 2
    model = parse_dynamic_model(document)
    onnx = mlp_model(FeatureContract(model.spec), seed=5)
    uri = f"http://{dev.host('mlflow')}:5000"
    argv = ["python3", "-c", dev.REGISTER, uri, NAME, base64.b64encode(onnx).decode()]
    log, registered = dev.run_pod(
        kube, dev.client_pod("register-labeler", dev_images["dev-mlflow"].ref, argv)
    )
    assert log.strip().splitlines()[-1] == "1", log

    started = time.monotonic()
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    wait_ready(kube, "inference", timeout=240)
    inference_s = time.monotonic() - started
    wait_ready(kube, "joiner", timeout=max(30, 240 - inference_s))
    joiner_s = time.monotonic() - started
    topics = model.topics
    return {
        "register_s": registered,
        "inference_ready_s": inference_s,
        "joiner_ready_s": joiner_s,
        "bootstrap": f"{dev.host('kafka')}:9092",
        "group": JOINER.group_id(NAME),
        "predictions": topics.predictions,
        "outcomes": topics.outcomes,
        "labeled": topics.labeled,
    }


def test_the_joiner_runs_from_the_inference_image_and_becomes_ready(
    labeler: dict[str, Any],
    kube: Kube,
    real_node: NodeStack,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    """The operator gives the joiner the inference image (no torch), which the node
    holds: its Pod starts `python -m driftline.joiner` there and becomes Ready; the
    drift monitor's Pod runs from it too, not ready without a reference sample."""
    (joiner,) = part_pods(kube, "joiner")
    container = joiner["spec"]["containers"][0]
    assert container["image"] == dev.node_ref("inference", dev_images)
    assert container["command"] == ["python", "-m", "driftline.joiner"]
    assert joiner["status"]["containerStatuses"][0]["restartCount"] == 0
    drift = part_pods(kube, "drift")
    assert drift and not any(is_ready(p) for p in drift)
    assert drift[0]["spec"]["containers"][0]["image"] == dev.node_ref("inference", dev_images)
    assert real_node.node is not None
    stats = pod_memory(kube, real_node.node.name, MODELS)[joiner["metadata"]["name"]]
    working_set = stats["workingSetBytes"] / 2**20
    assert 0 < working_set < 256, stats
    report(
        request,
        f"version registered by a Pod in {labeler['register_s']:.1f} s; after the model's "
        f"apply, inference Ready in {labeler['inference_ready_s']:.1f} s and the joiner "
        f"(inference image) in {labeler['joiner_ready_s']:.1f} s; joiner working set "
        f"{working_set:.0f} MiB, RSS {stats.get('rssBytes', 0) / 2**20:.0f} MiB",
        TAG,
    )


@pytest.mark.parametrize("deletion", ["graceful", "forced"])
def test_a_joiner_pod_deleted_mid_stream_loses_and_doubles_no_labeled_example(
    deletion: str,
    labeler: dict[str, Any],
    kube: Kube,
    real_node: NodeStack,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    """`graceful`: `kubectl delete pod` (SIGTERM, the joiner finishes its batch and
    commits within the grace period); `forced`: no grace (`--grace-period=0 --force`:
    the API object goes at once, the kubelet kills the container, and the new Pod may
    join the group before the old one is gone)."""
    image = dev.node_ref("inference", dev_images)
    prefix = f"{deletion}-"
    argv = [
        "python",
        "-c",
        STREAM,
        URL,
        json.dumps(dev.ROWS),
        str(STREAM_SECONDS),
        str(RATE),
        prefix,
    ]
    started = time.monotonic()
    feedback = dev.client_pod(f"feedback-{deletion}", image, argv)
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(feedback))
    third = STREAM_SECONDS * RATE // 3
    while f"progress {third - third % 20}" not in kube.kubectl(
        "logs", "-n", CLIENTS, f"feedback-{deletion}", check=False
    ):
        assert time.monotonic() - started < 120, kube.kubectl(
            "get", "events", "-n", CLIENTS, check=False
        )
        time.sleep(0.25)
    (victim,) = part_pods(kube, "joiner")
    deleted = time.monotonic()
    force = ["--grace-period=0", "--force"] if deletion == "forced" else []
    kube.kubectl("delete", "pod", victim["metadata"]["name"], "-n", MODELS, "--wait=false", *force)
    back = wait_ready(kube, "joiner", timeout=120, other_than=victim["metadata"]["uid"])
    log, _ = dev.finish_pod(kube, f"feedback-{deletion}", started, timeout=STREAM_SECONDS + 180)
    stream = json.loads(log.strip().splitlines()[-1])
    assert stream["answered"] == stream["sent"] > 0, stream
    delivered = [f"{prefix}{i}" for i in stream["delivered"]]
    # What the outcomes route acknowledged is what counts (as in the chaos suite).
    assert len(delivered) >= 0.9 * stream["answered"], stream

    account_argv = [
        "python",
        "-c",
        ACCOUNT,
        labeler["bootstrap"],
        labeler["group"],
        json.dumps([labeler["predictions"], labeler["outcomes"]]),
        labeler["labeled"],
        labeler["predictions"],
        json.dumps(delivered),
        "150",
    ]
    account = dev.client_pod(f"account-{deletion}", image, account_argv)
    log, _ = dev.run_pod(kube, account, timeout=240)
    out = json.loads(log.strip().splitlines()[-1])
    done = time.monotonic() - deleted
    assert out["behind"] == 0, f"the joiner left records behind: {out}"
    assert out["lost_count"] == 0, f"outcomes without a labeled example: {out}"
    assert out["twice_count"] == 0, f"request ids labeled twice: {out}"
    assert out["ids"] == len(delivered) and out["labeled"] >= len(delivered), out

    assert real_node.node is not None
    (joiner,) = part_pods(kube, "joiner")
    stats = pod_memory(kube, real_node.node.name, MODELS).get(joiner["metadata"]["name"], {})
    working_set = stats.get("workingSetBytes", 0) / 2**20
    report(
        request,
        f"joiner Pod deleted mid-stream ({deletion}): {stream['sent']} predictions and "
        f"{len(delivered)} acknowledged outcomes in {stream['seconds']:.1f} s "
        f"({stream['retries']} outcome POSTs sent again); a new joiner Pod Ready "
        f"{back:.1f} s after the delete; every outcome in exactly one labeled example "
        f"({out['labeled']} in the topic), the joiner's group at the end of both topics "
        f"{done:.1f} s after the delete; new joiner working set {working_set:.0f} MiB",
        TAG,
    )
