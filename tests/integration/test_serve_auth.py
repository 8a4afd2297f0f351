"""``streamtrain serve`` as a real process over HTTPS with bearer tokens, against a real broker.

A model is sealed into a checkpoint topic of this test; serve loads it with a token file, a
certificate made here (``cryptography``) and tight request limits. Who may call what, the
limits and the answers (against the same River model, predicting here) are checked over
verified TLS; at the end, the process's whole output (its access log on) must not hold either
token.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from river import datasets, linear_model, preprocessing
from trainers import trainer_env

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.state.envelope import CheckpointHeader, seal
from streamtrain.state.keys import SigningKey
from streamtrain.state.payload import TrainState, freeze
from streamtrain.state.store import checkpoint_partition, ensure_checkpoint_topic

pytestmark = pytest.mark.kafka

SECRET = "serve-auth-secret-0123456789abcdef"
FULL = "Full-token_of-the-test-0123456789~abc"
READ = "Read-token_of-the-test-0123456789~xyz"
PHISHING = list(itertools.islice(datasets.Phishing(), 200))
MAX_FEATURES = len(PHISHING[0][0])


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (mode 600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamtrain test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def publish_model(bootstrap: str, topic: str, name: str) -> Any:
    """Seal a River model trained on Phishing into ``topic`` as model ``name``'s checkpoint."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in PHISHING:
        model.learn_one(x, y)
    header = CheckpointHeader(
        model_name=name,
        model_spec="StandardScaler | LogisticRegression",
        offsets={"events": {0: len(PHISHING)}},
        events_learned=len(PHISHING),
        dead_lettered=0,
        metrics={},
        created_at=time.time(),
        versions={},
    )
    state = TrainState(model, {}, len(PHISHING), {}, {0: len(PHISHING)})
    envelope = seal(header, freeze(state), SigningKey(SECRET.encode(), "test"))
    count = ensure_checkpoint_topic(KafkaSettings(bootstrap_servers=bootstrap), topic)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=name, value=envelope, partition=checkpoint_partition(name, count))
    assert producer.flush(30) == 0
    return model


@pytest.fixture
def served(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    free_ports: Callable[[int], list[int]],
    tmp_path: Path,
) -> Iterator[tuple[httpx.Client, Any, Path]]:
    """A serve process over HTTPS with tokens; yields a verifying client, the model, its log."""
    name, ckpt, labels = unique_name("auth"), unique_name("ckpt"), unique_name("labels")
    model = publish_model(kafka_bootstrap, ckpt, name)
    cert, key = self_signed(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the test's\nfull {FULL}\nread {READ}\n")
    tokens.chmod(0o600)
    (port,) = free_ports(1)
    log = tmp_path / "serve.log"
    command = [
        *(sys.executable, "-m", "streamtrain", "serve", "--name", name),
        *("--bootstrap-servers", kafka_bootstrap, "--checkpoint-topic", ckpt),
        *("--metrics-topic", "", "--labels-topic", labels, "--port", str(port)),
        *("--token-file", str(tokens), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)),
        *("--max-body-bytes", "4096", "--max-features", str(MAX_FEATURES)),
        *("--max-instances", "3", "--access-log"),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=trainer_env(SECRET)
        )
    client = httpx.Client(
        base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=cert)
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if client.get("/readyz", headers=bearer(READ)).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not load the model"
            time.sleep(0.2)
        yield client, model, log
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_serve_over_https_answers_only_the_right_tokens(
    served: tuple[httpx.Client, Any, Path],
) -> None:
    client, model, log = served
    x = PHISHING[0][0]

    assert client.get("/healthz").status_code == 200
    for method, path, body in [
        ("GET", "/model", None),
        ("GET", "/metrics", None),
        ("POST", "/predict", {"x": x}),
        ("POST", "/labels", {"id": "a", "y": True}),
    ]:
        for headers in ({}, bearer(FULL[:-1] + "!"), bearer(READ + "x")):
            refused = client.request(method, path, json=body, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert refused.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers=bearer(READ)).status_code == 200
    for path, body in [("/predict", {"x": x}), ("/labels", {"id": "a", "y": True})]:
        forbidden = client.post(path, json=body, headers=bearer(READ))
        assert (forbidden.status_code, forbidden.json()["reason"]) == (403, "read-only-token")

    # The full token predicts, with the model that was published (River is the oracle).
    answer = client.post("/predict", json={"id": "o-1", "x": x}, headers=bearer(FULL))
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == model.predict_one(x)
    expected = model.predict_proba_one(x)
    got = answer.json()["probabilities"]
    assert {json.dumps(k): v for k, v in expected.items()} == pytest.approx(got)  # True: "true"
    accepted = client.post("/labels", json={"id": "o-1", "y": True}, headers=bearer(FULL))
    assert (accepted.status_code, accepted.json()) == (200, {"accepted": 1})

    # Limits, each with its reason.
    for body, status, reason in [
        ({"x": {**x, "one_more": 1.0}}, 422, "too-many-features"),
        ([{"x": x}] * 4, 413, "too-many-instances"),
        ({"x": {f"f{i}": i for i in range(500)}}, 413, "body-too-large"),
    ]:
        refused = client.post("/predict", json=body, headers=bearer(FULL))
        assert (refused.status_code, refused.json()["reason"]) == (status, reason)

    # Plain HTTP on the HTTPS port, token and all, is refused by TLS (and logged by uvicorn).
    host, port = client.base_url.host, client.base_url.port
    assert port is not None
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(
            f"GET /model HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {FULL}\r\n\r\n".encode()
        )
        raw.settimeout(5)
        with contextlib.suppress(TimeoutError, ConnectionError):
            raw.recv(1024)

    text = log.read_text()
    # The access log saw every request, refused ones included: the check below means something.
    assert '"POST /predict HTTP/1.1" 401' in text and '"POST /labels HTTP/1.1" 403' in text
    assert "https://127.0.0.1:" in text
    assert "1 full and 1 read-only token(s)" in text
    assert FULL not in text and READ not in text
    assert FULL[:12] not in text and READ[-12:] not in text  # nor a piece of either


def test_serve_refuses_bad_security_settings_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No broker needed: tokens and certificates are checked before anything connects."""
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"full {FULL}\n")
    (tmp_path / "other").mkdir()
    cert, key = self_signed(tmp_path)
    other_cert, _ = self_signed(tmp_path / "other")
    base = ["serve", "--name", "m", "--bootstrap-servers", "127.0.0.1:1"]
    cases = [
        (["--token-file", str(tokens)], "readable by others; chmod 600"),
        (["--ssl-certfile", str(cert)], "HTTPS needs both ssl-certfile and ssl-keyfile"),
        (["--ssl-certfile", str(other_cert), "--ssl-keyfile", str(key)], "for HTTPS"),
        (["--ssl-certfile", str(tmp_path / "none.pem"), "--ssl-keyfile", str(key)], "for HTTPS"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) != 0, extra
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], err
        assert FULL not in err
