"""`python -m driftline.operator`: run the operator (in its Deployment, or against a kubeconfig).

Settings come from `DRIFTLINE_OPERATOR_...` (see `settings.py`). One replica runs
at a time (the Deployment uses the Recreate strategy), so kopf runs standalone,
without peering objects. kopf stops on SIGTERM: handlers in flight finish, then it
exits.
"""

from __future__ import annotations

import sys

import kopf

from driftline.common.logs import configure_logging
from driftline.common.metrics import serve_metrics
from driftline.operator.builders.install import LIVENESS_PORT
from driftline.operator.handlers import register
from driftline.operator.settings import OperatorSettings


def main() -> int:
    settings = OperatorSettings()
    configure_logging("operator", settings.log_level)
    serve_metrics(settings.operator_metrics_port)  # ours and the rollout driver's
    registry = register(kopf.OperatorRegistry(), settings)
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{LIVENESS_PORT}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
