"""The guard after a promotion: the previous champion stays beside the new one for a
while, and the new one is rolled back when live labels show it worse.

A canary judges a candidate on the evidence of its steps; some regressions show only
later, on traffic the steps did not see. With `rollout.guard` set, a promotion opens a
window of `windowSeconds` in which the routing table keeps the previous champion in
shadow: it scores every request beside the new champion without serving it, so the
joiner measures both on the same requests. The frozen `baseline` variant (when
inference scores it) is a second reference.

On each tick of the window the guard compares the labeled quality gathered since the
promotion (`GuardEvidence`, cumulative, so the longer the window runs the firmer the
verdict):

- the new champion against the previous one: a loss above `maxDropVsPrevious`
  (accuracy points, or MAE relative to the previous one's, as `maxAccuracyDrop`)
  fails;
- against the baseline, when `maxDropVsBaseline` is set: a loss above it fails.

Each comparison is judged only once both versions have `minLabeled` labeled samples
in the window; before that, or when the metrics source fails, the guard takes no
action: a rollback is never made on too little evidence. A failing comparison rolls
back to the previous champion (`machine._guard`). The window ends, with the new
champion kept, when its time is up or when a person moves the `champion` alias.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from driftline.rollout.analysis import EPSILON, quality_loss, quality_of
from driftline.rollout.evidence import VersionCounters
from driftline.rollout.policy import Policy

GuardVerdict = Literal["pass", "fail", "inconclusive"]


class GuardWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The guard of one promotion, kept in the rollout state while it runs."""

    champion: str
    """The version just promoted."""
    previous: str
    """The champion it replaced, kept in shadow and restored on a rollback."""
    since: float
    until: float


class GuardEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """Labeled counters since the promotion: the new champion served (`stable`), the
    previous one scored in shadow, the baseline scored as `baseline`."""

    champion: VersionCounters = msgspec.field(default_factory=VersionCounters)
    previous: VersionCounters = msgspec.field(default_factory=VersionCounters)
    baseline: VersionCounters | None = None
    """None: no baseline version to compare with (or it is the champion itself)."""


def judge(evidence: GuardEvidence, policy: Policy) -> tuple[GuardVerdict, str]:
    """The guard's verdict on the window so far, and its reason."""
    guard = policy.guard
    assert guard is not None
    metric = "accuracy" if policy.task == "classification" else "mae"
    compared = [("previous", evidence.previous, guard.max_drop_vs_previous)]
    if guard.max_drop_vs_baseline is not None and evidence.baseline is not None:
        compared.append(("baseline", evidence.baseline, guard.max_drop_vs_baseline))
    failed: list[str] = []
    waiting: list[str] = []
    passed: list[str] = []
    mine = evidence.champion
    for name, theirs, limit in compared:
        need = guard.min_labeled
        champion_q, other_q = quality_of(mine, policy), quality_of(theirs, policy)
        if mine.labeled < need or theirs.labeled < need or champion_q is None or other_q is None:
            waiting.append(
                f"{name}: too few labeled (champion {mine.labeled}, {name} {theirs.labeled}, "
                f"need {need})"
            )
            continue
        loss = quality_loss(champion_q, other_q, policy)
        detail = (
            f"{metric} {champion_q:.4f} vs {name} {other_q:.4f} (loss {loss:+.4f}, limit {limit})"
        )
        (failed if loss > limit + EPSILON else passed).append(detail)
    if failed:
        return "fail", "; ".join(failed)
    if waiting:
        return "inconclusive", "; ".join(waiting + passed)
    return "pass", "; ".join(passed)
