"""Importing a model in each format: import time, served latency and accuracy, side by side.

    python -m benchmarks.trainer.import_formats [--quick]

One synthetic task (8 numeric features, binary, a non-linear rule with label noise):
the same training rows fit a model in every format Driftline imports, outside
Driftline, and the trainer's own learner (the spec's default MLP [64, 32]):

- onnx: scikit-learn's GradientBoostingClassifier, converted by its user with skl2onnx
  (`zipmap: False`), imported as it is;
- skops: a scikit-learn pipeline (StandardScaler, MLPClassifier [64, 32]) saved with skops
  (imported with `--trust` for the MLP's optimizer type);
- xgboost: a booster saved as its JSON model file;
- lightgbm: a booster saved as its text model file;
- torchscript: a torch MLP [64, 32] ending in a softmax, `torch.jit.script(...).save`;
- driftline: the trainer's learner fit offline on the same rows, exported with the
  trainer's export path (`export.export_onnx`), as a trained version is published.

Import time is `model_import.import_model`, the function the `import` command runs,
into a real MLflow started here on loopback, with an unlabelled 1000-row CSV sample
(load, convert, wrap, parity on the sample, drift reference, registration; no
challenger is trained). "first" is the first import of that format in the process
(the libraries that trained the models are imported already, the converters such as
onnxmltools not), "then" the median of the next ones, each under a fresh registry
name; one ONNX import before all of them warms the MLflow client and is not counted.
"convert" is the conversion and wrap alone (`load_source`, `adapt`, `describe_graph`),
which give the graph served below.

Served latency is ONNX Runtime's `session.run` on the served graph (one thread, as
`export.session` makes it, both outputs), p50 and p99 at batch 1 and 64, the graphs
taking turns in 10 rounds so that the machine's load falls on all of them alike;
accuracy is on 2000 held-out rows. Writes benchmarks/results/import-formats.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.trainer.common import machine, pin_to_one_core, table, write

FEATURES = tuple(f"x{i}" for i in range(8))
TRAIN, TEST, SAMPLE = 5000, 2000, 1000
FORMATS = {  # name -> (file name, what it is)
    "onnx": ("model.onnx", "GradientBoosting (100 trees, depth 3), skl2onnx"),
    "skops": ("pipeline.skops", "StandardScaler + MLPClassifier [64, 32], skops"),
    "xgboost": ("booster.json", "XGBoost (100 rounds, depth 3), JSON model file"),
    "lightgbm": ("booster.txt", "LightGBM (100 rounds, 15 leaves), text model file"),
    "torchscript": ("module.pt", "torch MLP [64, 32] + softmax, TorchScript"),
}
TRUST = {"skops": ["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]}
"""`--trust`: the MLP's optimizer state is a type skops does not trust by default."""
DRIFTLINE = "driftline"
DRIFTLINE_WHAT = "the trainer's learner (default MLP [64, 32]), export_onnx"

Array = np.ndarray[Any, Any]


def data(n: int, seed: int) -> tuple[Array, Array]:
    """8 numeric features; the label a non-linear rule of five of them, 5% flipped."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    score = x[:, 0] * x[:, 1] + np.sin(2 * x[:, 2]) + 0.5 * x[:, 3] ** 2 - 0.5 + 0.7 * x[:, 4]
    y = (score > 0).astype(np.int64)
    flip = rng.random(n) < 0.05
    return x, np.where(flip, 1 - y, y)


def save_onnx(x: Array, y: Array, path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    gb = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(x, y)
    graph = to_onnx(gb, x[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 2})
    path.write_bytes(graph.SerializeToString())


def save_skops(x: Array, y: Array, path: Path) -> None:
    import skops.io
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    mlp = MLPClassifier((64, 32), max_iter=200, early_stopping=True, random_state=0)
    skops.io.dump(Pipeline([("scale", StandardScaler()), ("mlp", mlp)]).fit(x, y), path)


def save_xgboost(x: Array, y: Array, path: Path) -> None:
    import xgboost as xgb

    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "nthread": 1}
    xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=100).save_model(str(path))


def save_lightgbm(x: Array, y: Array, path: Path) -> None:
    import lightgbm as lgb

    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1}
    lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=100).save_model(str(path))


class TorchNet(torch.nn.Module):
    """An MLP [64, 32] on the raw features: a fixed standardising layer first, a softmax last."""

    def __init__(self, mean: Array, std: Array) -> None:
        super().__init__()
        scale = torch.nn.Linear(len(FEATURES), len(FEATURES))
        with torch.no_grad():
            scale.weight.copy_(torch.diag(torch.tensor(1.0 / std, dtype=torch.float32)))
            scale.bias.copy_(torch.tensor(-mean / std, dtype=torch.float32))
        scale.requires_grad_(False)
        self.body = torch.nn.Sequential(
            scale,
            torch.nn.Linear(len(FEATURES), 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 32),
            torch.nn.ReLU(),
            torch.nn.Linear(32, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.body(x), dim=1)


def save_torchscript(x: Array, y: Array, path: Path) -> None:
    torch.manual_seed(0)
    net = TorchNet(x.mean(0), x.std(0))
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(30):
        for i in torch.split(torch.randperm(len(xt)), 128):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net.body(xt[i]), yt[i])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    net.eval()
    torch.jit.script(net).save(str(path))  # type: ignore[no-untyped-call]


SAVERS: dict[str, Callable[[Array, Array, Path], None]] = {
    "onnx": save_onnx,
    "skops": save_skops,
    "xgboost": save_xgboost,
    "lightgbm": save_lightgbm,
    "torchscript": save_torchscript,
}


def settings_for(tmp: Path, tracking_uri: str, name: str) -> Any:
    import yaml

    from driftline.trainer.settings import TrainerSettings

    doc = {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DynamicModel",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "model": {
                "registry": {"trackingUri": tracking_uri, "name": name},
                "task": "classification",
                "classes": 2,
            },
            "features": [{"name": n, "type": "numeric"} for n in FEATURES],
            "kafka": {"bootstrapServers": "127.0.0.1:9092", "partitions": 1},
            "redis": {"url": "redis://127.0.0.1:6379/0"},
        },
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return TrainerSettings(model_file=path, checkpoint_dir=tmp / "state", metrics_port=0)


def served_graph(settings: Any, fmt: str, path: Path) -> tuple[bytes, float]:
    """The graph the import registers (the same calls), and how long they took."""
    from driftline.common.features import FeatureLayout
    from driftline.trainer import export
    from driftline.trainer.model_import import load_source
    from driftline.trainer.onnx_adapter import adapt

    spec = settings.model.spec
    layout = FeatureLayout.from_features(spec.features)
    started = time.perf_counter()
    source = load_source(path, layout, spec.model.task, spec.model.classes, trusted=TRUST.get(fmt))
    graph, _, _ = adapt(
        source.graph, layout, spec.model.task, spec.model.classes, None, source.columns
    )
    export.describe_graph(
        graph, layout, spec.model.task, spec.model.classes, producer="driftline-import"
    )
    return bytes(graph.SerializeToString()), time.perf_counter() - started


def driftline_graph(settings: Any, x: Array, y: Array) -> tuple[bytes, float, float]:
    """The trainer's learner fit offline on the rows, exported; train and export seconds."""
    from driftline.trainer import export
    from driftline.trainer.learner import LearnerOptions, OnlineLearner

    spec = settings.model.spec
    options = LearnerOptions.from_spec(spec.model, spec.training, spec.drift)
    learner = OnlineLearner(spec.model, spec.features, options)
    n = len(y)
    ex = learner.examples(
        x, np.empty((n, 0), object), y.astype(np.float32), np.arange(n, dtype=np.int64)
    )
    started = time.perf_counter()
    learner.fit_offline(ex, 10)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    graph = export.export_onnx(learner.net, learner.layout, spec.model.task, spec.model.classes)
    return graph, trained, time.perf_counter() - started


ROUNDS = 10


def latencies(graphs: dict[str, bytes], x: Array, batch: int, runs: int) -> dict[str, Any]:
    """p50 and p99 of session.run in milliseconds per graph, on batches cycling through `x`;
    the graphs take turns in `ROUNDS` rounds, so the machine's load falls on all alike."""
    from driftline.api import artifacts
    from driftline.trainer import export

    sessions = {name: export.session(graph) for name, graph in graphs.items()}
    batches = [
        {artifacts.INPUT_NUMERIC: np.ascontiguousarray(x[i : i + batch])}
        for i in range(0, len(x) - batch + 1, batch)
    ]
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for sess in sessions.values():
        for feeds in batches[:20]:
            sess.run(None, feeds)
    for _ in range(ROUNDS):
        for name, sess in sessions.items():
            for i in range(runs // ROUNDS):
                feeds = batches[i % len(batches)]
                started = time.perf_counter()
                sess.run(None, feeds)
                times[name].append((time.perf_counter() - started) * 1e3)
    return {name: [float(v) for v in np.percentile(t, [50, 99])] for name, t in times.items()}


def accuracy(graph: bytes, x: Array, y: Array) -> float:
    from driftline.api import artifacts
    from driftline.trainer import export

    (p,) = export.session(graph).run([artifacts.OUTPUT_PROBABILITIES], {artifacts.INPUT_NUMERIC: x})
    return float((np.asarray(p).argmax(axis=1) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed runs and imports")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    import importlib
    import logging
    import warnings

    importlib.import_module("mlflow")  # it sets its loggers' levels when imported

    from driftline.local.servers import MlflowServer
    from driftline.trainer.model_import import import_model

    for logger in ("driftline", "mlflow"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", "no signature found", UserWarning)

    cpu = pin_to_one_core()
    repeats = 2 if args.quick else 5
    runs = {1: 2000, 64: 500} if args.quick else {1: 10000, 64: 3000}
    x, y = data(TRAIN, seed=0)
    x_test, y_test = data(TEST, seed=1)
    x_sample, _ = data(SAMPLE, seed=2)

    results: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="driftline-import-formats-") as name,
        MlflowServer(root=Path(name) / "mlflow", log_path=Path(name) / "mlflow.log") as server,
    ):
        tmp = Path(name)
        sample = tmp / "sample.csv"
        pd.DataFrame(x_sample, columns=list(FEATURES)).to_csv(sample, index=False)
        files: dict[str, Path] = {}
        for fmt, (file_name, _) in FORMATS.items():
            started = time.perf_counter()
            files[fmt] = tmp / file_name
            SAVERS[fmt](x, y, files[fmt])
            results[fmt] = {"train_and_save_s": time.perf_counter() - started}
            print(f"{fmt}: trained and saved in {results[fmt]['train_and_save_s']:.1f}s")

        counter = iter(range(1000))

        def one_import(fmt: str) -> float:
            settings = settings_for(tmp, server.tracking_uri, f"bench-{fmt}-{next(counter)}")
            started = time.perf_counter()
            done = import_model(settings, files[fmt], sample, trusted=TRUST.get(fmt))
            seconds = time.perf_counter() - started
            results[fmt]["parity"] = done.parity
            return seconds

        one_import("onnx")  # warms the MLflow client; not counted
        for fmt in FORMATS:
            first = one_import(fmt)
            then = [one_import(fmt) for _ in range(repeats)]
            settings = settings_for(tmp, server.tracking_uri, f"bench-{fmt}-graph")
            graph, convert = served_graph(settings, fmt, files[fmt])
            results[fmt] |= {
                "import_first_s": first,
                "import_then_s": statistics.median(then),
                "import_then_all_s": then,
                "convert_s": convert,
                "graph": graph,
            }
            print(f"{fmt}: imported in {first:.2f}s, then {statistics.median(then):.2f}s")
        settings = settings_for(tmp, server.tracking_uri, "bench-driftline")
        graph, trained, exported = driftline_graph(settings, x, y)
        results[DRIFTLINE] = {"train_s": trained, "export_s": exported, "graph": graph}

    graphs = {fmt: r.pop("graph") for fmt, r in results.items()}
    for fmt, r in results.items():
        r["graph_kib"] = len(graphs[fmt]) / 1024
        r["accuracy"] = accuracy(graphs[fmt], x_test, y_test)
    for batch, n in runs.items():
        for fmt, (p50, p99) in latencies(graphs, x_test, batch, n).items():
            results[fmt] |= {f"p50_ms_b{batch}": p50, f"p99_ms_b{batch}": p99}
    for fmt, r in results.items():
        print(f"{fmt}: accuracy {r['accuracy']:.3f}, p50 b1 {r['p50_ms_b1']:.3f} ms")

    def what(fmt: str) -> str:
        return DRIFTLINE_WHAT if fmt == DRIFTLINE else FORMATS[fmt][1]

    rows = []
    for fmt, r in results.items():
        imported = fmt != DRIFTLINE
        rows.append(
            [
                fmt,
                what(fmt),
                f"{r['import_first_s']:.2f}" if imported else "-",
                f"{r['import_then_s']:.2f}" if imported else "-",
                f"{r['convert_s']:.2f}" if imported else f"{r['export_s']:.2f} (export)",
                f"{r['p50_ms_b1']:.3f} / {r['p99_ms_b1']:.3f}",
                f"{r['p50_ms_b64']:.3f} / {r['p99_ms_b64']:.3f}",
                f"{r['accuracy']:.3f}",
                f"{r['graph_kib']:.0f}",
                f"{r['parity']:.1e}" if imported else "-",
            ]
        )
    headers = [
        "format",
        "model",
        "import s (first)",
        "import s (then)",
        "convert s",
        "batch 1 p50 / p99 ms",
        "batch 64 p50 / p99 ms",
        "accuracy",
        "graph KiB",
        "parity",
    ]
    body = table(headers, rows)
    print(body)
    info = machine()
    how = (
        f"{'Quick mode' if args.quick else 'Full mode'}, one process pinned to CPU {cpu}. "
        f"{TRAIN} training rows, {TEST} held-out rows, 8 numeric features, binary (a "
        "non-linear rule of five features, 5% of labels flipped). Import: "
        "`model_import.import_model` into a real MLflow on loopback with an unlabelled "
        f"{SAMPLE}-row CSV sample; 'first' is the format's first import in the process "
        "(the training libraries were imported already by the training before it), "
        "'then' the median of "
        f"{repeats} more under fresh registry names (one ONNX import before all warmed "
        "the MLflow client). 'convert' is load, conversion and wrap alone. The driftline "
        "row is not imported: its learner was trained here for 10 passes "
        f"({results[DRIFTLINE]['train_s']:.1f} s) and exported by the trainer's export path. "
        f"Latency: ONNX Runtime session.run on the served graph, one thread, both outputs, "
        f"{runs[1]} runs at batch 1 and {runs[64]} at batch 64 per graph, the graphs taking "
        f"turns in {ROUNDS} rounds. Accuracy on the held-out "
        "rows does not depend on the machine's load; times do (a shared 2-core machine, "
        "load average above: noisy). Parity: the import's own check against the native "
        "model on the sample (tolerance 1e-5)."
    )
    write(
        "import-formats",
        "Importing a model in each format: import time, served latency, accuracy",
        [("Side by side", body), ("How it was measured", how)],
        {"quick": args.quick, "results": results, "machine": info},
    )


if __name__ == "__main__":
    main()
