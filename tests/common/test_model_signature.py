"""Model signatures with real EC P-256 keys made here: signed, checked, refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from driftline.api.spec import ModelSigningSpec
from driftline.common.model_signature import (
    SIGNING_KEY,
    SIGNING_VERIFY,
    SignatureCheck,
    SignatureError,
    sign,
    sign_bytes,
    signing_key,
)
from driftline_testing.signing_keys import KeyPair, certificate_chain, key_pair


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair]:
    directory = tmp_path_factory.mktemp("keys")
    return key_pair(directory, "ours"), key_pair(directory, "theirs")


def check(pair: KeyPair, required: bool = True) -> SignatureCheck:
    found = SignatureCheck.from_spec(
        ModelSigningSpec.model_validate(pair.signing_spec(required)), Path("/nonexistent")
    )
    assert found is not None
    return found


def signed_model(tmp_path: Path, pair: KeyPair) -> tuple[Path, Path]:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07" + bytes(range(256)) * 64)
    signature = tmp_path / "model.onnx.sig"
    sign(model, pair.private_key, signature)
    return model, signature


def test_a_signed_file_verifies_and_keeps_verifying_under_another_name(
    tmp_path: Path, keys: tuple[KeyPair, KeyPair]
) -> None:
    model, signature = signed_model(tmp_path, keys[0])
    assert check(keys[0]).verify(model, signature) is True
    renamed = tmp_path / "downloaded.onnx"
    renamed.write_bytes(model.read_bytes())
    assert check(keys[0]).verify(renamed, signature) is True
    # The signature of bytes in memory is the file's.
    in_memory = tmp_path / "in-memory.sig"
    in_memory.write_bytes(sign_bytes(model.read_bytes(), "model.onnx", keys[0].private_key))
    assert check(keys[0]).verify(model, in_memory) is True


def test_a_directory_is_signed_as_a_whole(tmp_path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.bin").write_bytes(b"a" * 100)
    (model / "b.bin").write_bytes(b"b" * 100)
    signature = tmp_path / "model.sig"
    sign(model, keys[0].private_key, signature)
    assert check(keys[0]).verify(model, signature)
    (model / "b.bin").write_bytes(b"c" * 100)
    with pytest.raises(SignatureError, match="does not verify"):
        check(keys[0]).verify(model, signature)


def test_a_tampered_file_is_refused(tmp_path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    model, signature = signed_model(tmp_path, keys[0])
    data = bytearray(model.read_bytes())
    data[100] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=r"model\.onnx: .*the file was changed"):
        check(keys[0]).verify(model, signature)


def test_another_key_is_refused(tmp_path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    model, signature = signed_model(tmp_path, keys[1])
    with pytest.raises(SignatureError, match="signed with another key"):
        check(keys[0]).verify(model, signature)


def test_an_unreadable_signature_is_refused(tmp_path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    model, signature = signed_model(tmp_path, keys[0])
    signature.write_text("not a bundle")
    with pytest.raises(SignatureError, match=r"model\.onnx\.sig does not verify"):
        check(keys[0]).verify(model, signature)


def test_a_missing_signature_is_refused_only_when_required(
    tmp_path: Path, keys: tuple[KeyPair, KeyPair]
) -> None:
    model, _ = signed_model(tmp_path, keys[0])
    absent = tmp_path / "absent.sig"
    with pytest.raises(SignatureError, match=r"no signature at .*required is true"):
        check(keys[0], required=True).verify(model, absent)
    with pytest.raises(SignatureError, match="no signature"):
        check(keys[0], required=True).verify(model, None)
    assert check(keys[0], required=False).verify(model, absent) is False


def test_keys_come_from_the_mounted_secrets(tmp_path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    spec = ModelSigningSpec.model_validate(
        {
            "publicKeySecretRef": {"name": "model-keys", "key": "public.pem"},
            "signingKeySecretRef": {"name": "model-signer", "key": "private.pem"},
            "required": True,
        }
    )
    with pytest.raises(
        SignatureError, match=r"'public\.pem' of Secret 'model-keys' is not mounted"
    ):
        SignatureCheck.from_spec(spec, tmp_path)
    (tmp_path / SIGNING_VERIFY).mkdir()
    (tmp_path / SIGNING_VERIFY / "public.pem").write_text(keys[0].public_pem)
    (tmp_path / SIGNING_KEY).mkdir()
    (tmp_path / SIGNING_KEY / "private.pem").write_bytes(keys[0].private_key.read_bytes())
    found = SignatureCheck.from_spec(spec, tmp_path)
    key = signing_key(spec, tmp_path)
    assert found is not None and key is not None
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model")
    sign(model, key, tmp_path / "model.onnx.sig")
    assert found.verify(model, tmp_path / "model.onnx.sig")
    assert SignatureCheck.from_spec(None, tmp_path) is None
    assert signing_key(None, tmp_path) is None


def test_the_spec_names_one_key_and_requires_one() -> None:
    with pytest.raises(ValueError, match="publicKey or publicKeySecretRef, not both"):
        ModelSigningSpec.model_validate(
            {"publicKey": "PEM", "publicKeySecretRef": {"name": "k", "key": "p.pem"}}
        )
    with pytest.raises(ValueError, match="required needs publicKey"):
        ModelSigningSpec.model_validate({"required": True})


def test_inference_imports_model_signing_only_when_a_spec_names_a_key() -> None:
    code = (
        "import sys, driftline.inference.service, driftline.inference.loader; "
        "print('model_signing' in sys.modules, 'sigstore' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["False", "False"]


def test_a_certificate_chain_verifies_what_its_signing_certificate_signed(
    tmp_path: Path,
) -> None:
    from model_signing import signing

    key, leaf, ca, ca_pem = certificate_chain(tmp_path / "ours")
    _, _, _, other_ca = certificate_chain(tmp_path / "theirs")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model bytes" * 100)
    signature = tmp_path / "model.onnx.sig"
    config = signing.Config().use_certificate_signer(
        private_key=key, signing_certificate=leaf, certificate_chain=[ca]
    )
    config.sign(model, signature)
    spec = {"publicKey": ca_pem, "keyType": "certificate", "required": True}
    ours = SignatureCheck.from_spec(ModelSigningSpec.model_validate(spec), tmp_path)
    assert ours is not None and ours.verify(model, signature)
    spec["publicKey"] = other_ca
    theirs = SignatureCheck.from_spec(ModelSigningSpec.model_validate(spec), tmp_path)
    assert theirs is not None
    with pytest.raises(SignatureError, match="does not verify"):
        theirs.verify(model, signature)
