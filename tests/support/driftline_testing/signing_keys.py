"""EC P-256 key pairs made by a test, for model signatures (`spec.model.signing`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class KeyPair:
    private_key: Path  # PEM (PKCS#8, unencrypted), as a mounted Secret holds it
    public_pem: str

    def signing_spec(self, required: bool = True) -> dict[str, object]:
        """`spec.model.signing` with this public key inline."""
        return {"publicKey": self.public_pem, "required": required}


def key_pair(directory: Path, name: str = "signer") -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private, public.decode())
