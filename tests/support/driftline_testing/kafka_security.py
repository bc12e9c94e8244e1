"""Authenticated listeners for the loopback Apache Kafka: SASL in clear and over TLS.

Production brokers ask clients for credentials, and Driftline's parts read theirs
from Secret files (`driftline.common.connections`). To prove that path against a
real broker, `ApacheKafkaBroker(users=...)` opens three listeners beside its
PLAINTEXT one (which stays for the controller link and for admin work):

- `SASL_PLAINTEXT`, mechanisms PLAIN and SCRAM-SHA-512;
- `SASL_SSL`, the same mechanisms over TLS, with a server certificate signed by a
  throwaway CA made at start (`TlsFiles.ca` is what a client trusts);
- `SSL`, TLS without SASL (a Secret holding only `ca.crt`).

PLAIN users live in the listener's JAAS configuration; SCRAM users are written
into the KRaft metadata when the storage is formatted (`kafka-storage format
--add-scram`), so both mechanisms know the same users from the first request.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from driftline.local.servers.process import InfraError

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-512")
SECURE_LISTENERS = ("SASL_PLAINTEXT", "SASL_SSL", "SSL")
"""Each listener is named after its security protocol."""

# Names and passwords go unquoted into `--add-scram` and quoted into JAAS; this set
# needs no escaping in either (and is wide enough for generated credentials).
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9._~+-]+")


@dataclass(frozen=True)
class KafkaUser:
    """One account of the test broker (its password never shows in `repr`)."""

    name: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("password", self.password)):
            if not _PLAIN_TOKEN.fullmatch(value):
                raise InfraError(f"a Kafka user's {what} may hold only [A-Za-z0-9._~+-]")


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and the broker's key pair, all PEM."""

    ca: Path  # the CA certificate: what clients trust (librdkafka `ssl.ca.location`)
    keystore: Path  # the broker's private key (PKCS#8) and certificate chain


def make_tls_files(
    folder: Path, hosts: Iterable[str] = ("127.0.0.1", "localhost"), days: int = 7
) -> TlsFiles:
    """A CA and a server certificate for `hosts` (IP addresses and DNS names).

    librdkafka checks the broker's name against the certificate by default
    (`ssl.endpoint.identification.algorithm=https`), so every address a client
    dials is in the subject alternative names.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid_from, valid_to = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("Driftline test CA"))
        .issuer_name(name("Driftline test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("driftline-kafka"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(ca=folder / "ca.crt", keystore=folder / "broker-keystore.pem")
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    # Kafka's PEM key store reads PKCS#8 keys; the CA's key is not kept anywhere.
    key = server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files.keystore.write_bytes(key + server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    files.keystore.chmod(0o600)
    return files


def scram_format_arguments(users: Sequence[KafkaUser]) -> list[str]:
    """`kafka-storage format` arguments that create every user for SCRAM-SHA-512."""
    arguments: list[str] = []
    for user in users:
        arguments += ["--add-scram", f"SCRAM-SHA-512=[name={user.name},password={user.password}]"]
    return arguments


def listener_properties(users: Sequence[KafkaUser], tls: TlsFiles) -> dict[str, str]:
    """Broker settings of the secure listeners (their addresses aside)."""
    plain_users = " ".join(f'user_{u.name}="{u.password}"' for u in users)
    settings = {"sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS)}
    for listener in ("sasl_plaintext", "sasl_ssl"):
        prefix = f"listener.name.{listener}"
        settings[f"{prefix}.plain.sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        )
        settings[f"{prefix}.scram-sha-512.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    for listener in ("sasl_ssl", "ssl"):
        prefix = f"listener.name.{listener}"
        settings |= {
            f"{prefix}.ssl.keystore.type": "PEM",
            f"{prefix}.ssl.keystore.location": str(tls.keystore),
            # No client certificates: SASL is how a client proves who it is, and the
            # SSL listener only encrypts (anyone trusting the CA may connect).
            f"{prefix}.ssl.client.auth": "none",
        }
    return settings
