"""How many DynamicModels one operator runs: many created at once, changed, deleted.

    python -m benchmarks.operator.scale [--models 200] [--settle 40]

On the test rig's real control plane (etcd, kube-apiserver, controller-manager,
scheduler) with simulated KWOK nodes (every Pod of every part is scheduled and
becomes Ready, no container runs), the operator runs as its own process
(`python -m driftline.operator`, default settings but ephemeral trainer
checkpoints) and watches one namespace. The models point at Kafka, Redis and
MLflow endpoints that refuse connections, as a cluster whose data plane is
still coming up would: the operator must stay quick all the same.

1. `--models` DynamicModels created at once (8 client threads): time until each
   has a status for its generation (the operator's reconcile) and until each is
   Serving (its four Deployments available), p50/p99/max, and the time until all are.
2. Steady state for `--settle` seconds at that size: the operator's CPU share,
   its timer ticks against the ticks due (a model whose tick does not run is
   starved), and its own API requests per tick.
3. Every spec changed at once (the inference's maximum replicas): time until each
   status reports the new generation.
4. Deleted down to 50, then to 1 (steady state measured at each size), then the
   last one: time until the deleted models are gone.

Throughout: the operator's peak RSS, the API server's 429 and 409 answers, and
the operator's warnings. Writes benchmarks/results/operator-scale.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.trainer.common import table, write
from driftline.api.crd import dynamic_model_crd
from driftline.local.servers.process import free_port
from driftline.operator.kube import Kube, load_credentials
from driftline_testing.kube import ControlPlane
from driftline_testing.kube_files import NodePool

NAMESPACE = "scale"
DM = f"/apis/driftline.io/v1alpha1/namespaces/{NAMESPACE}/dynamicmodels"
TICK_SECONDS = 10.0
# Room for every part's Pod of 200 models (four each) on simulated nodes.
POOL = NodePool("cpu", count=8, cpu="128", memory="512Gi", pods="250")


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DynamicModel",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"registry": {"trackingUri": "http://127.0.0.1:9", "name": name}},
            "features": [{"name": "x1"}, {"name": "x2"}],
            "kafka": {"bootstrapServers": "127.0.0.1:9", "partitions": 1},
            "redis": {"url": "redis://127.0.0.1:9/0"},
            "inference": {
                "replicas": {"min": 1, "max": 3},
                "resources": {"cpu": "100m", "memory": "128Mi"},
            },
        },
    }


class OperatorProcess:
    """`python -m driftline.operator`, its /proc figures sampled once a second."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.metrics_port = free_port("127.0.0.1")
        small = json.dumps({"cpu": "50m", "memory": "64Mi"})
        env = {
            **os.environ,
            "DRIFTLINE_OPERATOR_KUBECONFIG": str(kubeconfig),
            "DRIFTLINE_OPERATOR_NAMESPACES": NAMESPACE,
            "DRIFTLINE_OPERATOR_TICK_SECONDS": str(TICK_SECONDS),
            "DRIFTLINE_OPERATOR_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "DRIFTLINE_OPERATOR_TRAINER_CHECKPOINTS": "ephemeral",
            "DRIFTLINE_OPERATOR_IMAGE_PULL_POLICY": "Never",
            **{
                f"DRIFTLINE_OPERATOR_{p.upper()}_RESOURCES": small
                for p in ("joiner", "trainer", "drift")
            },
        }
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "driftline.operator"],
            env=env,
            stdout=self._out,
            stderr=self._out,
        )
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.peak_rss = max(self.peak_rss, self.rss())

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> dict[str, float]:
        """Every sample of the operator's metrics, keyed `name{label=value,...}`."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return _samples(text)

    def warnings(self) -> list[str]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if " WARNING " in line or " ERROR " in line]

    def stop(self) -> None:
        self._stop.set()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._out.close()


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    want = [f"{k}={v}" for k, v in labels.items()]
    return sum(
        v for k, v in samples.items() if k.split("{", 1)[0] == name and all(w in k for w in want)
    )


def apiserver_answers(kube: Kube) -> dict[str, float]:
    """The API server's answers so far by code (all clients): 429s are throttling."""
    text = kube._http.get(
        "/metrics", headers={"Authorization": f"Bearer {kube.credentials.token()}"}
    ).text
    samples = _samples(text)
    return {code: total(samples, "apiserver_request_total", code=code) for code in ("409", "429")}


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


def watch_until(
    kube: Kube,
    names: set[str],
    checks: dict[str, Callable[[dict[str, Any]], bool]],
    timeout: float,
    start: float,
) -> dict[str, dict[str, float]]:
    """Per check, seconds from `start` until it first holds for each of `names`."""
    seen: dict[str, dict[str, float]] = {what: {} for what in checks}
    while time.monotonic() - start < timeout:
        if all(len(s) == len(names) for s in seen.values()):
            break
        available = _available_parts(kube)
        for item in kube.list(DM):
            name = item["metadata"]["name"]
            item["available_parts"] = available.get(name, 0)
            for what, check in checks.items():
                if name in names and name not in seen[what] and check(item):
                    seen[what][name] = time.monotonic() - start
        time.sleep(0.5)
    return seen


def _available_parts(kube: Kube) -> dict[str, int]:
    """Per model, how many of its Deployments are available (the cluster's side)."""
    counts: dict[str, int] = {}
    for d in kube.list(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"):
        model = d["metadata"].get("labels", {}).get("driftline.io/model", "")
        status = d.get("status") or {}
        if status.get("availableReplicas", 0) >= (d.get("spec") or {}).get("replicas", 1):
            counts[model] = counts.get(model, 0) + 1
    return counts


def parts_available(item: dict[str, Any]) -> bool:
    return int(item.get("available_parts", 0)) >= 4


def has_status_for_generation(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    return status.get("observedGeneration") == item["metadata"].get("generation")


def serving(item: dict[str, Any]) -> bool:
    return has_status_for_generation(item) and (item.get("status") or {}).get("phase") == "Serving"


def steady_state(operator: OperatorProcess, models: int, seconds: float) -> dict[str, Any]:
    before, cpu0, t0 = operator.metrics(), operator.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    after, cpu1, elapsed = operator.metrics(), operator.cpu_seconds(), time.monotonic() - t0
    ticks = total(after, "driftline_operator_ticks_total") - total(
        before, "driftline_operator_ticks_total"
    )
    requests = total(after, "driftline_operator_api_requests_total") - total(
        before, "driftline_operator_api_requests_total"
    )
    due = models * elapsed / TICK_SECONDS
    return {
        "models": models,
        "seconds": round(elapsed, 1),
        "cpu_share": round((cpu1 - cpu0) / elapsed, 3),
        "cpu_ms_per_tick": round(1000 * (cpu1 - cpu0) / ticks, 2) if ticks else None,
        "ticks_run_per_due": round(ticks / due, 2) if due else None,
        "api_requests_per_tick": round(requests / ticks, 2) if ticks else None,
        "rss_mib": round(operator.rss() / 2**20, 1),
    }


def create_all(kube: Kube, names: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: kube.request("POST", DM, body=manifest(n)), names))


def delete_all(kube: Kube, names: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: kube.delete(f"{DM}/{n}"), names))


def change_all(kube: Kube, names: list[str]) -> None:
    patch = {"spec": {"inference": {"replicas": {"min": 1, "max": 4}}}}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: kube.merge_patch(f"{DM}/{n}", patch), names))


def gone(kube: Kube, names: set[str], timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        left = {i["metadata"]["name"] for i in kube.list(DM)} & names
        if not left:
            return time.monotonic() - start
        time.sleep(0.5)
    return None


@contextmanager
def rig(folder: Path) -> Iterator[tuple[ControlPlane, Kube]]:
    plane = ControlPlane(root=folder / "plane", node_pools=(POOL,)).start()
    kube = Kube(load_credentials(plane.kubeconfig))
    try:
        crd = dynamic_model_crd()
        kube.apply(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}",
            crd,
            "driftline-bench",
        )
        plane.create_namespace(NAMESPACE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                kube.list(DM)
                break
            except Exception:
                time.sleep(0.5)
        yield plane, kube
    finally:
        kube.close()
        plane.stop()


def run(models: int, settle: float, timeout: float) -> dict[str, Any]:
    names = [f"m{i:03d}" for i in range(models)]
    result: dict[str, Any] = {"models": models, "tick_seconds": TICK_SECONDS}
    with (
        tempfile.TemporaryDirectory(prefix="driftline-scale-") as tmp,
        rig(Path(tmp)) as (
            plane,
            kube,
        ),
    ):
        operator = OperatorProcess(plane.kubeconfig, Path(tmp) / "operator.log")
        try:
            answers0 = apiserver_answers(kube)
            start = time.monotonic()
            create_all(kube, names)
            created = time.monotonic() - start
            seen = watch_until(
                kube,
                set(names),
                {
                    "status": has_status_for_generation,
                    "available": parts_available,
                    "serving": serving,
                },
                timeout,
                start,
            )
            reconciled, ready = seen["status"], seen["serving"]
            available = seen["available"]
            result["create"] = {
                "create_seconds": round(created, 1),
                "reconciled": len(reconciled),
                "to_status": percentiles(list(reconciled.values())),
                "available": len(available),
                "to_available": percentiles(list(available.values())),
                "serving": len(ready),
                "to_serving": percentiles(list(ready.values())),
            }
            result["steady"] = [steady_state(operator, models, settle)]
            start = time.monotonic()
            change_all(kube, names)
            changed = watch_until(
                kube, set(names), {"status": has_status_for_generation}, timeout, start
            )["status"]
            result["change"] = {"reconciled": len(changed), **percentiles(list(changed.values()))}
            deletions = []
            for keep in (50, 1, 0):
                if keep >= len(names):
                    continue
                doomed = names[keep:]
                t = time.monotonic()
                delete_all(kube, doomed)
                left = gone(kube, set(doomed), timeout)
                deletions.append(
                    {
                        "deleted": len(doomed),
                        "seconds": None if left is None else round(time.monotonic() - t, 1),
                    }
                )
                names = names[:keep]
                if keep:
                    result["steady"].append(steady_state(operator, keep, settle))
            result["delete"] = deletions
            result["peak_rss_mib"] = round(operator.peak_rss / 2**20, 1)
            answers1 = apiserver_answers(kube)
            result["apiserver"] = {k: answers1[k] - answers0[k] for k in answers1}
            result["operator_warnings"] = len(operator.warnings())
            result["warning_examples"] = operator.warnings()[:5]
            reconcile = operator.metrics()
            result["operator_requests"] = {
                code: total(reconcile, "driftline_operator_api_requests_total", code=code)
                for code in ("409", "429")
            }
            result["operator_requests"]["all"] = total(
                reconcile, "driftline_operator_api_requests_total"
            )
            result["reconcile_seconds_mean"] = round(
                total(reconcile, "driftline_operator_reconcile_seconds_sum")
                / max(1.0, total(reconcile, "driftline_operator_reconcile_seconds_count")),
                3,
            )
        finally:
            operator.stop()
    return result


def report(result: dict[str, Any]) -> list[tuple[str, str]]:
    c = result["create"]
    rows = [
        ["created (client)", c["create_seconds"], "", ""],
        [
            f"status for generation 1 ({c['reconciled']}/{result['models']})",
            c["to_status"]["p50"],
            c["to_status"]["p99"],
            c["to_status"]["max"],
        ],
        [
            f"four Deployments available ({c['available']}/{result['models']})",
            c["to_available"]["p50"],
            c["to_available"]["p99"],
            c["to_available"]["max"],
        ],
        [
            f"Serving ({c['serving']}/{result['models']})",
            c["to_serving"]["p50"],
            c["to_serving"]["p99"],
            c["to_serving"]["max"],
        ],
        [
            f"spec changed: status for generation 2 ({result['change']['reconciled']})",
            result["change"]["p50"],
            result["change"]["p99"],
            result["change"]["max"],
        ],
    ]
    timing = table(["seconds after the create (or change)", "p50", "p99", "max"], rows)
    steady = table(
        [
            "models",
            "CPU share",
            "CPU ms per tick",
            "ticks run / due",
            "API requests per tick",
            "RSS MiB",
        ],
        [
            [
                s["models"],
                s["cpu_share"],
                s["cpu_ms_per_tick"],
                s["ticks_run_per_due"],
                s["api_requests_per_tick"],
                s["rss_mib"],
            ]
            for s in result["steady"]
        ],
    )
    deletes = table(
        ["deleted at once", "seconds until gone"],
        [[d["deleted"], d["seconds"]] for d in result["delete"]],
    )
    other = table(
        ["figure", "value"],
        [
            ["operator peak RSS (MiB)", result["peak_rss_mib"]],
            ["mean reconcile (s, operator's histogram)", result["reconcile_seconds_mean"]],
            ["API server 429 answers (all clients)", result["apiserver"]["429"]],
            ["API server 409 answers (all clients)", result["apiserver"]["409"]],
            ["operator's own requests", result["operator_requests"]["all"]],
            [
                "of them answered 409 / 429",
                f"{result['operator_requests']['409']:g} / {result['operator_requests']['429']:g}",
            ],
            ["operator warnings and errors logged", result["operator_warnings"]],
        ],
    )
    return [
        ("Create, then change every spec", timing),
        (f"Steady state (tick every {result['tick_seconds']:g} s)", steady),
        ("Delete", deletes),
        ("Operator and API server", other),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--settle", type=float, default=40.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    result = run(args.models, args.settle, args.timeout)
    sections = report(result)
    for heading, body in sections:
        print(f"\n{heading}\n{body}")
    write(
        "operator-scale",
        f"One operator, {args.models} DynamicModels",
        [("How it is measured", __doc__.split("\n\n", 2)[2].rsplit("\n\n", 1)[0]), *sections],
        result,
    )


if __name__ == "__main__":
    main()
