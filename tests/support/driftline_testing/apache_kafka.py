"""Apache Kafka itself, single-node KRaft on loopback, from the test rig's jars.

The embedded Tansu broker speaks Kafka's protocol but does not isolate
transactions and keeps nothing on disk. Tests that depend on what production
Kafka does (read_committed isolation, durability across a restart, committed
offsets surviving it) run against this broker: the jars of Apache Kafka's
release, resolved from Maven Central by `make rig`, on Java 17+.

One process is both controller and broker. Its storage directory is formatted
once with Kafka's storage tool; starting again on the same directory (and the
same ports) is a broker restart, which keeps the log and the committed offsets.

With `users=[KafkaUser(...)]` the broker also opens SASL_PLAINTEXT, SASL_SSL
(PLAIN and SCRAM-SHA-512) and SSL listeners (see `kafka_security`); the PLAINTEXT
one stays for the controller link and for admin work.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
import weakref
from collections.abc import Sequence
from functools import cache, partial
from pathlib import Path
from typing import Self

from driftline.local.servers.kafka import round_trip
from driftline.local.servers.process import InfraError, ManagedProcess, free_port, port_open
from driftline_testing.kafka_security import (
    SECURE_LISTENERS,
    KafkaUser,
    TlsFiles,
    listener_properties,
    make_tls_files,
    scram_format_arguments,
)
from driftline_testing.rig import RigLayout, rig_layout

MIN_JAVA = 17  # Kafka 4 brokers need Java 17

# Small heap, serial GC and C1 only: a test broker on a shared 2-core machine
# should start fast and leave CPU to the code under test (C1 only starts in about
# 60-70% of the time of C1+C2). Benchmarks that measure Kafka throughput set
# DRIFTLINE_KAFKA_JVM_OPTIONS (space-separated) to what production runs.
DEFAULT_JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx768m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)


def java_binary() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


@cache
def java_major(java: str) -> int:
    """The Java release `java` runs (17, 21, ...); 0 when it cannot be told."""
    out = subprocess.run(
        [java, "-XshowSettings:properties", "-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stderr
    for line in out.splitlines():
        key, _, value = line.strip().partition(" = ")
        if key == "java.specification.version":
            return int(value.split(".")[-1] if value.startswith("1.") else value)
    return 0


def available() -> bool:
    """Apache Kafka can run here: the rig's jars are built and Java is present."""
    layout = rig_layout()
    java = java_binary()
    return bool(layout.kafka_built and java and java_major(java) >= MIN_JAVA)


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in Kafka's URL-safe base64 form.

    One id in 64 would start with '-', which kafka-storage's argument parser reads
    as an option (Kafka's own random ids skip those too), so such ids are redrawn.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class ApacheKafkaBroker:
    """Single-node Apache Kafka (KRaft, combined broker and controller) on 127.0.0.1."""

    kind = "apache-kafka"

    def __init__(
        self,
        data_dir: str | Path | None = None,
        port: int | None = None,
        log_path: str | Path | None = None,
        jvm_options: tuple[str, ...] | None = None,
        layout: RigLayout | None = None,
        users: Sequence[KafkaUser] = (),
    ) -> None:
        layout = layout or rig_layout()
        if not layout.kafka_built:
            raise InfraError("Apache Kafka is not built: run `make rig` first")
        java = java_binary()
        if java is None or java_major(java) < MIN_JAVA:
            raise InfraError(f"Apache Kafka needs Java {MIN_JAVA} or newer on PATH (or JAVA_HOME)")
        self._java = java
        self._layout = layout
        self._owns_dir = data_dir is None
        self.data_dir = (
            Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="driftline-kafka-"))
        )
        if self._owns_dir:  # kept across stop/start (a restart), removed with the broker
            weakref.finalize(self, shutil.rmtree, self.data_dir, ignore_errors=True)
        self.port = port or free_port()
        self.controller_port = free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        # The secure listeners (SASL_PLAINTEXT, SASL_SSL, SSL), only with users.
        self.users = tuple(users)
        self.secure_ports = {name: free_port() for name in SECURE_LISTENERS if self.users}
        if jvm_options is None:
            configured = os.environ.get("DRIFTLINE_KAFKA_JVM_OPTIONS")
            jvm_options = tuple(configured.split()) if configured else DEFAULT_JVM_OPTIONS
        self._jvm_options = jvm_options
        self._log_path = Path(log_path) if log_path else self.data_dir / "kafka.log"
        self._process: ManagedProcess | None = None

    # -- files ----------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def tls_files(self) -> TlsFiles:
        return TlsFiles(
            ca=self.data_dir / "tls" / "ca.crt",
            keystore=self.data_dir / "tls" / "broker-keystore.pem",
        )

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate TLS clients trust (None without users)."""
        return self.tls_files.ca if self.users else None

    def secure_bootstrap_servers(self, protocol: str) -> str:
        """The address of the SASL_PLAINTEXT, SASL_SSL or SSL listener."""
        if protocol not in self.secure_ports:
            raise InfraError(f"no {protocol} listener: start the broker with users")
        return f"127.0.0.1:{self.secure_ports[protocol]}"

    def _listeners(self) -> dict[str, int]:
        """Listener name (= its security protocol) -> port, the controller's aside."""
        return {"PLAINTEXT": self.port, **self.secure_ports}

    def _properties(self) -> str:
        advertised = ",".join(
            f"{name}://127.0.0.1:{port}" for name, port in self._listeners().items()
        )
        protocols = ",".join(f"{name}:{name}" for name in self._listeners())
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"{advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": advertised,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{protocols}",
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            # One node: every internal topic has one replica, and a few partitions
            # are enough (50 would cost seconds on the first group join).
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Flushing is left to the OS, as in production: a clean stop writes
            # everything out, and the restart test stops the broker cleanly.
            "log.retention.hours": "168",
        }
        if self.users:
            settings |= listener_properties(self.users, self.tls_files)
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _java_argv(self, main: str, *args: str) -> list[str]:
        return [
            self._java,
            *self._jvm_options,
            f"-Dlog4j2.configurationFile={self._layout.kafka / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp",
            str(self._layout.kafka / "libs" / "*"),
            main,
            *args,
        ]

    def _format_storage(self) -> None:
        """Format the KRaft storage once; a formatted directory is reused as is."""
        if (self.log_dir / "meta.properties").is_file():
            return
        result = subprocess.run(
            self._java_argv(
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                new_cluster_id(),
                "--config",
                str(self.config_path),
                *scram_format_arguments(self.users),
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise InfraError(
                f"kafka storage format failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    # -- lifecycle ------------------------------------------------------------------

    @property
    def process(self) -> ManagedProcess | None:
        return self._process

    def start(self, timeout: float = 120.0) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.users and not self.tls_files.keystore.is_file():  # kept across restarts
            make_tls_files(self.tls_files.ca.parent)
        self.config_path.write_text(self._properties())
        self.config_path.chmod(0o600)  # PLAIN passwords are in it
        self._format_storage()
        self._process = ManagedProcess(
            "apache-kafka",
            self._java_argv("kafka.Kafka", str(self.config_path)),
            log_path=self._log_path,
        ).start()
        for name, port in self._listeners().items():
            self._process.wait_ready(
                partial(port_open, "127.0.0.1", port),
                timeout=timeout,
                what="listening" if name == "PLAINTEXT" else f"listening ({name})",
                interval=0.2,
            )
        self._process.wait_ready(
            lambda: round_trip(self.bootstrap_servers, timeout=5),
            timeout=timeout,
            what="produce/consume round trip",
            interval=0.2,
        )
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """A clean shutdown (SIGTERM): Kafka flushes its logs and offsets first."""
        if self._process is not None:
            self._process.stop(timeout=timeout)
            self._process = None

    def restart(self, timeout: float = 120.0) -> Self:
        """Stop and start on the same storage and ports: committed data must survive."""
        self.stop()
        return self.start(timeout=timeout)

    def close(self) -> None:
        """Stop and remove the storage when this broker created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
