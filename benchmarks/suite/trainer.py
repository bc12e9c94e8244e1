"""Trainer update path: Driftline's `OnlineLearner.learn` against a raw torch loop and River.

Same SEA stream (fixed seed), rows already decoded in memory, one core, torch on
one thread. Contenders, alternating within every repeat:

- floor: a raw torch loop over the same network with the same optimizer (fused
  Adam), batches sliced from tensors in memory: no held-out split, no buffers;
- Driftline: `OnlineLearner.learn` without replay/EWC (same rows per step as the
  floor) and with the spec's defaults (half of each step replayed, EWC on);
  both at batch 256 (the default) and 32;
- peers: River `LogisticRegression.learn_many` (pandas batches of the same size)
  and `learn_one`, River `HoeffdingTreeClassifier.learn_one`.

Consuming from Kafka and decoding are measured by `benchmarks.trainer.throughput`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.suite.common import DRIFTLINE, FLOOR, PEER, Row, median

WORKLOAD = "trainer"
WARM_STEPS = 4
FLOOR_NAME = "raw torch loop, same net, fused Adam"


@dataclass(frozen=True)
class Options:
    rows: int = 65_536
    river_rows: int = 16_384
    repeats: int = 5
    batches: tuple[int, ...] = (256, 32)


def _learner(stream: Any, replay: float, ewc: float, batch: int) -> Any:
    """The trainer's learner for `stream`, as `benchmarks.trainer.throughput` builds it."""
    from benchmarks.trainer.throughput import model_spec
    from driftline.api.spec import TrainingSpec
    from driftline.trainer.learner import LearnerOptions, OnlineLearner

    spec = model_spec(stream)
    options = LearnerOptions.from_spec(spec, TrainingSpec(), detect_concept=False)
    changes = {"replay_fraction": replay, "ewc_lambda": ewc, "batch_size": batch}
    return OnlineLearner(spec, stream.contract(), LearnerOptions(**{**options.__dict__, **changes}))


def _raw_loop(learner: Any, examples: Any, batch: int) -> float:
    """Rows per second of forward/backward/step over tensors already in memory."""
    import numpy as np
    import torch

    from driftline.trainer.learner import adam

    net = learner.net
    optimizer = adam(net, learner.options.learning_rate)
    net.preprocess.fit(examples.numeric)
    x, c = torch.from_numpy(examples.numeric), torch.from_numpy(examples.codes)
    y = torch.from_numpy(examples.labels.astype(np.int64))
    slices = [
        (x[i : i + batch], c[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)
    ]
    net.train()

    def step(xb: Any, cb: Any, yb: Any) -> None:
        loss = torch.nn.functional.cross_entropy(net(xb, cb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for part in slices[:WARM_STEPS]:  # first steps allocate state; learn() is warmed too
        step(*part)
    start = time.perf_counter()
    for part in slices[WARM_STEPS:]:
        step(*part)
    return sum(len(p[2]) for p in slices[WARM_STEPS:]) / (time.perf_counter() - start)


def _river(kind: str, frame: Any, labels: Any, batch: int) -> float:
    import pandas as pd
    from river import linear_model, tree

    start = time.perf_counter()
    if kind == "learn_many":
        model = linear_model.LogisticRegression()
        for i in range(0, len(frame), batch):
            model.learn_many(frame.iloc[i : i + batch], pd.Series(labels[i : i + batch]))
    else:
        model = (
            linear_model.LogisticRegression()
            if kind == "lr_one"
            else tree.HoeffdingTreeClassifier()
        )
        for x, y in zip(frame.to_dict("records"), labels.tolist(), strict=True):
            model.learn_one(x, y)
    return len(frame) / (time.perf_counter() - start)


def measure(options: Options, cpu: str | None) -> list[Row]:
    import pandas as pd
    import torch

    from benchmarks.trainer.throughput import learn_only
    from driftline.common.streams import SEAStream
    from driftline.trainer.worker import tune_gc

    affinity = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tune_gc()
    try:
        stream = SEAStream(seed=1)
        data = stream.take(options.rows)
        probe = _learner(stream, 0.0, 0.0, 256)
        examples = _examples(probe, data)
        frame = pd.DataFrame(data.features()[: options.river_rows])
        labels = data.labels[: options.river_rows].astype(int)

        # Each run gives (examples per second, rows in gradient steps per second).
        contenders: list[tuple[str, str, str, Callable[[], float | tuple[float, float]]]] = []
        for batch in options.batches:
            # As the worker reads them: 4096 records per consume() (smaller for tiny runs).
            size = min(4096, max(options.rows // 4, batch))
            chunks = [examples.take(slice(i, i + size)) for i in range(0, options.rows, size)]
            contenders += [
                (
                    f"batch {batch}",
                    FLOOR_NAME,
                    FLOOR,
                    lambda b=batch: _raw_loop(_learner(stream, 0, 0, b), examples, b),
                ),
                (
                    f"batch {batch}",
                    "Driftline learn, no replay/EWC",
                    DRIFTLINE,
                    lambda b=batch, ch=chunks: learn_only(_learner(stream, 0, 0, b), ch),
                ),
                (
                    f"batch {batch}",
                    "Driftline learn, defaults (replay 0.5, EWC)",
                    DRIFTLINE,
                    lambda b=batch, ch=chunks: learn_only(_learner(stream, 0.5, 50.0, b), ch),
                ),
                (
                    f"batch {batch}",
                    "River LogisticRegression.learn_many",
                    PEER,
                    lambda b=batch: _river("learn_many", frame, labels, b),
                ),
            ]
        contenders += [
            (
                "one at a time",
                "River LogisticRegression.learn_one",
                PEER,
                lambda: _river("lr_one", frame, labels, 1),
            ),
            (
                "one at a time",
                "River HoeffdingTreeClassifier.learn_one",
                PEER,
                lambda: _river("tree_one", frame, labels, 1),
            ),
        ]
        samples: dict[tuple[str, str, str], list[float]] = {}
        stepped: dict[tuple[str, str, str], list[float]] = {}
        for round_ in range(options.repeats):
            shift = round_ % len(contenders)
            for case, name, kind, run in contenders[shift:] + contenders[:shift]:
                result = run()
                rate, steps = result if isinstance(result, tuple) else (result, result)
                samples.setdefault((case, name, kind), []).append(rate)
                stepped.setdefault((case, name, kind), []).append(steps)
            print(f"trainer: round {round_ + 1}/{options.repeats} done", flush=True)
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, affinity)
    rows = []
    for (case, name, kind), values in samples.items():
        floor = samples.get((case, FLOOR_NAME, FLOOR))
        steps = stepped[(case, name, kind)]
        # Ratios per round: the two numbers of one round share the machine's load.
        ratios = [v / f for v, f in zip(values, floor, strict=True)] if floor else []
        step_ratios = [v / f for v, f in zip(steps, floor, strict=True)] if floor else []
        rows.append(
            Row(
                WORKLOAD,
                case,
                name,
                kind,
                values={
                    "samples_per_s": median(values),
                    "rows_in_steps_per_s": median(steps) if kind != PEER else None,
                    "vs_floor": median(ratios) if ratios else None,
                    "steps_vs_floor": median(step_ratios) if step_ratios and kind != PEER else None,
                },
                repeats={"samples_per_s": values, "rows_in_steps_per_s": steps},
            )
        )
    return rows


def _examples(learner: Any, data: Any) -> Any:
    """The stream's rows as the trainer holds them after decoding."""
    import numpy as np

    return learner.examples(data.numeric, data.categorical, data.labels, np.arange(len(data)))
