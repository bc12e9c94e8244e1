"""The parts a DynamicModel runs as, and what each one needs from the cluster.

One row per part: the module it runs (`python -m driftline.<part>`), the env prefix
of its settings, which backends it talks to (for Secrets and egress rules) and which
topics it consumes (for lag-based scaling). The rollout is not here: it runs in the
operator's timer, not as a Deployment of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from driftline.api import DynamicModel

PartName = Literal["inference", "joiner", "trainer", "drift"]
TopicKind = Literal["predictions", "outcomes", "labeled", "control"]


@dataclass(frozen=True)
class Part:
    name: PartName
    uses_mlflow: bool
    consumes: tuple[TopicKind, ...]
    singleton: bool = False
    """One replica only: the trainer learns one model from the whole labeled stream;
    two trainers in one consumer group would each learn from half and publish rival
    candidates."""

    @property
    def module(self) -> str:
        return f"driftline.{self.name}"

    @property
    def env_prefix(self) -> str:
        return f"DRIFTLINE_{self.name.upper()}_"

    def group_id(self, model: str) -> str:
        """The Kafka consumer group, as every part names it."""
        return f"driftline-{model}-{self.name}"


# Every part produces or consumes Kafka and keeps shared state in Redis
# (driftline.common.redis_state); MLflow is needed where models are loaded or stored.
INFERENCE = Part("inference", uses_mlflow=True, consumes=())
JOINER = Part("joiner", uses_mlflow=False, consumes=("predictions", "outcomes"))
TRAINER = Part("trainer", uses_mlflow=True, consumes=("labeled",), singleton=True)
DRIFT = Part("drift", uses_mlflow=True, consumes=("predictions", "labeled"))

PARTS: tuple[Part, ...] = (INFERENCE, JOINER, TRAINER, DRIFT)


def active_parts(model: DynamicModel) -> tuple[Part, ...]:
    """The parts this model runs: no trainer when training is off."""
    return tuple(p for p in PARTS if p is not TRAINER or model.spec.training.mode != "off")


def topic(model: DynamicModel, kind: TopicKind) -> str:
    topics = model.topics
    return str(getattr(topics, kind))
