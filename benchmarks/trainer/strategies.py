"""Learning beside an imported model: frozen import vs challenger vs adapter, after drift.

    python -m benchmarks.trainer.strategies [--quick] [--seeds 3]

On each of the project's streams (`driftline.common.streams`: SEA, rotating
hyperplane, Agrawal with its three categorical features) a scikit-learn
GradientBoostingClassifier is trained outside Driftline on concept A, converted with
skl2onnx and wrapped as `driftline import` registers it (the same code). Then:

- frozen import: the imported graph, in ONNX Runtime, never changes;
- challenger (`strategy: challenger`): the trainer's own learner (the spec's default
  MLP), trained on the import's labelled sample as the import does, then online;
- adapter (`strategy: adapter`): a logit correction on the import's outputs and the
  standardised features, the default (one hidden layer of 32) and a linear one
  (`adapter.hidden: []`), the identity at start, then online.

The stream runs `pre` rows of concept A, then switches to concept B for `post` rows.
Every block of 256 rows is predicted first, then learned (prequential), with each
learner's own prediction as the served output its concept check watches. Measured:
accuracy before the switch, over the first 1000 rows after it, over the rest, and on
2000 fresh concept-B rows at the end (no learning). In the trainer the gate decides
which serves: a learner is published only when it beats what serves on held-out rows.

Writes benchmarks/results/import-strategies.{md,json}.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.trainer.common import machine, pin_to_one_core, table, write
from driftline.api.spec import ModelSpec, TrainingSpec
from driftline.common.features import FeatureLayout
from driftline.common.streams import DriftingStream, Rows, make_stream
from driftline.trainer.adapter import AdapterLearner, FrozenBase
from driftline.trainer.examples import Examples
from driftline.trainer.import_sklearn import sklearn_source
from driftline.trainer.learner import LearnerOptions, OnlineLearner
from driftline.trainer.onnx_adapter import adapt

BLOCK = 256
SAMPLE = 1000  # the import's labelled sample (concept A)
BASE_ROWS = 5000  # what the imported model was trained on, outside Driftline
AFTER = 1000
MODELS = {
    "import": "frozen import",
    "challenger": "challenger",
    "adapter": "adapter (default: hidden [32])",
    "adapter_linear": "adapter (linear: hidden [])",
}
STREAMS = {  # stream, concept A, concept B, what changes
    "sea": (0, 3, "SEA: x1 + x2 <= 8, then <= 9.5"),
    "hyperplane": (0, 1, "rotating hyperplane (10 features): new weights"),
    "agrawal": (0, 2, "Agrawal: function 0 (age) then 2 (age and salary)"),
}


def frame(stream: DriftingStream, rows: Rows) -> pd.DataFrame:
    columns = {n: rows.column(n).astype(np.float32) for n in stream.numeric_names}
    columns |= {n: rows.column(n).astype(str) for n in stream.categorical_names}
    return pd.DataFrame(columns)


def base_model(stream: DriftingStream, rows: Rows) -> bytes:
    """concept A's GradientBoosting, as the import registers it (skl2onnx, then wrapped)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    features = stream.contract()
    layout = FeatureLayout.from_features(features)
    gb = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)
    if stream.categorical_names:
        encode = ColumnTransformer(
            [("onehot", OneHotEncoder(handle_unknown="ignore"), list(stream.categorical_names))],
            remainder="passthrough",
        )
        estimator: Any = Pipeline([("encode", encode), ("gb", gb)])
        estimator.fit(frame(stream, rows), rows.labels.astype(int))
    else:
        x = np.stack([rows.column(n) for n in stream.numeric_names], 1).astype(np.float32)
        estimator = gb.fit(x, rows.labels.astype(int))
    source = sklearn_source(estimator, layout, "classification", "skops")
    graph, _, _ = adapt(source.graph, layout, "classification", 2, None, source.columns)
    return bytes(graph.SerializeToString())


def arrays(rows: Rows) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The contract's two arrays (the stream's column order is the contract's)."""
    return rows.numeric.astype(np.float32), rows.categorical.astype(object)


def examples(learner: OnlineLearner, rows: Rows, served: Any = None) -> Examples:
    key = np.arange(rows.start, rows.start + len(rows))
    return learner.examples(*arrays(rows), rows.labels.astype(np.float32), key, served)


def predicted(model: Any, rows: Rows) -> np.ndarray[Any, Any]:
    if isinstance(model, FrozenBase):
        return model.outputs(*arrays(rows)).argmax(axis=1).astype(np.float32)
    ex = examples(model, rows)
    return model.predict(ex.numeric, ex.codes).argmax(axis=1).astype(np.float32)


def run(name: str, seed: int, pre: int, post: int) -> dict[str, Any]:
    concept_a, concept_b, _ = STREAMS[name]
    stream = make_stream(name, seed=seed, schedule=[(0, concept_a)])
    features = stream.contract()
    layout = FeatureLayout.from_features(features)
    started = time.perf_counter()
    graph = base_model(stream, stream.take(BASE_ROWS))
    base = FrozenBase(graph, len(layout.numeric), len(layout.categorical), "classification", 2)
    convert_seconds = time.perf_counter() - started

    def spec(strategy: str, **adapter: Any) -> ModelSpec:
        return ModelSpec.model_validate(
            {
                "registry": {"trackingUri": "http://x", "name": "bench"},
                "strategy": strategy,
                "adapter": adapter,
            }
        )

    options = replace(LearnerOptions.from_spec(spec("challenger"), TrainingSpec()), seed=seed)
    challenger = OnlineLearner(spec("challenger"), features, options)
    adapter = AdapterLearner(spec("adapter"), features, options, base)
    linear = AdapterLearner(spec("adapter", hidden=[]), features, options, base)
    sample = stream.take(SAMPLE)
    ex = examples(challenger, sample)
    challenger.observe(ex)  # as model_import does with a labelled sample
    challenger.fit_offline(ex, 5)
    for a in (adapter, linear):
        a.observe(ex)
        a.prime(ex)
    learners: dict[str, OnlineLearner] = {
        "challenger": challenger,
        "adapter": adapter,
        "adapter_linear": linear,
    }

    correct: dict[str, list[np.ndarray[Any, Any]]] = {k: [] for k in ("import", *learners)}
    seconds = dict.fromkeys(learners, 0.0)
    for phase, n in (("pre", pre), ("post", post)):
        if phase == "post":
            stream.switch_to(concept_b)
        for lo in range(0, n, BLOCK):
            rows = stream.take(min(BLOCK, n - lo))
            correct["import"].append(predicted(base, rows) == rows.labels)
            for label, learner in learners.items():
                t = time.perf_counter()
                served = predicted(learner, rows)
                correct[label].append(served == rows.labels)
                learner.learn(examples(learner, rows, served))
                seconds[label] += time.perf_counter() - t
    test = stream.take(2000)
    out: dict[str, Any] = {"convert_seconds": convert_seconds}
    for label, parts in correct.items():
        hits = np.concatenate(parts)
        model: Any = base if label == "import" else learners[label]
        out[label] = {
            "before": float(hits[:pre].mean()),
            "first_after": float(hits[pre : pre + AFTER].mean()),
            "rest_after": float(hits[pre + AFTER :].mean()),
            "final_test": float(np.mean(predicted(model, test) == test.labels)),
        }
        if label in learners:
            out[label]["epochs_opened"] = learners[label].epoch
            out[label]["rows_per_second"] = (pre + post) / max(seconds[label], 1e-9)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 4000 rows after the switch")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    seeds, pre, post = (1, 2000, 4000) if args.quick else (args.seeds, 3000, 10000)
    pin_to_one_core()
    results: dict[str, list[dict[str, Any]]] = {}
    for name in STREAMS:
        results[name] = [run(name, 100 * s, pre, post) for s in range(seeds)]
        print(name, "done", flush=True)

    def mean(name: str, label: str, key: str) -> float:
        return float(np.mean([r[label][key] for r in results[name]]))

    rows = []
    for name in STREAMS:
        for label, title in MODELS.items():
            rows.append(
                [
                    name,
                    title,
                    mean(name, label, "before"),
                    mean(name, label, "first_after"),
                    mean(name, label, "rest_after"),
                    mean(name, label, "final_test"),
                    "" if label == "import" else f"{mean(name, label, 'epochs_opened'):.1f}",
                ]
            )
    text = table(
        [
            "stream",
            "model",
            f"before ({pre} rows)",
            f"first {AFTER} after",
            f"rest after ({post - AFTER})",
            "concept B test (2000)",
            "epochs opened",
        ],
        rows,
    )
    learners = [label for label in MODELS if label != "import"]
    speed = table(
        ["stream", *(MODELS[label] for label in learners)],
        [
            [name, *(f"{mean(name, label, 'rows_per_second'):,.0f}" for label in learners)]
            for name in STREAMS
        ],
    )
    print(text, speed, sep="\n\n")
    streams = "\n".join(f"- {n}: {d}" for n, (_, _, d) in STREAMS.items())
    notes = (
        f"{'Quick mode, 1 seed' if args.quick else f'Mean of {seeds} seeds'}; "
        f"{pre} rows of concept A, then {post} of concept B, blocks of {BLOCK} rows predicted "
        "then learned. The import: scikit-learn GradientBoostingClassifier (100 trees, depth "
        f"3) on {BASE_ROWS} concept-A rows (Agrawal: one-hot categoricals in a pipeline), "
        "skl2onnx, wrapped as `driftline import` does. Challenger: the spec's default MLP [64, "
        f"32], 5 passes over the import's {SAMPLE}-row labelled sample, then online. Adapter: "
        "a correction of the import's log-probabilities from them and the standardised "
        "features, the default (a hidden layer of 32) and a linear one (`adapter.hidden: []`), "
        "prepared on the same sample without a step. All with the "
        "trainer's defaults (batch 256, replay, EWC, concept epochs from their own served "
        "errors). Accuracies do not depend on the machine's load; the rows per second do "
        "(shared 2-core machine, load average above).\n\n" + streams
    )
    write(
        "import-strategies",
        "Learning beside an imported model: frozen import, challenger, adapter",
        [
            ("Accuracy before and after the concept changes", text),
            (
                "Rows per second, predicted and learned (the adapter's include running the "
                "import in ONNX Runtime; these depend on the machine's load)",
                speed,
            ),
            ("How it was measured", notes),
        ],
        {"machine": machine(), "quick": args.quick, "pre": pre, "post": post, "runs": results},
    )


if __name__ == "__main__":
    main()
