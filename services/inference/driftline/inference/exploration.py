"""The exploration policy on the request path (`spec.training.exploration`).

After the model has answered a request, the rows of explored entities
(`driftline.api.exploration.explores`) are given the policy's label instead: a
uniform class fixed per entity, or the baseline version's answer (scored on the
request path for those rows only; without a loaded baseline the model's answer
stands and the row is not explored). The client gets the policy's label and a
one-hot score for it; the prediction log keeps the model's own answer in `output`
and adds `explored`, `served` and `propensity`, so that the joiner counts the row
apart and the trainer weighs it by the inverse propensity.
"""

from __future__ import annotations

from collections.abc import Sequence

from driftline.api.exploration import explores, propensity, uniform_label
from driftline.api.spec import ExplorationSpec
from driftline.inference.batcher import Outputs
from driftline.inference.contract import Rows
from driftline.inference.pool import RouteState

Explored = tuple[list[bool], list[float | None], list[float]]
"""Per row: explored, the label served when explored (else None), its propensity."""


class Explorer:
    def __init__(self, spec: ExplorationSpec, model: str, classes: int) -> None:
        self.spec = spec
        self.model = model
        self.classes = classes

    def keys(self, ids: Sequence[str], entity_ids: Sequence[str | None]) -> list[str]:
        """The unit of exploration per row: its entity (else its request), or its request."""
        if self.spec.sticky_by == "request":
            return list(ids)
        return [e if e is not None else r for r, e in zip(ids, entity_ids, strict=True)]

    async def apply(
        self,
        state: RouteState,
        rows: Rows,
        ids: Sequence[str],
        entity_ids: Sequence[str | None],
        outputs: Outputs,
    ) -> tuple[Outputs, Explored]:
        """The outputs the client is served (a copy where rows are explored), and the
        exploration columns of the prediction log."""
        spec, model, k = self.spec, self.model, self.classes
        keys = self.keys(ids, entity_ids)
        own = [int(v) for v in outputs[0].tolist()]
        picked = [i for i, key in enumerate(keys) if explores(model, key, spec.epsilon, spec.salt)]
        policy: dict[int, int] = {}
        baseline_labels: dict[int, int] = {}
        if picked and spec.policy == "uniform":
            policy = {i: uniform_label(model, keys[i], k, spec.salt) for i in picked}
        elif picked and state.baseline is not None:
            answered = await state.baseline.batcher.submit(rows.take(picked))
            baseline_labels = dict(zip(picked, map(int, answered[0].tolist()), strict=True))
            policy = dict(baseline_labels)
        # Without a baseline to explore with, the model answers every row: propensity 1.
        # With one, an exploited row's baseline label is not known on the request path
        # (it is scored aside): its propensity is taken as 1 - epsilon, which is low by
        # epsilon where the baseline agrees (a constant factor the trainer normalizes).
        active = spec.policy == "uniform" or state.baseline is not None
        explored = [False] * rows.n
        served: list[float | None] = [None] * rows.n
        odds: list[float] = []
        for i, label in enumerate(own):
            given = policy.get(i, label)
            odds.append(
                propensity(given, label, spec.epsilon, k, spec.policy, baseline_labels.get(i))
                if active
                else 1.0
            )
            if i in policy:
                explored[i] = True
                served[i] = float(given)
        if policy:
            labels, scores = outputs[0].copy(), outputs[1].copy()
            for i, given in policy.items():
                labels[i] = given
                scores[i] = 0.0
                scores[i, given] = 1.0
            outputs = [labels, scores, *outputs[2:]]
        return outputs, (explored, served, odds)


def take(explored: Explored | None, index: list[int] | None) -> Explored | None:
    """The exploration columns of some rows (all rows when `index` is None)."""
    if explored is None or index is None:
        return explored
    flags, served, odds = explored
    return [flags[i] for i in index], [served[i] for i in index], [odds[i] for i in index]
