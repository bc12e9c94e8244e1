"""Which parts of the table (`driftline.api.parts`) a DynamicModel runs as Deployments.

The rollout is not among them: the operator runs its driver from a timer.
"""

from __future__ import annotations

from driftline.api import DynamicModel
from driftline.api.parts import PARTS, TRAINER, Part, TopicKind


def active_parts(model: DynamicModel) -> tuple[Part, ...]:
    """The parts this model runs as Deployments: a trainer only when training is online
    (a scheduled model's retrains are a CronJob, `builders/scheduled_retrain.py`)."""
    return tuple(
        p
        for p in PARTS
        if p.deployed and (p is not TRAINER or model.spec.training.mode == "online")
    )


def trainer_ranks(model: DynamicModel) -> int:
    """Trainer processes in one torch.distributed group (`training.workers`); 1: the
    single trainer of a Deployment, more: the ranks of a StatefulSet."""
    training = model.spec.training
    return training.workers if training.mode == "online" else 1


def topic(model: DynamicModel, kind: TopicKind) -> str:
    topics = model.topics
    return str(getattr(topics, kind))
