"""Metric names of the rollout controller (labels: `model` is `<namespace>/<name>`)."""

from __future__ import annotations

TRANSITIONS_TOTAL = "driftline_rollout_transitions_total"
"""Counter{model, from_stage, to_stage}: stage changes (canary steps count as canary->canary)."""

STAGE = "driftline_rollout_stage"
"""Gauge{model, stage}: 1 for the current stage, 0 for the others."""

CANDIDATE_WEIGHT = "driftline_rollout_candidate_weight_percent"
"""Gauge{model}: percent of traffic the candidate serves."""

SOURCE_ERRORS_TOTAL = "driftline_rollout_source_errors_total"
"""Counter{model, source}: ticks on which Redis or the registry could not be read."""

GUARD_ROLLBACKS_TOTAL = "driftline_rollout_guard_rollbacks_total"
"""Counter{model}: promoted versions rolled back by the guard (`promoted -> aborted`)."""

ACTION_FAILURES_TOTAL = "driftline_rollout_action_failures_total"
"""Counter{model, action}: actions that failed and wait to be retried."""

PENDING_ACTIONS = "driftline_rollout_pending_actions"
"""Gauge{model}: actions decided but not yet carried out."""

TICK_SECONDS = "driftline_rollout_tick_seconds"
"""Histogram{model}: time one tick takes (reads, decision, actions)."""
