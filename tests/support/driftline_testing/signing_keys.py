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


def certificate_chain(directory: Path) -> tuple[Path, Path, Path, str]:
    """A throwaway CA and a signing certificate it issued (EC P-256): the signer's key,
    its certificate, the CA's certificate (paths), and the CA's PEM (what verifies)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Driftline test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pair = key_pair(directory, "leaf")
    leaf_key = serialization.load_pem_private_key(pair.private_key.read_bytes(), None)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "model signer")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_path = directory / "leaf.crt"
    leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca_pem)
    return pair.private_key, leaf_path, ca_path, ca_pem.decode()
