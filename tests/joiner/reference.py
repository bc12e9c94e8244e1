"""What the join must do, written plainly: one arrival at a time, no Redis, no
batches, no crashes. The property tests hold the real joiner to it.

A request id's *generation* starts with its first arrival at time `start`:

- an arrival at `now <= start + window` is inside the window (a side seen before
  is a duplicate);
- an arrival in `(start + window, start + window + grace]` is late (or a
  duplicate of a side seen before);
- an arrival after `start + window + grace` starts a new generation: the old
  one is forgotten.

A generation joins when its outcome and served prediction (stable, else
candidate) both arrived inside the window: one labeled example. Every prediction
inside the window meets the outcome inside the window: one score. Stable next to
shadow (else candidate): one agreement. Once past its window, a generation is
accounted once: its predictions expired if it has no outcome; its outcome expired
if it has no served prediction.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from driftline.api.events import LabeledExample, Outcome, Prediction, decode
from driftline.common.redis_state import quality_fields

NEW, DUPLICATE, LATE = 0, 1, 2


@dataclass
class Generation:
    start: float
    arrived: dict[str, bytes]
    late: set[str] = field(default_factory=set)
    accounted: bool = False

    def predictions(self) -> dict[str, Prediction]:
        return {
            f[2:]: decode(payload, Prediction)
            for f, payload in self.arrived.items()
            if f.startswith("p:")
        }

    def outcome(self) -> Outcome | None:
        payload = self.arrived.get("o")
        return None if payload is None else decode(payload, Outcome)

    def served(self) -> Prediction | None:
        predictions = self.predictions()
        return predictions.get("stable") or predictions.get("candidate")


class ReferenceJoin:
    def __init__(self, window: float, grace: float, task: str = "classification") -> None:
        self.window = window
        self.grace = grace
        self.task = task
        self.current: dict[str, Generation] = {}
        self.forgotten: list[tuple[str, Generation]] = []
        self.expired_predictions = 0
        self.expired_outcomes = 0

    def arrive(self, request_id: str, side: str, payload: bytes, now: float) -> int:
        gen = self.current.get(request_id)
        if gen is not None and now > gen.start + self.window:
            self._account(gen)
            if now > gen.start + self.window + self.grace:
                self.forgotten.append((request_id, gen))
                gen = None
        if gen is None:
            self.current[request_id] = Generation(now, {side: payload})
            return NEW
        if now > gen.start + self.window:
            if side in gen.arrived or side in gen.late:
                return DUPLICATE
            gen.late.add(side)
            return LATE
        if side in gen.arrived:
            return DUPLICATE
        gen.arrived[side] = payload
        return NEW

    def sweep(self, now: float) -> None:
        for gen in self.current.values():
            if now > gen.start + self.window:
                self._account(gen)

    def _account(self, gen: Generation) -> None:
        if gen.accounted:
            return
        gen.accounted = True
        if gen.outcome() is None:
            self.expired_predictions += len(gen.predictions())
        elif gen.served() is None:
            self.expired_outcomes += 1

    def generations(self) -> Iterator[tuple[str, Generation]]:
        yield from self.forgotten
        yield from self.current.items()

    def examples(self) -> list[LabeledExample]:
        found = []
        for request_id, gen in self.generations():
            outcome, served = gen.outcome(), gen.served()
            if outcome is not None and served is not None:
                found.append(
                    LabeledExample(
                        request_id=request_id,
                        model=served.model,
                        model_version=served.model_version,
                        variant=served.variant,
                        features=served.features,
                        label=outcome.label,
                        output=served.output,
                        ts_prediction=served.ts,
                        ts_label=outcome.ts,
                        entity_id=served.entity_id,
                        scores=served.scores,
                    )
                )
        return found

    def joined(self) -> Counter[str]:
        return Counter(e.request_id for e in self.examples())

    def quality(self) -> dict[tuple[str, str], dict[str, float]]:
        sums: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for _, gen in self.generations():
            outcome = gen.outcome()
            if outcome is None:
                continue
            for variant, p in gen.predictions().items():
                fields = quality_fields(self.task, p.output, outcome.label, p.scores)
                for name, value in fields.items():
                    sums[(p.model_version, variant)][name] += value
        return sums

    def agreement(self) -> dict[tuple[str, str], tuple[int, int]]:
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for _, gen in self.generations():
            predictions = gen.predictions()
            stable = predictions.get("stable")
            other = predictions.get("shadow") or predictions.get("candidate")
            if stable is None or other is None:
                continue
            key = (stable.model_version, other.model_version)
            compared, agreed = counts.get(key, (0, 0))
            counts[key] = (compared + 1, agreed + int(int(stable.output) == int(other.output)))
        return counts
