"""`driftline up` brings real servers and the model's topics; `validate` names problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.common.connections import KafkaConnection
from driftline.local.cli import main
from driftline.local.runtime import RUNTIME_FILE, LocalRuntime

REPO = Path(__file__).resolve().parents[3]
SEA = REPO / "manifests" / "samples" / "sea-demo.yaml"

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_servers_and_topics_come_up_and_go_down(tmp_path: Path) -> None:
    runtime = LocalRuntime(SEA, state_dir=tmp_path / "run", parts=["inference"])
    endpoints = runtime.start_servers()
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(KafkaConnection(endpoints.kafka_bootstrap_servers).client_config())
        topics = admin.list_topics(timeout=10).topics
        for name in ("sea.predictions", "sea.outcomes", "sea.labeled", "sea.control"):
            assert name in topics
            assert len(topics[name].partitions) == 2  # spec.kafka.partitions
        import redis

        assert redis.Redis.from_url(endpoints.redis_url).ping()
    finally:
        runtime.stop()
    assert not (tmp_path / "run" / RUNTIME_FILE).exists()


def test_validate_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(SEA)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEA.read_text().replace("batchSize: 128", "batchSize: 0"))
    assert main(["validate", "-f", str(bad)]) == 2
    assert "spec.training.batchSize" in capsys.readouterr().err
