"""Fetching versions from MLflow: over REST without importing mlflow, or with its client."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.inference.contract import FeatureContract
from driftline.inference.errors import ModelLoadError
from driftline.inference.loader import Registry
from driftline.local.servers import MlflowServer
from driftline_testing.models import mlp_model, register_version

pytestmark = pytest.mark.integration


def test_an_http_registry_is_read_without_importing_mlflow(
    mlflow_server: MlflowServer,
    model_doc: dict[str, Any],
    publish: Callable[..., str],
    tmp_path: Path,
) -> None:
    version = publish(aliases=[ALIAS_CHAMPION])
    name = model_doc["spec"]["model"]["registry"]["name"]
    script = textwrap.dedent(
        f"""
        import json, sys
        from driftline.inference.loader import Registry
        registry = Registry({mlflow_server.tracking_uri!r}, {name!r}, {str(tmp_path)!r})
        version = registry.version_for_alias("champion")
        artifact = registry.fetch(version)
        print(json.dumps({{
            "version": version,
            "missing": registry.version_for_alias("no-such-alias"),
            "sha256": artifact.sha256,
            "bytes": artifact.path.read_bytes().hex(),
            "mlflow_imported": "mlflow" in sys.modules,
        }}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["version"] == version and result["missing"] is None
    assert hashlib.sha256(bytes.fromhex(result["bytes"])).hexdigest() == result["sha256"]
    assert result["mlflow_imported"] is False


def test_other_tracking_uris_go_through_the_mlflow_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, contract: FeatureContract
) -> None:
    monkeypatch.chdir(tmp_path)  # the SQLite store keeps its artifacts under ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = mlp_model(contract)
    version = register_version(uri, "local-model", model, aliases=[ALIAS_CHAMPION])
    registry = Registry(uri, "local-model", str(tmp_path / "models"))
    assert not registry.rest
    assert registry.version_for_alias(ALIAS_CHAMPION) == version
    assert registry.version_for_alias("no-such-alias") is None
    assert registry.fetch(version).path.read_bytes() == model
    with pytest.raises(ModelLoadError, match="cannot read version"):
        registry.fetch("999")
