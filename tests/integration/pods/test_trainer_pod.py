"""The trainer in a real Pod on the rig's real node, with every other part of a model.

The chart in dev mode as test_dev_mode.py installs it (its fixtures, reused here,
install a release of this module's own), with the services image (torch inside,
~6 GB) on the node too: streamed from the docker engine into the node's containerd
(`docker save | ctr images import -`, no tarball on disk), once per session.

A DynamicModel with training on (`make demo`'s SEA model, short intervals) and
`spec.model.initial` naming an ONNX file and a labelled sample (the demo's `migrate`
scenario's: gradient-boosted trees trained on the stream's first concept), both
logged by a Pod as artifacts of a run in the in-cluster MLflow: the operator's import
Job (the services image) registers version 1 from them, and
every part's Pod (inference, joiner, trainer, drift monitor) becomes Ready, all
admitted under the restricted Pod Security Standard. The trainer's checkpoint claim
binds to a volume of the node (the rig has no StorageClass nor provisioner: the
operator is told `trainer_storage_class: ""`, a statically provisioned volume, and
the test makes one); `kubectl get dynamicmodels` shows the printer columns filled.

Then the loop closes in Pods: e2e/traffic.py in a client Pod sends rows through the
inference Service and each outcome back, and switches the labeling rule; read from
the model's status, the drift monitor detects concept drift, the trainer registers a
candidate, the rollout shadows it, steps it through the canary and promotes it, and
the answers are right again.

Measured and printed: the services image's import, the model's time to Ready after
its apply (the import Job's, and each part's), the trainer Pod's peak memory, each
stage of the loop after the switch and the answers' accuracy.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline_testing.images import DEV_IMAGES, BuiltImage, ImageBuilder
from driftline_testing.node import NodeStack
from driftline_testing.prometheus import PrometheusServer
from tests.deploy.chart import ROOT
from tests.deploy.promql import EMPTY_FOR_THE_DEMO_MODEL, live_queries, monitor_everything
from tests.integration.pods import test_dev_mode as dev
from tests.integration.pods.cluster import (
    Kube,
    is_ready,
    part_pods,
    pod_memory,
    report,
    wait_part_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.rig, pytest.mark.timeout(1800)]

# test_dev_mode.py's module fixtures, made again for this module.
imported = dev.imported
installed = dev.installed

MODELS, CLIENTS = dev.MODELS, dev.CLIENTS
NAME = "learner"
TAG = "trainer pod"
PARTS = ("inference", "joiner", "trainer", "drift")
# The demo's model and the imported version's sample (rows of the first concept).
SEA_DEMO = ROOT / "manifests" / "samples" / "sea-demo.yaml"
SAMPLE_ROWS = 2000
SEED = 7
# The loop: e2e/traffic.py in a Pod, `make demo`'s concepts (x1 + x2 <= 7, then 9.5),
# RATE rows a second, the switch after SWITCH_AFTER rows; promotion within LOOP_SECONDS.
CONCEPTS = "2,3"
RATE = 100
SWITCH_AFTER = 3000
REPORT_EVERY = 1000
LOOP_SECONDS = 480
# The stream runs on after the loop (the broken candidate, the trainer's restart).
TRAFFIC_SECONDS = LOOP_SECONDS + 900
# Served accuracy after promotion beats the old version's on the new concept by this
# much (`make demo`'s margin over its frozen baseline).
CLEAR_MARGIN = 0.05
INFERENCE_CPU = "500m"
MAX_P99_MS = 1000
# The trainer asks little CPU (the node's 2 are shared) and memory enough for its
# process (torch imported, a small learner): its measured peak, 808 MiB, is printed
# (docs/deploy.md).
TRAINER = {"cpu": "100m", "memory": "1536Mi", "tmp": "256Mi"}
CHECKPOINT_SIZE = "1Gi"
# The chart's scrape configs (for a Prometheus without the Prometheus Operator), read
# by the rig's Prometheus on the node; every 2 s to see a short run.
CHART_VALUES = {"monitoring": {"scrapeConfigs": {"enabled": True, "interval": "2s"}}}
# The model's budget (spec.cost.monthlyBudget: the operator exports it).
BUDGET = 250.0
# Grafana's variables for this model, and the rate window of the checks.
LIVE_VARIABLES = {"$__rate_interval": "30s", "$namespace": MODELS, "$model": NAME}
# Queries that may return nothing here, and why (everything else must return series).
MAY_BE_EMPTY: dict[str, str] = {
    **EMPTY_FOR_THE_DEMO_MODEL,
    "alert DriftlineReconcileFailing":
        "its series starts with the first failed reconcile, and none failed",
}  # fmt: skip
OPERATOR_SETTINGS: dict[str, Any] = {
    **dev.OPERATOR_SETTINGS,
    "trainer_resources": TRAINER,
    "trainer_checkpoint_size": CHECKPOINT_SIZE,
    # No StorageClass on the rig: the claim binds to the volume the test makes.
    "trainer_storage_class": "",
}

# Run in the MLflow image from another namespace: the model file and its sample logged
# as artifacts of a run (nothing registered); prints the run's id.
UPLOAD = """
import base64, os, sys, tempfile
from mlflow import MlflowClient
uri, name = sys.argv[1], sys.argv[2]
files = {"model/model.onnx": base64.b64decode(sys.argv[3]),
         "sample/sample.csv": base64.b64decode(sys.argv[4])}
client = MlflowClient(tracking_uri=uri)
run = client.create_run(client.create_experiment(name + "-upload"))
with tempfile.TemporaryDirectory() as tmp:
    for artifact, data in files.items():
        path = os.path.join(tmp, os.path.basename(artifact))
        with open(path, "wb") as f:
            f.write(data)
        client.log_artifact(run.info.run_id, path, os.path.dirname(artifact))
client.set_terminated(run.info.run_id)
print(run.info.run_id)
"""


@pytest.fixture(scope="module")
def dev_images(image_builder: ImageBuilder) -> dict[str, BuiltImage]:
    """test_dev_mode.py's images and the services image (the trainer's, the import
    Job's), built from this tree (or found by their content key)."""
    names = ("operator", "inference", "services", *DEV_IMAGES.values())
    return {name: image_builder.build(name) for name in names}


def model_files() -> tuple[dict[str, Any], bytes, bytes]:
    """The model's document (`make demo`'s SEA model on the dev servers), and the
    demo's static model with its labelled sample: gradient-boosted trees trained on
    the stream's first concept, as ONNX (the `migrate` scenario's)."""
    from driftline.local.demo import static_model

    document = dev.dev_model(NAME, training="online")
    demo = yaml.safe_load(SEA_DEMO.read_text())["spec"]
    spec = document["spec"]
    spec["model"] = {**demo["model"], "registry": spec["model"]["registry"]}
    spec["training"] = {**demo["training"], "mode": "online"}
    spec["inference"]["batching"] = demo["inference"]["batching"]
    for key in ("features", "drift", "feedback", "monitoring", "rollout"):
        spec[key] = demo[key]
    # Inference's CPU is its limit too; the node's 2 cores are shared with the whole
    # stack and the machine's other work, so the analysis' latency bound is looser here.
    spec["inference"]["resources"]["cpu"] = INFERENCE_CPU
    spec["rollout"]["analysis"]["maxP99Ms"] = MAX_P99_MS
    # Every panel of the dashboards gets something to show (the queries' test).
    monitor_everything(spec)
    spec["cost"] = {"monthlyBudget": BUDGET}
    with tempfile.TemporaryDirectory() as folder:
        model, sample = static_model(Path(folder), SAMPLE_ROWS, seed=SEED)
        return document, model.read_bytes(), sample.read_bytes()


def checkpoint_volume(real_node: NodeStack, claim: str) -> dict[str, Any]:
    """A volume of the node (a folder of the run's, removed with it) for `claim`."""
    folder = real_node.state.root + "/volumes/trainer-checkpoints"
    os.makedirs(folder, exist_ok=True)
    os.chmod(folder, 0o777)  # the trainer runs as 10001; fsGroup does not reach hostPath
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{MODELS}-{claim}"},
        "spec": {
            "capacity": {"storage": CHECKPOINT_SIZE},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": MODELS, "name": claim},
            "hostPath": {"path": folder, "type": "Directory"},
        },
    }


def model_ready(kube: Kube) -> bool:
    """The model's Ready condition is True and its phase Serving."""
    status = kube.json("get", "dynamicmodel", NAME, "-n", MODELS).get("status", {})
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    return status.get("phase") == "Serving" and bool(ready) and ready[0]["status"] == "True"


@pytest.fixture(scope="module")
def learner(
    installed: dict[str, float],
    kube: Kube,
    real_node: NodeStack,
    dev_images: dict[str, BuiltImage],
) -> Iterator[dict[str, Any]]:
    """The model applied with its initial model in MLflow and its checkpoint volume;
    the seconds until its version 1 was registered and each part's Pods were Ready."""
    from driftline.operator.builders.context import child_name

    document, model, sample = model_files()
    argv = [
        "python3",
        "-c",
        UPLOAD,
        f"http://{dev.host('mlflow')}:5000",
        NAME,
        base64.b64encode(model).decode(),
        base64.b64encode(sample).decode(),
    ]
    log, uploaded = dev.run_pod(kube, dev.client_pod("upload", dev_images["dev-mlflow"].ref, argv))
    run_id = log.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{32}", run_id), log
    document["spec"]["model"]["initial"] = {
        "uri": f"runs:/{run_id}/model/model.onnx",
        "sample": f"runs:/{run_id}/sample/sample.csv",
    }
    volume = checkpoint_volume(real_node, child_name(NAME, "trainer-checkpoints"))
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(volume))
    try:
        started = time.monotonic()
        kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
        seconds: dict[str, float] = {"upload": uploaded}
        deadline = started + 600
        while "version 1" not in seconds:
            status = kube.json("get", "dynamicmodel", NAME, "-n", MODELS).get("status", {})
            if status.get("stableVersion") == "1":
                seconds["version 1"] = time.monotonic() - started
            elif time.monotonic() > deadline:
                events = kube.kubectl("get", "events", "-n", MODELS, check=False)
                jobs = kube.kubectl(
                    "logs",
                    "-n",
                    MODELS,
                    "-l",
                    "app.kubernetes.io/component=import",
                    "--tail=60",
                    check=False,
                )
                pytest.fail(f"no version 1 in 600 s: {status}\n{events[-3000:]}\n{jobs}")
            time.sleep(1)
        for part in PARTS:
            wait_part_ready(
                kube, MODELS, NAME, part, count=1, timeout=max(deadline - time.monotonic(), 60)
            )
            seconds[part] = time.monotonic() - started
        while not model_ready(kube):
            assert time.monotonic() < deadline, kube.json("get", "dynamicmodel", NAME, "-n", MODELS)
            time.sleep(1)
        seconds["model Ready"] = time.monotonic() - started
        yield {"seconds": seconds, "volume": volume}
    finally:
        kube.kubectl("delete", "dynamicmodel", NAME, "-n", MODELS, "--timeout=60s", check=False)
        kube.kubectl("delete", "pvc", "--all", "-n", MODELS, "--timeout=60s", check=False)
        kube.kubectl("delete", "pv", volume["metadata"]["name"], "--timeout=60s", check=False)


def test_import_job_registers_version_1_and_every_part_becomes_ready(
    learner: dict[str, Any],
    imported: dict[str, float],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    jobs = kube.json("get", "jobs", "-n", MODELS, "-l", "app.kubernetes.io/component=import")
    assert [j["status"].get("succeeded") for j in jobs["items"]] == [1], jobs
    services = dev.node_ref("services", dev_images)
    restarts = {}
    for part in PARTS:
        (pod,) = part_pods(kube, MODELS, NAME, part)
        assert is_ready(pod)
        restarts[part] = pod["status"]["containerStatuses"][0]["restartCount"]
        image = pod["spec"]["containers"][0]["image"]
        assert (image == services) == (part == "trainer"), (part, image)
    # Admitted under `restricted`: the namespace enforces it, and nothing was refused.
    namespace = kube.json("get", "namespace", MODELS)["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    events = kube.kubectl("get", "events", "-n", MODELS)
    assert "violates PodSecurity" not in events, events
    image = dev_images["services"]
    took = imported.get("services")
    report(
        request,
        f"services image {image.size_mb:.0f} MB "
        + (f"streamed into the node in {took:.1f} s" if took else "already on the node"),
        TAG,
    )
    report(
        request,
        "after the model's apply: "
        + ", ".join(f"{what} {s:.1f} s" for what, s in learner["seconds"].items())
        + f"; restarts {restarts}",
        TAG,
    )


def test_the_trainer_checkpoint_claim_binds_to_the_node_volume(
    learner: dict[str, Any], kube: Kube, request: pytest.FixtureRequest
) -> None:
    volume = learner["volume"]
    claim = volume["spec"]["claimRef"]["name"]
    pvc = kube.json("get", "pvc", claim, "-n", MODELS)
    assert pvc["status"]["phase"] == "Bound", pvc["status"]
    assert pvc["spec"]["volumeName"] == volume["metadata"]["name"]
    (pod,) = part_pods(kube, MODELS, NAME, "trainer")
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [claim], pod["spec"]["volumes"]
    mount = next(
        m["mountPath"]
        for m in pod["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == "checkpoints"
    )
    probe = f"{mount}/.written-by-test"
    kube.kubectl(
        "exec",
        "-n",
        MODELS,
        pod["metadata"]["name"],
        "--",
        "python",
        "-c",
        f"open({probe!r}, 'w').write('ok')",
    )
    path = volume["spec"]["hostPath"]["path"] + "/.written-by-test"
    with open(path) as handle:
        assert handle.read() == "ok"
    report(request, f"checkpoint claim {claim} Bound to a node volume, written by the trainer", TAG)


def test_the_printer_columns_show_the_model(
    learner: dict[str, Any], kube: Kube, request: pytest.FixtureRequest
) -> None:
    table = kube.kubectl("get", "dynamicmodels", "-n", MODELS)
    header, *rows = table.strip().splitlines()
    columns = re.split(r"\s{2,}", header.strip())
    assert columns == ["NAME", "PHASE", "STABLE", "CANDIDATE", "CANARY%", "DRIFT", "AGE"], table
    (row,) = rows
    # Fixed-width columns (an unset one is blank): each value starts under its header.
    starts = [header.index(c) for c in columns]
    ends = [*starts[1:], None]
    values = {c: row[a:b].strip() for c, a, b in zip(columns, starts, ends, strict=True)}
    assert values["NAME"] == NAME and values["PHASE"] == "Serving" and values["STABLE"] == "1", (
        table
    )
    assert values["AGE"], table
    report(request, "kubectl get dynamicmodels:\n" + table.rstrip(), TAG)


def test_the_trainer_memory_is_recorded(
    learner: dict[str, Any], kube: Kube, real_node: NodeStack, request: pytest.FixtureRequest
) -> None:
    (pod,) = part_pods(kube, MODELS, NAME, "trainer")
    name = pod["metadata"]["name"]
    hwm = kube.kubectl("exec", "-n", MODELS, name, "--", "grep", "VmHWM", "/proc/1/status")
    peak = int(hwm.split()[1]) / 1024  # kB
    assert real_node.node is not None
    working_set = pod_memory(kube, real_node.node.name, MODELS)[name]["workingSetBytes"] / 2**20
    limit = int(TRAINER["memory"].removesuffix("Mi"))
    assert 0 < peak < limit and 0 < working_set < limit, (peak, working_set)
    report(request, f"trainer peak RSS {peak:.0f} MiB, working set {working_set:.0f} MiB", TAG)


def traffic_pod(kube: Kube, image: str, document: dict[str, Any]) -> str:
    """e2e/traffic.py (as e2e/run.sh runs it) in a Pod of the services image, with the
    model's document beside it in a ConfigMap: rows to the model's inference Service,
    each outcome back to it, the concept switch after SWITCH_AFTER rows."""
    from driftline.operator.builders.context import child_name

    name = "traffic"
    files = {
        "traffic.py": (ROOT / "e2e" / "traffic.py").read_text(encoding="utf-8"),
        "model.yaml": yaml.safe_dump(document),
    }
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": CLIENTS},
        "data": files,
    }
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(configmap))
    argv = ["python", "/e2e/traffic.py", "--model-file", "/e2e/model.yaml"]
    argv += ["--url", f"http://{child_name(NAME, 'inference')}.{MODELS}:8080"]
    argv += ["--concepts", CONCEPTS, "--switch-after", str(SWITCH_AFTER), "--rate", str(RATE)]
    argv += ["--report-every", str(REPORT_EVERY), "--seconds", str(TRAFFIC_SECONDS)]
    pod = dev.client_pod(name, image, argv)
    container = pod["spec"]["containers"][0]
    container["env"].append({"name": "HOME", "value": "/tmp"})
    container["volumeMounts"].append({"name": "e2e", "mountPath": "/e2e", "readOnly": True})
    pod["spec"]["volumes"].append({"name": "e2e", "configMap": {"name": name}})
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    return name


LINE = re.compile(
    r"^(\S+ \S+) (\d+) rows sent \(concept (\d+)\), (\d+) failed requests, accuracy ([\d.]+)$"
)
SWITCH = re.compile(r"^(\S+ \S+) concept switch at row", re.MULTILINE)


def log_time(text: str) -> datetime:
    """A time the traffic's log wrote (its Pod's clock is UTC)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)


def accuracy_lines(log: str) -> list[tuple[datetime, int, float]]:
    """The traffic log's accuracy lines: (when, concept, accuracy over the period)."""
    found = []
    for line in log.splitlines():
        match = LINE.match(line.strip())
        if match:
            found.append((log_time(match[1]), int(match[3]), float(match[5])))
    return found


def loop_logs(kube: Kube) -> str:
    """The last lines of the loop's parts and of the operator (for a failure's message)."""
    out = []
    for part in ("drift", "trainer", "inference"):
        selector = f"driftline.io/model={NAME},app.kubernetes.io/component={part}"
        lines = kube.kubectl("logs", "-n", MODELS, "-l", selector, "--tail=15", check=False)
        out.append(f"--- {part}\n{lines}")
    selector = "app.kubernetes.io/name=driftline-operator"
    lines = kube.kubectl("logs", "-n", dev.NAMESPACE, "-l", selector, "--tail=25", check=False)
    return "\n".join([*out, f"--- operator\n{lines}"])


@pytest.fixture(scope="module")
def prometheus(
    installed: dict[str, float], kube: Kube, real_node: NodeStack
) -> Iterator[tuple[PrometheusServer, float]]:
    """Prometheus on the node with the chart's scrape configs as the release wrote them
    (its ConfigMap); the time it started (Unix seconds)."""
    configmap = kube.json("get", "configmap", "driftline-scrape-configs", "-n", dev.NAMESPACE)
    configs = yaml.safe_load(configmap["data"]["driftline.yaml"])["scrape_configs"]
    assert real_node.node is not None
    server = real_node.node.start_prometheus(configs)
    try:
        yield server, time.time()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def traffic(
    learner: dict[str, Any],
    prometheus: tuple[PrometheusServer, float],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """e2e/traffic.py's Pod streaming through the loop and the tests after it (the
    concept switch after SWITCH_AFTER rows); its name and the model's document."""
    document = kube.json("get", "dynamicmodel", NAME, "-n", MODELS)
    model = {k: document[k] for k in ("apiVersion", "kind", "spec")}
    model["metadata"] = {"name": NAME, "namespace": MODELS}
    pod = traffic_pod(kube, dev.node_ref("services", dev_images), model)
    try:
        yield pod, model
    finally:
        kube.kubectl("delete", "pod", pod, "-n", CLIENTS, "--wait=false", check=False)


def test_the_loop_closes_drift_candidate_shadow_canary_promoted(
    traffic: tuple[str, dict[str, Any]],
    kube: Kube,
    request: pytest.FixtureRequest,
) -> None:
    """Traffic and outcomes through the inference Service from a Pod, then the world's
    rule changes: read from the model's status, the drift monitor sees concept drift,
    the trainer registers a candidate, the rollout shadows it, steps it through the
    canary and promotes it, and the answers are right again (`make demo`'s verdicts)."""
    pod, model = traffic
    steps = model["spec"]["rollout"]["canary"]["steps"]
    period = timedelta(seconds=REPORT_EVERY / RATE)
    started = time.monotonic()
    deadline = started + LOOP_SECONDS + SWITCH_AFTER / RATE
    switch: datetime | None = None
    at: dict[str, float] = {}  # seconds after the switch
    kinds: list[str] = []  # drift kinds the status named after the switch
    history: list[str] = []  # each change of the status the test saw
    versions: dict[str, dict[str, float]] = {}  # each new version's stages, first seen
    stages: dict[str, list[tuple[str, int]]] = {}  # and their order
    seen: tuple[Any, ...] = ()
    known: set[str] = set()  # versions there before the switch
    promoted = ""
    promoted_at = datetime.now(UTC)
    log = ""
    while "promoted" not in at:
        now = time.monotonic()
        if now > deadline:
            log = kube.kubectl("logs", "-n", CLIENTS, pod, "--tail=30", check=False)
            pytest.fail(
                f"no promotion in time: {at}\n"
                + "\n".join(history)
                + f"\n--- traffic\n{log}\n{loop_logs(kube)}"
            )
        status = kube.json("get", "dynamicmodel", NAME, "-n", MODELS).get("status", {})
        rollout, drift = status.get("rollout", {}), status.get("drift", {})
        stable, candidate = status.get("stableVersion"), status.get("candidateVersion")
        stage, weight = rollout.get("stage"), int(rollout.get("weight") or 0)
        state = (stable, candidate, stage, weight, drift.get("detected"), drift.get("kind"))
        if state != seen:
            seen = state
            history.append(
                f"{now - started:6.1f} s: stable {stable} candidate {candidate} "
                f"rollout {stage} {weight}% drift {drift.get('detected')} {drift.get('kind')}"
            )
        if switch is None:
            known |= {v for v in (stable, candidate) if v}
            log = kube.kubectl("logs", "-n", CLIENTS, pod, check=False)
            found = SWITCH.search(log)
            if found:
                switch = log_time(found[1])
                history.append(f"{time.monotonic() - started:6.1f} s: the concept switched")
            time.sleep(1.5)
            continue
        after = (datetime.now(UTC) - switch).total_seconds()
        detected_at = drift.get("lastDetectedAt")
        if (
            drift.get("detected")
            and detected_at
            and datetime.fromisoformat(detected_at) >= switch - timedelta(seconds=2)
        ):
            if drift.get("kind") not in kinds:
                kinds.append(drift.get("kind"))
            at.setdefault("drift", after)
        if candidate and candidate not in known:
            times = versions.setdefault(candidate, {"candidate": after})
            if stage in ("shadow", "canary"):
                order = stages.setdefault(candidate, [])
                if not order or order[-1] != (stage, weight):
                    order.append((stage, weight))
                times.setdefault(stage, after)
        if stable and stable not in known:
            at["promoted"] = after
            promoted, promoted_at = stable, datetime.now(UTC)
        time.sleep(1.5)
    # The answers after the promotion: a whole report period of the traffic's log.
    until = time.monotonic() + 3 * period.total_seconds() + 10
    while time.monotonic() < until:
        log = kube.kubectl("logs", "-n", CLIENTS, pod, check=False)
        if any(when > promoted_at + period for when, _, _ in accuracy_lines(log)):
            break
        time.sleep(2)
    detail = "\n".join(history)
    assert switch is not None, detail
    assert "concept" in kinds, (kinds, detail)
    assert at["drift"] < at["promoted"], detail
    # The promoted version: registered after the switch, shadowed, then the canary's
    # steps in order (one may pass between two reads), then promoted.
    order, times = stages.get(promoted, []), versions.get(promoted, {})
    assert order and order[0][0] == "shadow", (order, detail)
    weights = [w for stage, w in order if stage == "canary"]
    assert weights and weights == sorted(weights) and set(weights) <= set(steps), (order, detail)
    assert times["candidate"] <= times["shadow"] < times["canary"] < at["promoted"], detail
    at = {"drift": at["drift"], **times, "promoted": at["promoted"]}
    lines = accuracy_lines(log)
    before = [a for when, _, a in lines if when < switch]
    old = [a for when, _, a in lines if when > switch + period]
    new = [a for when, _, a in lines if when > promoted_at + period]
    assert before and old and new, log[-3000:]
    # The promoted version on the new rule against the old one on it (`make demo`'s margin).
    assert new[-1] >= old[0] + CLEAR_MARGIN, (before, old, new, detail)
    report(
        request,
        f"loop ({time.monotonic() - started:.0f} s): {SWITCH_AFTER} rows at {RATE}/s, then "
        "the concept switch; after it "
        + ", ".join(f"{what} {s:.0f} s" for what, s in at.items())
        + f" (v{promoted}); drift kinds {kinds}; its stages {order}; versions before the "
        f"switch {sorted(known)}, new after it {sorted(versions)}; accuracy of the answers "
        f"before the switch {before[-1]:.3f}, after it {old[0]:.3f}, "
        f"after the promotion {new[-1]:.3f}",
        TAG,
    )


# Run in the services image: a value out of range (the onInvalid policy clips it) and
# an outcome record that is not JSON (the joiner dead-letters it), once each.
MISBEHAVE = """
import sys
from confluent_kafka import Producer
from driftline.client import Client
url, model, servers, topic = sys.argv[1:5]
with Client(url, model, max_retries=3) as client:
    client.predict({"x1": 12.5, "x2": 5.0, "x3": 5.0})
producer = Producer({"bootstrap.servers": servers})
producer.produce(topic, key=b"not-json", value=b"{not json")
assert producer.flush(30) == 0
print("sent")
"""
# Run in the services image: the champion, its class scores reversed, registered as
# the trainer registers a candidate (`driftline.local.faults`, the demo's broken
# candidate); prints the new version, then keeps the `candidate` alias on it for
# argv[3] seconds, as a faulty trainer would: the real trainer publishes on (a version
# every ~20 s), and the rollout takes whichever version the alias names when it is
# free, so without this the broken one may never be tried.
INJECT = """
import sys, time
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from driftline.local.faults import register_inverted_candidate
uri, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
version = register_inverted_candidate(uri, name)
print(f"registered version {version}", flush=True)
client, until = MlflowClient(tracking_uri=uri), time.monotonic() + seconds
while time.monotonic() < until:
    try:
        named = client.get_model_version_by_alias(name, "candidate").version
    except MlflowException:
        named = None
    if named != version:
        client.set_registered_model_alias(name, "candidate", version)
    time.sleep(0.5)
"""
BROKEN_SECONDS = 300


def services_pod(name: str, dev_images: dict[str, BuiltImage], argv: list[str]) -> dict[str, Any]:
    pod = dev.client_pod(name, dev.node_ref("services", dev_images), argv)
    pod["spec"]["containers"][0]["env"].append({"name": "HOME", "value": "/tmp"})
    return pod


def rollout_events(kube: Kube) -> list[str]:
    """The operator's Events of the model's rollout (`<from> -> <to> (candidate V, W%)
    reason`), oldest first."""
    events = kube.json("get", "events", "-n", MODELS, "--field-selector", "reason=Rollout")
    items = sorted(
        events["items"],
        key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "",
    )
    return [str(e.get("message", "")) for e in items]


def test_a_broken_candidate_is_aborted_at_the_first_canary_step(
    traffic: tuple[str, dict[str, Any]],
    kube: Kube,
    dev_images: dict[str, BuiltImage],
    request: pytest.FixtureRequest,
) -> None:
    """`make demo`'s bad-candidate scenario in Pods: with `rollout.strategy: canary`, a
    candidate whose class scores are reversed is registered as a faulty trainer would;
    the first canary step's analysis aborts it and the stable version serves alone."""
    from driftline.api.resource import DynamicModel
    from driftline.operator.builders.context import child_name

    _pod, model = traffic
    first = model["spec"]["rollout"]["canary"]["steps"][0]
    topic = DynamicModel.model_validate(model).topics.outcomes
    url = f"http://{child_name(NAME, 'inference')}.{MODELS}:8080"
    argv = ["python", "-c", MISBEHAVE, url, NAME, f"{dev.host('kafka')}:9092", topic]
    dev.run_pod(kube, services_pod("misbehave", dev_images, argv))

    patch = {"spec": {"rollout": {"strategy": "canary"}}}
    kube.kubectl(
        "patch", "dynamicmodel", NAME, "-n", MODELS, "--type=merge", "-p", json.dumps(patch)
    )
    registry = model["spec"]["model"]["registry"]["name"]
    tracking = f"http://{dev.host('mlflow')}:5000"
    argv = ["python", "-c", INJECT, tracking, registry, str(BROKEN_SECONDS)]
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(services_pod("inject", dev_images, argv)))
    started = time.monotonic()
    deadline = started + BROKEN_SECONDS
    canary = aborted = injected = mine = ""
    stables: set[str | None] = set()
    try:
        while not aborted:
            if time.monotonic() > deadline:
                log = kube.kubectl("logs", "-n", CLIENTS, "inject", "--tail=20", check=False)
                events = "\n".join(rollout_events(kube)[-12:])
                pytest.fail(f"no abort of version {injected!r} seen:\n{events}\n--- inject\n{log}")
            time.sleep(1.5)
            if not injected:
                log = kube.kubectl("logs", "-n", CLIENTS, "inject", check=False)
                # Its line among whatever MLflow writes to stderr (the same log).
                found = re.search(r"^registered version (\d+)$", log, re.MULTILINE)
                injected = found[1] if found else ""
                continue
            mine = f"(candidate {injected}, "
            status = kube.json("get", "dynamicmodel", NAME, "-n", MODELS).get("status", {})
            stables.add(status.get("stableVersion"))
            for message in rollout_events(kube):
                if "-> canary " in message and mine in message:
                    canary = canary or message
                if "-> aborted" in message and f"version {injected} rolled back" in message:
                    aborted = message
    finally:
        kube.kubectl("delete", "pod", "inject", "-n", CLIENTS, "--wait=false", check=False)
        patch = {"spec": {"rollout": {"strategy": "shadow-then-canary"}}}
        kube.kubectl(
            "patch", "dynamicmodel", NAME, "-n", MODELS, "--type=merge", "-p", json.dumps(patch)
        )
    events = rollout_events(kube)
    detail = "\n".join(events[-12:])
    assert canary, f"version {injected} never entered the canary:\n{detail}\n{loop_logs(kube)}"
    assert f"{mine}{first}%)" in canary, (canary, detail)
    assert aborted, f"version {injected} not aborted:\n{detail}\n{loop_logs(kube)}"
    # Never past the first step, and never stable.
    later = [
        m for m in events if mine in m and f"{mine}{first}%)" not in m and "-> aborted" not in m
    ]
    assert not [m for m in later if "-> canary" in m or "-> promoted" in m], (later, detail)
    assert injected not in stables, (stables, detail)
    report(
        request,
        f"broken candidate v{injected}: {canary!r}, then {aborted!r} "
        f"({time.monotonic() - started:.0f} s after its Pod was created)",
        TAG,
    )


RESUMED = re.compile(r"resumed from checkpoint: (\d+) rows seen, epoch (\d+), parent version (\S+)")


def examples_taken(kube: Kube, pod: dict[str, Any]) -> float:
    """The trainer process's examples so far (its driftline_trainer_examples_total, all
    outcomes), read from its own metrics port inside the Pod."""
    port = next(
        p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics"
    )
    code = f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{port}/metrics').read().decode())"
    text = kube.kubectl(
        "exec", "-n", MODELS, pod["metadata"]["name"], "--", "python", "-c", code, check=False
    )
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("driftline_trainer_examples_total")
    )


def test_the_trainer_pod_deleted_mid_stream_resumes_from_its_checkpoint(
    traffic: tuple[str, dict[str, Any]],
    kube: Kube,
    request: pytest.FixtureRequest,
) -> None:
    """`kubectl delete pod` of the trainer while the stream goes on: the StatefulSet's
    new Pod mounts the same claim, resumes from the checkpoint the old one wrote on
    SIGTERM (its rows, concept epoch and parent version), and learns again."""
    (old,) = part_pods(kube, MODELS, NAME, "trainer")
    assert examples_taken(kube, old) > 0
    started = time.monotonic()
    kube.kubectl("delete", "pod", old["metadata"]["name"], "-n", MODELS, "--timeout=120s")
    deleted = time.monotonic() - started
    deadline = started + 300
    new: dict[str, Any] | None = None
    while new is None:
        assert time.monotonic() < deadline, kube.kubectl("get", "events", "-n", MODELS)[-3000:]
        pods = part_pods(kube, MODELS, NAME, "trainer")
        fresh = [p for p in pods if p["metadata"]["uid"] != old["metadata"]["uid"]]
        if fresh and is_ready(fresh[0]):
            new = fresh[0]
        time.sleep(1)
    ready = time.monotonic() - started
    log = kube.kubectl("logs", "-n", MODELS, new["metadata"]["name"])
    resumed = RESUMED.search(log)
    assert resumed, log[-3000:]
    rows, epoch, parent = int(resumed[1]), int(resumed[2]), resumed[3]
    # It learned the stream (more rows than before the switch), opened the switch's
    # concept epoch, and descends from a registered version.
    assert rows > SWITCH_AFTER and epoch >= 1 and parent.isdigit(), resumed[0]
    taken = 0.0
    while taken == 0.0:
        assert time.monotonic() < deadline, f"the new trainer took no example:\n{log[-3000:]}"
        time.sleep(3)
        taken = examples_taken(kube, new)
    assert new["status"]["containerStatuses"][0]["restartCount"] == 0
    report(
        request,
        f"trainer Pod deleted mid-stream (gone in {deleted:.1f} s): the new one Ready "
        f"{ready:.1f} s after the delete, {resumed[0]}; {taken:.0f} examples taken "
        f"{time.monotonic() - started:.0f} s after the delete",
        TAG,
    )


def test_every_dashboard_and_alert_query_returns_data_from_the_pods(
    prometheus: tuple[PrometheusServer, float],
    traffic: tuple[str, dict[str, Any]],
    request: pytest.FixtureRequest,
) -> None:
    """Prometheus scraped the operator's and every part's Pods through the chart's scrape
    configs during this module's run (the loop, the broken candidate, the trainer's
    restart): each query of the shipped dashboards and alert rules returns series at
    some point of it, but for those in MAY_BE_EMPTY, with the reason."""
    server, started = prometheus
    window = (started, time.time(), 2.0)
    up = server.query_range("max by (job) (up)", *window)
    scraped = {s["metric"]["job"] for s in up if any(v == "1" for _t, v in s["values"])}
    jobs = {f"{NAME}-{part}" for part in PARTS} | {f"{dev.NAMESPACE}/driftline-operator"}
    assert jobs <= scraped, f"never scraped: {sorted(jobs - scraped)}; scraped {sorted(scraped)}"
    queries = live_queries(LIVE_VARIABLES)
    assert set(MAY_BE_EMPTY) <= set(queries), "MAY_BE_EMPTY names a query that is gone"
    empty = {where for where, expr in queries.items() if not server.query_range(expr, *window)}
    unexpected = sorted(empty - set(MAY_BE_EMPTY))
    assert not unexpected, "queries that returned no series:\n" + "\n".join(
        f"  {where}: {queries[where]}" for where in unexpected
    )
    report(
        request,
        f"Prometheus scraped {sorted(scraped)} for {window[1] - window[0]:.0f} s: "
        f"{len(queries) - len(empty)} of {len(queries)} dashboard and alert queries returned "
        f"series; empty, as listed: {len(empty)}",
        TAG,
    )
