"""`python -m driftline.operator`: run the operator (in its Deployment, or against a kubeconfig).

Settings come from `DRIFTLINE_OPERATOR_...` (see `settings.py`). One replica runs
at a time (the Deployment uses the Recreate strategy), so kopf runs standalone,
without peering objects.
"""

from __future__ import annotations

import logging
import sys

import kopf

from driftline.common.logs import configure_logging
from driftline.operator.handlers import register
from driftline.operator.settings import OperatorSettings

LIVENESS = "http://0.0.0.0:8081/healthz"


def main() -> int:
    settings = OperatorSettings()
    configure_logging("operator", logging.getLevelName(logging.INFO))
    registry = register(kopf.OperatorRegistry(), settings)
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=LIVENESS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
