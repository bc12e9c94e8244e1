"""Signed versions (spec.model.signing) served from a real MLflow: checked at every load."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from driftline.api.artifacts import ALIAS_CHAMPION, MODEL_ARTIFACT, SIGNATURE_ARTIFACT
from driftline.api.routing import RoutingTable
from driftline.common.model_signature import sign_bytes
from driftline.common.redis_state import RoutingStore
from driftline.inference import metrics
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer
from driftline_testing.models import mlp_model, register_version
from driftline_testing.signing_keys import key_pair
from tests.integration.inference.harness import Running, wait_until

from .conftest import SAYS_0, SAYS_1

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

ROW = {"x1": 0.5, "x2": -1.25, "x3": 3.0}
NAME = Path(MODEL_ARTIFACT).name


def test_only_versions_signed_by_the_key_serve_and_the_last_good_one_keeps_serving(
    serve: Callable[..., Running],
    mlflow_server: MlflowServer,
    model_doc: dict[str, Any],
    contract: FeatureContract,
    redis_client: Any,
    tmp_path: Path,
) -> None:
    ours, theirs = key_pair(tmp_path, "ours"), key_pair(tmp_path, "theirs")
    doc = copy.deepcopy(model_doc)
    doc["spec"]["model"]["signing"] = ours.signing_spec(required=True)
    registry = doc["spec"]["model"]["registry"]["name"]

    def publish(bias: tuple[float, float], key: Path | None, aliases: tuple[str, ...] = ()) -> str:
        model = mlp_model(contract, output_bias=bias)
        files = {SIGNATURE_ARTIFACT: sign_bytes(model, NAME, key)} if key else {}
        return register_version(
            mlflow_server.tracking_uri, registry, model, aliases=aliases, files=files
        )

    good = publish(SAYS_0, ours.private_key, (ALIAS_CHAMPION,))
    server = serve(doc)
    assert server.predict(ROW).json()["model_version"] == good
    refusals = metrics.model_signature_refusals_total._value.get()

    store = RoutingStore(server.service.namespace, server.service.name)
    failures = server.service.pool.failures
    for revision, (key, reason) in enumerate(
        [(theirs.private_key, "signed with another key"), (None, "no signature")], start=1
    ):
        bad = publish(SAYS_1, key)
        store.write(redis_client, RoutingTable(stable=bad, revision=revision))
        wait_until(lambda bad=bad: bad in failures, 30, f"version {bad} to be refused")
        assert reason in failures[bad].error and NAME in failures[bad].error
        # The last good version keeps serving.
        assert server.predict(ROW).json()["model_version"] == good
        assert server.ready()
    assert metrics.model_signature_refusals_total._value.get() == refusals + 2

    # A version signed by the key loads, checked again at this load.
    signed = publish(SAYS_1, ours.private_key)
    store.write(redis_client, RoutingTable(stable=signed, revision=3))
    wait_until(
        lambda: server.predict(ROW).json()["model_version"] == signed, 30, "the signed version"
    )
