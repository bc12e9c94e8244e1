"""A Prometheus Operator ServiceMonitor for a model's parts (when its CRDs are installed)."""

from __future__ import annotations

from typing import Any

from driftline.operator.builders.context import BuildContext, child_name, metadata, model_labels

SCRAPE_INTERVAL = "15s"


def service_monitor(ctx: BuildContext) -> dict[str, Any] | None:
    if not ctx.capabilities.prometheus_operator:
        return None
    labels = model_labels(ctx)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(ctx, child_name(ctx.name, "parts"), labels),
        "spec": {
            # Every part's Service has a port named `metrics` serving /metrics.
            "selector": {
                "matchLabels": {
                    "driftline.io/model": labels["driftline.io/model"],
                    "app.kubernetes.io/part-of": labels["app.kubernetes.io/part-of"],
                }
            },
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": SCRAPE_INTERVAL}],
        },
    }
