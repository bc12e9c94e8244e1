"""Kafka credentials against a broker that checks them: SASL PLAIN and SCRAM-SHA-512,
in clear and over TLS, read from Secret folders the way every part reads them.

Builds on `tests/hardening/test_secrets.py` (settings and connections hide what they
read) and `test_secrets.py` here (a failing SASL attempt logs no credential). Here
Apache Kafka from the test rig runs with SASL_PLAINTEXT, SASL_SSL and SSL listeners
(`ApacheKafkaBroker(users=...)`: PLAIN users in the listeners' JAAS configuration,
SCRAM-SHA-512 users formatted into the KRaft metadata, a throwaway CA made at start):

- `KafkaConnection.from_secrets` over each Secret layout (explicit files, and the
  defaults it infers: SCRAM-SHA-512, SASL_SSL when `ca.crt` is there, SSL when it is
  all there is) produces, consumes and creates topics through the matching listener,
  with librdkafka checking the broker's certificate and host name;
- a wrong password is refused with an authentication error within seconds, and no
  credential shows in librdkafka's debug log or in the errors; no credentials at all
  get nowhere;
- `python -m driftline.inference` (SCRAM-SHA-512 over TLS) logs its predictions and
  `python -m driftline.joiner` (PLAIN in clear) joins them with outcomes into labeled
  examples, both at DEBUG with credentials from `DRIFTLINE_<PART>_SECRETS_DIR`; what
  they wrote is read back through the secure listeners, and no credential shows in
  their logs, `/metrics`, health or status endpoints, or answers.

The tests skip when Apache Kafka is not built here (`make rig` builds it).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftline.api import parse_dynamic_model
from driftline.api.artifacts import ALIAS_CHAMPION
from driftline.api.events import LabeledExample, Outcome, Prediction, decode, encode
from driftline.common.connections import KafkaConnection
from driftline.common.kafka import ensure_topics, make_consumer, make_producer
from driftline.inference.contract import FeatureContract
from driftline.local.servers import MlflowServer, RedisServer, free_port
from driftline_testing import apache_kafka
from driftline_testing.apache_kafka import ApacheKafkaBroker
from driftline_testing.kafka_security import KafkaUser
from driftline_testing.models import (
    mlp_model,
    model_document,
    register_version,
    write_model_file,
)
from tests.integration.inference.harness import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not apache_kafka.available(),
        reason="Apache Kafka is not built here (run `make rig`): SASL and TLS need a real broker",
    ),
]

APP = KafkaUser("app-4kq2", "app-pass-Vb38nW")
INFERENCE = KafkaUser("inference-9c1e", "inference-pass-Rt62mQ")
JOINER = KafkaUser("joiner-5d7b", "joiner-pass-Hs07kL")
WRONG_PASSWORD = "wrong-pass-Jd44pZ"
SECRETS = [
    *(u.password for u in (APP, INFERENCE, JOINER)),
    WRONG_PASSWORD,
    *(u.name for u in (INFERENCE, JOINER)),  # the parts never need to name their user
]


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafkaBroker]:
    folder = tmp_path_factory.mktemp("secure-kafka")
    broker = ApacheKafkaBroker(
        data_dir=folder / "data", log_path=folder / "kafka.log", users=[APP, INFERENCE, JOINER]
    )
    with broker:
        yield broker


def secret_folder(folder: Path, files: dict[str, str | Path]) -> Path:
    """A mounted Secret: one file per key (`ca.crt` given as the CA file to copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        content = value.read_text() if isinstance(value, Path) else value
        (folder / name).write_text(content)
    return folder


def captured_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    """A logger for librdkafka's `logger` setting, writing into a string."""
    out = io.StringIO()
    logger = logging.getLogger(name)
    logger.handlers = [logging.StreamHandler(out)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, out


def read_all(conn: KafkaConnection, topic: str, n: int, timeout: float) -> list[bytes]:
    """At least `n` records of `topic` from the start (fewer when `timeout` runs out)."""
    consumer = make_consumer(conn, f"driftline-reader-{topic}", [topic])
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            got += [m.value() for m in consumer.consume(500, 0.5) if m.error() is None]
    finally:
        consumer.close()
    return got


def round_trip(conn: KafkaConnection, topic: str, n: int = 5) -> list[bytes]:
    """Create `topic`, produce `n` records and read them back, all through `conn`."""
    ensure_topics(conn, [topic], partitions=1, timeout=10)
    failures: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    producer = make_producer(conn, on_delivery=delivered)
    sent = [f"record-{i}".encode() for i in range(n)]
    for value in sent:
        producer.produce(topic, value, key=value)
    assert producer.flush(20) == 0, "records still queued after 20 s"
    assert not failures, failures
    return read_all(conn, topic, n, 20)


LAYOUTS: dict[str, tuple[str, dict[str, str], bool, tuple[str, str]]] = {
    # name: (listener, Secret files beside username and password, with ca.crt,
    #        (sasl.mechanism, security.protocol) that from_secrets must arrive at)
    "plain-explicit": (
        "SASL_PLAINTEXT",
        {"mechanism": "PLAIN", "security.protocol": "SASL_PLAINTEXT"},
        False,
        ("PLAIN", "SASL_PLAINTEXT"),
    ),
    "scram-by-default": ("SASL_PLAINTEXT", {}, False, ("SCRAM-SHA-512", "SASL_PLAINTEXT")),
    "scram-tls-from-ca": ("SASL_SSL", {}, True, ("SCRAM-SHA-512", "SASL_SSL")),
    "plain-tls-explicit": (
        "SASL_SSL",
        {"mechanism": "PLAIN", "security.protocol": "SASL_SSL"},
        True,
        ("PLAIN", "SASL_SSL"),
    ),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_credentials_from_a_secret_folder_reach_the_broker(
    layout: str, secure_kafka: ApacheKafkaBroker, tmp_path: Path, unique: str
) -> None:
    listener, extra, with_ca, (mechanism, protocol) = LAYOUTS[layout]
    files: dict[str, str | Path] = {"username": APP.name, "password": APP.password, **extra}
    if with_ca:
        assert secure_kafka.ca_file is not None
        files["ca.crt"] = secure_kafka.ca_file
    conn = KafkaConnection.from_secrets(
        secure_kafka.secure_bootstrap_servers(listener), secret_folder(tmp_path / "kafka", files)
    )
    config = conn.client_config()
    assert (config["sasl.mechanism"], config["security.protocol"]) == (mechanism, protocol)
    assert ("ssl.ca.location" in config) == with_ca
    assert APP.password not in repr(conn)

    got = round_trip(conn, unique)
    assert got == [f"record-{i}".encode() for i in range(5)]


def test_a_ca_alone_means_tls_without_sasl(
    secure_kafka: ApacheKafkaBroker, tmp_path: Path, unique: str
) -> None:
    """`ca.crt` and nothing else: SSL, server certificate and host name checked."""
    assert secure_kafka.ca_file is not None
    folder = secret_folder(tmp_path / "kafka", {"ca.crt": secure_kafka.ca_file})
    conn = KafkaConnection.from_secrets(secure_kafka.secure_bootstrap_servers("SSL"), folder)
    config = conn.client_config()
    assert config["security.protocol"] == "SSL"
    assert "sasl.mechanism" not in config
    assert round_trip(conn, unique, n=3) == [f"record-{i}".encode() for i in range(3)]


REFUSALS: dict[str, tuple[str, dict[str, str], bool, str]] = {
    # name: (listener, Secret files, with ca.crt, what the first error must say)
    "wrong-password-plain": (
        "SASL_PLAINTEXT",
        {"username": APP.name, "password": WRONG_PASSWORD, "mechanism": "PLAIN"},
        False,
        "Authentication failed",
    ),
    "wrong-password-scram-tls": (
        "SASL_SSL",
        {"username": APP.name, "password": WRONG_PASSWORD, "mechanism": "SCRAM-SHA-512"},
        True,
        "Authentication failed",
    ),
    "no-sasl": ("SASL_PLAINTEXT", {}, False, "brokers are down"),
    "tls-without-sasl": ("SASL_SSL", {}, True, "brokers are down"),
    "sasl-without-the-ca": (
        "SASL_SSL",
        {"username": APP.name, "password": APP.password, "security.protocol": "SASL_SSL"},
        False,
        "certificate verify failed",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_client_that_does_not_authenticate_is_refused_and_nothing_leaks(
    case: str, secure_kafka: ApacheKafkaBroker, tmp_path: Path, unique: str
) -> None:
    """An error within seconds (not a hang), and no credential in what the client says."""
    from confluent_kafka import KafkaError, KafkaException

    listener, files, with_ca, reason = REFUSALS[case]
    secret: dict[str, str | Path] = dict(files)
    if with_ca:
        assert secure_kafka.ca_file is not None
        secret["ca.crt"] = secure_kafka.ca_file
    conn = KafkaConnection.from_secrets(
        secure_kafka.secure_bootstrap_servers(listener), secret_folder(tmp_path / "kafka", secret)
    )
    logger, log = captured_logger(f"rdkafka-{unique}")
    errors: list[Any] = []
    # Everything librdkafka says about security, brokers and its own configuration.
    producer = make_producer(
        conn, logger=logger, error_cb=errors.append, debug="security,broker,protocol,conf"
    )
    started = time.monotonic()
    producer.produce(unique, b"never")
    while not errors and time.monotonic() - started < 20:
        producer.poll(0.1)
    refused_after = time.monotonic() - started
    producer.purge()
    producer.flush(1)
    assert errors, f"no error within 20 s ({case})"
    assert reason in errors[0].str(), errors[0]
    if "password" in case:
        assert errors[0].code() == KafkaError._AUTHENTICATION, errors[0]
    try:  # an admin call fails too, within its timeout
        ensure_topics(conn, [unique], timeout=3)
    except KafkaException as exc:
        admin_error = str(exc)  # a string: the client in the traceback is let go
    else:
        pytest.fail(f"topics were created by a client that did not authenticate ({case})")

    said = "\n".join([log.getvalue(), *map(str, errors), admin_error, repr(conn)])
    assert "CONF" in said  # librdkafka's configuration dump did reach the capture
    leaked = [s for s in SECRETS if s in said]
    assert not leaked, f"credentials found: {leaked}"
    print(f"\n{case}: refused in {refused_after:.2f} s: {errors[0].str()[:100]}")


# -- the parts, as processes ------------------------------------------------------------


def start(part: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {**os.environ, **{f"DRIFTLINE_{part.upper()}_{k}": v for k, v in env.items()}}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"driftline.{part}"], env=full, stdout=out, stderr=out
        )


def stop(*processes: subprocess.Popen[bytes]) -> list[int]:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(30))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait(10))
    return codes


def test_parts_log_and_join_through_sasl_and_never_show_credentials(
    secure_kafka: ApacheKafkaBroker,
    mlflow_server: MlflowServer,
    redis_server: RedisServer,
    tmp_path: Path,
    unique: str,
) -> None:
    assert secure_kafka.ca_file is not None
    sasl_ssl = secure_kafka.secure_bootstrap_servers("SASL_SSL")
    sasl_plaintext = secure_kafka.secure_bootstrap_servers("SASL_PLAINTEXT")
    doc = model_document(
        unique,
        tracking_uri=mlflow_server.tracking_uri,
        kafka=sasl_ssl,
        redis=redis_server.url,
        inference={"baseline": False},
    )
    model_file = write_model_file(tmp_path / "model.yaml", doc)
    model = parse_dynamic_model(doc)
    register_version(
        mlflow_server.tracking_uri,
        unique,
        mlp_model(FeatureContract(model.spec)),
        aliases=[ALIAS_CHAMPION],
    )
    # Inference: username, password and the CA only, as a Secret would hold them
    # (SCRAM-SHA-512 over SASL_SSL, inferred). The joiner: PLAIN in clear, spelled out.
    inference_secrets = secret_folder(
        tmp_path / "inference-secrets" / "kafka",
        {
            "username": INFERENCE.name,
            "password": INFERENCE.password,
            "ca.crt": secure_kafka.ca_file,
        },
    ).parent
    joiner_secrets = secret_folder(
        tmp_path / "joiner-secrets" / "kafka",
        {
            "username": JOINER.name,
            "password": JOINER.password,
            "mechanism": "PLAIN",
            "security.protocol": "SASL_PLAINTEXT",
        },
    ).parent
    port, joiner_port = free_port(), free_port()
    common = {"MODEL_FILE": str(model_file), "LOG_LEVEL": "DEBUG"}
    inference = start(
        "inference",
        {
            **common,
            "SECRETS_DIR": str(inference_secrets),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "METRICS_PORT": "0",
        },
        tmp_path / "inference.log",
    )
    joiner = start(
        "joiner",
        {
            **common,
            "SECRETS_DIR": str(joiner_secrets),
            "KAFKA_BOOTSTRAP_SERVERS": sasl_plaintext,
            "METRICS_PORT": str(joiner_port),
        },
        tmp_path / "joiner.log",
    )
    # The application's own clients: another user, SCRAM in clear.
    app = KafkaConnection.from_secrets(
        sasl_plaintext,
        secret_folder(tmp_path / "app", {"username": APP.name, "password": APP.password}),
    )
    url, joiner_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{joiner_port}"
    seen: list[str] = []
    requests = 20
    try:

        def ready(address: str) -> bool:
            try:
                return httpx.get(address, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(lambda: ready(f"{url}/v2/health/ready"), 90, "inference to load its model")
        wait_until(lambda: ready(f"{joiner_url}/readyz"), 60, "the joiner to be ready")
        predict = f"{url}/v1/models/{unique}/predict"
        request_ids = []
        for i in range(requests):
            answer = httpx.post(
                predict, json={"features": {"x1": i, "x2": 2.0, "x3": -1.0}}, timeout=10
            )
            assert answer.status_code == 200, answer.text
            seen.append(answer.text)
            request_ids.append(answer.json()["request_id"])
        seen.append(httpx.post(predict, json={"features": {"x1": "high"}}, timeout=10).text)

        # The predictions reached Kafka through SASL_SSL (read back the same way).
        logged = read_all(app, model.topics.predictions, requests, 30)
        assert {decode(v, Prediction).request_id for v in logged} >= set(request_ids)
        # The application's outcomes go in; the joiner joins them through SASL_PLAINTEXT.
        producer = make_producer(app)
        for rid in request_ids:
            producer.produce(
                model.topics.outcomes,
                encode(Outcome(request_id=rid, label=1.0, ts=time.time())),
                rid,
            )
        assert producer.flush(20) == 0
        labeled = read_all(app, model.topics.labeled, requests, 60)
        assert {decode(v, LabeledExample).request_id for v in labeled} == set(request_ids)

        pages = ["/metrics", "/v2/health/live", "/v2/health/ready", "/v2", f"/v2/models/{unique}"]
        seen += [httpx.get(f"{url}{page}", timeout=10).text for page in pages]
        assert "driftline_inference_predictions_logged_total" in seen[-len(pages)]
        pages = ["/metrics", "/healthz", "/readyz"]
        seen += [httpx.get(f"{joiner_url}{page}", timeout=10).text for page in pages]
    finally:
        codes = stop(inference, joiner)
    assert codes == [0, 0], f"exit statuses (inference, joiner): {codes}"
    logs = {p: (tmp_path / f"{p}.log").read_text(errors="replace") for p in ("inference", "joiner")}
    assert "loaded version" in logs["inference"], logs["inference"][-2000:]
    everything = "\n".join([*seen, *logs.values()])
    leaked = [s for s in SECRETS if s in everything]
    assert not leaked, f"credentials found: {leaked}"
    print(
        f"\nSASL parts: {requests} predictions logged (SCRAM-SHA-512, SASL_SSL) and joined "
        f"(PLAIN, SASL_PLAINTEXT); {sum(map(len, logs.values()))} bytes of DEBUG logs and "
        f"{len(seen)} answers and pages searched: no credential found"
    )
