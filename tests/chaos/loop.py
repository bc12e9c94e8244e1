"""The whole loop on one machine, driven and watched for the chaos tests.

`Loop` wraps a `LocalRuntime` (embedded broker, Redis, MLflow; every part a
supervised process) with the application's traffic (`TrafficGenerator`) and a
watcher that samples, twice a second, what must always hold: the routing table
and the `champion` alias. The outcomes the application sends are recorded by
request id once the broker acknowledged them, so a test can later ask which of
them became labeled examples, and how many times.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from driftline.api.routing import RoutingTable
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import end_offsets, make_producer
from driftline.common.redis_state import RoutingStore
from driftline.common.streams import SEAStream
from driftline.local.demo import demo_model_file
from driftline.local.runtime import LocalRuntime
from driftline.local.traffic import TrafficGenerator, TrafficLog
from driftline_testing.outcomes import KafkaOutcomes
from tests.chaos.support import http_ok, metric, wait_for
from tests.integration.joiner.streams import committed_offsets, read_to_end

CONCEPT = 2  # SEA theta 7, as the demo starts


def loop_model_file(directory: Path) -> Path:
    """The demo's model with a quicker rollout, so versions move during a short run."""
    doc = yaml.safe_load(demo_model_file().read_text())
    spec = doc["spec"]
    spec["rollout"]["canary"] = {"steps": [20, 50, 100], "stepSeconds": 5}
    spec["rollout"]["shadow"]["minSamples"] = 150
    spec["rollout"]["analysis"]["minLabeled"] = 80
    spec["training"]["publish"] = {"everySamples": 1500, "everySeconds": 15}
    path = directory / "sea-chaos.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class RecordingProducer:
    """The traffic's Kafka producer, noting when each outcome was sent (`produced`)
    and which ones the broker acknowledged (`delivered`)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.produced: dict[str, float] = {}
        self.delivered: set[str] = set()
        self.failed = 0

    def produce(self, topic: str, key: str, value: bytes) -> None:
        self.produced[key] = time.time()

        def landed(err: Any, _msg: Any) -> None:
            if err is None:
                self.delivered.add(key)
            else:
                self.failed += 1

        while True:
            try:
                self.inner.produce(topic, key=key, value=value, on_delivery=landed)
                return
            except BufferError:  # a long broker outage: wait, never drop an outcome
                self.inner.poll(0.1)

    def poll(self, timeout: float) -> int:
        return int(self.inner.poll(timeout))

    def flush(self, timeout: float) -> int:
        return int(self.inner.flush(timeout))


@dataclass
class Watch:
    """What the watcher saw: every routing table and champion alias it could read."""

    tables: list[tuple[float, RoutingTable]] = field(default_factory=list)
    champions: list[tuple[float, int]] = field(default_factory=list)
    read_failures: int = 0


class Loop:
    def __init__(self, runtime: LocalRuntime) -> None:
        import redis
        from mlflow import MlflowClient

        self.runtime = runtime
        self.model = runtime.model
        self.kafka = KafkaConnection(runtime.endpoints.kafka_bootstrap_servers)
        self.redis = redis.Redis.from_url(
            runtime.endpoints.redis_url, socket_timeout=1, socket_connect_timeout=1
        )
        self.mlflow = MlflowClient(tracking_uri=runtime.endpoints.mlflow_tracking_uri)
        self.routing = RoutingStore(self.model.metadata.namespace, self.model.name)
        assert runtime.info is not None and runtime.info.inference_url
        self.inference_url = runtime.info.inference_url
        self.watch = Watch()
        self._stop_watch = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="chaos-watch", daemon=True)
        self._watcher.start()
        self._seed = 100

    # -- watching ----------------------------------------------------------------

    def _watch(self) -> None:
        registry = self.model.spec.model.registry.name
        while not self._stop_watch.wait(0.5):
            now = time.time()
            try:
                table = self.routing.read(self.redis)
                if table is not None:
                    self.watch.tables.append((now, table))
            except Exception:  # Redis paused or gone: that is what the tests do
                self.watch.read_failures += 1
            try:
                champion = self.mlflow.get_model_version_by_alias(registry, "champion")
                self.watch.champions.append((now, int(champion.version)))
            except Exception:
                self.watch.read_failures += 1

    def close(self) -> None:
        self._stop_watch.set()
        self._watcher.join(5)
        self.redis.close()

    # -- traffic -----------------------------------------------------------------

    def traffic(self, rate: float = 60.0) -> Traffic:
        self._seed += 1
        return Traffic(self, rate, seed=self._seed)

    # -- questions ---------------------------------------------------------------

    def labeled(self) -> Counter[str]:
        """Labeled examples per request id, the whole topic."""
        return Counter(m.key().decode() for m in read_to_end(self.kafka, self.model.topics.labeled))

    def logged_predictions(self) -> set[str]:
        """Request ids whose served prediction (stable or candidate) is in the topic.

        Shadow and baseline predictions carry the same request id but are never
        joined into examples: they do not count here.
        """
        from driftline.api.events import Prediction, decode

        served = set()
        for m in read_to_end(self.kafka, self.model.topics.predictions):
            if decode(m.value(), Prediction).variant in ("stable", "candidate"):
                served.add(m.key().decode())
        return served

    def joined(self, ids: set[str], timeout: float) -> Counter[str]:
        """Labeled examples of `ids`, once the joiner is done with what was sent.

        Done: it has committed to the end of both topics (it commits only after its
        examples are out) and every id whose served prediction is logged is joined,
        or the timeout passed (then what is missing is lost).
        """
        topics = [self.model.topics.predictions, self.model.topics.outcomes]
        wait_for(lambda: self.consumed_to_end("joiner", topics), timeout, "the joiner")
        deadline = time.monotonic() + 60
        while True:
            counts = Counter({k: n for k, n in self.labeled().items() if k in ids})
            if (ids & self.logged_predictions()) <= set(counts) or time.monotonic() > deadline:
                return counts
            time.sleep(2)

    def consumed_to_end(self, part: str, topics: list[str]) -> bool:
        """The part's group committed every record of `topics` (nothing left behind)."""
        group = f"driftline-{self.model.name}-{part}"
        committed = committed_offsets(self.kafka, group, topics)
        return all(
            committed.get((topic, p), 0) >= end
            for topic in topics
            for p, end in end_offsets(self.kafka, topic, timeout=10).items()
        )

    def in_outboxes(self) -> set[str]:
        """Request ids whose examples the joiner still owes (claimed, named in an outbox)."""
        from driftline.joiner.store import JoinStore

        store = JoinStore(self.redis, self.model.metadata.namespace, self.model.name,
                          window=3600, grace=0)  # fmt: skip
        owed: set[str] = set()
        for topic in (self.model.topics.predictions, self.model.topics.outcomes):
            for partition in range(self.model.spec.kafka.partitions):
                outbox = store.read_outbox(f"{topic}:{partition}")
                if outbox is not None:
                    owed.update(rid for _, rid, names in outbox.claims if "e" in names)
        return owed

    def join_states(self, request_ids: set[str]) -> dict[str, str]:
        """What the joiner's Redis state says of each request (to tell where an
        example was lost): `never seen`, `prediction only`, `outcome only`,
        `both, unclaimed`, `claimed, still owed` (an outbox names it: recovery has yet
        to send it), or `claimed` (sent, and the broker acknowledged it)."""
        import msgspec

        from driftline.joiner.store import JoinStore

        store = JoinStore(self.redis, self.model.metadata.namespace, self.model.name,
                          window=3600, grace=0)  # fmt: skip
        owed = self.in_outboxes()
        verdicts: dict[str, str] = {}
        for rid in sorted(request_ids):
            blob = self.redis.get(store.state_key(rid))
            fields = set(msgspec.msgpack.decode(blob)) if blob else set()
            prediction = any(f.startswith("p:") for f in fields)
            outcome = "o" in fields
            if "e" in fields:
                verdicts[rid] = "claimed, still owed" if rid in owed else "claimed"
            elif prediction and outcome:
                verdicts[rid] = "both, unclaimed"
            elif prediction or outcome:
                verdicts[rid] = "prediction only" if prediction else "outcome only"
            else:
                verdicts[rid] = "never seen"
        return verdicts

    def ready(self, part: str) -> bool:
        return http_ok(self.runtime._ready_url(part))

    def wait_all_ready(self, timeout: float = 180.0) -> None:
        for part in self.runtime.supervisor.parts():
            wait_for(lambda p=part: self.ready(p), timeout, f"{part} to be ready")  # type: ignore[misc]

    def inference_metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return metric(f"{self.inference_url}/metrics", name, labels)

    def loaded_versions(self) -> set[str]:
        import json
        import urllib.request

        url = f"{self.inference_url}/v2/models/{self.model.name}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return {str(v) for v in json.loads(reply.read()).get("versions", [])}

    def registered_versions(self) -> set[str]:
        name = self.model.spec.model.registry.name
        return {str(v.version) for v in self.mlflow.search_model_versions(f"name='{name}'")}

    def pause(self, server: str) -> Paused:
        """SIGSTOP a server's process group: its connections hang, as in a partition."""
        process = {
            "redis": self.runtime._redis,
            "kafka": self.runtime._kafka,
            "mlflow": self.runtime._mlflow,
        }[server]
        assert process is not None
        pid = process.process.pid  # type: ignore[attr-defined]
        assert pid is not None
        return Paused(pid)


class Paused(contextlib.AbstractContextManager["Paused"]):
    def __init__(self, pid: int) -> None:
        self.pid = pid
        os.killpg(pid, signal.SIGSTOP)
        self.since = time.time()
        self.until: float | None = None

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.pid, signal.SIGCONT)
        self.until = time.time()


class Traffic:
    """The demo's traffic generator on a thread, its outcomes recorded."""

    def __init__(self, loop: Loop, rate: float, seed: int) -> None:
        self.producer = RecordingProducer(make_producer(loop.kafka))
        self.generator = TrafficGenerator(
            inference_url=loop.inference_url,
            model_name=loop.model.name,
            stream=SEAStream(seed=seed, schedule=[(0, CONCEPT)]),
            outcomes=KafkaOutcomes(self.producer, loop.model.topics.outcomes),
            rate=rate,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._result: TrafficLog | None = None
        self._thread = threading.Thread(target=self._run, name="chaos-traffic", daemon=True)
        self._thread.start()
        wait_for(lambda: self._loop is not None, 10, "the traffic to start")

    @property
    def log(self) -> TrafficLog:
        return self.generator.log

    def _run(self) -> None:
        async def main() -> TrafficLog:
            self._loop = asyncio.get_running_loop()
            return await self.generator.run()

        self._result = asyncio.run(main())

    def stop(self) -> TrafficLog:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.generator.stop)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the traffic did not stop"
        assert self.producer.flush(60) == 0, "outcomes still unacknowledged"
        return self.generator.log

    @property
    def delivered(self) -> dict[str, float]:
        """Acknowledged outcomes by request id, with the time each was sent."""
        return {k: self.producer.produced[k] for k in self.producer.delivered}
