"""Pure pieces of the I/O layer: Secret facts, names, settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.api.parts import PartName
from driftline.common.connections import KafkaConnection
from driftline.operator.builders.context import child_name
from driftline.operator.builders.nodepool import node_pool_name
from driftline.operator.cluster import (
    MissingDependencyError,
    kafka_auth_from_secret,
    kafka_security,
)
from driftline.operator.kinds import CHILD_KINDS, kind_of
from driftline.operator.settings import LIGHT_PARTS, OperatorSettings


def test_kafka_auth_follows_the_connection_rules() -> None:
    sasl_tls = kafka_auth_from_secret("s", {"username": "u", "password": "p", "ca.crt": "PEM"})
    assert (sasl_tls.sasl, sasl_tls.tls, sasl_tls.has_ca) == ("scram_sha512", True, True)
    plain = kafka_auth_from_secret("s", {"username": "u", "password": "p", "mechanism": "PLAIN"})
    assert (plain.sasl, plain.tls) == ("plaintext", False)
    tls_only = kafka_auth_from_secret("s", {"ca.crt": "PEM"})
    assert (tls_only.sasl, tls_only.tls) == (None, True)
    with pytest.raises(MissingDependencyError, match="mechanism"):
        kafka_auth_from_secret("s", {"username": "u", "password": "p", "mechanism": "GSSAPI"})


def test_child_names_are_dns_1035_labels() -> None:
    assert child_name("churn", "inference") == "churn-inference"
    assert child_name("7eleven", "joiner") == "dm-7eleven-joiner"
    long = "m" * 63
    name = child_name(long, "inference")
    assert len(name) == 63 and name.endswith("-inference")
    assert name == child_name(long, "inference")  # stable
    assert child_name(long, "drift") != child_name("m" * 62, "drift")


def test_node_pool_names_fit_a_label_value() -> None:
    from driftline.operator.builders import BuildContext

    from .conftest import sample

    ctx = BuildContext(sample("minimal"))
    assert node_pool_name(ctx) == "driftline-default-churn"


def test_kind_paths() -> None:
    deploy = kind_of({"apiVersion": "apps/v1", "kind": "Deployment"})
    assert deploy.path("x", "ml") == "/apis/apps/v1/namespaces/ml/deployments/x"
    config = kind_of({"apiVersion": "v1", "kind": "ConfigMap"})
    assert config.collection("ml") == "/api/v1/namespaces/ml/configmaps"
    pool = next(k for k in CHILD_KINDS if k.kind == "NodePool")
    assert pool.path("p", "ml") == "/apis/karpenter.sh/v1/nodepools/p"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_OPERATOR_NAMESPACES", "ml, fraud")
    monkeypatch.setenv("DRIFTLINE_OPERATOR_IMAGE_TAG", "1.2.3")
    monkeypatch.setenv("DRIFTLINE_OPERATOR_KARPENTER_NODE_CLASS__NAME", "gpu")
    settings = OperatorSettings()
    assert settings.namespaces == ["ml", "fraud"]
    assert settings.image_for("inference", gpu=True) == "driftline/inference-gpu:1.2.3"
    assert settings.image_for("inference") == "driftline/inference:1.2.3"
    assert settings.image_for("trainer", gpu=True) == "driftline/services:1.2.3"
    assert settings.karpenter_node_class.name == "gpu"


@pytest.mark.parametrize(
    ("part", "gpu", "image"),
    [
        ("inference", False, "registry.example/inference:2.0"),
        ("inference", True, "registry.example/inference-gpu:2.0"),
        # The joiner needs the core dependencies only: the light image, also beside
        # inference on GPUs.
        ("joiner", False, "registry.example/inference:2.0"),
        ("joiner", True, "registry.example/inference:2.0"),
        ("trainer", False, "registry.example/services:2.0"),
        ("trainer", True, "registry.example/services:2.0"),
        # The drift monitor on its default scipy backend needs no torch either.
        ("drift", False, "registry.example/inference:2.0"),
        ("drift", True, "registry.example/inference:2.0"),
        ("rollout", False, "registry.example/services:2.0"),
    ],
)
def test_each_part_runs_from_the_image_that_holds_its_libraries(
    part: PartName, gpu: bool, image: str
) -> None:
    assert registry_settings().image_for(part, gpu=gpu) == image


def registry_settings() -> OperatorSettings:
    return OperatorSettings(
        image="registry.example/services",
        inference_image="registry.example/inference",
        gpu_image="registry.example/inference-gpu",
        image_tag="2.0",
    )


@pytest.mark.parametrize(
    ("backend", "image"),
    [("scipy", "registry.example/inference:2.0"), ("alibi", "registry.example/services:2.0")],
)
def test_the_drift_monitors_image_follows_its_backend(backend: str, image: str) -> None:
    """alibi-detect needs torch (the services image); the scipy backend fits the light
    image. The backend matters to the drift monitor only."""
    settings = registry_settings()
    assert settings.image_for("drift", drift_backend=backend) == image  # type: ignore[arg-type]
    assert settings.image_for("trainer", drift_backend="scipy") == "registry.example/services:2.0"
    assert settings.image_for("joiner", drift_backend="alibi") == "registry.example/inference:2.0"


@pytest.mark.parametrize("backend", ["scipy", "alibi"])
def test_the_drift_pod_runs_the_image_of_its_models_backend(backend: str) -> None:
    from driftline.api import parse_dynamic_model
    from driftline.operator.builders import BuildContext, build_children
    from driftline_testing.models import model_document

    document = model_document("m")
    document["spec"]["drift"] = {"backend": backend}
    ctx = BuildContext(parse_dynamic_model(document), registry_settings())
    images = {
        m["metadata"]["name"]: m["spec"]["template"]["spec"]["containers"][0]["image"]
        for m in build_children(ctx).namespaced
        if m["kind"] == "Deployment"
    }
    light = "registry.example/inference:2.0"
    assert images["m-drift"] == (light if backend == "scipy" else "registry.example/services:2.0")
    assert images["m-inference"] == images["m-joiner"] == light


def test_the_light_image_serves_the_parts_whose_extras_need_no_torch() -> None:
    """The joiner, inference and the scipy drift monitor run from the inference image,
    which installs `driftline[inference,joiner,drift,cpu]`: no extra may bring torch
    in; alibi-detect (with torch) is `drift-alibi`'s, the services image's."""
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for part in (*LIGHT_PARTS, "drift"):
        assert not [d for d in extras[part] if d.startswith(("torch", "alibi", "driftline["))]
    assert "scipy>=1.11" in extras["drift"]
    assert [d for d in extras["drift-alibi"] if d.startswith("alibi-detect[torch]")]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"username": "u", "password": "p"},
        {"username": "u", "password": "p", "mechanism": "PLAIN", "ca.crt": "PEM"},
        {"ca.crt": "PEM"},
        {"username": "u", "password": "p", "security.protocol": "SASL_SSL"},
    ],
)
def test_kafka_security_matches_the_parts_reading_of_the_same_secret(
    data: dict[str, str], tmp_path: Path
) -> None:
    """The operator reads the Secret through the API; the parts read it as mounted files."""
    for key, value in data.items():
        (tmp_path / key).write_text(value)
    parts = KafkaConnection.from_secrets("k:9092", tmp_path).security
    ours = kafka_security("s", data)
    if "ssl.ca.location" in parts:
        assert ours.pop("ssl.ca.pem") == "PEM"
        parts.pop("ssl.ca.location")
    assert ours == parts
