"""kopf handlers: thin translations between kopf and the `Controller`.

    create / update / resume  -> reconcile: validate, apply the children, write status
    timer (every tick)        -> rollout step, drift, Deployment status -> status
    delete (Karpenter only)   -> delete the cluster-scoped NodePool (a finalizer waits)

An invalid spec sets phase Failed with the message and raises `kopf.PermanentError`
(the next spec change tries again); a missing Secret sets phase Pending and raises
`kopf.TemporaryError`, so kopf retries with a delay (the timer also re-applies once
the Secret exists, so a lost retry never strands the model). Handlers are registered on an
explicit registry by `register`, with settings built once at the entry point.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from driftline.api import GROUP, PLURAL, VERSION, DynamicModel, SpecError
from driftline.api.status import DynamicModelStatus
from driftline.common.registry import configure_mlflow
from driftline.operator import metrics
from driftline.operator.backends import RedisBackends
from driftline.operator.cluster import Cluster, MissingDependencyError
from driftline.operator.controller import Controller, model_from_body
from driftline.operator.kube import Kube, KubeError, load_credentials
from driftline.operator.rollouts import Rollouts
from driftline.operator.settings import OperatorSettings
from driftline.operator.status_report import drift_alert, parse_status, to_patch

log = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, PLURAL)
ANNOTATION_PREFIX = "driftline.io"


def _previous(body: Mapping[str, Any]) -> DynamicModelStatus | None:
    return parse_status(dict(body.get("status") or {}))


def _generation(body: Mapping[str, Any]) -> int | None:
    value = body.get("metadata", {}).get("generation")
    return int(value) if value is not None else None


def _write_status(
    body: Any, patch: kopf.Patch, previous: DynamicModelStatus | None, new: DynamicModelStatus
) -> None:
    """Patch status (through the status subresource) and post an Event per transition."""
    if previous is None or to_patch(previous) != to_patch(new):
        patch.status.update(to_patch(new))
    before = previous.phase if previous is not None else None
    if new.phase != before:
        event = kopf.warn if new.phase in ("Failed", "Degraded") else kopf.info
        event(body, reason=new.phase, message=new.message or f"phase {before} -> {new.phase}")
    alert = drift_alert(previous, new)
    if alert is not None:
        kopf.warn(body, reason="DriftDetected", message=alert)
    old_stage = previous.rollout.stage if previous is not None else "idle"
    if new.rollout.stage != old_stage:
        kopf.info(
            body,
            reason="Rollout",
            message=f"{old_stage} -> {new.rollout.stage} (candidate {new.candidate_version}, "
            f"{new.rollout.weight}%) {new.rollout.reason}".strip(),
        )


def dynamicmodel_reconcile(
    body: kopf.Body, patch: kopf.Patch, memo: Any, reason: str = "", **_: Any
) -> None:
    controller: Controller = memo.controller
    previous = _previous(body)
    try:
        model = model_from_body(body)
    except SpecError as exc:
        metrics.reconciles_total.labels("invalid").inc()
        _write_status(
            body, patch, previous, controller.invalid_status(previous, _generation(body), str(exc))
        )
        raise kopf.PermanentError(f"fix the spec: {exc}") from exc
    try:
        with metrics.reconcile_seconds.time():
            applied, pruned = controller.apply(model, new=reason == "create")
    except MissingDependencyError as exc:
        metrics.reconciles_total.labels("waiting").inc()
        _write_status(body, patch, previous, controller.waiting_status(model, previous, str(exc)))
        raise kopf.TemporaryError(str(exc), delay=controller.settings.retry_seconds) from exc
    except KubeError as exc:
        metrics.reconciles_total.labels("failed").inc()
        kopf.warn(body, reason="ApplyFailed", message=str(exc))
        raise kopf.TemporaryError(str(exc), delay=controller.settings.retry_seconds) from exc
    metrics.reconciles_total.labels("applied").inc()
    metrics.record_budget(model.metadata.namespace, model.name, model.spec.cost.monthly_budget)
    # Rollout and drift stay as the timer last wrote them; only the parts are new here.
    status, _missing = controller.observe(model, previous)
    _write_status(body, patch, previous, status)
    message = f"applied {applied} objects" + (f", deleted {', '.join(pruned)}" if pruned else "")
    kopf.info(body, reason="Reconciled", message=message)


def dynamicmodel_tick(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
    controller: Controller = memo.controller
    previous = _previous(body)
    try:
        model = model_from_body(body)
    except SpecError as exc:
        # Reconcile reported it; this only keeps a late tick from overwriting Failed.
        _write_status(
            body, patch, previous, controller.invalid_status(previous, _generation(body), str(exc))
        )
        return
    if previous is None or previous.observed_generation != model.metadata.generation:
        if previous is not None and previous.phase == "Failed":
            # The spec was fixed after an invalid one. Reconcile reports the fix, but
            # a tick that ran on the old body (kopf hands timers the body it last
            # saw) can write Failed over that report, and nothing would run reconcile
            # again: apply here (idempotent), so a fixed spec is never stranded.
            _apply_when_dependencies_exist(controller, model, body, patch, previous)
        return  # otherwise reconcile has not finished this generation: not ours yet
    ready = previous.condition("Ready")
    if ready is not None and ready.reason == "DependencyMissing":
        # kopf re-runs reconcile after its delay; the tick looks too, so a retry kopf
        # loses under load (or a long backoff) never strands a model whose Secret exists.
        _apply_when_dependencies_exist(controller, model, body, patch, previous)
        return
    status, missing = controller.tick(model, previous)
    metrics.ticks_total.labels("missing_parts" if missing else "ok").inc()
    if missing:
        log.info(
            "%s/%s: re-applying, Deployments missing: %s",
            model.metadata.namespace,
            model.name,
            missing,
        )
        try:
            controller.apply(model, everything=True)
        except (MissingDependencyError, KubeError) as exc:
            log.warning("re-apply failed: %s", exc)
    _write_status(body, patch, previous, status)


def _apply_when_dependencies_exist(
    controller: Controller,
    model: DynamicModel,
    body: kopf.Body,
    patch: kopf.Patch,
    previous: DynamicModelStatus,
) -> None:
    try:
        applied, pruned = controller.apply(model)
    except MissingDependencyError:
        return  # still missing: the status already says so
    except KubeError as exc:
        log.warning("%s/%s: apply failed: %s", model.metadata.namespace, model.name, exc)
        return
    metrics.reconciles_total.labels("applied").inc()
    status, _missing = controller.observe(model, previous)
    _write_status(body, patch, previous, status)
    message = f"applied {applied} objects" + (f", deleted {', '.join(pruned)}" if pruned else "")
    kopf.info(body, reason="Reconciled", message=message)


def dynamicmodel_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
    controller: Controller = memo.controller
    meta = body["metadata"]
    deleted = controller.finalize(meta["namespace"], meta["name"])
    if deleted:
        kopf.info(body, reason="Deleted", message=f"deleted {', '.join(deleted)}")


def dynamicmodel_forget(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Drops the model's rollout driver (best effort: no finalizer waits for it)."""
    controller: Controller = memo.controller
    meta = body["metadata"]
    metrics.record_budget(meta["namespace"], meta["name"], None)
    with contextlib.suppress(SpecError):
        controller.forget(model_from_body(body))


def _uses_karpenter(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("inference", {}).get("nodePool", {}).get("karpenter", False))


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> kopf.OperatorRegistry:
    """Registers every handler on `registry`, bound to the operator's settings `config`."""
    credentials = load_credentials(config.kubeconfig)
    kube = Kube(credentials)
    controller = Controller(config, Cluster(kube, config), RedisBackends(), Rollouts())

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        # Progress and the last-handled spec live in our own annotations; status is
        # ours alone (its schema has no room for kopf's bookkeeping).
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=ANNOTATION_PREFIX
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
        # Watch DynamicModels only: no namespace or CRD scanning, so no RBAC for it.
        settings.scanning.disabled = True
        settings.execution.max_workers = config.handler_threads
        # The rollout's MLflow calls run inside a tick: fail fast, the next tick retries.
        configure_mlflow(config.registry_timeout_seconds, config.registry_retries)
        memo.controller = controller

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=credentials.server,
            ca_path=credentials.ca_path,
            insecure=credentials.insecure,
            token=credentials.token(),
            certificate_path=credentials.cert_path,
            private_key_path=credentials.key_path,
        )

    @kopf.on.cleanup(registry=registry)
    def close(**_: Any) -> None:
        controller.close()
        kube.close()

    for on_event in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on_event(*RESOURCE, id="reconcile", registry=registry)(dynamicmodel_reconcile)
    kopf.timer(
        *RESOURCE,
        id="tick",
        interval=config.tick_seconds,
        initial_delay=config.tick_seconds,
        registry=registry,
    )(dynamicmodel_tick)
    kopf.on.delete(*RESOURCE, id="finalize", when=_uses_karpenter, registry=registry)(
        dynamicmodel_delete
    )
    kopf.on.delete(*RESOURCE, id="forget", optional=True, registry=registry)(dynamicmodel_forget)
    return registry
