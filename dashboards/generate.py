"""Driftline's Grafana dashboards, as code: `python dashboards/generate.py` writes the JSON.

Two dashboards: an overview of every model, and one model in depth (traffic,
latency, batching, cache, live quality per variant with the frozen baseline beside
the learner, drift per feature, rollout stage and weight, Kafka lag, the trainer).
The JSON files beside this script are what Grafana imports and what the chart ships
(ConfigMaps with the `grafana_dashboard` label); tests check that they are what
this script writes and that every metric they query is exported by some part.

Series carry the labels the Prometheus Operator gives a scraped Service: the
model's parts are the jobs `<model>-inference`, `<model>-joiner`, `<model>-trainer`
and `<model>-drift` in the model's namespace; the rollout runs in the operator and
labels its series `model="<namespace>/<name>"`; Kafka lag comes from a Kafka
exporter (`kafka_consumergroup_lag`, consumer groups `driftline-<model>-<part>`).
"""

# PromQL reads best unbroken: long query lines are kept whole.
# ruff: noqa: E501

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def sel(part: str, extra: str = "") -> str:
    """Label matchers of one part of the selected model."""
    base = f'namespace="$namespace", job="$model-{part}"'
    return "{" + base + (", " + extra if extra else "") + "}"


ROLLOUT = '{model="$namespace/$model"}'
ERRORS_5XX = 'driftline_inference_responses_total{code=~"5.."}'
ALL_RESPONSES = "sum by (namespace, job) (rate(driftline_inference_responses_total[{}]))"


class Board:
    """Lays panels out left to right, 24 columns wide, rows of equal height."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.height
            self.x = 0
            self.height = 0

    def add(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        kind: str = "timeseries",
        unit: str = "short",
        width: int = 8,
        height: int = 8,
        description: str = "",
        options: dict[str, Any] | None = None,
        max_value: float | None = None,
    ) -> None:
        if self.x + width > 24:
            self._newline()
        defaults: dict[str, Any] = {"unit": unit}
        if max_value is not None:
            defaults["max"] = max_value
            defaults["min"] = 0
        panel: dict[str, Any] = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options or {},
            "targets": [
                {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DS}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if kind == "table":
            for target in panel["targets"]:
                target.update({"instant": True, "format": "table"})
        self.panels.append(panel)
        self.x += width
        self.height = max(self.height, height)


def variable(name: str, query: str, regex: str = "", label: str = "") -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label or name,
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "regex": regex,
        "refresh": 2,
        "sort": 1,
        "includeAll": False,
        "multi": False,
    }


def dashboard(
    uid: str, title: str, board: Board, variables: list[dict[str, Any]]
) -> dict[str, Any]:
    datasource = {
        "type": "datasource",
        "name": "datasource",
        "label": "Prometheus",
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
    }
    return {
        "uid": uid,
        "title": title,
        "tags": ["driftline"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [datasource, *variables]},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["driftline"],
                "asDropdown": True,
                "title": "Driftline",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": board.panels,
    }


def model_dashboard() -> dict[str, Any]:
    b = Board()
    inf = sel("inference")
    client = sel("inference", 'route!="side"')
    b.row("Traffic")
    b.add(
        "Requests per second by variant",
        [
            (
                f"sum by (variant) (rate(driftline_inference_request_seconds_count{client}[{RATE}]))",
                "{{variant}}",
            )
        ],
        unit="reqps",
    )
    b.add(
        "Responses by status code",
        [
            (
                f"sum by (code) (rate(driftline_inference_responses_total{inf}[{RATE}]))",
                "{{code}}",
            )
        ],
        unit="reqps",
    )
    b.add(
        "Latency percentiles (client routes)",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                f"(rate(driftline_inference_request_seconds_bucket{client}[{RATE}])))",
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        unit="s",
    )
    b.add(
        "Rows per batch",
        [
            (
                f"sum(rate(driftline_inference_batch_rows_sum{inf}[{RATE}])) / "
                f"sum(rate(driftline_inference_batch_rows_count{inf}[{RATE}]))",
                "mean",
            ),
            (
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(driftline_inference_batch_rows_bucket{inf}[{RATE}])))",
                "p95",
            ),
        ],
    )
    hits = sel("inference", 'result="hit"')
    b.add(
        "Prediction cache hit rate",
        [
            (
                f"sum(rate(driftline_inference_cache_total{hits}[{RATE}])) / "
                f"sum(rate(driftline_inference_cache_total{inf}[{RATE}]))",
                "hit rate",
            )
        ],
        unit="percentunit",
        max_value=1,
    )
    b.add(
        "In flight, queued and shed",
        [
            (f"sum(driftline_inference_inflight_requests{inf})", "in flight"),
            (f"sum(driftline_inference_queue_rows{inf})", "queued rows"),
            (
                f"sum by (reason) (rate(driftline_inference_shed_total{inf}[{RATE}]))",
                "shed {{reason}} /s",
            ),
        ],
    )

    b.row("Live quality")
    joiner = sel("joiner")
    correct, count = sel("joiner", 'field="correct"'), sel("joiner", 'field="count"')
    agreed, compared = sel("joiner", 'field="agreed"'), sel("joiner", 'field="compared"')
    b.add(
        "Live accuracy by variant (baseline: the frozen first version)",
        [
            (
                f"sum by (variant, version) (rate(driftline_joiner_quality_total{correct}[15m])) / "
                f"sum by (variant, version) (rate(driftline_joiner_quality_total{count}[15m]))",
                "{{variant}} v{{version}}",
            ),
            (
                f"max by (version) (driftline_drift_estimated_accuracy{sel('drift')})",
                "estimated before labels v{{version}}",
            ),
        ],
        unit="percentunit",
        width=12,
        max_value=1,
        description="Share of joined predictions whose label matched, over 15 minutes. "
        "The baseline is scored beside the learner on the same traffic and never learns: "
        "the gap between them is what online learning earns. The estimate is the accuracy "
        "the latest served predictions should have from their confidence, calibrated on "
        "the labeled ones (drift monitor, CBPE): it moves before their labels arrive.",
    )
    b.add(
        "Shadow agreement (candidate vs stable)",
        [
            (
                f"sum by (candidate) (rate(driftline_joiner_agreement_total{agreed}[15m])) / "
                f"sum by (candidate) (rate(driftline_joiner_agreement_total{compared}[15m]))",
                "v{{candidate}}",
            )
        ],
        unit="percentunit",
        width=6,
        max_value=1,
    )
    b.add(
        "Joins",
        [
            (
                f"sum by (side, result) (rate(driftline_joiner_messages_total{joiner}[{RATE}]))",
                "{{side}} {{result}}",
            ),
            (
                f"sum(rate(driftline_joiner_labeled_examples_total{joiner}[{RATE}]))",
                "labeled examples",
            ),
        ],
        unit="ops",
        width=6,
    )
    explored = sel("joiner", 'variant="explored"')
    exploited = sel("joiner", 'variant=~"stable|candidate"')

    def accuracy(where: str) -> str:
        matchers = where[1:-1]
        return (
            f"sum by (version) (rate(driftline_joiner_quality_total{{{matchers}, "
            f'field="correct"}}[1h])) / sum by (version) (rate(driftline_joiner_quality_total'
            f'{{{matchers}, field="count"}}[1h]))'
        )

    b.add(
        "Exploration: accuracy on explored vs exploited traffic",
        [
            (accuracy(exploited), "exploited v{{version}}"),
            (accuracy(explored), "explored v{{version}}"),
            (f"{accuracy(exploited)} - {accuracy(explored)}", "bias v{{version}}"),
        ],
        unit="percentunit",
        width=12,
        description="With spec.training.exploration: the model's own accuracy on the traffic "
        "it decided (exploited) and on the epsilon share the exploration policy decided "
        "(explored), over an hour. Where outcomes follow decisions, exploited accuracy "
        "flatters the model (its decisions confirm it); the gap is the bias the guard "
        "keeps out of training and out of the rollout's evidence. Empty when exploration is off.",
    )

    b.row("Segments and fairness")
    served = 'variant=~"stable|candidate"'
    seg_correct = sel("joiner", f'field="correct", {served}')
    seg_count = sel("joiner", f'field="count", {served}')
    b.add(
        "Live accuracy per segment value (served traffic)",
        [
            (
                f"sum by (segment, value) (rate(driftline_joiner_segment_quality_total{seg_correct}[15m])) / "
                f"sum by (segment, value) (rate(driftline_joiner_segment_quality_total{seg_count}[15m]))",
                "{{segment}}={{value}}",
            )
        ],
        unit="percentunit",
        width=10,
        max_value=1,
        description="Accuracy of the served predictions per group of spec.monitoring.segments, "
        "over 15 minutes. A rollout with analysis.maxSegmentDrop is not promoted when the "
        "candidate loses more than that on any one group.",
    )
    b.add(
        "Fairness gaps of protected segments",
        [
            (
                f"max by (segment, version) (driftline_joiner_fairness_parity_gap{joiner})",
                "parity {{segment}} v{{version}}",
            ),
            (
                f"max by (segment, version) (driftline_joiner_fairness_opportunity_gap{joiner})",
                "opportunity {{segment}} v{{version}}",
            ),
            (
                f"max by (segment, figure) (driftline_joiner_fairness_limit{joiner})",
                "limit {{figure}} {{segment}}",
            ),
        ],
        width=10,
        description="Demographic parity difference (gap between the positive-prediction "
        "rates of a protected segment's values) and equal-opportunity difference (gap "
        "between their true-positive rates), with the limits of spec.monitoring.fairness.",
    )
    b.add(
        "Predictions counted as other",
        [
            (
                f"sum by (segment) (rate(driftline_joiner_segment_folded_total{joiner}[{RATE}]))",
                "{{segment}}",
            )
        ],
        unit="ops",
        width=4,
        description="Scored predictions whose value came after a segment's maxValues "
        "values were taken: counted in its 'other' group.",
    )
    b.add(
        "Calibration: confidence against accuracy",
        [
            (
                f"max by (version) (driftline_joiner_calibration_error{joiner})",
                "calibration error v{{version}}",
            ),
            (
                f"max by (version) (driftline_joiner_confidence_gap{joiner})",
                "confidence - accuracy v{{version}}",
            ),
            (f"max(driftline_joiner_calibration_limit{joiner})", "limit"),
        ],
        width=24,
        description="Expected calibration error (ten confidence bins) of each version's "
        "labeled predictions over spec.monitoring.calibration.windowSeconds, and how much "
        "surer the model is than right. Above the limit: its scores no longer mean what "
        "they say, and thresholds on them misfire.",
    )

    b.row("Drift")
    drift = sel("drift")
    b.add(
        "Drift score per feature",
        [
            (
                f"max by (kind, feature) (driftline_drift_score{drift})",
                "{{kind}} {{feature}}",
            )
        ],
        width=12,
        description="The statistic of the latest test per feature (KS distance, or the "
        "online detector's statistic); the threshold it is compared with is in the next panel.",
    )
    b.add(
        "p-value per feature and threshold",
        [
            (f"min by (kind, feature) (driftline_drift_p_value{drift})", "{{kind}} {{feature}}"),
            (f"max by (kind) (driftline_drift_threshold{drift})", "threshold {{kind}}"),
        ],
        width=12,
    )
    b.add(
        "Drift detected by kind",
        [(f"max by (kind) (driftline_drift_detected{drift})", "{{kind}}")],
        kind="state-timeline",
        width=12,
        height=6,
    )
    b.add(
        "Drift events sent and suppressed",
        [
            (
                f"sum by (kind) (increase(driftline_drift_events_total{drift}[{RATE}]))",
                "sent {{kind}}",
            ),
            (
                f"sum by (kind) (increase(driftline_drift_suppressed_total{drift}[{RATE}]))",
                "suppressed {{kind}}",
            ),
        ],
        width=12,
        height=6,
    )
    inference = sel("inference")
    b.add(
        "Data quality: window mean vs baseline (standard errors)",
        [
            (f"max by (feature) (driftline_drift_mean_shift_sigmas{drift})", "{{feature}}"),
        ],
        width=12,
        description="How far the latest window's mean of each numeric feature lies from the "
        "training baseline's mean, in standard errors (baseline std / sqrt(window)); past "
        "drift.dataQuality.sigmas the monitor sends a data-quality event. Needs "
        "spec.drift.dataQuality.",
    )
    b.add(
        "Values acted on by onInvalid policies",
        [
            (
                f"sum by (feature, action) (rate(driftline_inference_value_policy_total{inference}[{RATE}]))",
                "{{feature}} {{action}}",
            ),
        ],
        unit="reqps",
        width=12,
        description="Feature values serving refused, clipped, imputed or flagged by the "
        "feature's onInvalid policy, per second.",
    )

    b.row("Rollout")
    b.add(
        "Rollout stage",
        [(f"max by (stage) (driftline_rollout_stage{ROLLOUT}) > 0", "{{stage}}")],
        kind="state-timeline",
        width=12,
        height=6,
    )
    b.add(
        "Candidate traffic weight",
        [(f"max(driftline_rollout_candidate_weight_percent{ROLLOUT})", "weight")],
        unit="percent",
        width=6,
        height=6,
        max_value=100,
    )
    b.add(
        "Versions loaded by inference",
        [
            (
                f"max by (role, version) (driftline_inference_model_serving{inf}) > 0",
                "{{role}} v{{version}}",
            )
        ],
        kind="state-timeline",
        width=6,
        height=6,
    )
    b.add(
        "Rollout transitions",
        [
            (
                f"sum by (from_stage, to_stage) (increase(driftline_rollout_transitions_total{ROLLOUT}[{RATE}]))",
                "{{from_stage}} -> {{to_stage}}",
            )
        ],
        width=12,
        height=6,
    )
    b.add(
        "Rollout source errors and failed actions",
        [
            (
                f"sum by (source) (increase(driftline_rollout_source_errors_total{ROLLOUT}[{RATE}]))",
                "source {{source}}",
            ),
            (
                f"sum by (action) (increase(driftline_rollout_action_failures_total{ROLLOUT}[{RATE}]))",
                "action {{action}}",
            ),
        ],
        width=12,
        height=6,
    )

    b.row("Kafka and training")
    b.add(
        "Consumer lag by group",
        [
            (
                'sum by (consumergroup) (kafka_consumergroup_lag{consumergroup=~"driftline-$model-.*"})',
                "{{consumergroup}}",
            )
        ],
        description="From a Kafka exporter (kafka_consumergroup_lag); groups are "
        "driftline-<model>-<part>.",
    )
    trainer = sel("trainer")
    b.add(
        "Trainer throughput",
        [
            (
                f"sum by (outcome) (rate(driftline_trainer_examples_total{trainer}[{RATE}]))",
                "examples {{outcome}}",
            ),
            (f"sum(rate(driftline_trainer_trained_rows_total{trainer}[{RATE}]))", "rows trained"),
        ],
        unit="ops",
    )
    b.add(
        "Trainer versions and gate",
        [
            (f"max(driftline_trainer_published_version{trainer})", "last published version"),
            (f"max(driftline_trainer_concept_epoch{trainer})", "concept epoch"),
            (
                f"sum by (result) (increase(driftline_trainer_gate_decisions_total{trainer}[{RATE}]))",
                "gate {{result}}",
            ),
        ],
    )
    b.add(
        "Predictions logged and dropped",
        [
            (f"sum(rate(driftline_inference_predictions_logged_total{inf}[{RATE}]))", "logged"),
            (
                f"sum by (reason) (rate(driftline_inference_predictions_dropped_total{inf}[{RATE}]))",
                "dropped {{reason}}",
            ),
        ],
        unit="ops",
    )
    b.add(
        "Dead-lettered records",
        [
            (
                'sum by (topic, reason) (rate(driftline_dead_letter_messages_total{namespace="$namespace", job=~"$model-.*"}'
                f"[{RATE}]))",
                "{{topic}} {{reason}}",
            )
        ],
        unit="ops",
    )
    b.add(
        "Trainer publish time",
        [
            (
                "histogram_quantile(0.9, sum by (le) "
                f"(rate(driftline_trainer_publish_seconds_bucket{trainer}[30m])))",
                "p90",
            )
        ],
        unit="s",
    )
    b.row("Cost")
    model = '{namespace="$namespace", model="$model"}'
    b.add(
        "Estimated cost per hour, by part",
        [(f"sum by (part) (driftline:model_cost:per_hour{model})", "{{part}}")],
        kind="timeseries",
        width=12,
        description="Requests x the chart's price table (monitoring.cost.prices), spot "
        "pods at the discount; a part scaled to zero costs nothing. Needs the chart's "
        "cost rules and kube-state-metrics with the pods' driftline.io labels.",
    )
    b.add(
        "Estimated cost per 30 days and budget",
        [
            (f"sum(driftline:model_cost:per_30d{model})", "estimate"),
            ('driftline_model_monthly_budget{model="$namespace/$model"}', "budget"),
        ],
        width=12,
        description="The estimate at today's requests, and spec.cost.monthlyBudget "
        "(DriftlineModelOverBudget fires above it for an hour).",
    )
    variables = [
        variable("namespace", "label_values(driftline_inference_inflight_requests, namespace)"),
        variable(
            "model",
            'label_values(driftline_inference_inflight_requests{namespace="$namespace"}, job)',
            regex="/^(.+)-inference$/",
        ),
    ]
    return dashboard("driftline-model", "Driftline / Model", b, variables)


def overview_dashboard() -> dict[str, Any]:
    b = Board()
    client = '{route!="side"}'
    b.row("Every model")
    b.add(
        "Requests per second",
        [
            (
                f"sum by (namespace, job) (rate(driftline_inference_request_seconds_count{client}[{RATE}]))",
                "{{namespace}}/{{job}}",
            )
        ],
        unit="reqps",
    )
    b.add(
        "p99 latency",
        [
            (
                "histogram_quantile(0.99, sum by (namespace, job, le) "
                f"(rate(driftline_inference_request_seconds_bucket{client}[{RATE}])))",
                "{{namespace}}/{{job}}",
            )
        ],
        unit="s",
    )
    b.add(
        "Server error ratio",
        [
            (
                # `or ... * 0`: a model without server errors shows 0, not an empty panel.
                f"(sum by (namespace, job) (rate({ERRORS_5XX}[{RATE}])) or {ALL_RESPONSES.format(RATE)} * 0)"
                f" / {ALL_RESPONSES.format(RATE)}",
                "{{namespace}}/{{job}}",
            )
        ],
        unit="percentunit",
    )
    b.add(
        "Live accuracy of the stable version",
        [
            (
                'sum by (namespace, job) (rate(driftline_joiner_quality_total{variant="stable", field="correct"}[15m]))'
                ' / sum by (namespace, job) (rate(driftline_joiner_quality_total{variant="stable", field="count"}[15m]))',
                "{{namespace}}/{{job}}",
            )
        ],
        unit="percentunit",
        max_value=1,
    )
    b.add(
        "Drift detected",
        [
            (
                "max by (namespace, model, kind) (driftline_drift_detected) > 0",
                "{{namespace}}/{{model}} {{kind}}",
            )
        ],
        kind="state-timeline",
    )
    b.add(
        "Rollout stage and candidate weight",
        [
            ("max by (model, stage) (driftline_rollout_stage) > 0", "{{model}} {{stage}}"),
            ("max by (model) (driftline_rollout_candidate_weight_percent)", "{{model}} weight %"),
        ],
    )
    b.add(
        "Consumer lag by group",
        [
            (
                'sum by (consumergroup) (kafka_consumergroup_lag{consumergroup=~"driftline-.*"})',
                "{{consumergroup}}",
            )
        ],
    )
    b.add(
        "Versions published by the trainers",
        [
            (
                "max by (namespace, job) (driftline_trainer_published_version)",
                "{{namespace}}/{{job}}",
            )
        ],
    )
    b.add(
        "Operator reconciles and ticks",
        [
            (
                f"sum by (outcome) (rate(driftline_operator_reconciles_total[{RATE}]))",
                "reconcile {{outcome}}",
            ),
            (
                f"sum by (outcome) (rate(driftline_operator_ticks_total[{RATE}]))",
                "tick {{outcome}}",
            ),
        ],
        unit="ops",
    )
    b.add(
        "Estimated cost per 30 days, by model",
        [("sort_desc(driftline:model_cost:per_30d)", "{{namespace}}/{{model}}")],
        width=12,
        description="Requests x the chart's price table (monitoring.cost.prices), spot "
        "pods at the discount; models scaled to zero cost nothing here (docs/capacity.md).",
    )
    b.add(
        "Estimated cost per 30 days, by team",
        [("sum by (team) (driftline:model_cost:per_hour) * 24 * 30", "{{team}}")],
        width=12,
        description="Grouped by spec.cost.team (the driftline.io/team pod label); "
        "models without one under an empty team.",
    )
    return dashboard("driftline-overview", "Driftline / Overview", b, [])


DASHBOARDS = {
    "driftline-overview.json": overview_dashboard,
    "driftline-model.json": model_dashboard,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    for name, text in render().items():
        path = HERE / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
