"""fp32 vs int8 serving of a mid-size MLP: rows/s, p99 and accuracy, side by side.

The model is what the trainer ships: a Driftline MLP (64 numeric inputs, hidden
512 x 512, 2 classes, standardisation inside the graph) trained on a synthetic task
(a random teacher network labels Gaussian rows), exported by `export.export_onnx`
and quantised by `export.quantize_int8` (ONNX Runtime's dynamic int8), the two
graphs `spec.inference.quantization` registers. Both run in ONNX Runtime with the
inference service's session options on one intra-op thread (one core, as a pod
runs); the runs alternate in short slices, so both graphs see the same machine load.

For each graph and batch size (1 and 64): rows/s, and p50/p99 of one run. Accuracy:
both graphs on the same held-out rows, and how often their labels agree.

    python -m benchmarks.inference.int8 [--seconds 6] [--rows 20000] [--quick]

Writes benchmarks/results/int8.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "results"
WIDTH = 64
HIDDEN = (512, 512)
BATCHES = (1, 64)
SLICE_SECONDS = 0.25


def teacher_task(rows: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Gaussian rows labelled by a random two-layer network (a non-linear boundary)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((WIDTH, 32)) / np.sqrt(WIDTH)
    w2 = rng.standard_normal(32)
    x = rng.normal(0.0, 1.0, (rows, WIDTH)) * rng.uniform(0.5, 20.0, WIDTH)  # unequal scales
    logits = np.tanh((x / x.std(axis=0)) @ w1) @ w2
    return x.astype(np.float32), (logits > np.median(logits)).astype(np.float32)


def trained_graphs(rows: int, passes: int) -> tuple[bytes, bytes, Any, Any, Any]:
    import torch

    from driftline.api.spec import FeatureSpec, ModelSpec
    from driftline.trainer import export
    from driftline.trainer.learner import LearnerOptions, OnlineLearner

    torch.set_num_threads(1)
    spec = ModelSpec.model_validate(
        {
            "registry": {"trackingUri": "http://127.0.0.1:1", "name": "bench"},
            "learner": {"type": "mlp", "hidden": list(HIDDEN), "learningRate": 1e-3},
        }
    )
    features = [FeatureSpec(name=f"x{i}") for i in range(WIDTH)]
    learner = OnlineLearner(spec, features, LearnerOptions(batch_size=256, seed=0))
    x, y = teacher_task(rows + 5000, seed=1)
    empty = np.zeros((len(x), 0), object)
    train = learner.examples(x[:rows], empty[:rows], y[:rows], np.arange(rows))
    test = learner.examples(x[rows:], empty[rows:], y[rows:], np.arange(rows, len(x)))
    learner.fit_offline(train, passes=passes)
    graph = export.export_onnx(learner.net, learner.layout, "classification", 2)
    return graph, export.quantize_int8(graph), test, learner.layout, export


def sessions(graphs: dict[str, bytes]) -> dict[str, Any]:
    import onnxruntime as ort

    from driftline.inference.onnx_session import session_options

    return {
        name: ort.InferenceSession(graph, session_options(1), providers=["CPUExecutionProvider"])
        for name, graph in graphs.items()
    }


def timed(sessions_: dict[str, Any], batch: int, seconds: float) -> dict[str, dict[str, float]]:
    """Alternate slices of back-to-back runs of each session; the latency of each run."""
    feeds = {"numeric": teacher_task(256, seed=2)[0][:batch]}
    samples: dict[str, list[float]] = {name: [] for name in sessions_}
    busy = dict.fromkeys(sessions_, 0.0)
    for sess in sessions_.values():
        for _ in range(20):
            sess.run(None, feeds)
    end = time.perf_counter() + seconds * len(sessions_)
    while time.perf_counter() < end:
        for name, sess in sessions_.items():
            stop = time.perf_counter() + SLICE_SECONDS
            while True:
                t0 = time.perf_counter()
                sess.run(None, feeds)
                t1 = time.perf_counter()
                samples[name].append(t1 - t0)
                busy[name] += t1 - t0
                if t1 >= stop:
                    break
    out = {}
    for name, runs in samples.items():
        ordered = np.sort(np.asarray(runs))
        out[name] = {
            "batch": batch,
            "runs": len(runs),
            "rows_per_s": len(runs) * batch / busy[name],
            "p50_ms": float(ordered[len(ordered) // 2]) * 1000,
            "p99_ms": float(ordered[int(len(ordered) * 0.99)]) * 1000,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per graph and batch size")
    parser.add_argument("--rows", type=int, default=20000, help="training rows")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="2 s per graph, 8000 rows, 3 passes")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rows, args.passes = 2.0, 8000, 3

    started = time.perf_counter()
    graph, int8, test, layout, export = trained_graphs(args.rows, args.passes)
    train_seconds = time.perf_counter() - started
    graphs = {"fp32": graph, "int8": int8}
    scores = {}
    for name, g in graphs.items():
        probs = export.run_onnx(export.session(g), test, layout, "classification")
        scores[name] = probs
    agree = float(np.mean(scores["fp32"].argmax(1) == scores["int8"].argmax(1)))
    accuracy = {n: float(np.mean(p.argmax(1) == test.labels)) for n, p in scores.items()}
    max_prob_diff = float(np.max(np.abs(scores["fp32"] - scores["int8"])))

    load_before = os.getloadavg()[0]
    sess = sessions(graphs)
    rows = []
    for batch in BATCHES:
        measured = timed(sess, batch, args.seconds)
        for name in graphs:
            rows.append({"precision": name, **measured[name]})
    load_after = os.getloadavg()[0]

    meta = {
        "command": "python -m benchmarks.inference.int8"
        + (" --quick" if args.quick else f" --seconds {args.seconds:g} --rows {args.rows}"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "onnxruntime": __import__("onnxruntime").__version__,
        "load_average": [round(load_before, 1), round(load_after, 1)],
        "model": f"MLP {WIDTH} -> {' x '.join(map(str, HIDDEN))} -> 2",
        "train_rows": args.rows,
        "train_seconds": round(train_seconds, 1),
        "test_rows": len(test),
        "bytes": {n: len(g) for n, g in graphs.items()},
    }
    result = {
        "meta": meta,
        "accuracy": {**accuracy, "drop": accuracy["fp32"] - accuracy["int8"]},
        "label_agreement": agree,
        "max_probability_difference": max_prob_diff,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "int8.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)


def write_markdown(result: dict[str, Any]) -> None:
    meta, acc = result["meta"], result["accuracy"]
    by = {(r["precision"], r["batch"]): r for r in result["rows"]}
    lines = [
        "# int8 vs fp32 serving: a mid-size MLP in ONNX Runtime",
        "",
        f"`{meta['command']}` on {meta['machine']}, Python {meta['python']}, ONNX Runtime "
        f"{meta['onnxruntime']}; load average {meta['load_average'][0]} before and "
        f"{meta['load_average'][1]} after measuring, on a machine shared with other work: "
        "the numbers are noisy, the ratios (same load for both, slices alternate) less so.",
        "",
        f"Model: {meta['model']} (Driftline MLP, standardisation inside the graph), trained "
        f"on {meta['train_rows']:,} rows of a synthetic task; int8 = ONNX Runtime dynamic "
        f"quantisation of the weights, as the trainer exports it. One intra-op thread. "
        f"Graph size: fp32 {meta['bytes']['fp32']:,} B, int8 {meta['bytes']['int8']:,} B.",
        "",
        "rows/s: rows over the time spent in `session.run`; x: int8 rows/s over fp32's; "
        "p50/p99: of one run. With a load average above the core count, the p99 of both "
        "includes runs preempted by other work.",
        "",
        "| batch | fp32 rows/s | int8 rows/s | x | fp32 p50 ms | int8 p50 ms "
        "| fp32 p99 ms | int8 p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch in BATCHES:
        a, b = by[("fp32", batch)], by[("int8", batch)]
        lines.append(
            f"| {batch} | {a['rows_per_s']:,.0f} | {b['rows_per_s']:,.0f} | "
            f"{b['rows_per_s'] / a['rows_per_s']:.2f} | {a['p50_ms']:.3f} | {b['p50_ms']:.3f} | "
            f"{a['p99_ms']:.3f} | {b['p99_ms']:.3f} |"
        )
    lines += [
        "",
        "| held-out rows | fp32 accuracy | int8 accuracy | drop | labels agree "
        "| max prob. difference |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {meta['test_rows']:,} | {acc['fp32']:.4f} | {acc['int8']:.4f} | {acc['drop']:+.4f} "
        f"| {result['label_agreement']:.4f} | {result['max_probability_difference']:.4f} |",
    ]
    text = "\n".join(lines) + "\n"
    (RESULTS / "int8.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
