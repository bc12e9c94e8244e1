"""Prometheus metrics of the inference service: every name in one place.

Dashboards, alert rules and the autoscaler (`inflight`, `rps`) refer to these names,
so they are a contract like the topics: change them only with a new name.

Gauges that describe a state (queue depth, requests in flight) are read when
Prometheus scrapes (`set_function`), and the per-request series (request latency,
responses) are counted by `driftline.inference.stats.ServingCounters` and read by
Prometheus from there: the request path never touches a prometheus_client object.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

REQUEST_SECONDS: Final = "driftline_inference_request_seconds"
RESPONSES_TOTAL: Final = "driftline_inference_responses_total"
BATCH_ROWS: Final = "driftline_inference_batch_rows"
QUEUE_ROWS: Final = "driftline_inference_queue_rows"
INFLIGHT_REQUESTS: Final = "driftline_inference_inflight_requests"
SHED_TOTAL: Final = "driftline_inference_shed_total"
CACHE_TOTAL: Final = "driftline_inference_cache_total"
PREDICTIONS_LOGGED_TOTAL: Final = "driftline_inference_predictions_logged_total"
PREDICTIONS_DROPPED_TOTAL: Final = "driftline_inference_predictions_dropped_total"
PREDICTIONS_SPOOLED_TOTAL: Final = "driftline_inference_predictions_spooled_total"
PREDICTIONS_REPLAYED_TOTAL: Final = "driftline_inference_predictions_replayed_total"
SPOOL_BYTES: Final = "driftline_inference_spool_bytes"
PRODUCER_RESTARTS_TOTAL: Final = "driftline_inference_log_producer_restarts_total"
SIDE_SCORING_TOTAL: Final = "driftline_inference_side_scoring_total"
MODEL_LOADS_TOTAL: Final = "driftline_inference_model_loads_total"
MODEL_SIGNATURE_REFUSALS_TOTAL: Final = "driftline_inference_model_signature_refusals_total"
MODEL_INFO: Final = "driftline_inference_model_serving"
ROUTING_REVISION: Final = "driftline_inference_routing_revision"
STATS_FLUSH_ERRORS_TOTAL: Final = "driftline_inference_stats_flush_errors_total"
OUTCOMES_TOTAL: Final = "driftline_inference_outcomes_total"
FEATURE_SOURCE_ERRORS_TOTAL: Final = "driftline_inference_feature_source_errors_total"
VALUE_POLICY_TOTAL: Final = "driftline_inference_value_policy_total"

BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

batch_rows = Histogram(
    BATCH_ROWS, "Rows per ONNX Runtime run.", ["model", "version"], buckets=BATCH_BUCKETS
)
queue_rows = Gauge(QUEUE_ROWS, "Rows waiting for a batch (all loaded versions).")
inflight_requests = Gauge(INFLIGHT_REQUESTS, "Inference requests being served now.")
shed_total = Counter(SHED_TOTAL, "Requests refused at once because a queue was full.", ["reason"])
cache_total = Counter(
    CACHE_TOTAL,
    "Prediction cache lookups: hit, miss, error (Redis failed) or bypass (cache paused "
    "after a failure).",
    ["result"],
)
predictions_logged_total = Counter(
    PREDICTIONS_LOGGED_TOTAL,
    "Predictions delivered to the predictions topic (directly or replayed from the spool).",
)
predictions_dropped_total = Counter(
    PREDICTIONS_DROPPED_TOTAL,
    "Predictions not delivered: buffer_full, producer_full, delivery (no spool); "
    "spool_shed (oldest shed at the spool's cap or on a full disk), expired (older than "
    "the join window at replay), spool_torn (a torn record found at start), spool_error "
    "(could not be written to the spool).",
    ["reason"],
)
predictions_spooled_total = Counter(
    PREDICTIONS_SPOOLED_TOTAL, "Predictions written to the spool while the broker was away."
)
predictions_replayed_total = Counter(
    PREDICTIONS_REPLAYED_TOTAL, "Predictions from the spool delivered to the predictions topic."
)
spool_bytes = Gauge(SPOOL_BYTES, "Bytes in the prediction log's spool (0 while Kafka is healthy).")
producer_restarts_total = Counter(
    PRODUCER_RESTARTS_TOTAL,
    "Prediction log producers replaced after a fatal error (e.g. fenced after a broker outage).",
)
side_scoring_total = Counter(
    SIDE_SCORING_TOTAL,
    "Rows scored off the critical path (shadow, baseline): done, dropped or failed.",
    ["variant", "result"],
)
model_loads_total = Counter(
    MODEL_LOADS_TOTAL, "Model version loads by result (ok, error).", ["result"]
)
model_signature_refusals_total = Counter(
    MODEL_SIGNATURE_REFUSALS_TOTAL,
    "Model versions refused at load because their signature was missing or did not verify.",
)
model_serving = Gauge(
    MODEL_INFO,
    "1 for each model version serving, by version, role and precision (fp32, int8).",
    ["version", "role", "precision"],
)
routing_revision = Gauge(ROUTING_REVISION, "Revision of the routing table being followed.")
stats_flush_errors_total = Counter(
    STATS_FLUSH_ERRORS_TOTAL, "Failed writes of serving stats to Redis (kept and retried)."
)
outcomes_total = Counter(
    OUTCOMES_TOTAL,
    "Outcomes sent to the outcomes route: accepted (acknowledged by Kafka), refused (not JSON "
    "or invalid: 400, 422) or failed (not acknowledged: 503).",
    ["result"],
)
feature_source_errors_total = Counter(
    FEATURE_SOURCE_ERRORS_TOTAL,
    "Requests whose sourced feature could not be read (its store failed): served with the "
    "feature's default (defaulted), or refused (503), as its source.onUnavailable says; "
    "for source.feast also rows served the default because Feast had no value (missing), "
    "an old one (stale) or no number (mistyped).",
    ["feature", "outcome"],
)
value_policy_total = Counter(
    VALUE_POLICY_TOTAL,
    "Feature values an onInvalid policy acted on, by feature, version and action (clip, "
    "impute, flag; refuse has no version: the request was refused before routing).",
    ["feature", "version", "action"],
)
