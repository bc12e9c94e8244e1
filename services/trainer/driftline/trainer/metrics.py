"""The trainer's Prometheus metrics: names here, once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EXAMPLES_TOTAL = "driftline_trainer_examples_total"
STEPS_ROWS_TOTAL = "driftline_trainer_trained_rows_total"
GATE_DECISIONS_TOTAL = "driftline_trainer_gate_decisions_total"
PUBLISHED_VERSION = "driftline_trainer_published_version"
CONCEPT_EPOCH = "driftline_trainer_concept_epoch"
DRIFT_EVENTS_TOTAL = "driftline_trainer_drift_events_total"
HOLDOUT_SCORE = "driftline_trainer_holdout_score"
PUBLISH_SECONDS = "driftline_trainer_publish_seconds"
CHECKPOINT_SECONDS = "driftline_trainer_checkpoint_seconds"
REGISTRY_ERRORS_TOTAL = "driftline_trainer_registry_errors_total"

examples = Counter(
    EXAMPLES_TOTAL, "Labeled examples consumed, by what became of them.", ["outcome"]
)
trained_rows = Counter(STEPS_ROWS_TOTAL, "Rows in gradient steps (fresh and replayed).")
gate_decisions = Counter(
    GATE_DECISIONS_TOTAL, "Publish attempts, by result and reason class.", ["result", "reason"]
)
published_version = Gauge(PUBLISHED_VERSION, "The last model version this trainer registered.")
concept_epoch = Gauge(CONCEPT_EPOCH, "The current concept epoch.")
drift_events = Counter(
    DRIFT_EVENTS_TOTAL, "Drift signals acted on, by kind and action.", ["kind", "action"]
)
holdout_score = Gauge(HOLDOUT_SCORE, "Held-out score at the last gate, by model.", ["model"])
publish_seconds = Histogram(
    PUBLISH_SECONDS,
    "Gate, export, checks and registration of one version.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
checkpoint_seconds = Histogram(
    CHECKPOINT_SECONDS,
    "Writing one checkpoint.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
registry_errors = Counter(REGISTRY_ERRORS_TOTAL, "MLflow calls that failed (the trainer retries).")
