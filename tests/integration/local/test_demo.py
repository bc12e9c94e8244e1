"""`driftline demo --quick` end to end: the README's main job, judged by its own verdicts,
and watched by a real Prometheus the whole time.

The demo starts every part as a process beside embedded Kafka-protocol, Redis and
MLflow servers, sends SEA traffic through the inference API and changes the world
half-way. Its verdicts are real measurements: after the switch the promoted model
must beat the frozen baseline clearly, and a broken candidate must be aborted at
its first canary step with stable answers unharmed.

Prometheus (Debian's package) scrapes each part's metrics endpoint every second,
labelled as the Prometheus Operator labels a model's parts on a cluster; afterwards
every query of the shipped dashboards and alert rules must return series for the run
(`test_every_dashboard_and_alert_query_returns_data`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from driftline.local.runtime import RUNTIME_FILE, RuntimeInfo
from driftline_testing.prometheus import PrometheusServer
from tests.deploy.promql import EMPTY_FOR_THE_DEMO_MODEL, live_queries, monitor_everything

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
SEA = REPO / "manifests" / "samples" / "sea-demo.yaml"
# The demo's model (its namespace and name) and the rate window of the checks.
LIVE_VARIABLES = {"$__rate_interval": "30s", "$namespace": "demo", "$model": "sea"}

_LOCAL = "the local runtime has no operator (it runs on Kubernetes only)"
# Queries that may return nothing in the quick demo, and why (everything else must
# return series at some point of the run).
MAY_BE_EMPTY: dict[str, str] = {
    **EMPTY_FOR_THE_DEMO_MODEL,
    "Driftline / Model / Estimated cost per 30 days and budget (B)": _LOCAL,
    "Driftline / Overview / Operator reconciles and ticks (A)": _LOCAL,
    "Driftline / Overview / Operator reconciles and ticks (B)": _LOCAL,
    "alert DriftlineReconcileFailing": _LOCAL,
}


def monitored_model(directory: Path) -> Path:
    """The demo's model with the monitoring it leaves off turned on."""
    doc = yaml.safe_load(SEA.read_text())
    monitor_everything(doc["spec"])
    path = directory / "sea-monitored.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _misbehave(info: RuntimeInfo) -> None:
    """What a healthy run lacks, once: a value out of range (clipped by the policy) and
    an outcome record that is not JSON (dead-lettered by the joiner)."""
    from confluent_kafka import Producer

    from driftline.client import Client

    assert info.inference_url is not None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            with Client(info.inference_url, info.model, max_retries=0) as client:
                client.predict({"x1": 12.5, "x2": 5.0, "x3": 5.0})
            break
        except Exception:  # not serving yet
            time.sleep(1.0)
    producer = Producer({"bootstrap.servers": info.kafka_bootstrap_servers})
    producer.produce("sea.outcomes", key=b"not-json", value=b"{not json")
    producer.flush(10)


def _percent(text: str) -> float:
    return float(text.rstrip(" %"))


@dataclass
class DemoRun:
    process: subprocess.CompletedProcess[str]
    out: Path
    prometheus: PrometheusServer
    started: float
    ended: float
    runs: list[RuntimeInfo]

    @property
    def tail(self) -> str:
        return (self.process.stdout + self.process.stderr)[-4000:]


def _follow_runs(state_root: Path, prometheus: PrometheusServer, stop: threading.Event,
                 runs: list[RuntimeInfo]) -> None:  # fmt: skip
    """Scrape the parts of every scenario's run as soon as its runtime.json appears."""
    seen: set[tuple[str, float]] = set()
    while not stop.wait(0.3):
        for path in state_root.glob(f"*/{RUNTIME_FILE}"):
            try:
                info = RuntimeInfo.read(path.parent)
            except (OSError, ValueError, TypeError):
                continue  # being written
            if (str(path), info.started_at) not in seen:
                seen.add((str(path), info.started_at))
                runs.append(info)
                prometheus.add_run(info)
                if path.parent.name == "drift":
                    threading.Thread(target=_misbehave, args=(info,), daemon=True).start()


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """`driftline demo --quick` (drift, then bad-candidate), scraped by Prometheus."""
    tmp_path = tmp_path_factory.mktemp("demo")
    out = tmp_path / "report"
    runs: list[RuntimeInfo] = []
    with PrometheusServer(tmp_path / "prometheus") as prometheus:
        stop = threading.Event()
        follower = threading.Thread(
            target=_follow_runs,
            args=(tmp_path / ".driftline" / "demo", prometheus, stop, runs),
            daemon=True,
        )
        follower.start()
        started = time.time()
        try:
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "driftline.local.cli",
                    "demo",
                    "--quick",
                    "--out",
                    str(out),
                    "--model",
                    str(monitored_model(tmp_path)),
                ],
                cwd=tmp_path,  # its state directory (.driftline/) lands here
                capture_output=True,
                text=True,
                timeout=840,
                check=False,
            )
        finally:
            stop.set()
            follower.join()
        yield DemoRun(run, out, prometheus, started, time.time(), runs)


@pytest.mark.timeout(900)
def test_quick_demo_learns_the_new_concept_and_rejects_a_broken_candidate(
    quick_demo: DemoRun,
) -> None:
    out, tail = quick_demo.out, quick_demo.tail
    assert (out / "REPORT.md").exists(), tail
    verdicts = json.loads((out / "results.json").read_text())
    assert set(verdicts) == {"drift", "bad-candidate"}

    drift = verdicts["drift"]["summary"]
    assert verdicts["drift"]["passed"], drift
    assert drift["drift detected after"] != "not detected"
    served = _percent(drift["accuracy after promotion: served"])
    frozen = _percent(drift["accuracy after promotion: frozen baseline"])
    assert served >= frozen + 5, drift
    assert drift["errors / shed"] == "0 / 0", (drift, tail)

    bad = verdicts["bad-candidate"]["summary"]
    assert verdicts["bad-candidate"]["passed"], bad
    assert "rolled back" in bad["reason"]
    assert bad["errors / shed"] == "0 / 0", (bad, tail)

    assert (out / "drift.png").stat().st_size > 10_000
    assert quick_demo.process.returncode == 0, tail


@pytest.mark.timeout(900)
def test_every_dashboard_and_alert_query_returns_data(quick_demo: DemoRun) -> None:
    """Each dashboard target and alert expression returns series at some point of the
    demo's runs; those that may not are listed in MAY_BE_EMPTY with the reason."""
    prometheus, tail = quick_demo.prometheus, quick_demo.tail
    jobs = {f"{info.model}-{part}" for info in quick_demo.runs for part in info.metrics_ports}
    assert {"sea-inference", "sea-joiner", "sea-trainer", "sea-drift", "sea-rollout"} <= jobs, tail
    window = (quick_demo.started, quick_demo.ended, 1.0)
    up = prometheus.query_range("max by (job) (up)", *window)
    scraped = {s["metric"]["job"] for s in up if any(v == "1" for _t, v in s["values"])}
    assert scraped == jobs, f"never scraped: {sorted(jobs - scraped)}"

    queries = live_queries(LIVE_VARIABLES)
    assert set(MAY_BE_EMPTY) <= set(queries), "MAY_BE_EMPTY names a query that is gone"
    empty = {where for where, expr in queries.items() if not prometheus.query_range(expr, *window)}
    unexpected = sorted(empty - set(MAY_BE_EMPTY))
    assert not unexpected, "queries that returned no series:\n" + "\n".join(
        f"  {where}: {queries[where]}" for where in unexpected
    )
    # An exemption whose query has data now is stale: take it out.
    assert set(MAY_BE_EMPTY) <= empty, sorted(set(MAY_BE_EMPTY) - empty)
