"""The reconcile loop in plain Python: validate, build, apply, prune, observe.

kopf's handlers (`handlers.py`) stay thin: they call this class and translate its
outcomes into kopf's terms (status patches, `PermanentError`, `TemporaryError`,
Events). All cluster I/O goes through `Cluster`, all Redis reads through
`RedisBackends`; the manifests come from the pure builders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from driftline.api import DynamicModel, parse_dynamic_model
from driftline.api.status import (
    ConditionType,
    DriftStatus,
    DynamicModelStatus,
    InitialImportStatus,
    RolloutStatus,
)
from driftline.common.connections import KafkaConnection, RedisConnection
from driftline.operator.backends import RedisBackends
from driftline.operator.builders import BuildContext, Children, build_children
from driftline.operator.builders.initial_import import import_job_name
from driftline.operator.builders.parts import active_parts, trainer_ranks
from driftline.operator.builders.scaling import idle_scaling_note
from driftline.operator.cluster import Cluster, MissingDependencyError
from driftline.operator.rollout_commands import ANNOTATION, REASON_ANNOTATION, Requested, requested
from driftline.operator.rollouts import Rollouts
from driftline.operator.settings import OperatorSettings
from driftline.operator.status_report import Observation, compute_status
from driftline.rollout import status_of

log = logging.getLogger(__name__)


def model_from_body(body: Mapping[str, Any]) -> DynamicModel:
    """The DynamicModel in a watch event, validated (raises `SpecError`).

    Status is left out: it is ours to write, and a spec is judged on its own.
    """
    obj = {k: v for k, v in body.items() if k != "status"}
    meta = dict(obj.get("metadata", {}))
    obj["metadata"] = {
        k: meta[k]
        for k in ("name", "namespace", "uid", "generation", "labels", "annotations")
        if k in meta
    }
    return parse_dynamic_model(obj)


class Controller:
    def __init__(
        self,
        settings: OperatorSettings,
        cluster: Cluster,
        backends: RedisBackends,
        rollouts: Rollouts,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.backends = backends
        self.rollouts = rollouts
        self._clock = clock
        self._lock = threading.Lock()
        self._applied: dict[str, _Applied] = {}  # by the model's uid
        self._taken: dict[str, tuple[str, str]] = {}  # rollout annotations taken, by uid
        self._connections_cache: dict[
            tuple[str, str, int | None], tuple[float, RedisConnection, KafkaConnection]
        ] = {}

    # --- reconcile ------------------------------------------------------------------------

    def children(self, model: DynamicModel) -> Children:
        """Raises `MissingDependencyError` while a Secret the model names is absent."""
        kafka_auth = self.cluster.kafka_auth(model)
        ctx = BuildContext(model, self.settings, self.cluster.capabilities(), kafka_auth)
        return build_children(ctx)

    def apply(
        self, model: DynamicModel, *, new: bool = False, everything: bool = False
    ) -> tuple[int, list[str]]:
        """Applies the children and prunes the ones no longer wanted: (applied, pruned).

        Only the children whose manifest changed since this operator last applied
        them are sent, and children are listed for pruning only when the set of
        wanted ones changed: with hundreds of models a spec change costs a few
        requests, not thirty. Everything is applied and pruned on the first
        reconcile after a start, after `full_apply_seconds`, or when asked
        (`everything`: a Deployment was deleted by hand). A `new` model owns no
        child yet, so there is nothing to prune.
        """
        children = self.children(model)
        wanted = {_child_key(m): _fingerprint(m) for m in children.all()}
        with self._lock:
            known = self._applied.get(model.metadata.uid or model.name)
        now = self._clock()
        full = (
            everything or known is None or now - known.full_at >= self.settings.full_apply_seconds
        )
        if full or known is None:
            send = children.all()
        else:
            send = [
                m
                for m in children.all()
                if known.fingerprints.get(_child_key(m)) != wanted[_child_key(m)]
            ]
        self.cluster.apply_manifests(send)
        if new:
            pruned: list[str] = []
        elif full or known is None or set(known.fingerprints) != set(wanted):
            pruned = self.cluster.prune(model, children)
        else:
            pruned = []
        with self._lock:
            full_at = now if full or known is None else known.full_at
            self._applied[model.metadata.uid or model.name] = _Applied(wanted, full_at)
        return len(send), pruned

    def finalize(self, namespace: str, name: str) -> list[str]:
        return self.cluster.delete_cluster_children(namespace, name)

    # --- observe --------------------------------------------------------------------------

    def _connections(self, model: DynamicModel) -> tuple[RedisConnection, KafkaConnection]:
        """The model's Redis and Kafka endpoints with credentials (Secrets read once a TTL)."""
        key = (model.metadata.namespace, model.name, model.metadata.generation)
        with self._lock:
            cached = self._connections_cache.get(key)
            if cached and self._clock() - cached[0] < self.settings.capabilities_ttl_seconds:
                return cached[1], cached[2]
        redis = self.cluster.redis_connection(model)
        kafka = self.cluster.kafka_connection(model)
        with self._lock:
            self._connections_cache[key] = (self._clock(), redis, kafka)
        return redis, kafka

    def tick(
        self, model: DynamicModel, previous: DynamicModelStatus | None
    ) -> tuple[DynamicModelStatus, list[str]]:
        """The timer's work: step the rollout, read drift, observe the parts."""
        try:
            redis, kafka = self._connections(model)
        except MissingDependencyError as exc:  # reconcile reports it; status stays as it is
            log.debug("%s: %s", model.name, exc)
            return self.observe(model, previous)
        asked = self._rollout_command(model)
        state = self.rollouts.tick(model, redis, kafka, asked.command if asked else None)
        if asked is not None:
            self.cluster.clear_annotations(model, (ANNOTATION, REASON_ANNOTATION))
        if state is None:  # the rollout's state is not known yet: keep what status says
            stable = previous.stable_version if previous is not None else None
            drift = self.backends.drift(model, redis, stable)
            return self.observe(model, previous, drift=drift)
        versions = {
            "stable": state.stable,
            "candidate": state.candidate,
            "baseline": state.baseline,
        }
        drift = self.backends.drift(model, redis, state.stable)
        return self.observe(
            model, previous, drift=drift, rollout=status_of(state), versions=versions
        )

    def _rollout_command(self, model: DynamicModel) -> Requested | None:
        """A person's decision in the model's annotations, once the rollout is known."""
        uid = model.metadata.uid or model.name
        annotations = model.metadata.annotations
        if ANNOTATION not in annotations:
            with self._lock:
                self._taken.pop(uid, None)  # removed: the next one is a new decision
            return None
        known, candidate = self.rollouts.candidate(model)
        if not known:
            return None  # the driver resumes this tick; the annotation waits for the next
        # Taken once until seen removed: should the removal fail, the same `approve`
        # must not approve the stage after this one too.
        written = (annotations[ANNOTATION], annotations.get(REASON_ANNOTATION, ""))
        with self._lock:
            if self._taken.get(uid) == written:
                return None
            self._taken[uid] = written
        asked = requested(model.metadata.annotations, candidate)
        if asked is not None and asked.problem:
            log.warning("%s/%s: %s", model.metadata.namespace, model.name, asked.problem)
        elif asked is not None and asked.command is not None:
            log.info(
                "%s/%s: %s of version %s asked by annotation (%s)",
                model.metadata.namespace,
                model.name,
                asked.command.action,
                asked.command.version,
                asked.command.reason,
            )
        return asked

    def forget(self, model: DynamicModel) -> None:
        self.rollouts.forget(model)
        with self._lock:
            self._applied.pop(model.metadata.uid or model.name, None)
            self._taken.pop(model.metadata.uid or model.name, None)
            for key in [
                k
                for k in self._connections_cache
                if k[:2] == (model.metadata.namespace, model.name)
            ]:
                del self._connections_cache[key]

    def close(self) -> None:
        self.rollouts.close()
        self.backends.close()

    def observe(
        self,
        model: DynamicModel,
        previous: DynamicModelStatus | None,
        *,
        drift: DriftStatus | None = None,
        rollout: RolloutStatus | None = None,
        versions: dict[str, str | None] | None = None,
    ) -> tuple[DynamicModelStatus, list[str]]:
        """Status from the model's Deployments (rollout and drift as given, else as they
        were), and the parts whose Deployment is missing (deleted by hand: re-applied)."""
        deployments = self.cluster.deployments(
            model.metadata.namespace, model.name, statefulsets=trainer_ranks(model) > 1
        )
        expected = tuple(p.name for p in active_parts(model))
        by_part = {d.part: d for d in deployments}
        stuck = [
            p
            for p in expected
            if p in by_part and (not by_part[p].is_available or by_part[p].is_rolling)
        ]
        problems = (
            self.cluster.part_problems(model.metadata.namespace, model.name, stuck)
            if stuck and _stuck_for_a_while(previous)
            else {}
        )
        obs = Observation(
            generation=model.metadata.generation,
            expected_parts=expected,
            deployments=tuple(deployments),
            rollout=rollout,
            versions=versions or {},
            drift=drift,
            drift_alert=alerts(model),
            problems=problems,
            initial_import=self._initial_import(model, previous),
            scaling_note=idle_scaling_note(
                BuildContext(model, self.settings, self.cluster.capabilities())
            ),
        )
        present = {d.part for d in deployments}
        return compute_status(previous, obs, now()), [p for p in expected if p not in present]

    def _initial_import(
        self, model: DynamicModel, previous: DynamicModelStatus | None
    ) -> InitialImportStatus | None:
        """The import Job's state while `spec.model.initial` is set; read until it ends."""
        if model.spec.model.initial is None:
            return None
        job = import_job_name(BuildContext(model, self.settings, self.cluster.capabilities()))
        before = previous.initial_import if previous is not None else None
        if before is not None and before.job == job and before.state == "Succeeded":
            return before  # done: no more reads
        return self.cluster.import_state(model.metadata.namespace, model.name, job) or before

    def invalid_status(
        self, previous: DynamicModelStatus | None, generation: int | None, problem: str
    ) -> DynamicModelStatus:
        return compute_status(previous, Observation(generation, invalid=problem), now())

    def waiting_status(
        self, model: DynamicModel, previous: DynamicModelStatus | None, waiting_for: str
    ) -> DynamicModelStatus:
        obs = Observation(
            model.metadata.generation,
            expected_parts=tuple(p.name for p in active_parts(model)),
            waiting_for=waiting_for,
            drift_alert=alerts(model),
        )
        return compute_status(previous, obs, now())


# Pods that are only starting are not a problem: Pods are listed for the reason only
# once the model has been short of Ready (or rolling) this long, which spares the API
# server two lists per model and tick while hundreds of models come up at once.
PROBLEM_GRACE_SECONDS = 30.0


def _stuck_for_a_while(previous: DynamicModelStatus | None) -> bool:
    if previous is None:
        return False
    checks: tuple[tuple[ConditionType, str], ...] = (("Ready", "False"), ("Progressing", "True"))
    for type_, stuck_when in checks:
        condition = previous.condition(type_)
        if condition is None or condition.status != stuck_when:
            continue
        since = condition.last_transition_time
        if since is not None and (now() - since).total_seconds() >= PROBLEM_GRACE_SECONDS:
            return True
    return False


@dataclass(frozen=True)
class _Applied:
    """What this operator last applied for a model: each child's fingerprint."""

    fingerprints: dict[tuple[str, str, str], str]
    full_at: float  # when every child was last applied


def _child_key(manifest: dict[str, Any]) -> tuple[str, str, str]:
    return (manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"])


def _fingerprint(manifest: dict[str, Any]) -> str:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def alerts(model: DynamicModel) -> bool:
    """Drift is reported as a condition and a Warning Event (`drift.onDrift: [alert]`)."""
    return "alert" in model.spec.drift.on_drift


def now() -> datetime:
    return datetime.now(tz=UTC).replace(microsecond=0)
