"""`driftline up`: one DynamicModel on one machine, without Kubernetes.

The runtime starts the embedded servers (a Kafka-protocol broker, Redis, MLflow on
SQLite), creates the model's topics, and runs every part as a supervised process
pointed at them. The user's YAML is used as it is: only the endpoints are
overridden, through the same environment variables the operator sets in pods.

A run keeps its files in a state directory (`.driftline/<model>/` by default):
`runtime.json` (endpoints, ports, pids: what `driftline status` reads), one log
per part and per server, and MLflow's database and artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from driftline.api import DynamicModel, load_dynamic_model
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics
from driftline.local.initial_model import import_arguments
from driftline.local.parts import TRAINER, Endpoints, PartSpec, parts_by_name
from driftline.local.retrain_timer import RetrainTimer
from driftline.local.servers import (
    InfraError,
    KafkaBroker,
    MlflowServer,
    RedisServer,
    TansuBroker,
    free_port,
)
from driftline.local.supervisor import Supervisor

log = logging.getLogger(__name__)

RUNTIME_FILE = "runtime.json"

BrokerStarter = Callable[[Path], KafkaBroker]
"""Starts the Kafka broker a run owns, given the path of its log file."""


def start_embedded_broker(log_path: Path) -> KafkaBroker:
    """The default: Tansu, the embedded Kafka-protocol broker."""
    return TansuBroker(log_path=log_path).start()


@dataclass(frozen=True)
class RuntimeInfo:
    """What a running `driftline up` tells `driftline status` and the demo."""

    model: str
    namespace: str
    model_file: str
    kafka_bootstrap_servers: str
    kafka_kind: str
    redis_url: str
    mlflow_tracking_uri: str
    inference_url: str | None
    metrics_ports: dict[str, int]
    pids: dict[str, int]
    started_at: float

    @classmethod
    def read(cls, state_dir: Path) -> RuntimeInfo:
        path = state_dir / RUNTIME_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"no local run in {state_dir}: start one with `driftline up -f MODEL.yaml`"
            ) from exc

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.kafka_bootstrap_servers, self.redis_url, self.mlflow_tracking_uri)


def default_state_dir(model: DynamicModel) -> Path:
    return Path(".driftline") / model.name


class LocalRuntime:
    """Embedded servers plus supervised parts for one DynamicModel."""

    def __init__(
        self,
        model_file: str | Path,
        *,
        state_dir: Path | None = None,
        parts: list[str] | None = None,
        kafka: BrokerStarter = start_embedded_broker,
        inference_port: int | None = None,
        fresh: bool = True,
        before_parts: Callable[[LocalRuntime], None] | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.model_file = Path(model_file).resolve()
        self.model = load_dynamic_model(self.model_file)
        self.state_dir = (state_dir or default_state_dir(self.model)).resolve()
        self.part_specs: list[PartSpec] = parts_by_name(parts)
        # Scheduled training, as on Kubernetes: no trainer process, a timer runs the retrain
        # command instead (`retrain_timer.py`).
        self.scheduled = self.model.spec.training.mode == "scheduled" and any(
            p.name == TRAINER.name for p in self.part_specs
        )
        if self.scheduled:
            self.part_specs = [p for p in self.part_specs if p.name != TRAINER.name]
        self.start_broker = kafka
        self.inference_port = inference_port or free_port()
        self.fresh = fresh
        self.before_parts = before_parts
        self.environment = dict(environment or {})
        """Extra settings for every part (`DRIFTLINE_<PART>_...`: each part reads its own)."""
        self.supervisor = Supervisor()
        self.retrain_timer: RetrainTimer | None = None
        self._kafka: KafkaBroker | None = None
        self._redis: RedisServer | None = None
        self._mlflow: MlflowServer | None = None
        self._endpoints: Endpoints | None = None
        self.info: RuntimeInfo | None = None

    # -- servers ------------------------------------------------------------------

    def start_servers(self) -> Endpoints:
        """Start the broker, Redis and MLflow; create the topics."""
        if self.fresh and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self._kafka = self.start_broker(logs / "kafka.log")
        self._redis = RedisServer(log_path=logs / "redis.log").start()
        self._mlflow = MlflowServer(root=self.state_dir / "mlflow", log_path=logs / "mlflow.log")
        self._mlflow.start()
        endpoints = Endpoints(
            self._kafka.bootstrap_servers, self._redis.url, self._mlflow.tracking_uri
        )
        topics = self.model.topics
        names = [topics.predictions, topics.outcomes, topics.labeled, topics.control]
        if topics.dead_letter:
            names.append(topics.dead_letter)
        ensure_topics(
            KafkaConnection(endpoints.kafka_bootstrap_servers),
            names,
            partitions=self.model.spec.kafka.partitions,
        )
        log.info(
            "servers ready in %.1fs: kafka (%s) %s, redis %s, mlflow %s",
            time.monotonic() - t0,
            self._kafka.kind,
            endpoints.kafka_bootstrap_servers,
            endpoints.redis_url,
            endpoints.mlflow_tracking_uri,
        )
        self._endpoints = endpoints
        return endpoints

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise InfraError("the servers are not started")
        return self._endpoints

    # -- parts ---------------------------------------------------------------------

    def start_parts(self) -> None:
        logs = self.state_dir / "logs"
        metrics_ports: dict[str, int] = {}
        if self.scheduled:
            self.retrain_timer = RetrainTimer(
                self.model.spec.training,
                [*TRAINER.argv(), "retrain"],
                self._trainer_env,
                logs / "retrain.log",
            )
            self.retrain_timer.start()
        for part in self.part_specs:
            metrics_ports[part.name] = free_port()
            env = {
                **inherited_env(),
                **part.environment(
                    self.model_file,
                    self.endpoints,
                    metrics_ports[part.name],
                    self.inference_port if part.http else None,
                    data_dir=self.state_dir / "data",
                ),
                **self.environment,
            }
            self.supervisor.add(
                part.name, part.argv(), env, logs / f"{part.name}.log", cwd=self.state_dir
            )
        self.info = RuntimeInfo(
            model=self.model.name,
            namespace=self.model.metadata.namespace,
            model_file=str(self.model_file),
            kafka_bootstrap_servers=self.endpoints.kafka_bootstrap_servers,
            kafka_kind=self._kafka.kind if self._kafka else "?",
            redis_url=self.endpoints.redis_url,
            mlflow_tracking_uri=self.endpoints.mlflow_tracking_uri,
            inference_url=(
                f"http://127.0.0.1:{self.inference_port}"
                if any(p.http for p in self.part_specs)
                else None
            ),
            metrics_ports=metrics_ports,
            pids={name: s.process.pid or 0 for name, s in self.supervisor.parts().items()},
            started_at=time.time(),
        )
        (self.state_dir / RUNTIME_FILE).write_text(json.dumps(asdict(self.info), indent=2))

    def wait_ready(self, timeout: float = 120.0, parts: list[str] | None = None) -> None:
        """Wait until the parts answer their readiness probes (inference: a model is loaded)."""
        assert self.info is not None, "start the parts first"
        wanted = parts or [p.name for p in self.part_specs]
        deadline = time.monotonic() + timeout
        pending = set(wanted)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                if _probe(self._ready_url(name)):
                    pending.discard(name)
                    log.info("%s is ready", name)
            if pending:
                failed = [n for n, s in self.supervisor.parts().items() if s.state == "failed"]
                if failed:
                    raise InfraError(f"parts failed to start: {failed}; see {self.state_dir}/logs")
                time.sleep(0.5)
        if pending:
            raise InfraError(
                f"not ready after {timeout:.0f}s: {sorted(pending)}; see {self.state_dir}/logs"
            )

    def _ready_url(self, name: str) -> str:
        assert self.info is not None
        if name == "inference" and self.info.inference_url:
            return f"{self.info.inference_url}/v2/health/ready"
        return f"http://127.0.0.1:{self.info.metrics_ports[name]}/readyz"

    # -- lifecycle -----------------------------------------------------------------

    def _trainer_env(self) -> dict[str, str]:
        """The environment of a trainer command run beside the parts (import, retrain)."""
        return {
            **inherited_env(),
            **TRAINER.environment(
                self.model_file, self.endpoints, 0, data_dir=self.state_dir / "data"
            ),
            **self.environment,
        }

    def import_initial(self) -> str | None:
        """`spec.model.initial`: import it as version 1 unless the registry has a champion.

        The trainer's own command against this run's servers (as the operator's Job runs
        it on a cluster); returns the champion's version, or None without `initial`."""
        initial = self.model.spec.model.initial
        if initial is None:
            return None
        env = self._trainer_env()
        argv = [*TRAINER.argv(), "import", *import_arguments(initial, self.model_file)]
        log.info("importing spec.model.initial: %s", initial.uri)
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=1800, check=False
        )
        (self.state_dir / "logs" / "import.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise InfraError(
                f"spec.model.initial: the import failed (exit {done.returncode}):\n"
                f"{done.stderr[-3000:]}"
            )
        lines = done.stdout.strip().splitlines()
        log.info("spec.model.initial: %s", lines[0] if lines else "imported")
        return lines[-1] if lines else None

    def import_log_first_line(self) -> str:
        """What the import of `spec.model.initial` said first ("imported ... (skops) in
        1.2s"), or "" when nothing was imported."""
        path = self.state_dir / "logs" / "import.log"
        lines = path.read_text().strip().splitlines() if path.exists() else []
        return next((ln for ln in lines if ln.startswith("imported")), lines[0] if lines else "")

    def start(self) -> Self:
        self.start_servers()
        self.import_initial()
        if self.before_parts is not None:
            self.before_parts(self)
        self.start_parts()
        return self

    def stop(self) -> None:
        if self.retrain_timer is not None:
            self.retrain_timer.stop()
        self.supervisor.stop()
        for server in (self._mlflow, self._redis, self._kafka):
            if server is not None:
                server.stop()
        runtime_file = self.state_dir / RUNTIME_FILE
        if runtime_file.exists():
            runtime_file.unlink()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def bootstrap_from_stream(
    runtime: LocalRuntime, stream: str, concept: int, samples: int, seed: int
) -> str:
    """Train and register the first version with the trainer's own command.

    Runs `python -m driftline.trainer bootstrap` against this run's servers, as a user
    would before the first deploy; returns the registered version.
    """
    env = {
        **inherited_env(),
        **TRAINER.environment(
            runtime.model_file, runtime.endpoints, 0, data_dir=runtime.state_dir / "data"
        ),
    }
    argv = [*TRAINER.argv(), "bootstrap", "--stream", stream, "--seed", str(seed),
            "--samples", str(samples), "--concept", str(concept)]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise InfraError(f"bootstrap failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def _probe(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def inherited_env() -> dict[str, str]:
    """The environment a part inherits: PATH, HOME, locale and PYTHONPATH (a part imports
    the code the CLI imports, also from a checkout), not our own settings."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "OMP_NUM_THREADS",
            "PYTHONPATH")  # fmt: skip
    return {k: v for k, v in os.environ.items() if k in keep}
