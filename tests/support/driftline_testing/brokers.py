""" "A Kafka broker" for a test or a benchmark: Apache Kafka when the rig has it, else Tansu.

`DRIFTLINE_KAFKA=tansu|apache|auto` overrides the choice. Asking for `apache`
when the rig is not built is an error, never a silent fallback.
"""

from __future__ import annotations

import os
from pathlib import Path

from driftline.local.servers import InfraError, KafkaBroker, TansuBroker
from driftline_testing import apache_kafka


def start_kafka(prefer: str | None = None, log_dir: str | Path | None = None) -> KafkaBroker:
    """Start a broker: `prefer` (or $DRIFTLINE_KAFKA) is `apache`, `tansu` or `auto`."""
    choice = (prefer or os.environ.get("DRIFTLINE_KAFKA", "auto")).lower()
    if choice not in {"auto", "apache", "tansu"}:
        raise InfraError(f"DRIFTLINE_KAFKA={choice!r}: use apache, tansu or auto")
    log_path = Path(log_dir) / "kafka.log" if log_dir else None
    if choice in {"auto", "apache"}:
        if apache_kafka.available():
            return apache_kafka.ApacheKafkaBroker(log_path=log_path).start()
        if choice == "apache":
            raise InfraError("Apache Kafka is not built: run `make rig` first")
    return TansuBroker(log_path=log_path).start()
