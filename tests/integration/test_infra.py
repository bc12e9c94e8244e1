"""The embedded servers are real, ready when they say so, and leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics, make_consumer, make_producer
from driftline.local.servers import InfraError, ManagedProcess, MlflowServer, RedisServer
from driftline.local.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone as a server.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_kafka_consumer_group_reads_and_commits(kafka: KafkaBroker, unique: str) -> None:
    conn = KafkaConnection(kafka.bootstrap_servers)
    topic = f"{unique}.events"
    ensure_topics(conn, [topic], partitions=3)
    producer = make_producer(conn)
    for i in range(300):
        producer.produce(topic, key=f"k{i}", value=f"v{i}".encode())
    assert producer.flush(15) == 0

    consumer = make_consumer(conn, f"{unique}-group", [topic])
    try:
        seen: set[bytes] = set()
        deadline = time.monotonic() + 60
        while len(seen) < 300 and time.monotonic() < deadline:
            batch = consumer.consume(500, 0.5)
            for msg in batch:
                assert msg.error() is None
                seen.add(msg.value())
                consumer.store_offsets(msg)  # parts store offsets only once work is done
            if batch:
                consumer.commit(asynchronous=False)
        assert len(seen) == 300, len(seen)
        committed = consumer.committed(consumer.assignment(), timeout=10)
        assert sum(tp.offset for tp in committed) == 300
    finally:
        consumer.close()

    # A new member of the same group resumes after the committed offsets: nothing left.
    again = make_consumer(conn, f"{unique}-group", [topic])
    try:
        assert [m for m in again.consume(100, 5.0) if m.error() is None] == []
    finally:
        again.close()


def test_redis_is_a_real_server(redis_server: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    client.set("k", "v", ex=10)
    assert client.get("k") == b"v"
    assert client.ttl("k") > 0
    assert client.info("server")["redis_version"].startswith(("6.", "7."))


def test_redis_with_password_refuses_anonymous_clients() -> None:
    import redis

    with RedisServer(password="s3cret") as server:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        assert redis.Redis(port=server.port, password="s3cret").ping()


@pytest.mark.slow
def test_mlflow_model_versions_and_aliases(mlflow_server: MlflowServer, unique: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    client.create_registered_model(unique)
    exp = client.create_experiment(unique)
    versions = []
    for i in range(2):
        run = client.create_run(exp)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(
            unique, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
            tags={"driftline.sha256": f"{i:064d}"},
        )  # fmt: skip
        versions.append(mv.version)
    client.set_registered_model_alias(unique, "champion", versions[0])
    client.set_registered_model_alias(unique, "candidate", versions[1])
    assert client.get_model_version_by_alias(unique, "champion").version == versions[0]
    # Promotion: the candidate becomes champion.
    client.set_registered_model_alias(unique, "champion", versions[1])
    client.delete_registered_model_alias(unique, "candidate")
    champion = client.get_model_version_by_alias(unique, "champion")
    assert champion.version == versions[1]
    assert champion.tags["driftline.sha256"] == f"{1:064d}"


def test_stopped_servers_leave_no_process(tmp_path) -> None:
    server = RedisServer(log_path=tmp_path / "r.log").start()
    pid = server.process.pid
    assert pid is not None and alive(pid)
    server.stop()
    assert not alive(pid)


def test_children_die_when_the_parent_is_killed(tmp_path) -> None:
    """A test runner killed with SIGKILL cannot clean up; the kernel does it for us."""
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import time
        from driftline.local.servers import RedisServer
        server = RedisServer().start()
        open({str(pidfile)!r}, "w").write(str(server.process.pid))
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "child server never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    assert alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_missing_binary_and_early_exit_are_clear_errors(tmp_path) -> None:
    with pytest.raises(InfraError, match="cannot run"):
        ManagedProcess("ghost", ["/nonexistent/server"]).start()
    argv = [sys.executable, "-c", "print('bad config'); raise SystemExit(3)"]
    proc = ManagedProcess("quitter", argv, log_path=tmp_path / "q.log").start()
    with pytest.raises(InfraError, match="exited before it was ready") as info:
        proc.wait_ready(lambda: False, timeout=10, what="never")
    assert "bad config" in str(info.value)


@pytest.mark.slow
def test_grandchildren_die_with_a_killed_parent(tmp_path) -> None:
    """`mlflow server` runs uvicorn as its own child: the guard takes both down."""
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import time
        from driftline.local.servers import MlflowServer
        server = MlflowServer(root={str(tmp_path / "ml")!r}).start()
        open({str(pidfile)!r}, "w").write(str(server.process.pid))
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "server never started"
        time.sleep(0.1)
    group = int(pidfile.read_text())
    members = [int(p) for p in subprocess.run(["pgrep", "-g", str(group)], capture_output=True,
                                              text=True).stdout.split()]  # fmt: skip
    assert len(members) >= 3  # guard, mlflow server, uvicorn
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while any(alive(p) for p in members) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in members)
