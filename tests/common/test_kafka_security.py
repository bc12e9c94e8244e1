"""The secure listeners' pieces, without a broker: users, certificates, broker settings.

`tests/integration/hardening/test_kafka_auth.py` proves them against Apache Kafka.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from driftline.local.servers.process import InfraError
from driftline_testing.kafka_security import (
    KafkaUser,
    listener_properties,
    make_tls_files,
    scram_format_arguments,
)


def test_a_user_hides_its_password_and_refuses_characters_that_need_quoting() -> None:
    user = KafkaUser("svc-1", "s3cret-Pw")
    assert "s3cret-Pw" not in repr(user)
    for bad in ('pa"ss', "pa,ss", "pa]ss", "pa ss", ""):
        with pytest.raises(InfraError):
            KafkaUser("svc", bad)
    with pytest.raises(InfraError):
        KafkaUser("svc=1", "pw")


def test_the_certificate_is_signed_by_the_ca_and_names_every_address(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    files = make_tls_files(tmp_path / "tls")
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    pem = files.keystore.read_bytes()
    serialization.load_pem_private_key(pem, password=None)  # unencrypted PKCS#8 first
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    server, chain_ca = x509.load_pem_x509_certificates(pem)
    assert chain_ca == ca
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert files.keystore.stat().st_mode & 0o077 == 0  # the key is the owner's alone


def test_broker_settings_name_every_user_for_plain_and_scram(tmp_path: Path) -> None:
    users = [KafkaUser("a", "pa"), KafkaUser("b", "pb")]
    files = make_tls_files(tmp_path / "tls")
    settings = listener_properties(users, files)
    assert settings["sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-512"
    for listener in ("sasl_plaintext", "sasl_ssl"):
        jaas = settings[f"listener.name.{listener}.plain.sasl.jaas.config"]
        assert 'user_a="pa"' in jaas and 'user_b="pb"' in jaas and jaas.endswith(";")
    for listener in ("sasl_ssl", "ssl"):
        assert settings[f"listener.name.{listener}.ssl.keystore.type"] == "PEM"
        assert settings[f"listener.name.{listener}.ssl.keystore.location"] == str(files.keystore)
    assert scram_format_arguments(users) == [
        "--add-scram",
        "SCRAM-SHA-512=[name=a,password=pa]",
        "--add-scram",
        "SCRAM-SHA-512=[name=b,password=pb]",
    ]
