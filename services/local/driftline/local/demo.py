"""`driftline demo`: the whole loop on one machine, with a change of the world in it.

Scenario `drift` runs `manifests/samples/sea-demo.yaml`. A model is bootstrapped on
one SEA concept (label: x1 + x2 <= 7), traffic flows through the inference API and
outcomes come back a second later, then the labeling rule switches (x1 + x2 <= 9.5:
a fifth of all inputs change their label while the inputs themselves stay the same).
The drift monitor sees the serving model's errors rise, the trainer opens a new
concept epoch and publishes a candidate, the rollout shadows it, steps it through
the canary and promotes it. The frozen bootstrap version (baseline) is scored beside
it all along: it stays wrong, the served model recovers.

Scenario `bad-candidate` registers a broken candidate (class scores reversed), the
way a faulty trainer would, with `rollout.strategy: canary`: the first canary step's
analysis aborts it and routing goes back to stable; only the canary's share of
entities ever saw it.

Scenario `migrate` starts where most users are: a static gradient-boosted model in
production. The model, trained elsewhere on the first concept with scikit-learn and
converted to ONNX with skl2onnx, is named in `spec.model.initial`; the run imports it
as version 1 (champion and frozen baseline) before the parts start, exactly as
`driftline up` and the operator do, and the trainer learns beside it from the imported
sample. The world changes as in `drift`; a learned version must be shadowed, proved in
the canary and promoted over the imported one, and beat it clearly afterwards: never a
cold start.

Each scenario starts its own embedded servers and parts (`LocalRuntime`), and the
report (PNG + markdown) goes to `--out`.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from driftline.client import Client
from driftline.common.streams import SEAStream
from driftline.local.report import ScenarioResult, write_report
from driftline.local.runtime import LocalRuntime, bootstrap_from_stream
from driftline.local.watch import Plan, Watcher

log = logging.getLogger(__name__)

REPO_SAMPLE = Path(__file__).resolve().parents[4] / "manifests" / "samples" / "sea-demo.yaml"
BEFORE, AFTER = 2, 3  # SEA concepts: theta 7, then theta 9.5


FULL = Plan(warmup=40, max_after_switch=240, after_decision=30, rate=150, bootstrap_samples=6000)
QUICK = Plan(warmup=25, max_after_switch=200, after_decision=15, rate=120, bootstrap_samples=4000)


def demo_model_file(override: Path | None = None) -> Path:
    """The demo's model: `override` (a variant of the sample) or the repository's sample."""
    if override is not None:
        return override.resolve()
    if not REPO_SAMPLE.exists():
        raise FileNotFoundError(f"{REPO_SAMPLE} is missing: run the demo from a Driftline checkout")
    return REPO_SAMPLE


async def _drive(runtime: LocalRuntime, stream: SEAStream, plan: Plan, watcher: Watcher,
                 on_tick: Any) -> None:  # fmt: skip
    from driftline.local.traffic import TrafficGenerator

    assert runtime.info is not None and runtime.info.inference_url is not None
    url, name = runtime.info.inference_url, runtime.model.name
    traffic = TrafficGenerator(
        inference_url=url,
        model_name=name,
        stream=stream,
        outcomes=Client(url, name, batch_seconds=0.1),
        rate=plan.rate,
    )
    watcher.traffic = traffic.log
    task = asyncio.create_task(traffic.run())
    try:
        while not watcher.finished:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(watcher.poll)
            on_tick(watcher)
    finally:
        traffic.stop()
        await task


def run_drift(
    plan: Plan, seed: int, state_root: Path, live: Any, model_file: Path | None = None
) -> ScenarioResult:
    def first_version(runtime: LocalRuntime) -> None:
        version = bootstrap_from_stream(runtime, "sea", BEFORE, plan.bootstrap_samples, seed)
        log.info("bootstrapped version %s on theta=%s", version, SEAStream.THETAS[BEFORE])

    with LocalRuntime(
        demo_model_file(model_file), state_dir=state_root / "drift", before_parts=first_version
    ) as runtime:
        runtime.wait_ready(timeout=240)
        stream = SEAStream(seed=seed + 1, schedule=[(0, BEFORE)])
        watcher = Watcher(runtime, plan, stream, scenario="drift", switch_to=AFTER)
        asyncio.run(_drive(runtime, stream, plan, watcher, live))
        result = watcher.drift_result()
        peaks = runtime.supervisor.peak_memory()
        result.summary.append(
            (
                "peak memory of each part (resident, its processes)",
                ", ".join(f"{name} {peaks[name] / 2**20:.0f} MiB" for name in sorted(peaks)),
            )
        )
        return result


def canary_only(model_file: Path, directory: Path) -> Path:
    """The demo model with `rollout.strategy: canary` (no shadow) and a quick analysis."""
    doc = yaml.safe_load(model_file.read_text())
    doc["spec"]["rollout"]["strategy"] = "canary"
    doc["spec"]["rollout"]["canary"] = {"steps": [20, 50, 100], "stepSeconds": 20}
    doc["spec"]["rollout"]["analysis"]["minLabeled"] = 100
    path = directory / "sea-canary.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_bad_candidate(
    plan: Plan, seed: int, state_root: Path, live: Any, model_file: Path | None = None
) -> ScenarioResult:
    from driftline.local.faults import register_inverted_candidate

    directory = Path(tempfile.mkdtemp(prefix="driftline-demo-"))
    model_file = canary_only(demo_model_file(model_file), directory)
    parts = ["inference", "joiner", "drift", "rollout"]  # the broken "trainer" is the demo

    def first_version(runtime: LocalRuntime) -> None:
        bootstrap_from_stream(runtime, "sea", BEFORE, plan.bootstrap_samples, seed)

    with LocalRuntime(
        model_file, state_dir=state_root / "bad-candidate", parts=parts, before_parts=first_version
    ) as runtime:
        runtime.wait_ready(timeout=240)
        stream = SEAStream(seed=seed + 2, schedule=[(0, BEFORE)])
        watcher = Watcher(runtime, plan, stream, scenario="bad-candidate")

        def inject() -> str:
            return register_inverted_candidate(
                runtime.endpoints.mlflow_tracking_uri, runtime.model.spec.model.registry.name
            )

        watcher.inject = inject
        asyncio.run(_drive(runtime, stream, plan, watcher, live))
        return watcher.bad_candidate_result()


def static_model(directory: Path, rows: int, seed: int) -> tuple[Path, Path]:
    """A gradient-boosted model trained on the first concept, as a user brings it:
    scikit-learn's trees converted to ONNX with skl2onnx, a labeled sample as CSV."""
    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier

    data = SEAStream(seed=seed + 100, schedule=[(0, BEFORE)]).take(rows)
    names = ["x1", "x2", "x3"]
    x = np.array([[row[n] for n in names] for row in data.features()], dtype=np.float64)
    y = data.labels.astype(int)
    model = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=seed)
    model.fit(x, y)
    graph = convert_sklearn(
        model,
        initial_types=[("x", FloatTensorType([None, len(names)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    model_path = directory / "static.onnx"
    model_path.write_bytes(graph.SerializeToString())
    sample = directory / "sample.csv"
    lines = [",".join([*names, "label"])]
    lines += [",".join([*(f"{v:.6f}" for v in xi), str(yi)]) for xi, yi in zip(x, y, strict=True)]
    sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return model_path, sample


def run_migrate(
    plan: Plan, seed: int, state_root: Path, live: Any, model_file: Path | None = None
) -> ScenarioResult:
    directory = Path(tempfile.mkdtemp(prefix="driftline-demo-"))
    model_path, sample = static_model(directory, plan.bootstrap_samples, seed)
    doc = yaml.safe_load(demo_model_file(model_file).read_text())
    doc["spec"]["model"]["initial"] = {"uri": str(model_path), "sample": str(sample)}
    model_file = directory / "sea-migrate.yaml"
    model_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    with LocalRuntime(model_file, state_dir=state_root / "migrate") as runtime:
        runtime.wait_ready(timeout=240)
        stream = SEAStream(seed=seed + 1, schedule=[(0, BEFORE)])
        watcher = Watcher(runtime, plan, stream, scenario="drift", switch_to=AFTER)
        asyncio.run(_drive(runtime, stream, plan, watcher, live))
        result = watcher.drift_result()
        imported = runtime.import_log_first_line()
    result.name = "migrate"
    result.title = "A static model migrated: imported, learned beside, replaced after drift"
    result.summary.insert(0, ("version 1", imported))
    result.passed = (
        result.passed
        and imported.startswith("imported")
        and (watcher.decided_version not in (None, "1"))
    )
    return result


def run_demo(
    scenario: str = "all",
    out_dir: Path = Path("demo-report"),
    quick: bool = False,
    seed: int = 7,
    state_root: Path = Path(".driftline/demo"),
    model_file: Path | None = None,
) -> int:
    from driftline.local.live import LiveView

    plan = QUICK if quick else FULL
    results: list[ScenarioResult] = []
    started = time.monotonic()
    with LiveView() as live:
        if scenario in ("drift", "all"):
            results.append(run_drift(plan, seed, state_root, live.update, model_file))
        if scenario in ("bad-candidate", "all"):
            results.append(run_bad_candidate(plan, seed, state_root, live.update, model_file))
        if scenario == "migrate":
            results.append(run_migrate(plan, seed, state_root, live.update, model_file))
    report = write_report(results, out_dir)
    elapsed = time.monotonic() - started
    for result in results:
        verdict = "PASSED" if result.passed else "FAILED"
        print(f"{verdict}  {result.title}")
        for key, value in result.summary:
            print(f"    {key}: {value}")
    print(f"report: {report} ({elapsed:.0f} s)")
    return 0 if all(r.passed for r in results) else 1
