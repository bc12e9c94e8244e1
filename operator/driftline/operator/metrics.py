"""Prometheus metrics of the operator: every name in one place.

The operator process also exports the rollout driver's metrics
(`driftline.rollout.metrics`: stage, candidate weight, transitions), since the
rollout runs in its timer.
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

RECONCILES_TOTAL: Final = "driftline_operator_reconciles_total"
RECONCILE_SECONDS: Final = "driftline_operator_reconcile_seconds"
TICKS_TOTAL: Final = "driftline_operator_ticks_total"
API_REQUESTS_TOTAL: Final = "driftline_operator_api_requests_total"
MODEL_MONTHLY_BUDGET: Final = "driftline_model_monthly_budget"

reconciles_total = Counter(
    RECONCILES_TOTAL,
    "Reconciles of a DynamicModel by outcome: applied, invalid (spec refused), "
    "waiting (a dependency is missing) or failed (the API server refused a write).",
    ["outcome"],
)
reconcile_seconds = Histogram(
    RECONCILE_SECONDS,
    "Time to validate, build, apply and prune one DynamicModel's children.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ticks_total = Counter(
    TICKS_TOTAL, "Timer ticks (rollout step and status refresh) by outcome.", ["outcome"]
)
api_requests_total = Counter(
    API_REQUESTS_TOTAL,
    "Requests of the operator's own client to the API server (children, Secrets, "
    "Pods), by verb and HTTP status (0: unreachable). kopf's watch and its patches of "
    "DynamicModels are not counted here.",
    ["verb", "code"],
)
model_monthly_budget = Gauge(
    MODEL_MONTHLY_BUDGET,
    "spec.cost.monthlyBudget of each DynamicModel (currency units per 30 days); the "
    "chart's DriftlineModelOverBudget alert compares the estimated spend with it. "
    "`model` is `<namespace>/<name>`, as in the rollout's metrics: the scrape's own "
    "`namespace` label is the operator's.",
    ["model"],
)


def record_budget(namespace: str, model: str, budget: float | None) -> None:
    """Exports a model's budget, or drops its series when it has none (or is gone)."""
    key = f"{namespace}/{model}"
    if budget is None:
        with contextlib.suppress(KeyError):  # never had one
            model_monthly_budget.remove(key)
        return
    model_monthly_budget.labels(key).set(budget)
