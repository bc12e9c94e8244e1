"""The loaded model versions and the routing state the request path reads.

The request path reads one attribute, `ModelPool.state`, an immutable snapshot of
the routing table *as it can be served*: every version in it is loaded, checked
and warmed up. A new table is applied by loading what it needs first, then
swapping the snapshot in one assignment, so a request sees either the old state
or the new one, never a half-loaded mix. Requests already queued on a version
that leaves the table still finish on it; it is unloaded once idle.

A version that fails to load never replaces the serving one: the stable version
stays, a candidate or baseline that cannot load is left out (the mode falls back
to stable), and the load is tried again after a doubling wait.

Precision (`spec.inference.quantization`): a version registered with an int8 graph
serves it, but the stable and candidate versions always serve at one precision, so
the canary and shadow analyses compare like with like. Both serve int8 only when both
have an int8 graph; otherwise both serve their fp32 graphs (a stable version that
served int8 is hot-swapped to its fp32 graph while such a candidate is on trial). The
baseline serves int8 when the pair does and it has an int8 graph. The loaded graphs
are keyed by version and precision (`graph_key`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from driftline.api.events import Variant
from driftline.api.routing import RoutingTable
from driftline.api.spec import BatchingSpec, QuantizationSpec
from driftline.inference import metrics
from driftline.inference.batcher import Batcher
from driftline.inference.contract import FeatureContract
from driftline.inference.errors import ModelLoadError
from driftline.inference.loader import Precision, Registry
from driftline.inference.onnx_session import GpuProbe, OnnxModel, available_cpus, choose_providers
from driftline.inference.settings import InferenceSettings

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ServingModel:
    """One loaded version: its session, its batch queue, and where it came from."""

    version: str
    sha256: str
    model: OnnxModel
    batcher: Batcher
    precision: Precision = "fp32"
    loaded_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return graph_key(self.version, self.precision)


def graph_key(version: str, precision: Precision) -> str:
    """The pool's key of one loaded graph: the version (fp32), or `<version>/int8`."""
    return version if precision == "fp32" else f"{version}/int8"


@dataclass(frozen=True, eq=False)
class RouteState:
    """What the request path serves right now (every version in it is loaded)."""

    table: RoutingTable
    stable: ServingModel
    candidate: ServingModel | None
    baseline: ServingModel | None

    def models(self) -> dict[str, ServingModel]:
        found = [self.stable, self.candidate, self.baseline]
        return {m.version: m for m in found if m is not None}

    def variant_of(self, version: str) -> Variant:
        if version == self.stable.version:
            return "stable"
        if self.candidate is not None and version == self.candidate.version:
            return "candidate"
        return "baseline"


@dataclass
class _Failure:
    error: str
    retry_at: float
    wait: float


class ModelPool:
    """Loads versions on demand (off the event loop) and publishes the routing state."""

    def __init__(
        self,
        settings: InferenceSettings,
        contract: FeatureContract,
        registry: Registry,
        batching: BatchingSpec,
        model_name: str,
        arrivals: Callable[[], int] = lambda: 0,
        quantization: QuantizationSpec | None = None,
    ) -> None:
        self.settings = settings
        self.contract = contract
        self.registry = registry
        self.batching = batching
        self.model_name = model_name
        self.arrivals = arrivals
        self.state: RouteState | None = None
        self.loaded: dict[str, ServingModel] = {}
        """Loaded graphs by `graph_key`."""
        self.failures: dict[str, _Failure] = {}
        """Failed loads by `graph_key` (for int8, also a failed look-up of the tags)."""
        self.preferred: Precision = "int8" if quantization is not None else "fp32"
        self._int8: dict[str, bool] = {}  # whether each version has an int8 graph
        self._retiring: dict[str, float] = {}
        self._kept_for: set[str | None] = set()  # stable versions we could not switch to
        self._threads = settings.intra_op_threads or available_cpus()
        self._providers = choose_providers(
            _available_providers(),
            settings.providers,
            GpuProbe.detect(),
            registry.model_dir.as_posix(),
        )
        self._lock = asyncio.Lock()
        metrics.queue_rows.set_function(
            lambda: sum(m.batcher.queued_rows for m in self.loaded.values())
        )

    @property
    def providers(self) -> list[str]:
        return [p if isinstance(p, str) else p[0] for p in self._providers]

    async def apply(self, wanted: RoutingTable) -> RouteState | None:
        """Load what `wanted` needs (when it can), then swap the serving state."""
        async with self._lock:
            if self.preferred == "int8":
                for version in sorted(wanted.versions()):
                    await self._learn_int8(version)
            precisions = self.precisions(wanted)
            for version in sorted(wanted.versions()):
                await self._ensure(version, precisions[version])
            state = self._servable(wanted, precisions)
            if state is not None and not _same(state, self.state):
                self._swap(state)
            self._retire_unused()
            return self.state

    def precisions(self, wanted: RoutingTable) -> dict[str, Precision]:
        """The precision each version of `wanted` serves at (see the module's docstring).

        A version not yet known to have an int8 graph counts as having none."""
        pair = [v for v in (wanted.stable, wanted.candidate) if v]
        pair_int8 = self.preferred == "int8" and all(self._int8.get(v, False) for v in pair)
        return {
            version: "int8"
            if pair_int8 and (version in pair or self._int8.get(version, False))
            else "fp32"
            for version in wanted.versions()
        }

    def pending(self, wanted: RoutingTable) -> bool:
        """True when a graph of `wanted` is missing and due for another load attempt."""
        keys = [graph_key(v, p) for v, p in self.precisions(wanted).items()]
        if self.preferred == "int8":
            keys += [graph_key(v, "int8") for v in wanted.versions() if v not in self._int8]
        return any(self._due(key) for key in keys)

    def _due(self, key: str) -> bool:
        failure = self.failures.get(key)
        return key not in self.loaded and (failure is None or failure.retry_at <= time.monotonic())

    def _failed(self, key: str, exc: ModelLoadError) -> None:
        failure = self.failures.get(key)
        wait = min(
            (failure.wait * 2) if failure else self.settings.load_retry_seconds,
            self.settings.load_retry_max_seconds,
        )
        self.failures[key] = _Failure(str(exc), time.monotonic() + wait, wait)
        metrics.model_loads_total.labels("error").inc()
        log.error("%s did not load (next try in %.0fs): %s", _describe(key), wait, exc)

    async def _learn_int8(self, version: str) -> None:
        """Find out (once) whether `version` has an int8 graph."""
        key = graph_key(version, "int8")
        if version in self._int8 or not self._due(key):
            return
        try:
            self._int8[version] = await asyncio.to_thread(self.registry.has_int8, version)
        except ModelLoadError as exc:
            self._failed(key, exc)

    async def _ensure(self, version: str, precision: Precision) -> None:
        key = graph_key(version, precision)
        if key in self.loaded:
            self._retiring.pop(key, None)
            return
        if not self._due(key):
            return
        try:
            serving = await asyncio.to_thread(self._load, version, precision)
        except ModelLoadError as exc:
            self._failed(key, exc)
            return
        self.failures.pop(key, None)
        self.loaded[key] = serving
        metrics.model_loads_total.labels("ok").inc()

    def _load(self, version: str, precision: Precision) -> ServingModel:
        """Fetch, verify, open and time one version's graph (runs on a worker thread)."""
        started = time.perf_counter()
        artifact = self.registry.fetch(version, precision)
        model = OnnxModel(artifact.path, self.contract, self._providers, self._threads)
        batching = self.batching
        max_rows = batching.max_batch_size if batching.enabled else 1
        full_batch = model.time_batch(max_rows)
        mode = self.settings.execution
        inline = mode == "inline" or (
            mode == "auto" and full_batch * 1000 <= self.settings.inline_max_ms
        )
        batcher = Batcher(
            model,
            name=self.model_name,
            version=version,
            max_batch_rows=max_rows,
            max_queue_rows=batching.max_queue,
            max_delay_seconds=batching.max_delay_ms / 1000 if batching.enabled else 0.0,
            inline=inline,
            arrivals=self.arrivals,
        )
        log.info(
            "loaded version %s (%s, sha256 %s..., %s, %d thread(s)) in %.2fs; a batch of %d "
            "runs in %.2f ms, %s",
            version,
            precision,
            artifact.sha256[:12],
            ",".join(model.providers),
            self._threads,
            time.perf_counter() - started,
            max_rows,
            full_batch * 1000,
            "inline" if inline else "on a worker thread",
        )
        return ServingModel(version, artifact.sha256, model, batcher, precision)

    def _servable(
        self, wanted: RoutingTable, precisions: dict[str, Precision]
    ) -> RouteState | None:
        """The closest state to `wanted` made of loaded graphs only."""

        def loaded(version: str | None) -> ServingModel | None:
            return self.loaded.get(graph_key(version, precisions[version])) if version else None

        current = self.state
        stable = loaded(wanted.stable)
        if stable is None:
            if current is None:
                return None
            if wanted.stable not in self._kept_for:
                self._kept_for.add(wanted.stable)
                log.warning(
                    "stable version %s is not loaded; still serving %s",
                    wanted.stable,
                    current.stable.version,
                )
            stable = current.stable
        candidate = loaded(wanted.candidate)
        if candidate is not None and candidate.precision != stable.precision:
            # The stable graph at the candidate's precision did not load: no trial of
            # one precision against another; it waits for the retry.
            log.warning(
                "candidate %s (%s) waits: stable %s serves %s",
                candidate.version,
                candidate.precision,
                stable.version,
                stable.precision,
            )
            candidate = None
        baseline = loaded(wanted.baseline)
        mode = wanted.mode if candidate is not None else "stable"
        table = RoutingTable(
            stable=stable.version,
            candidate=candidate.version if candidate else None,
            baseline=baseline.version if baseline else None,
            mode=mode,
            weight=wanted.weight if mode == "canary" else 0,
            revision=wanted.revision,
            updated_at=wanted.updated_at,
        )
        return RouteState(table, stable, candidate, baseline)

    def _swap(self, state: RouteState) -> None:
        previous = self.state
        self.state = state
        metrics.model_serving.clear()
        for role, model in (
            ("stable", state.stable),
            ("candidate", state.candidate),
            ("baseline", state.baseline),
        ):
            if model is not None:
                metrics.model_serving.labels(model.version, role, model.precision).set(1)
        metrics.routing_revision.set(state.table.revision)
        log.info(
            "serving stable %s%s%s (mode %s, weight %d, revision %d)%s",
            state.table.stable,
            f", candidate {state.table.candidate}" if state.table.candidate else "",
            f", baseline {state.table.baseline}" if state.table.baseline else "",
            state.table.mode,
            state.table.weight,
            state.table.revision,
            f"; was stable {previous.stable.version}" if previous else "",
        )

    def _retire_unused(self) -> None:
        """Unload versions out of the state once idle and past the grace period."""
        in_use = {m.key for m in self.state.models().values()} if self.state else set()
        now = time.monotonic()
        for key, serving in list(self.loaded.items()):
            if key in in_use:
                self._retiring.pop(key, None)
                continue
            since = self._retiring.setdefault(key, now)
            if now - since >= self.settings.unload_grace_seconds and serving.batcher.idle:
                serving.batcher.close()
                del self.loaded[key]
                del self._retiring[key]
                log.info("unloaded %s", _describe(key))

    async def tidy(self) -> None:
        """Periodic: unload what is no longer used (called by the routing follower)."""
        async with self._lock:
            self._retire_unused()

    def close(self) -> None:
        for serving in self.loaded.values():
            serving.batcher.close()


def _same(a: RouteState, b: RouteState | None) -> bool:
    return b is not None and a.table == b.table and a.models() == b.models()


def _describe(key: str) -> str:
    version, _, precision = key.partition("/")
    return f"version {version}" + (f" ({precision})" if precision else "")


def _available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())
