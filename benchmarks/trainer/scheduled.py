"""Online vs scheduled retraining vs frozen on a drifting stream: accuracy and CPU.

    python -m benchmarks.trainer.scheduled [--quick] [--seeds 3]

The stream is Driftline's SEA generator (`driftline.common.streams`, 10% label
noise), its concept switching 0 -> 1 -> 2 -> 3 every `segment` rows. Every learner
is bootstrapped on 2000 rows of concept 0 (not scored), then scored prequentially
in blocks of 256 rows (predict, then the row joins the history):

- online: the trainer's `OnlineLearner.learn` on each block (the worker's path,
  concept epochs found from its served errors);
- scheduled: what `python -m driftline.trainer retrain` does, every `every` rows
  (the hourly-equivalent: a retrain per `every` labeled rows): a fresh learner
  observes the newest `history` rows, `retrain_on` trains a fresh network on the
  rows not held out (5 passes, the trainer's default), and the gate's rule
  decides on the window's held-out rows whether it replaces the serving model
  (it must not score lower than the serving one there); between retrains the
  serving model does not change;
- frozen: the bootstrap model, never updated.

No Kafka, MLflow or ONNX export: the learning and the decision only, as in
benchmarks/trainer/quality.py. CPU seconds are `time.process_time()` spent in
each learner's training after the bootstrap (and, for scheduled, its gate scoring),
on one pinned core; prediction, the same for all three, is not counted.

Writes benchmarks/results/scheduled.{md,json}.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

import numpy as np

from benchmarks.trainer import harness
from benchmarks.trainer.common import pin_to_one_core, table, write
from driftline.api.spec import TrainingSpec
from driftline.common.streams import Rows, SEAStream, every
from driftline.trainer.examples import Examples, holdout_mask
from driftline.trainer.learner import LearnerOptions, OnlineLearner

BOOT = 2000
CONCEPTS = [0, 1, 2, 3]
PASSES = 5


def new_learner(features: Any, seed: int, **options: Any) -> OnlineLearner:
    spec = harness.model_spec()
    base = LearnerOptions.from_spec(spec, TrainingSpec(), seed=seed)
    return OnlineLearner(spec, features, replace(base, **options))


def part_of(rows: Rows, lo: int, hi: int) -> Rows:
    return replace(
        rows,
        numeric=rows.numeric[lo:hi],
        categorical=rows.categorical[lo:hi],
        labels=rows.labels[lo:hi],
        concept=rows.concept[lo:hi],
        start=rows.start + lo,
    )


def as_examples(model: OnlineLearner, rows: Rows, start: int, served: Any = None) -> Examples:
    return model.examples(
        rows.numeric,
        rows.categorical,
        rows.labels.astype(np.float32),
        np.arange(start, start + len(rows)),
        served,
    )


def retrained(
    features: Any, seed: int, history: Examples, serving: OnlineLearner
) -> tuple[OnlineLearner, bool]:
    """A retrain as the command does it; (the model to serve, whether it replaced)."""
    fresh = new_learner(features, seed, detect_concept=False)
    fresh.observe(history)
    fresh.retrain_on(history, PASSES)
    held = history.take(holdout_mask(history.key, fresh.options.holdout_fraction))
    if fresh.score(held) >= serving.score(held):
        return fresh, True
    return serving, False


def run(seed: int, segment: int, every_rows: int, history_rows: int) -> dict[str, Any]:
    length = segment * len(CONCEPTS)
    stream = SEAStream(seed=seed, noise=0.1, schedule=[(0, 0)])
    features = stream.contract()
    boot = stream.take(BOOT)
    stream = SEAStream(seed=seed + 1, noise=0.1, schedule=every(segment, CONCEPTS, length))
    data = stream.take(length)

    def bootstrapped(**options: Any) -> tuple[OnlineLearner, float]:
        """The bootstrap (the same for every learner, so not counted): CPU starts at 0."""
        model = new_learner(features, seed, **options)
        ex = as_examples(model, boot, 0)
        model.observe(ex)
        model.fit_offline(ex, PASSES)
        model.refresh_ewc()
        return model, 0.0

    bootstrapped()  # the first calls pay for torch's warm-up: outside every measurement

    out: dict[str, Any] = {}
    # frozen and online
    for label in ("frozen", "online"):
        model, cpu = bootstrapped()
        correct = np.zeros(length, np.bool_)
        for lo, hi in harness.blocks(length):
            part = part_of(data, lo, hi)
            ex = as_examples(model, part, BOOT + lo)
            predicted = harness.predict(model, ex)
            correct[lo:hi] = predicted == part.labels
            if label == "online":
                started = time.process_time()
                model.learn(as_examples(model, part, BOOT + lo, predicted))
                cpu += time.process_time() - started
        out[label] = {"correct": correct, "cpu": cpu, "retrains": 0, "replaced": 0}
    # scheduled
    model, cpu = bootstrapped()
    correct = np.zeros(length, np.bool_)
    retrains = replaced = 0
    since = 0
    for lo, hi in harness.blocks(length):
        part = part_of(data, lo, hi)
        ex = as_examples(model, part, BOOT + lo)
        correct[lo:hi] = harness.predict(model, ex) == part.labels
        since += hi - lo
        if since >= every_rows:
            since = 0
            start = max(0, hi - history_rows)
            window = as_examples(model, part_of(data, start, hi), BOOT + start)
            started = time.process_time()
            model, did = retrained(features, seed + retrains + 1, window, model)
            cpu += time.process_time() - started
            retrains += 1
            replaced += did
    out["scheduled"] = {"correct": correct, "cpu": cpu, "retrains": retrains, "replaced": replaced}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short segments (under 2 minutes)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds averaged (quick: 1, else 3)")
    args = parser.parse_args()
    seeds = args.seeds or (1 if args.quick else 3)
    segment = 5_000 if args.quick else 20_000
    every_rows = segment // 4  # four retrains per concept
    history_rows = segment // 2
    chunk = segment // 2
    pin_to_one_core()
    t0 = time.monotonic()
    runs = [run(seed, segment, every_rows, history_rows) for seed in range(seeds)]
    wall = time.monotonic() - t0
    # Per row: the fraction of seeds that got it right; CPU and counts: the mean per seed.
    results = {
        label: {
            "correct": np.mean([r[label]["correct"] for r in runs], axis=0),
            **{
                k: float(np.mean([r[label][k] for r in runs]))
                for k in ("cpu", "retrains", "replaced")
            },
        }
        for label in runs[0]
    }
    length = segment * len(CONCEPTS)
    labels = ["online", "scheduled", "frozen"]
    summary = []
    for label in labels:
        r = results[label]
        correct = r["correct"]
        post = np.mean(
            [correct[s : s + segment // 4].mean() for s in range(segment, length, segment)]
        )
        summary.append(
            [label, float(correct.mean()), float(post), r["cpu"], r["retrains"], r["replaced"]]
        )
    headers = [
        "learner",
        "prequential accuracy",
        f"first {segment // 4} rows after a switch",
        "CPU seconds (per seed)",
        "retrains (per seed)",
        "replaced serving (per seed)",
    ]
    over_time = [
        [f"{lo}-{lo + chunk}", f"concept {CONCEPTS[lo // segment]}"]
        + [float(results[label]["correct"][lo : lo + chunk].mean()) for label in labels]
        for lo in range(0, length, chunk)
    ]

    def late(label: str) -> float:
        """Accuracy over the second half of each concept after the first."""
        c = results[label]["correct"]
        return float(
            np.mean(
                [c[s + segment // 2 : s + segment].mean() for s in range(segment, length, segment)]
            )
        )

    by = {row[0]: row for row in summary}
    reading = (
        f"Right after a switch the scheduled model serves the old concept until a retrain's "
        f"window holds mostly new rows, and the gate keeps the old model while the new one "
        f"does not score better on the window: over the first {segment // 4} rows after a "
        f"switch it is at {by['scheduled'][2]:.3f} against online's {by['online'][2]:.3f} "
        f"(frozen {by['frozen'][2]:.3f}). Once the window is all one concept, a fresh network "
        f"trained for {PASSES} passes beats the online learner: over the second half of each "
        f"concept after the first, scheduled {late('scheduled'):.3f}, online "
        f"{late('online'):.3f}, frozen {late('frozen'):.3f}. CPU per seed: online "
        f"{by['online'][3]:.2f}s, scheduled {by['scheduled'][3]:.2f}s for "
        f"{by['scheduled'][4]:.0f} retrains. Learning only: reading the topic, the ONNX export "
        f"and registration (which a real retrain also pays) are not in these numbers."
    )
    text = table(headers, summary)
    time_text = table(["rows", "concept", *labels], over_time)
    print(text)
    print()
    print(time_text)
    print(f"\n{reading}\nwall {wall:.1f}s")
    setup = (
        f"SEA (driftline.common.streams), 10% noise, seeds 0-{seeds - 1} averaged; concepts "
        f"{' -> '.join(map(str, CONCEPTS))} every {segment} rows ({length} scored rows after "
        f"a {BOOT}-row bootstrap). Scheduled: a retrain every {every_rows} rows on the newest "
        f"{history_rows} rows, {PASSES} passes, replacing the serving model when it scores "
        f"at least as well on the window's held-out rows. One pinned core; "
        f"`python -m benchmarks.trainer.scheduled{' --quick' if args.quick else ''}` "
        f"({wall:.0f}s wall)."
    )
    write(
        "scheduled",
        "Scheduled retraining vs online vs frozen",
        [
            ("Setup", setup),
            ("Summary", text),
            ("Accuracy over time", time_text),
            ("Reading", reading),
        ],
        {
            "setup": {
                "segment": segment,
                "every": every_rows,
                "history": history_rows,
                "seeds": seeds,
                "quick": args.quick,
            },
            "summary": [dict(zip(headers, row, strict=True)) for row in summary],
            "over_time": [
                dict(zip(["rows", "concept", *labels], r, strict=True)) for r in over_time
            ],
            "wall_seconds": wall,
        },
    )


if __name__ == "__main__":
    main()
