"""Prequential accuracy on River's drift streams: Driftline's learner vs River's ARF.

    python -m benchmarks.trainer.quality [--seeds 1] [--segment 10000]

Streams with concept changes at known rows (River generators, one segment per
concept, switched abruptly), plus a rotating hyperplane (gradual drift):

- SEA, variants 0 -> 1 -> 2 -> 3, 10% label noise;
- Agrawal, functions 0 -> 2 -> 1 -> 3 (education level, car and zip code as
  categorical features);
- Hyperplane, 10 features, 2 of them drifting (mag_change 0.001, 5% noise).

Every learner sees the first 2000 rows as a bootstrap (not scored), then is
scored prequentially (predict a block of 256 rows, then learn it):

- driftline: the trainer's learner with the spec's defaults (MLP [64, 32], batch
  256, replay 0.5, EWC 50, 10% held out for the gate), finding concept changes
  itself from its served errors;
- driftline + events: the same, told of each concept change by a drift event
  500 rows after it (as the drift monitor would);
- plain SGD: the same network and optimizer, no replay, EWC or epochs;
- frozen: the bootstrap model, never updated;
- oracle: per concept, an MLP trained beforehand on 5000 rows of that concept
  (knows the drift points and the future), switched at each change;
- ARF: River's adaptive random forest (10 trees, its own drift detectors).

Post-drift accuracy is the mean over the 2000 rows after each change; the target
is the driftline learner within 2 points of ARF there.

Writes benchmarks/results/trainer-quality.{md,json}.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.trainer import harness
from benchmarks.trainer.common import machine, pin_to_one_core, table, write

BOOT = 2000
AFTER = 2000  # rows after a change that count as "post-drift"
LAG = 500  # rows between a change and the drift event about it


def river_segments(
    name: str, seed: int, segment: int
) -> tuple[harness.Contract, list[Any], list[int]]:
    """(contract, generator per concept, concept order) of a stream."""
    from river.datasets import synth

    if name == "sea":
        order = [0, 1, 2, 3]
        return harness.SEA, [synth.SEA(variant=v, noise=0.1, seed=seed + v) for v in order], order
    if name == "agrawal":
        order = [0, 2, 1, 3]
        return (
            harness.AGRAWAL,
            [synth.Agrawal(classification_function=f, seed=seed + f) for f in order],
            order,
        )
    gen = synth.Hyperplane(
        seed=seed, n_features=10, n_drift_features=2, mag_change=0.001, noise_percentage=0.05
    )
    return harness.HYPERPLANE, [gen], [0]


def run_stream(name: str, seed: int, segment: int) -> dict[str, Any]:
    from river import forest
    from river.datasets import synth

    contract, gens, order = river_segments(name, seed, segment)
    if name == "hyperplane":
        data = contract.data(list(gens[0].take(BOOT + 4 * segment)))
        changes: list[int] = []
    else:
        parts = [
            contract.data(list(g.take(segment + (BOOT if i == 0 else 0))))
            for i, g in enumerate(gens)
        ]
        data = harness.Data.concat(parts)
        changes = [i * segment for i in range(1, len(gens))]  # rows after the bootstrap
    boot, rest = data.part(0, BOOT), data.part(BOOT, len(data))
    scored: dict[str, np.ndarray[Any, Any]] = {}
    timing: dict[str, float] = {}

    def timed(label: str, fn: Any) -> None:
        started = time.perf_counter()
        scored[label] = fn()
        timing[label] = time.perf_counter() - started

    def ours(**options: Any) -> Any:
        model = harness.learner(contract, seed, **options)
        harness.bootstrap(model, boot)
        return model

    timed("driftline", lambda: harness.prequential(ours(), rest, BOOT))
    if changes:
        events = {c + LAG: c for c in changes}
        timed(
            "driftline + events",
            lambda: harness.prequential(ours(detect_concept=False), rest, BOOT, events=events),
        )
    timed(
        "plain SGD",
        lambda: harness.prequential(
            ours(replay_fraction=0.0, ewc_lambda=0.0, detect_concept=False), rest, BOOT
        ),
    )
    timed("frozen", lambda: harness.prequential(ours(), rest, BOOT, learn=False))
    if changes:

        def oracle() -> np.ndarray[Any, Any]:
            out = []
            bounds = [0, *changes, len(rest)]
            for i, concept in enumerate(order):
                if name == "sea":
                    gen = synth.SEA(variant=concept, noise=0.1, seed=seed + 100 + concept)
                else:
                    gen = synth.Agrawal(classification_function=concept, seed=seed + 100 + concept)
                model = harness.plain_sgd(contract, seed)
                train = contract.data(list(gen.take(5000)))
                model.fit_offline(harness.examples(model, train, 0), passes=5)
                out.append(
                    harness.prequential(
                        model, rest.part(bounds[i], bounds[i + 1]), BOOT, learn=False
                    )
                )
            return np.concatenate(out)

        timed("oracle", oracle)

    def arf() -> np.ndarray[Any, Any]:
        nominal = list(contract.categorical) or None
        model = forest.ARFClassifier(seed=seed, nominal_attributes=nominal)
        for x, y in zip(boot.dicts, boot.labels.tolist(), strict=True):
            model.learn_one(x, int(y))
        return harness.river_prequential(model, rest)

    timed("ARF (River)", arf)
    out: dict[str, Any] = {
        "stream": name,
        "seed": seed,
        "rows": len(rest),
        "changes": changes,
        "learners": {},
    }
    for label, correct in scored.items():
        post = [correct[c : c + AFTER].mean() for c in changes] if changes else [correct.mean()]
        out["learners"][label] = {
            "overall": float(correct.mean()),
            "post_drift": float(np.mean(post)),
            "seconds": timing[label],
        }
    return out


def warm_up() -> None:
    """First calls pay for imports and allocator warm-up; keep them out of `seconds`."""
    from river.datasets import synth

    contract = harness.SEA
    data = contract.data(list(synth.SEA(seed=9).take(1500)))
    model = harness.learner(contract)
    harness.bootstrap(model, data.part(0, 500))
    harness.prequential(model, data.part(500, 1500), 500)
    model.open_epoch("warm-up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--segment", type=int, default=10_000)
    args = parser.parse_args()
    pin_to_one_core()
    warm_up()
    runs = [
        run_stream(s, seed, args.segment)
        for seed in range(args.seeds)
        for s in ("sea", "agrawal", "hyperplane")
    ]
    rows = []
    for stream in ("sea", "agrawal", "hyperplane"):
        mine = [r for r in runs if r["stream"] == stream]
        for label in mine[0]["learners"]:
            overall = np.mean([r["learners"][label]["overall"] for r in mine])
            post = np.mean([r["learners"][label]["post_drift"] for r in mine])
            secs = np.mean([r["learners"][label]["seconds"] for r in mine])
            rows.append([stream, label, overall, post, secs])
    headers = ["stream", "learner", "prequential accuracy", "post-drift accuracy", "seconds"]
    text = table(headers, rows)
    print(text)
    verdict = []
    for stream in ("sea", "agrawal", "hyperplane"):
        got = {r[1]: r[3] for r in rows if r[0] == stream}
        gap = got["driftline"] - got["ARF (River)"]
        verdict.append(
            [stream, got["driftline"], got["ARF (River)"], gap, "yes" if gap >= -0.02 else "no"]
        )
    target = table(
        ["stream", "driftline post-drift", "ARF post-drift", "difference", "within 2 points"],
        verdict,
    )
    print(target)
    notes = (
        f"{args.seeds} seed(s); {args.segment} rows per concept; post-drift = mean accuracy "
        f"over the {AFTER} rows after each change (hyperplane: the whole stream, its drift "
        "is continuous). "
        "The driftline learner holds 10% of rows out for its gate (they are scored, not learned). "
        "One core, shared machine: `seconds` compares learners within this run only."
    )
    write(
        "trainer-quality",
        "Learning quality on drifting streams",
        [
            ("Prequential accuracy", text),
            ("Target: within 2 points of ARF after drift", target),
            ("How it was measured", notes),
        ],
        {"machine": machine(), "runs": runs},
    )


if __name__ == "__main__":
    main()
