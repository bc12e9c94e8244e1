"""The inference service: from validated rows to served predictions, and what runs beside.

For each request: pick the version per row (stable, or the candidate for the
canary's share of entities), answer from the cache or the batch queue, score the
shadow and baseline versions off the critical path, and record the predictions
(log) and their latency (stats). The protocols (`plain`, `oip`) and the HTTP
layer (`app`) sit on top; the background tasks (routing, log, stats) are started
and stopped here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY

from driftline.api import DynamicModel
from driftline.api.events import Variant
from driftline.api.routing import serves_candidate
from driftline.common.model_signature import SignatureCheck
from driftline.common.redis_state import RoutingStore, ServingStore, model_prefix
from driftline.inference import metrics
from driftline.inference.batcher import Outputs
from driftline.inference.cache import PredictionCache
from driftline.inference.contract import FeatureContract, Rows, Served, scatter
from driftline.inference.errors import ModelFailedError, ModelNotFoundError, ModelNotReadyError
from driftline.inference.exploration import Explored, Explorer, take
from driftline.inference.loader import Registry
from driftline.inference.oip import OipProtocol
from driftline.inference.outcomes import OutcomeDecoder, OutcomeSender
from driftline.inference.plain import PlainProtocol
from driftline.inference.pool import ModelPool, RouteState, ServingModel
from driftline.inference.predlog import LogRecord, PredictionLog
from driftline.inference.routing_follower import RoutingFollower
from driftline.inference.settings import InferenceSettings
from driftline.inference.sources import SourcedFeatures
from driftline.inference.spool import Spool, SpoolBusyError
from driftline.inference.stats import ServingCounters
from driftline.inference.workers import SharedReadiness

log = logging.getLogger(__name__)

NO_VERSION_LOADED = (
    "no model version is loaded yet; if none is registered, train the first one with "
    "`python -m driftline.trainer bootstrap --model-file MODEL.yaml --from-file DATA.csv` "
    "or import one made elsewhere with `python -m driftline.trainer import MODEL.onnx "
    "--model-file MODEL.yaml --sample DATA.csv`"
)
"""The 503 of a server with nothing to serve, with the way forward of a first run."""


class InferenceService:
    """One DynamicModel served: models, routing, cache, prediction log and stats."""

    def __init__(
        self,
        settings: InferenceSettings,
        model: DynamicModel | None = None,
        siblings: SharedReadiness | None = None,
    ) -> None:
        self.settings = settings
        self.siblings = siblings
        """The readiness flags shared with the other worker processes, when there are any."""
        self.model = model or settings.model
        spec = self.model.spec
        self.name = self.model.name
        self.namespace = self.model.metadata.namespace
        self.contract = FeatureContract(spec)
        self.flagged = bool(self.contract.policies)
        """Whether rows may carry `flags` (some feature has an `onInvalid` policy)."""
        self.sources = SourcedFeatures.for_model(
            spec, self.contract, model_prefix(self.namespace, self.name)
        )
        """Features whose values come from Redis, not the request; None when there are none."""
        self.plain = PlainProtocol(self.contract, self.name, settings.max_rows)
        self.oip = OipProtocol(self.contract, self.name, settings.max_rows)
        connections = settings.connections
        self.registry = Registry(
            connections.mlflow_tracking_uri,
            spec.model.registry.name,
            settings.model_dir,
            signature_check=SignatureCheck.from_spec(spec.model.signing, settings.secrets_dir),
        )
        self.pool = ModelPool(
            settings,
            self.contract,
            self.registry,
            spec.inference.batching,
            self.name,
            arrivals=lambda: self.arriving,
            quantization=spec.inference.quantization,
        )
        self.with_baseline = spec.inference.baseline
        exploration = spec.training.exploration
        self.explorer = (
            None if exploration is None else Explorer(exploration, self.name, self.contract.classes)
        )
        """Serves the exploration policy to an epsilon share of entities; None when off."""
        self.arriving = 0
        """Requests in `predict` whose rows are not queued yet (the batcher may wait for
        them); counted there only, so every route that serves rows counts alike."""
        self.draining = False
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count(1)
        self.redis: Any = None
        self.cache: PredictionCache | None = None
        self.predictions: PredictionLog | None = None
        self.outcome_decoder = OutcomeDecoder(
            self.contract.task, self.contract.classes, settings.max_rows
        )
        self._outcomes: OutcomeSender | None = None
        self.stats = ServingCounters(
            self.name, ServingStore(self.namespace, self.name), None, settings.stats_flush_seconds
        )
        self.follower: RoutingFollower | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._side_done = {
            v: metrics.side_scoring_total.labels(v, "done") for v in ("shadow", "baseline")
        }
        self._side_dropped = {
            v: metrics.side_scoring_total.labels(v, "dropped") for v in ("shadow", "baseline")
        }

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        settings, spec = self.settings, self.model.spec
        redis_conn = settings.connections.redis
        timeout = settings.redis_timeout_seconds
        self.redis = redis_conn.async_client(socket_timeout=timeout, socket_connect_timeout=timeout)
        self.stats.client = self.redis
        if self.sources is not None:
            source_timeout = settings.feature_source_timeout_ms / 1000
            feast_client = None
            feast_store = settings.feast_connection
            if self.sources.feast is not None and feast_store is not None:
                feast_client = feast_store.async_client(
                    socket_timeout=source_timeout, socket_connect_timeout=source_timeout
                )
            self.sources.connect(
                redis_conn.async_client(
                    socket_timeout=source_timeout, socket_connect_timeout=source_timeout
                ),
                source_timeout,
                feast_client,
            )
        REGISTRY.register(self.stats)
        if spec.inference.cache.enabled:
            self.cache = PredictionCache(
                redis_conn.async_client(
                    socket_timeout=settings.cache_timeout_ms / 1000,
                    socket_connect_timeout=settings.cache_timeout_ms / 1000,
                ),
                model_prefix(self.namespace, self.name),
                self.contract,
                ttl_seconds=spec.inference.cache.ttl_seconds,
                timeout_seconds=settings.cache_timeout_ms / 1000,
                retry_seconds=settings.cache_retry_seconds,
            )
        if settings.prediction_log:
            self.predictions = PredictionLog(
                settings.connections.kafka,
                self.model.topics.predictions,
                self.name,
                self.contract.names,
                self.contract.task,
                flagged=self.flagged,
                capacity=settings.log_buffer,
                flush_seconds=settings.log_flush_ms / 1000,
                spool=self._open_spool(),
                max_age_seconds=spec.feedback.join_window_seconds,
                stall_seconds=settings.log_stall_ms / 1000,
            )
            self._spawn(self.predictions.run())
        if settings.create_topics:
            self._spawn(self._create_topics())
        self.follower = RoutingFollower(
            self.pool,
            self.registry,
            RoutingStore(self.namespace, self.name),
            self.redis,
            poll_seconds=settings.routing_poll_seconds,
            alias_poll_seconds=settings.alias_poll_seconds,
            with_baseline=self.with_baseline,
            pinned_version=settings.model_version,
        )
        self._spawn(self.follower.run())
        self._spawn(self.stats.run())
        if self.siblings is not None:
            self._spawn(self._publish_readiness(self.siblings))

    def _open_spool(self) -> Spool | None:
        """This worker's spool (what a previous process left in it is replayed first)."""
        settings = self.settings
        if settings.spool_dir is None:
            return None
        worker = self.siblings.index if self.siblings is not None else 0
        try:
            return Spool(
                settings.spool_dir / f"worker-{worker}",
                max_bytes=settings.spool_max_bytes,
                fsync=settings.spool_fsync,
                fsync_seconds=settings.spool_fsync_ms / 1000,
            )
        except (OSError, SpoolBusyError) as exc:  # serving matters more than the spool
            log.error("no spool for the prediction log (%s); logging without one", exc)
            return None

    async def stop(self) -> None:
        """Stop the background work, then flush the prediction log and the stats."""
        self.draining = True
        if self.follower is not None:
            self.follower.stop()
        self.stats.stop()
        # The loops only sleep between their steps, and a load in progress is of no use
        # any more: cancel them all, then do the last drain and flush here.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.predictions is not None:
            await self.predictions.close(timeout=max(1.0, self.settings.drain_timeout_seconds / 2))
        if self._outcomes is not None:
            await self._outcomes.close(timeout=1.0)
        await self.stats.flush()
        REGISTRY.unregister(self.stats)
        if self.cache is not None:
            await self.cache.close()
            await self.cache.client.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.sources is not None:
            await self.sources.close()
        self.pool.close()

    @property
    def serving(self) -> bool:
        """This process can answer predictions: a model is loaded and it is not draining."""
        return self.pool.state is not None and not self.draining

    @property
    def ready(self) -> bool:
        """Readiness as probes see it: this process serves, and so does every sibling."""
        if self.siblings is None:
            return self.serving
        self.siblings.publish(self.serving)  # fresher than the publishing loop's last turn
        return self.serving and not self.siblings.not_ready()

    def why_not_ready(self) -> str:
        if self.draining:
            return "shutting down"
        if not self.serving:
            return NO_VERSION_LOADED
        waiting = self.siblings.not_ready() if self.siblings is not None else []
        return f"worker {', '.join(map(str, waiting))} has no model version loaded yet"

    async def _publish_readiness(self, siblings: SharedReadiness) -> None:
        """Keeps this worker's flag current for its siblings' probes (a probe may never
        reach this worker, so the flag cannot wait for one)."""
        try:
            while True:
                siblings.publish(self.serving)
                await asyncio.sleep(0.1)
        finally:
            siblings.publish(False)

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _create_topics(self) -> None:
        from driftline.common.kafka import ensure_topics

        topics = self.model.topics
        names = [topics.predictions] if self.settings.prediction_log else []
        try:
            await asyncio.to_thread(
                ensure_topics,
                self.settings.connections.kafka,
                [*names, topics.outcomes],
                self.model.spec.kafka.partitions,
                10.0,
            )
        except Exception as exc:  # the broker may be away; the log buffers meanwhile
            log.warning("could not check the predictions and outcomes topics: %s", exc)

    @property
    def outcomes(self) -> OutcomeSender:
        """The outcomes producer, made on the first outcome (most servers never get one)."""
        if self._outcomes is None:
            self._outcomes = OutcomeSender(
                self.settings.connections.kafka,
                self.model.topics.outcomes,
                self.settings.outcome_timeout_seconds,
            )
        return self._outcomes

    # --- the request path ------------------------------------------------------------------

    def new_ids(self, n: int) -> list[str]:
        prefix, ids = self._id_prefix, self._ids
        return [f"{prefix}-{next(ids):x}" for _ in range(n)]

    async def predict(
        self,
        rows: Rows,
        entity_ids: Sequence[str | None],
        request_ids: list[str] | None,
        *,
        route: str,
        version: str | None = None,
        started: float | None = None,
        sticky_keys: Sequence[str | None] | None = None,
        fields: Mapping[str, Sequence[str | None]] | None = None,
    ) -> Served:
        """Serve `rows`. The request counts in `arriving` until its rows are queued (or
        it fails before): the one place that count moves.

        A canary routes each row by its sticky key (`rollout.stickyKey`'s value;
        `entity_ids` when not given); the prediction log names `entity_ids`. `fields`
        holds per row the request fields Feast join keys read (`entityKeys[].field`)."""
        self.arriving += 1
        try:
            state = self.pool.state
            if state is None:
                raise ModelNotReadyError(NO_VERSION_LOADED)
            if self.sources is not None:
                await self.sources.fill(rows, entity_ids, fields)
            ids = request_ids or self.new_ids(rows.n)
            keys = entity_ids if sticky_keys is None else sticky_keys
            groups = self._route(state, rows, keys, version)
            if self.cache is None:
                pending = [model.batcher.submit(part) for model, _, part, _ in groups]
            else:
                cache = self.cache
                pending = [
                    await cache.answer(model.version, model.sha256, part, model.batcher.submit)
                    for model, _, part, _ in groups
                ]
        finally:
            self.arriving -= 1
        results = []
        for (model, variant, _, _), future in zip(groups, pending, strict=True):
            try:
                results.append(await future)
            except ModelFailedError:
                self._observe(model.version, variant, route, started, error=True)
                raise
        now = time.time()
        if len(groups) == 1:
            outputs = results[0]
            versions = [groups[0][0].version] * rows.n
            variants: list[str] = [groups[0][1]] * rows.n
        else:
            outputs, versions, variants = _merge(groups, results, rows.n)
        explored: Explored | None = None
        if self.explorer is not None and version is None:
            outputs, explored = await self.explorer.apply(state, rows, ids, entity_ids, outputs)
        for (model, variant, part, index), result in zip(groups, results, strict=True):
            self._observe(model.version, variant, route, started)
            if self.flagged:
                count_flags(part.values, model.version)
            if self.predictions is not None:
                part_ids = ids if index is None else [ids[i] for i in index]
                part_entities = entity_ids if index is None else [entity_ids[i] for i in index]
                self.predictions.add(
                    (part_ids, part_entities, part.values, model.version, variant, result, now,
                     take(explored, index))
                )  # fmt: skip
        if version is None:
            self._score_aside(state, rows, ids, entity_ids, groups, results, now)
        return Served(ids, outputs, versions, variants)

    def _route(
        self,
        state: RouteState,
        rows: Rows,
        sticky_keys: Sequence[str | None],
        version: str | None,
    ) -> list[tuple[ServingModel, Variant, Rows, list[int] | None]]:
        """(model, variant, rows, their indexes or None for all) per version serving them."""
        if version is not None:
            model = state.models().get(version)
            if model is None:
                raise ModelNotFoundError(
                    f"version {version} is not served here (loaded: {sorted(state.models())})",
                    field="version",
                )
            return [(model, state.variant_of(version), rows, None)]
        table, candidate = state.table, state.candidate
        if table.mode != "canary" or candidate is None:
            return [(state.stable, "stable", rows, None)]
        if rows.n == 1 or len(set(sticky_keys)) == 1:
            if serves_candidate(table, sticky_keys[0]):
                return [(candidate, "candidate", rows, None)]
            return [(state.stable, "stable", rows, None)]
        picks = [serves_candidate(table, key) for key in sticky_keys]
        on_candidate = [i for i, pick in enumerate(picks) if pick]
        on_stable = [i for i, pick in enumerate(picks) if not pick]
        groups: list[tuple[ServingModel, Variant, Rows, list[int] | None]] = []
        if on_stable:
            groups.append((state.stable, "stable", rows.take(on_stable), on_stable))
        if on_candidate:
            groups.append((candidate, "candidate", rows.take(on_candidate), on_candidate))
        if len(groups) == 1:
            return [(groups[0][0], groups[0][1], rows, None)]
        return groups

    def _observe(
        self, version: str, variant: str, route: str, started: float | None, error: bool = False
    ) -> None:
        if started is not None:
            self.stats.observe(version, variant, route, time.perf_counter() - started, error)

    # --- off the critical path -----------------------------------------------------------

    def _score_aside(
        self,
        state: RouteState,
        rows: Rows,
        ids: list[str],
        entity_ids: Sequence[str | None],
        groups: list[tuple[ServingModel, Variant, Rows, list[int] | None]],
        results: list[Outputs],
        now: float,
    ) -> None:
        """Shadow and baseline scoring: queued after the answer, logged, never returned."""
        if state.table.mode == "shadow" and state.candidate is not None:
            self._side(state.candidate, "shadow", rows, ids, entity_ids, now)
        baseline = state.baseline
        if baseline is None or not self.with_baseline:
            return
        if len(groups) == 1 and groups[0][0] is baseline:
            # The baseline answered this request itself: log its answer once more as such.
            if self.predictions is not None:
                record: LogRecord = (
                    ids,
                    entity_ids,
                    rows.values,
                    baseline.version,
                    "baseline",
                    results[0],
                    now,
                    None,
                )
                self.predictions.add(record)
            return
        self._side(baseline, "baseline", rows, ids, entity_ids, now)

    def _side(
        self,
        model: ServingModel,
        variant: Variant,
        rows: Rows,
        ids: list[str],
        entity_ids: Sequence[str | None],
        ts: float,
    ) -> None:
        queued_at = time.perf_counter()

        def scored(scored_rows: Rows, outputs: Outputs | None) -> None:
            seconds = time.perf_counter() - queued_at
            self.stats.observe(model.version, variant, "side", seconds, error=outputs is None)
            if outputs is None:
                metrics.side_scoring_total.labels(variant, "failed").inc(scored_rows.n)
                return
            self._side_done[variant].inc(scored_rows.n)
            if self.predictions is not None:
                record = (
                    ids, entity_ids, scored_rows.values, model.version, variant, outputs, ts, None
                )  # fmt: skip
                self.predictions.add(record)

        if not model.batcher.submit_side(rows, scored):
            self._side_dropped[variant].inc(rows.n)


def count_flags(values: Sequence[Any], version: str) -> None:
    """Count what the `onInvalid` policies did to the rows `version` served."""
    for row in values:
        for feature, action in getattr(row, "flags", {}).items():
            metrics.value_policy_total.labels(feature, version, action).inc()


def _merge(
    groups: list[tuple[ServingModel, Variant, Rows, list[int] | None]],
    results: list[Outputs],
    n: int,
) -> tuple[Outputs, list[str], list[str]]:
    versions = [""] * n
    variants = [""] * n
    parts = []
    for (model, variant, _, index), outputs in zip(groups, results, strict=True):
        assert index is not None
        for i in index:
            versions[i] = model.version
            variants[i] = variant
        parts.append((index, outputs))
    return scatter(parts, n), versions, variants
