"""The rollout driver's failure counters exist from its start, at 0."""

from __future__ import annotations

from prometheus_client import REGISTRY

from driftline.api import parse_dynamic_model
from driftline.rollout.driver import ACTIONS, SOURCES, RolloutDriver
from driftline.rollout.metrics import ACTION_FAILURES_TOTAL, SOURCE_ERRORS_TOTAL
from driftline_testing.models import model_document


def test_source_errors_and_action_failures_are_exported_from_zero() -> None:
    """A dashboard shows "no failures" as a 0 line, not as an empty panel."""
    model = parse_dynamic_model(model_document("counted"))
    RolloutDriver(model, redis=None, registry=None)  # type: ignore[arg-type]
    label = f"{model.metadata.namespace}/counted"
    assert set(SOURCES) == {"redis", "registry"}
    assert set(ACTIONS) == {"SetRouting", "SetAlias", "DeleteAlias", "EmitEvent"}
    for source in SOURCES:
        labels = {"model": label, "source": source}
        assert REGISTRY.get_sample_value(SOURCE_ERRORS_TOTAL, labels) == 0
    for action in ACTIONS:
        labels = {"model": label, "action": action}
        assert REGISTRY.get_sample_value(ACTION_FAILURES_TOTAL, labels) == 0
