"""Model signatures (OpenSSF model signing, with keys): one home for signing and checking.

`spec.model.signing` names the PEM that signatures are checked against (inline, or a
Secret mounted under `secrets_dir/SIGNING_VERIFY`) and, optionally, an EC private key
(a Secret mounted under `secrets_dir/SIGNING_KEY`) that signs every version Driftline
publishes. A signature is a Sigstore bundle written by `model_signing` with a key: no
transparency log, no network. It names the file's digest, not its name, so a model
checked after a download under another name still matches.

`import model_signing` takes about 2 s (it imports sigstore's whole client), so it is
imported on first use only: a part whose spec has no `signing` never pays for it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from driftline.api.spec import ModelSigningSpec, SecretKeyRef

SIGNING_VERIFY: Final = "signing-verify"
"""Where under `secrets_dir` the Secret of `publicKeySecretRef` is mounted."""
SIGNING_KEY: Final = "signing-key"
"""Where under `secrets_dir` the Secret of `signingKeySecretRef` is mounted."""


class SignatureError(RuntimeError):
    """A model's signature is missing, unreadable or does not match; the message says
    which file and why."""


def _secret_file(secrets_dir: Path, mount: str, ref: SecretKeyRef) -> Path:
    path = secrets_dir / mount / ref.key
    if not path.is_file():
        raise SignatureError(f"the key {ref.key!r} of Secret {ref.name!r} is not mounted at {path}")
    return path


@dataclass(frozen=True)
class SignatureCheck:
    """What a model's signature is checked against; `required`: a missing one is refused."""

    pem: bytes
    certificate: bool
    required: bool

    @classmethod
    def from_spec(
        cls, signing: ModelSigningSpec | None, secrets_dir: Path
    ) -> SignatureCheck | None:
        """None when the spec names no key to check signatures with."""
        if signing is None:
            return None
        if signing.public_key is not None:
            pem = signing.public_key.encode()
        elif signing.public_key_secret_ref is not None:
            ref = signing.public_key_secret_ref
            pem = _secret_file(secrets_dir, SIGNING_VERIFY, ref).read_bytes()
        else:
            return None
        return cls(pem, signing.key_type == "certificate", signing.required)

    def verify(self, model: Path, signature: Path | None) -> bool:
        """True when `model` matches its `signature`; False when there is none and none
        is required. Raises `SignatureError` otherwise."""
        if signature is None or not signature.is_file():
            if self.required:
                raise SignatureError(
                    f"{model.name}: no signature"
                    + (f" at {signature}" if signature is not None else "")
                    + ", and spec.model.signing.required is true"
                )
            return False
        from model_signing import verifying

        with tempfile.TemporaryDirectory(prefix="driftline-verify-") as tmp:
            pem = Path(tmp) / "verify.pem"
            pem.write_bytes(self.pem)
            try:
                config = verifying.Config()  # type: ignore[no-untyped-call]
                if self.certificate:
                    config = config.use_certificate_verifier(certificate_chain=[pem])
                else:
                    config = config.use_elliptic_key_verifier(public_key=pem)
                config.verify(model, signature)
            except Exception as exc:  # model_signing raises ValueError, JSON and key errors
                raise SignatureError(
                    f"{model.name}: the signature {signature.name} does not verify: {_reason(exc)}"
                ) from exc
        return True


def _reason(exc: Exception) -> str:
    text = str(exc).split("\n", 1)[0]
    if "Hash mismatch" in text or "Signature mismatch" in text:
        return "the file's digest differs from the signed one (the file was changed)"
    if "Key mismatch" in text:
        return "it was signed with another key"
    return f"{type(exc).__name__}: {text[:300]}"


def signing_key(signing: ModelSigningSpec | None, secrets_dir: Path) -> Path | None:
    """The mounted private key that signs published versions; None when none is set."""
    if signing is None or signing.signing_key_secret_ref is None:
        return None
    return _secret_file(secrets_dir, SIGNING_KEY, signing.signing_key_secret_ref)


def sign(model: Path, private_key: Path, signature: Path) -> None:
    """Write the signature of `model` (a file or a directory) to `signature`."""
    from model_signing import signing

    try:
        config = signing.Config()  # type: ignore[no-untyped-call]
        config.use_elliptic_key_signer(private_key=private_key).sign(model, signature)
    except Exception as exc:  # an unreadable or unsupported key, said plainly
        raise SignatureError(f"cannot sign {model.name} with {private_key}: {exc}") from exc


def sign_bytes(model: bytes, name: str, private_key: Path) -> bytes:
    """The signature of a model held in memory, as the file `name` would be signed."""
    with tempfile.TemporaryDirectory(prefix="driftline-sign-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(model)
        out = Path(tmp) / f"{name}.sig"
        sign(path, private_key, out)
        return out.read_bytes()
