"""The parts a DynamicModel runs as: one row each, read by the operator, the local
runtime and the parts themselves.

Every part is a process, `python -m driftline.<part>`, configured through settings
under its own env prefix. A part that consumes Kafka does so in one consumer group
per model, named here and nowhere else: the operator's lag-based scaling watches
the very group the worker joins. The rollout is a part too, but on Kubernetes it
has no Deployment of its own: the operator runs its driver from a timer; the local
runtime starts it as a process like the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PartName = Literal["inference", "joiner", "trainer", "drift", "rollout"]
TopicKind = Literal["predictions", "outcomes", "labeled", "control"]


@dataclass(frozen=True)
class Part:
    name: PartName
    """Short name, also the Python package `driftline.<name>`."""
    uses_mlflow: bool
    """Loads or stores models in the registry (MLflow credentials, egress to it)."""
    consumes: tuple[TopicKind, ...] = ()
    """The topics its consumer group reads (the operator scales on their lag)."""
    produces: tuple[TopicKind, ...] = ()
    """The topics it writes, besides the dead-letter topic."""
    singleton: bool = False
    """One replica only: the trainer learns one model from the whole labeled stream
    (two trainers in one consumer group would each learn from half and publish rival
    candidates; `training.workers` ranks instead share one model, each reading its own
    partitions); the rollout steps one state machine per model."""
    serves_http: bool = False
    """Serves the inference API: a port of its own besides metrics."""
    data_setting: str | None = None
    """The setting naming a directory the part keeps between restarts, if any."""
    deployed: bool = True
    """Runs as a Deployment of its own on Kubernetes; False where the operator runs
    it in-process (the rollout driver, from its timer)."""

    @property
    def module(self) -> str:
        return f"driftline.{self.name}"

    @property
    def env_prefix(self) -> str:
        return f"DRIFTLINE_{self.name.upper()}_"

    def group_id(self, model: str) -> str:
        """The Kafka consumer group of this part for the model named `model`."""
        if not self.consumes:
            raise ValueError(f"the {self.name} part consumes no topic and has no group")
        return f"driftline-{model}-{self.name}"


# Every part produces or consumes Kafka and keeps shared state in Redis.
INFERENCE = Part(
    "inference",
    uses_mlflow=True,
    produces=("predictions",),
    serves_http=True,
    data_setting="SPOOL_DIR",
)
JOINER = Part(
    "joiner", uses_mlflow=False, consumes=("predictions", "outcomes"), produces=("labeled",)
)
TRAINER = Part(
    "trainer",
    uses_mlflow=True,
    consumes=("labeled", "control"),
    singleton=True,
    data_setting="CHECKPOINT_DIR",
)
DRIFT = Part("drift", uses_mlflow=True, consumes=("predictions", "labeled"), produces=("control",))
ROLLOUT = Part("rollout", uses_mlflow=True, produces=("control",), singleton=True, deployed=False)

PARTS: tuple[Part, ...] = (INFERENCE, JOINER, TRAINER, DRIFT, ROLLOUT)


def part_named(name: str) -> Part:
    """The row of the part called `name`; ValueError names the known ones."""
    for part in PARTS:
        if part.name == name:
            return part
    raise ValueError(f"unknown part {name!r}; choose from {sorted(p.name for p in PARTS)}")
