"""Metric names of the drift monitor, and the Prometheus objects behind them.

Labels: `model` (DynamicModel name), `kind` (covariate | prediction | label | concept |
data-quality),
`feature` (a feature name; `__output__`, `__label__` or `__error__` for the other
kinds), `check` (missing | out_of_range | unseen_category).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

P_VALUE = "driftline_drift_p_value"
"""Gauge{model, kind, feature}: p-value of the latest window test."""
SCORE = "driftline_drift_score"
"""Gauge{model, kind, feature}: test statistic of the latest test (KS distance, Chi2,
or an online detector's statistic)."""
THRESHOLD = "driftline_drift_threshold"
"""Gauge{model, kind}: what the latest statistic was compared with (corrected p-value
cut for windows, the configured threshold for online detectors)."""
FEATURE_DRIFT = "driftline_drift_feature_detected"
"""Gauge{model, kind, feature}: 1 when the latest test found drift in this feature."""
DETECTED = "driftline_drift_detected"
"""Gauge{model, kind}: 1 when the latest test of this kind found drift (for online
detectors: an alarm in the latest batch of records)."""
LAST_DETECTED = "driftline_drift_last_detected_timestamp_seconds"
"""Gauge{model, kind}: when drift of this kind was last detected (sent or not)."""
EVENTS_TOTAL = "driftline_drift_events_total"
"""Counter{model, kind}: drift events sent."""
ALERTS_TOTAL = "driftline_drift_alerts_total"
"""Counter{model, kind}: drift events sent as alerts (`drift.onDrift` has `alert`); the
chart's DriftlineDriftDetected rule keys on it, so a model without `alert` never pages."""
SUPPRESSED_TOTAL = "driftline_drift_suppressed_total"
"""Counter{model, kind}: detections not sent (cooldown, or explained by a sent event)."""
TESTS_TOTAL = "driftline_drift_tests_total"
"""Counter{model, kind}: window tests run."""
SAMPLES_TOTAL = "driftline_drift_samples_total"
"""Counter{model, stream}: records used (stream = predictions | labeled)."""
SKIPPED_TOTAL = "driftline_drift_skipped_total"
"""Counter{model, stream, reason}: records read but not used (shadow variant, other version)."""
QUALITY_RATE = "driftline_drift_quality_rate"
"""Gauge{model, feature, check}: share of the latest window's rows with this problem."""
QUALITY_TOTAL = "driftline_drift_quality_issues_total"
"""Counter{model, feature, check}: rows with this problem."""
REFERENCE_VERSION = "driftline_drift_reference_version"
"""Gauge{model, version}: 1 for the model version whose reference is in use."""
SETUP_SECONDS = "driftline_drift_setup_seconds"
"""Gauge{model, detector}: seconds the latest set-up of an online detector took."""
MEAN_SHIFT = "driftline_drift_mean_shift_sigmas"
"""Gauge{model, feature}: how many standard errors the latest window's mean of a numeric
feature lies from the training baseline's mean (`drift.dataQuality`)."""
QUALITY_ALARM_TOTAL = "driftline_drift_quality_alarms_total"
"""Counter{model, feature}: windows whose mean lay beyond `drift.dataQuality.sigmas`."""
FLAGGED_TOTAL = "driftline_drift_flagged_rows_total"
"""Counter{model, feature, action}: served rows whose value an `onInvalid` policy clipped,
imputed or flagged (the prediction's `flags`)."""
EVENT_ERRORS_TOTAL = "driftline_drift_event_errors_total"
"""Counter{model, sink}: drift events that could not be written (sink = kafka | redis)."""
ESTIMATED_ACCURACY = "driftline_drift_estimated_accuracy"
"""Gauge{model, version}: accuracy the version's latest served predictions should have,
estimated from their confidence before their labels (CBPE; classification)."""
ESTIMATE_ROWS = "driftline_drift_estimate_rows"
"""Gauge{model, version}: predictions the estimate is made of (up to the drift window)."""
LIVE_REFERENCE_UNSAVED_TOTAL = "driftline_drift_live_reference_unsaved_total"
"""Counter{model}: references from live traffic the registry did not take (kept in memory)."""

p_value = Gauge(P_VALUE, "p-value of the latest window test", ["model", "kind", "feature"])
score = Gauge(SCORE, "statistic of the latest test", ["model", "kind", "feature"])
threshold = Gauge(THRESHOLD, "threshold of the latest test", ["model", "kind"])
feature_drift = Gauge(
    FEATURE_DRIFT, "1 when the latest test found drift in the feature", ["model", "kind", "feature"]
)
detected = Gauge(DETECTED, "1 when the latest test of this kind found drift", ["model", "kind"])
last_detected = Gauge(LAST_DETECTED, "when drift was last detected", ["model", "kind"])
events = Counter(EVENTS_TOTAL, "drift events sent", ["model", "kind"])
alerts = Counter(ALERTS_TOTAL, "drift events sent as alerts", ["model", "kind"])
suppressed = Counter(
    SUPPRESSED_TOTAL, "detections not sent (cooldown or explained)", ["model", "kind"]
)
tests = Counter(TESTS_TOTAL, "window tests run", ["model", "kind"])
estimated_accuracy = Gauge(
    ESTIMATED_ACCURACY, "accuracy estimated from confidence, before labels", ["model", "version"]
)
estimate_rows = Gauge(ESTIMATE_ROWS, "predictions the estimate is made of", ["model", "version"])
live_reference_unsaved = Counter(
    LIVE_REFERENCE_UNSAVED_TOTAL,
    "references from live traffic not kept in the registry (watched from memory)",
    ["model"],
)
samples = Counter(SAMPLES_TOTAL, "records used", ["model", "stream"])
skipped = Counter(SKIPPED_TOTAL, "records read but not used", ["model", "stream", "reason"])
quality_rate = Gauge(
    QUALITY_RATE,
    "share of the latest window's rows with the problem",
    ["model", "feature", "check"],
)
quality_total = Counter(QUALITY_TOTAL, "rows with the problem", ["model", "feature", "check"])
reference_version = Gauge(
    REFERENCE_VERSION, "1 for the version whose reference is in use", ["model", "version"]
)
setup_seconds = Gauge(
    SETUP_SECONDS, "seconds of the latest online detector set-up", ["model", "detector"]
)
event_errors = Counter(EVENT_ERRORS_TOTAL, "drift events not written", ["model", "sink"])
mean_shift = Gauge(
    MEAN_SHIFT, "standard errors between the window mean and the baseline", ["model", "feature"]
)
quality_alarm_total = Counter(
    QUALITY_ALARM_TOTAL, "windows whose mean was beyond the alarm", ["model", "feature"]
)
flagged_total = Counter(
    FLAGGED_TOTAL, "served rows an onInvalid policy acted on", ["model", "feature", "action"]
)
