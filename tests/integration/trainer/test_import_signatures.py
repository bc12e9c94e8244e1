"""Signed imports and signed versions (spec.model.signing) against a real MLflow.

Keys are EC P-256 pairs made here and mounted as a part sees its Secrets (files under
`secrets_dir`); signatures are OpenSSF model signing bundles (`model_signing`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.api import artifacts
from driftline.common.model_signature import (
    SIGNING_KEY,
    SIGNING_VERIFY,
    SignatureCheck,
    sign,
)
from driftline.common.registry import RegistryError
from driftline.local.servers import MlflowServer
from driftline.trainer.__main__ import main as trainer_main
from driftline.trainer.versions import Artifacts, ModelVersions
from driftline_testing.models import model_document, write_model_file
from driftline_testing.signing_keys import KeyPair, key_pair

from .test_import import NUMERIC, data, numeric_onnx, write_sample

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_logging")]


def signed_setup(
    tmp_path: Path, tracking_uri: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, KeyPair, KeyPair]:
    """The model file, our key pair (verify and sign Secrets mounted) and another one."""
    ours, theirs = key_pair(tmp_path / "keys", "ours"), key_pair(tmp_path / "keys", "theirs")
    secrets = tmp_path / "secrets"
    (secrets / SIGNING_VERIFY).mkdir(parents=True)
    (secrets / SIGNING_VERIFY / "public.pem").write_text(ours.public_pem)
    (secrets / SIGNING_KEY).mkdir(parents=True)
    (secrets / SIGNING_KEY / "private.pem").write_bytes(ours.private_key.read_bytes())
    monkeypatch.setenv("DRIFTLINE_TRAINER_SECRETS_DIR", str(secrets))
    doc = model_document(name, tracking_uri=tracking_uri, numeric=NUMERIC)
    doc["spec"]["model"]["signing"] = {
        "publicKeySecretRef": {"name": "model-keys", "key": "public.pem"},
        "required": True,
        "signingKeySecretRef": {"name": "model-signer", "key": "private.pem"},
    }
    return write_model_file(tmp_path / f"{name}.yaml", doc), ours, theirs


def test_an_import_is_checked_against_its_signature_and_the_version_signed(
    tmp_path: Path,
    mlflow_server: MlflowServer,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_file, ours, theirs = signed_setup(
        tmp_path, mlflow_server.tracking_uri, unique, monkeypatch
    )
    frame, labels = data(300)
    model = numeric_onnx(tmp_path, frame, labels)
    sample = write_sample(tmp_path / "sample.csv", frame[list(NUMERIC)], labels)
    argv = ["--model-file", str(model_file), "import", str(model), "--sample", str(sample)]
    versions = ModelVersions(mlflow_server.tracking_uri, unique)
    signature = Path(f"{model}.sig")

    # Missing, by another key, or a file changed after signing: refused, nothing registered.
    assert trainer_main(argv) == 2
    err = capsys.readouterr().err
    assert f"{model.name}: no signature at {signature}" in err and "nothing was registered" in err
    sign(model, theirs.private_key, signature)
    assert trainer_main(argv) == 2
    assert "model4.onnx.sig does not verify: it was signed with another key" in (
        capsys.readouterr().err
    )
    sign(model, ours.private_key, signature)
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(model.read_bytes()[:-1] + bytes([model.read_bytes()[-1] ^ 1]))
    assert trainer_main([*argv[:3], str(tampered), "--signature", str(signature)]) == 2
    assert "tampered.onnx: the signature model4.onnx.sig does not verify: the file's digest" in (
        capsys.readouterr().err
    )
    assert versions.by_alias(artifacts.ALIAS_CHAMPION) is None

    # Signed by our key: imported, and the registered graph signed beside it.
    assert trainer_main(argv) == 0, capsys.readouterr().err
    info = versions.by_alias(artifacts.ALIAS_CHAMPION)
    assert info is not None
    registered = tmp_path / "registered" / "model.onnx"
    registered.parent.mkdir()
    registered.write_bytes(versions.download(info, artifacts.MODEL_ARTIFACT))
    stored = tmp_path / "registered" / "model.onnx.sig"
    stored.write_bytes(versions.model.read_artifact(info, artifacts.SIGNATURE_ARTIFACT))
    check = SignatureCheck(ours.public_pem.encode(), certificate=False, required=True)
    assert check.verify(registered, stored)


def test_every_version_published_is_signed_beside_its_model(
    tmp_path: Path, mlflow_server: MlflowServer, unique: str
) -> None:
    """Trained and imported versions are registered by `ModelVersions`: each is signed."""
    ours = key_pair(tmp_path, "ours")
    versions = ModelVersions(mlflow_server.tracking_uri, unique, ours.private_key)
    check = SignatureCheck(ours.public_pem.encode(), certificate=False, required=True)
    for n, model in enumerate([b"first graph", b"second graph"], start=1):
        version = versions.register(f"key-{n}", Artifacts(model, None, None), {}, [])
        info = versions.model.get_version(version)
        (tmp_path / "model.onnx").write_bytes(versions.download(info, artifacts.MODEL_ARTIFACT))
        (tmp_path / "model.onnx.sig").write_bytes(
            versions.model.read_artifact(info, artifacts.SIGNATURE_ARTIFACT)
        )
        assert check.verify(tmp_path / "model.onnx", tmp_path / "model.onnx.sig")
    unsigned = ModelVersions(mlflow_server.tracking_uri, f"{unique}-unsigned")
    version = unsigned.register("key", Artifacts(b"graph", None, None), {}, [])
    info = unsigned.model.get_version(version)
    with pytest.raises(RegistryError, match=r"model\.onnx\.sig"):
        unsigned.model.read_artifact(info, artifacts.SIGNATURE_ARTIFACT)
