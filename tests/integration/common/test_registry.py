"""The registry adapter against a real MLflow server: aliases, versions, artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.api.artifacts import (
    ALIAS_BASELINE,
    ALIAS_CANDIDATE,
    ALIAS_CHAMPION,
    MODEL_ARTIFACT,
    REFERENCE_ARTIFACT,
    TAG_SHA256,
)
from driftline.common.registry import (
    ArtifactMismatchError,
    ModelVersion,
    RegisteredModel,
    RegistryError,
    sha256,
)
from driftline.local.servers import MlflowServer

pytestmark = pytest.mark.integration

MODEL = b"not really onnx, but bytes all the same"
REFERENCE = b"a reference sample"


def publish(model: RegisteredModel, data: bytes = MODEL, **tags: str) -> ModelVersion:
    """A version the way the trainer registers one: a run with its files, then the version."""
    experiment = model.experiment_id(f"driftline-{model.name}")
    assert experiment is not None
    all_tags = {TAG_SHA256: sha256(data), **tags}
    run = model.log_run(
        experiment,
        f"{model.name}-run",
        tags=all_tags,
        files={MODEL_ARTIFACT: data, REFERENCE_ARTIFACT: REFERENCE},
        metrics={"accuracy": 0.9},
    )
    return model.create_version(run.artifact_uri, run.run_id, all_tags)


@pytest.fixture
def model(mlflow_server: MlflowServer, unique: str) -> RegisteredModel:
    return RegisteredModel(mlflow_server.tracking_uri, unique)


def test_versions_are_registered_read_and_found_by_tag(model: RegisteredModel) -> None:
    first = publish(model, **{"driftline.publish_key": "a"})
    second = publish(model, **{"driftline.publish_key": "b"})
    assert int(second.version) == int(first.version) + 1
    read = model.get_version(first.version)
    assert read.run_id == first.run_id and read.tags[TAG_SHA256] == sha256(MODEL)
    assert [v.version for v in model.find_versions({"driftline.publish_key": "b"})] == [
        second.version
    ]
    assert model.find_versions({"driftline.publish_key": "none"}) == []
    with pytest.raises(RegistryError, match="cannot read version 999"):
        model.get_version("999")


def test_aliases_are_set_read_and_deleted(model: RegisteredModel) -> None:
    assert model.aliases() == {}  # no model yet
    assert model.version_for_alias(ALIAS_CHAMPION) is None
    one, two = publish(model), publish(model)
    model.set_alias(ALIAS_CHAMPION, one.version)
    model.set_alias(ALIAS_BASELINE, one.version)
    model.set_alias(ALIAS_CANDIDATE, two.version)
    assert model.aliases() == {
        ALIAS_CHAMPION: one.version,
        ALIAS_BASELINE: one.version,
        ALIAS_CANDIDATE: two.version,
    }
    found = model.version_for_alias(ALIAS_CANDIDATE)
    assert found is not None and found.version == two.version and found.run_id == two.run_id
    assert model.version_for_alias("no-such-alias") is None

    model.delete_alias(ALIAS_CANDIDATE, if_version=one.version)  # names another: kept
    assert model.aliases()[ALIAS_CANDIDATE] == two.version
    model.delete_alias(ALIAS_CANDIDATE, if_version=two.version)
    model.delete_alias(ALIAS_BASELINE)
    assert model.aliases() == {ALIAS_CHAMPION: one.version}


def test_artifacts_are_downloaded_by_name_and_the_model_is_verified(
    model: RegisteredModel, tmp_path: Path
) -> None:
    good = publish(model)
    assert model.read_artifact(good, MODEL_ARTIFACT) == MODEL
    assert model.read_artifact(good, REFERENCE_ARTIFACT) == REFERENCE
    local = model.download(good, REFERENCE_ARTIFACT, tmp_path)
    assert local.parent == tmp_path and local.read_bytes() == REFERENCE

    tampered = publish(model, b"other bytes", **{TAG_SHA256: "0" * 64})
    with pytest.raises(ArtifactMismatchError, match="sha256"):
        model.read_artifact(tampered, MODEL_ARTIFACT)
    assert model.read_artifact(tampered, MODEL_ARTIFACT, verify=False) == b"other bytes"
    untagged = ModelVersion(good.version, good.run_id, good.source, tags={})
    with pytest.raises(ArtifactMismatchError, match=r"no driftline\.sha256 tag"):
        model.read_artifact(untagged, MODEL_ARTIFACT)
    with pytest.raises(RegistryError, match="cannot download"):
        model.read_artifact(good, "model/absent.onnx")


def test_rest_reads_answer_as_the_client_does(
    mlflow_server: MlflowServer, model: RegisteredModel, tmp_path: Path
) -> None:
    rest = RegisteredModel(mlflow_server.tracking_uri, model.name, rest_reads=True)
    assert rest.rest and not model.rest
    assert rest.version_for_alias(ALIAS_CHAMPION) is None  # no model yet
    version = publish(model)
    model.set_alias(ALIAS_CHAMPION, version.version)
    by_rest = rest.version_for_alias(ALIAS_CHAMPION)
    assert by_rest == model.version_for_alias(ALIAS_CHAMPION)
    assert by_rest is not None and rest.get_version(version.version) == by_rest
    assert rest.download(by_rest, MODEL_ARTIFACT, tmp_path).read_bytes() == MODEL
    assert rest.read_artifact(by_rest, REFERENCE_ARTIFACT) == REFERENCE


def test_an_unreachable_registry_raises_registry_error() -> None:
    rest = RegisteredModel("http://127.0.0.1:9", "absent", rest_reads=True, timeout_seconds=2)
    with pytest.raises(RegistryError, match="cannot reach the model registry"):
        rest.version_for_alias(ALIAS_CHAMPION)


def test_runs_without_files_and_experiments_not_made(model: RegisteredModel) -> None:
    assert model.experiment_id(f"driftline-{model.name}", create=False) is None
    experiment = model.experiment_id(f"driftline-{model.name}")
    assert experiment is not None
    assert model.experiment_id(f"driftline-{model.name}", create=False) == experiment
    run = model.log_run(experiment, "rejected", tags={"driftline.published": "false"})
    assert model.run_experiment(run.run_id) == experiment
