"""The metric names a PromQL expression reads, and the names the parts export.

Names in an expression: what is left after removing strings, label matchers,
ranges, grouping clauses and function calls (promtool checks the syntax
separately). Exported names: the Prometheus registry after importing every
part's metric modules, plus the families of the collectors that build their
series at scrape time, expanded with the sample suffixes Prometheus stores
(`_total`, `_bucket`, `_count`, `_sum`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
RULES = DASHBOARDS / "rules" / "driftline.rules.yaml"
# Grafana's variables, replaced by values Prometheus accepts, to let promtool parse.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": "ns", "$model": "model"}


def dashboard_queries() -> dict[str, str]:
    """`<dashboard> / <panel>` -> PromQL, for every target of every dashboard."""
    out = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out[f"{board['title']} / {panel['title']} ({target['refId']})"] = target["expr"]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                query = var["query"]["query"]
                inner = query[query.index("(") + 1 : query.rindex(",")]  # label_values(expr, label)
                out[f"{board['title']} / variable {var['name']}"] = inner
    return out


def rule_queries() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {
        f"alert {rule.get('alert') or rule.get('record')}": rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
    }


# Modules that define or register each part's metrics (importing one registers them).
METRIC_MODULES = {
    "common": ["driftline.common.kafka"],
    "operator": ["driftline.operator.metrics"],
    "rollout": ["driftline.rollout.driver"],
    "inference": ["driftline.inference.metrics"],
    "joiner": ["driftline.joiner.metrics"],
    "trainer": ["driftline.trainer.metrics"],
    "drift": ["driftline.drift.metrics"],
}

# Metrics of other exporters that dashboards and rules read on purpose.
EXTERNAL = {
    "kafka_consumergroup_lag": "a Kafka exporter (consumer lag per group, topic, partition)",
    "kube_pod_container_resource_requests": "kube-state-metrics (the cost rules price them)",
    "kube_pod_labels": "kube-state-metrics, with the pods' driftline.io labels allowed",
    "driftline:model_cost:per_hour": "the chart's cost rules (monitoring.cost)",
    "driftline:model_cost:per_30d": "the chart's cost rules (monitoring.cost)",
}

_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2", "start", "end",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def _samples(family: Metric) -> set[str]:
    """The series names Prometheus stores for one metric family."""
    name, kind = family.name, family.type
    if kind == "counter":
        return {f"{name}_total", f"{name}_created"}
    if kind in ("histogram", "gaugehistogram"):
        return {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
    if kind == "info":
        return {f"{name}_info"}
    return {name}


def _families(collectors: Iterable[Any]) -> Iterable[Metric]:
    for collector in collectors:
        yield from collector.collect()


def scrape_time_collectors() -> list[Any]:
    """Collectors that are built by a running service (not at import); empty ones."""
    out: list[Any] = []
    try:
        from driftline.inference.stats import ServingCounters
    except ImportError:
        return out
    # Its families exist before any request; Redis is not touched by collect().
    out.append(ServingCounters("model", store=None, client=None, flush_seconds=1.0))  # type: ignore[arg-type]
    return out


def landed(part: str) -> bool:
    """A part has landed when it runs as a process (`python -m driftline.<part>`)."""
    try:
        return importlib.util.find_spec(f"driftline.{part}.__main__") is not None
    except ImportError:
        return False


def exported() -> tuple[set[str], dict[str, str]]:
    """(every series name the parts export, part -> why its modules did not import)."""
    missing: dict[str, str] = {}
    for part, modules in METRIC_MODULES.items():
        try:
            for module in modules:
                importlib.import_module(module)
        except ImportError as exc:
            missing[part] = str(exc)
    # The registry knows each collector's names with their suffixes already.
    names = set(REGISTRY._names_to_collectors)
    for family in _families(scrape_time_collectors()):
        names |= _samples(family)
    return names, missing


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(\s*bool\b)?")


def comparisons_as_bool(expr: str) -> str:
    """`expr` with `bool` after each comparison outside strings and label matchers.

    An alert's expression returns series only while it fires; with `bool` it returns
    a 0 or 1 for every series its comparisons see, so a live check can tell "does not
    fire" from "reads nothing" (a wrong name, a label that never matches)."""
    out, depth, i = [], 0, 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'":
            end = _STRING.match(expr, i)
            assert end is not None, f"unterminated string in {expr!r}"
            out.append(end.group(0))
            i = end.end()
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0:
            match = _COMPARISON.match(expr, i)
            if match:
                out.append(match.group(0) if match.group(2) else f"{match.group(1)} bool")
                i = match.end()
                continue
        out.append(char)
        i += 1
    return "".join(out)


def monitor_everything(spec: dict[str, Any]) -> None:
    """A model spec (`make demo`'s SEA model) with the monitoring it leaves off turned
    on, so that every panel has something to show: the prediction cache, an onInvalid
    policy on the first feature, the data-quality alarm and a protected segment."""
    spec["inference"]["cache"] = {"enabled": True, "ttlSeconds": 60}
    spec["features"][0]["onInvalid"] = {"outOfRange": "clip"}
    spec["drift"]["dataQuality"] = {"window": 500, "sigmas": 6}
    spec["monitoring"]["segments"][0]["protected"] = True


def live_queries(variables: dict[str, str]) -> dict[str, str]:
    """Every dashboard query with `variables` (Grafana's, by value), and every alert
    rule's expression with `bool` comparisons (a rule that does not fire still reads
    its series)."""
    out = {}
    for where, expr in dashboard_queries().items():
        for variable, value in variables.items():
            expr = expr.replace(variable, value)
        out[where] = expr
    for where, expr in rule_queries().items():
        out[where] = comparisons_as_bool(expr)
    return out


_LAG = "kafka_consumergroup_lag comes from a Kafka exporter, not from Driftline's parts"
_KUBE = "the chart's cost rules price kube-state-metrics' pod requests; none runs in the tests"
# Queries that may return nothing for `make demo`'s model wherever it runs in the tests
# (the local demo, the real node), and why.
EMPTY_FOR_THE_DEMO_MODEL: dict[str, str] = {
    "Driftline / Model / Consumer lag by group (A)": _LAG,
    "Driftline / Overview / Consumer lag by group (A)": _LAG,
    "alert DriftlineConsumerLag": _LAG,
    "Driftline / Model / Estimated cost per hour, by part (A)": _KUBE,
    "Driftline / Model / Estimated cost per 30 days and budget (A)": _KUBE,
    "Driftline / Overview / Estimated cost per 30 days, by model (A)": _KUBE,
    "Driftline / Overview / Estimated cost per 30 days, by team (A)": _KUBE,
    "Driftline / Model / Exploration: accuracy on explored vs exploited traffic (B)":
        "training.exploration stays off: it answers some entities with the baseline on "
        "purpose, which the demo's accuracy verdicts would measure",
    "Driftline / Model / Exploration: accuracy on explored vs exploited traffic (C)":
        "as (B): exploration is off",
    "Driftline / Model / Predictions counted as other (A)":
        "only a categorical segment without `values` folds; SEA's features are numeric",
}  # fmt: skip
