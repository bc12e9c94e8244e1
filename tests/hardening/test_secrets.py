"""Secrets, unit level: read from the Secret's files, and hidden wherever settings show.

Builds on `tests/operator/test_pods.py` (pods mount credentials as files, never as
plain env values) and `tests/operator/test_install.py` (the operator may only `get`
Secrets). Here every part's settings class reads the same credential files, and
neither `repr`, `str` nor the JSON dump of the settings, or of the connections made
from them, holds a credential; the operator's manifests only reference Secrets.
The real processes, their logs and metrics: `tests/integration/hardening/test_secrets.py`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from driftline.drift.settings import DriftSettings
from driftline.inference.settings import InferenceSettings
from driftline.joiner.settings import JoinerSettings
from driftline.operator.builders import build_children
from driftline.operator.builders.context import KafkaAuth
from driftline.operator.cluster import kafka_security
from driftline.rollout.settings import RolloutSettings
from driftline.trainer.settings import TrainerSettings
from tests.operator.conftest import scenarios

REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "kafka/username": "kafka-user-7f3a",
    "kafka/password": "kafka-pass-Zq91xW",
    "kafka/mechanism": "SCRAM-SHA-512",
    "redis/username": "redis-user-b2c4",
    "redis/password": "redis-pass-Lm47Ty",
}
CREDENTIALS = [v for k, v in SECRETS.items() if k.endswith(("username", "password"))]
PARTS = {
    "INFERENCE": InferenceSettings,
    "JOINER": JoinerSettings,
    "TRAINER": TrainerSettings,
    "DRIFT": DriftSettings,
    "ROLLOUT": RolloutSettings,
}


def write_secrets(folder: Path) -> Path:
    for name, value in SECRETS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    (folder / "kafka" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return folder


def leaks(text: str) -> list[str]:
    return [secret for secret in CREDENTIALS if secret in text]


@pytest.mark.parametrize("part", sorted(PARTS))
def test_settings_read_the_secret_files_and_never_show_them(
    part: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = write_secrets(tmp_path / "secrets")
    monkeypatch.setenv(f"DRIFTLINE_{part}_MODEL_FILE", str(REPO / "manifests/samples/minimal.yaml"))
    monkeypatch.setenv(f"DRIFTLINE_{part}_SECRETS_DIR", str(secrets))
    settings = PARTS[part]()
    connections = settings.connections
    # The credentials were read: the clients get them.
    config = connections.kafka.client_config()
    assert config["sasl.password"] == SECRETS["kafka/password"]
    assert config["security.protocol"] == "SASL_SSL"
    assert connections.redis.password == SECRETS["redis/password"]
    # ... and nothing that shows the settings shows them.
    shown = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(connections),
        str(connections),
        repr(connections.kafka),
        repr(connections.redis),
        repr(connections.redis.client()),
    ]
    assert not leaks("\n".join(shown)), shown


def test_the_operator_passes_credentials_by_reference_only(tmp_path: Path) -> None:
    data = {k.split("/")[1]: v for k, v in SECRETS.items() if k.startswith("kafka/")}
    security = kafka_security("kafka-sasl", data)
    assert security["sasl.password"] == SECRETS["kafka/password"]  # for its own clients
    # What the builders get about the Secret holds no values, only facts.
    fields = {f.name for f in dataclasses.fields(KafkaAuth)}
    assert fields == {"secret", "sasl", "tls", "has_ca"}
    for name, ctx in scenarios().items():
        for manifest in build_children(ctx).all():
            assert manifest["kind"] != "Secret", name  # never copies one
            for env in _env_vars(manifest):
                secretish = re.search(r"PASSWORD|TOKEN|SECRET|CREDENTIAL", env["name"], re.I)
                if secretish and not env["name"].endswith("_DIR"):  # a path, not a value
                    assert "value" not in env, (name, env)


def _env_vars(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                found += [e for e in value if isinstance(e, dict)]
            else:
                found += _env_vars(value)
    elif isinstance(node, list):
        for value in node:
            found += _env_vars(value)
    return found
