"""The analysis: one verdict on one stage's evidence, with every number it used.

Each check is `pass`, `fail` or `inconclusive`, and so is the whole:

- any check failing fails the analysis (the machine aborts);
- otherwise any inconclusive check makes it inconclusive (the machine waits, and
  aborts once it has waited `maxInconclusiveSeconds`);
- only when every check passes does it pass. No data never counts as success.

Checks:

- `labeled`: the candidate has at least `minLabeled` labeled samples in the window.
- `quality`: the candidate's live accuracy (classification) does not trail the stable
  version's by more than `maxAccuracyDrop`; for regression its mean absolute error
  does not exceed the stable's by more than that fraction. The stable version is
  measured on the same window; when it had fewer than `minLabeled` labeled samples
  there (the 100 % canary step sends it no traffic) the latest stable measurement of
  this rollout stands in, and without one the check is inconclusive.
- `agreement` (shadow only): over at least `shadow.minSamples` requests scored by
  both, the share where they disagree is at most `shadow.maxDisagreement`.
- `error_rate`, `p99_ms`: the candidate's serving errors and 99th-percentile latency,
  judged once it served `Policy.min_requests` requests.
- `segments` (when `maxSegmentDrop` is set): the same comparison as `quality` on each
  segment value the candidate met, each judged once both versions have
  `minSegmentLabeled` labeled samples there (for the stable version, as for
  `quality`, its latest measurement of the value in this rollout stands in). A
  candidate better overall still fails when it loses more than `maxSegmentDrop` on
  one value; the verdict names the worst. While any value the candidate met has
  too few labels, or none was judged, the check is inconclusive, never a pass.
- `estimate` (when `analysis.estimate` is set, classification, and only while the
  candidate has fewer than `minLabeled` labeled samples): the drift monitor's accuracy
  estimated from confidence, candidate against stable, each made of at least
  `minPredictions` predictions and at most `maxAgeSeconds` old. A candidate whose
  estimate trails by more than `maxDrop` fails ("before labels"); otherwise, or without
  fresh estimates of both, the check is inconclusive. It is never a pass: the estimate
  can abort or hold a stage, never let one pass (the `labeled` check waits anyway).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from driftline.common.redis_state import AccuracyEstimate
from driftline.rollout.evidence import Evidence, VersionCounters
from driftline.rollout.policy import Policy

Verdict = Literal["pass", "fail", "inconclusive"]

# Rounding in float counters must not turn an equal candidate into a failing one.
EPSILON = 1e-9


class Check(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    verdict: Verdict
    detail: str
    value: float | None = None
    limit: float | None = None


class Analysis(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict on a stage's window; stored as the state's `last_analysis`."""

    at: float
    stage: str
    weight: int
    verdict: Verdict
    reason: str
    checks: tuple[Check, ...]
    labeled: int
    """The candidate's labeled samples in the window."""
    stable_quality: float | None = None
    """The stable version's accuracy (or MAE) measured in this window, if it could be."""
    worst_segment: str | None = None
    """The segment value (`country=FR`) on which the candidate lost most, when judged."""
    stable_segments: dict[str, float] = msgspec.field(default_factory=dict)
    """The stable version's quality per segment value measured in this window."""

    @property
    def gathered(self) -> bool:
        """The window holds its minimum evidence: no check waits for more samples.

        `labeled`, `quality`, `agreement` and `error_rate` are inconclusive only for
        want of samples (the candidate's, or the stable version's beside it); an
        analysis still inconclusive once they are not waits for something more samples
        cannot bring (a latency that is never recorded).
        """
        counted = ("labeled", "quality", "agreement", "error_rate", "segments")
        return not any(c.verdict == "inconclusive" for c in self.checks if c.name in counted)


def quality_of(counters: VersionCounters, policy: Policy) -> float | None:
    """Accuracy (classification, higher is better) or MAE (regression, lower is better)."""
    return counters.accuracy if policy.task == "classification" else counters.mae


def _labeled(window: Evidence, policy: Policy) -> Check:
    n = window.candidate.labeled
    verdict: Verdict = "pass" if n >= policy.min_labeled else "inconclusive"
    return Check(
        name="labeled",
        verdict=verdict,
        detail=f"candidate has {n} of {policy.min_labeled} labeled samples",
        value=n,
        limit=policy.min_labeled,
    )


def _quality(window: Evidence, policy: Policy, reference: float | None) -> Check:
    metric = "accuracy" if policy.task == "classification" else "mae"
    candidate = quality_of(window.candidate, policy)
    if window.candidate.labeled < policy.min_labeled or candidate is None:
        return Check(name="quality", verdict="inconclusive", detail=f"too few labeled for {metric}")
    stable = (
        quality_of(window.stable, policy)
        if window.stable.labeled >= policy.min_labeled
        else reference
    )
    if stable is None:
        return Check(
            name="quality",
            verdict="inconclusive",
            detail=f"no stable {metric} to compare with ({window.stable.labeled} labeled)",
            value=candidate,
        )
    if policy.task == "classification":
        drop = stable - candidate
        ok = drop <= policy.max_quality_drop + EPSILON
        detail = (
            f"accuracy {candidate:.4f} vs stable {stable:.4f} "
            f"(drop {drop:+.4f}, limit {policy.max_quality_drop})"
        )
        limit = stable - policy.max_quality_drop
    else:
        limit = stable * (1 + policy.max_quality_drop)
        ok = candidate <= limit + EPSILON
        detail = f"mae {candidate:.4g} vs stable {stable:.4g} (limit {limit:.4g})"
    return Check(
        name="quality",
        verdict="pass" if ok else "fail",
        detail=detail,
        value=candidate,
        limit=limit,
    )


def quality_loss(candidate: float, stable: float, policy: Policy) -> float:
    """How much worse the candidate is, on the scale of `maxAccuracyDrop`:
    accuracy points (classification), MAE relative to the stable's (regression)."""
    if policy.task == "classification":
        return stable - candidate
    if stable > 0:
        return candidate / stable - 1
    return 0.0 if candidate <= 0 else float("inf")


def _stable_segments(window: Evidence, policy: Policy) -> dict[str, float]:
    out = {}
    for key, seg in window.segments.items():
        quality = quality_of(seg.stable, policy)
        if seg.stable.labeled >= policy.min_segment_labeled and quality is not None:
            out[key] = quality
    return out


def _segments(
    window: Evidence, policy: Policy, references: dict[str, float]
) -> tuple[Check, str | None]:
    """The worst-segment check, and the segment value it names."""
    assert policy.max_segment_drop is not None
    limit, need = policy.max_segment_drop, policy.min_segment_labeled
    metric = "accuracy" if policy.task == "classification" else "mae"
    measured = _stable_segments(window, policy)
    judged: list[tuple[float, str, float, float]] = []  # (loss, key, candidate, stable)
    waiting: list[str] = []
    for key, seg in sorted(window.segments.items()):
        if seg.candidate.labeled == 0:
            continue  # the candidate never met this value: nothing to judge
        candidate = quality_of(seg.candidate, policy)
        stable = measured.get(key, references.get(key))
        if seg.candidate.labeled < need or candidate is None or stable is None:
            waiting.append(f"{key} ({seg.candidate.labeled}/{seg.stable.labeled})")
            continue
        judged.append((quality_loss(candidate, stable, policy), key, candidate, stable))
    worst = max(judged, default=None)
    if worst is not None:
        loss, key, candidate, stable = worst
        detail = (
            f"worst segment {key}: {metric} {candidate:.4g} vs stable {stable:.4g} "
            f"(loss {loss:+.4f}, limit {limit})"
        )
        if loss > limit + EPSILON:
            return Check(
                name="segments", verdict="fail", detail=detail, value=loss, limit=limit
            ), key
    if waiting or worst is None:
        shown = ", ".join(waiting[:5]) + (
            f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
        )
        detail = (
            f"segments with too few labeled (candidate/stable of {need}): {shown}"
            if waiting
            else "no segment measured for the candidate yet"
        )
        return Check(
            name="segments",
            verdict="inconclusive",
            detail=detail,
            value=worst[0] if worst else None,
            limit=limit,
        ), (worst[1] if worst else None)
    return Check(
        name="segments", verdict="pass", detail=detail, value=worst[0], limit=limit
    ), worst[1]


def _fresh(estimate: AccuracyEstimate | None, policy: Policy, at: float) -> bool:
    return (
        estimate is not None
        and estimate.rows >= policy.estimate_min_predictions
        and at - estimate.at <= policy.estimate_max_age_seconds
    )


def _estimate(
    policy: Policy,
    candidate: AccuracyEstimate | None,
    stable: AccuracyEstimate | None,
    at: float,
) -> Check:
    """Early evidence before labels; never a pass (see the module's docstring)."""
    limit = policy.estimate_max_drop
    assert limit is not None
    if (
        candidate is None
        or stable is None
        or not (_fresh(candidate, policy, at) and _fresh(stable, policy, at))
    ):
        return Check(
            name="estimate",
            verdict="inconclusive",
            detail=f"no fresh estimated accuracy of both versions (at least "
            f"{policy.estimate_min_predictions} predictions, "
            f"{policy.estimate_max_age_seconds:g}s old at most)",
            limit=limit,
        )
    drop = stable.accuracy - candidate.accuracy
    detail = (
        f"estimated accuracy {candidate.accuracy:.4f} vs stable {stable.accuracy:.4f} "
        f"before labels (drop {drop:+.4f}, limit {limit})"
    )
    verdict: Verdict = "fail" if drop > limit + EPSILON else "inconclusive"
    return Check(name="estimate", verdict=verdict, detail=detail, value=drop, limit=limit)


def _agreement(window: Evidence, policy: Policy) -> Check:
    n, disagreement = window.compared, window.disagreement
    if n < policy.shadow_min_samples or disagreement is None:
        return Check(
            name="agreement",
            verdict="inconclusive",
            detail=f"{n} of {policy.shadow_min_samples} shadow comparisons",
            value=n,
            limit=policy.shadow_min_samples,
        )
    ok = disagreement <= policy.max_disagreement + EPSILON
    return Check(
        name="agreement",
        verdict="pass" if ok else "fail",
        detail=f"disagreement {disagreement:.4f} over {n} (limit {policy.max_disagreement})",
        value=disagreement,
        limit=policy.max_disagreement,
    )


def _serving(window: Evidence, policy: Policy) -> list[Check]:
    served = window.candidate
    if served.requests < policy.min_requests:
        detail = f"candidate served {served.requests} of {policy.min_requests} requests"
        return [
            Check(name="error_rate", verdict="inconclusive", detail=detail),
            Check(name="p99_ms", verdict="inconclusive", detail=detail),
        ]
    rate = served.error_rate or 0.0
    checks = [
        Check(
            name="error_rate",
            verdict="pass" if rate <= policy.max_error_rate + EPSILON else "fail",
            detail=f"error rate {rate:.4f} over {served.requests} (limit {policy.max_error_rate})",
            value=rate,
            limit=policy.max_error_rate,
        )
    ]
    p99 = served.p99_ms()
    if p99 is None:
        checks.append(Check(name="p99_ms", verdict="inconclusive", detail="no latency recorded"))
    else:
        checks.append(
            Check(
                name="p99_ms",
                verdict="pass" if p99 <= policy.max_p99_ms else "fail",
                detail=f"p99 <= {p99:g} ms (limit {policy.max_p99_ms:g})",
                value=p99,
                limit=policy.max_p99_ms,
            )
        )
    return checks


def analyze(
    window: Evidence,
    policy: Policy,
    *,
    stage: str,
    weight: int,
    reference: float | None,
    at: float,
    segment_references: dict[str, float] | None = None,
    estimates: tuple[AccuracyEstimate | None, AccuracyEstimate | None] = (None, None),
) -> Analysis:
    """Judge one stage's window of evidence against the policy's thresholds.

    `reference`, `segment_references`: the stable version's latest quality overall
    and per segment value in this rollout, for a window in which it served too little.
    `estimates`: the candidate's and the stable version's accuracy estimated from
    confidence, judged only while the candidate has too few labels.
    """
    checks = [_labeled(window, policy), _quality(window, policy, reference)]
    if policy.gates_estimate and window.candidate.labeled < policy.min_labeled:
        checks.append(_estimate(policy, *estimates, at))
    worst_segment = None
    if policy.gates_segments:
        check, worst_segment = _segments(window, policy, segment_references or {})
        checks.append(check)
    if stage == "shadow":
        checks.append(_agreement(window, policy))
    checks += _serving(window, policy)
    failed = [c for c in checks if c.verdict == "fail"]
    waiting = [c for c in checks if c.verdict == "inconclusive"]
    if failed:
        verdict: Verdict = "fail"
        reason = _join(failed)
    elif waiting:
        verdict = "inconclusive"
        reason = _join(waiting)
    else:
        verdict = "pass"
        reason = _join([c for c in checks if c.name in ("quality", "segments", "agreement")])
    stable_quality = (
        quality_of(window.stable, policy) if window.stable.labeled >= policy.min_labeled else None
    )
    return Analysis(
        at=at,
        stage=stage,
        weight=weight,
        verdict=verdict,
        reason=reason,
        checks=tuple(checks),
        labeled=window.candidate.labeled,
        stable_quality=stable_quality,
        worst_segment=worst_segment,
        stable_segments=_stable_segments(window, policy) if policy.gates_segments else {},
    )


def _join(checks: list[Check]) -> str:
    return "; ".join(dict.fromkeys(c.detail for c in checks))
