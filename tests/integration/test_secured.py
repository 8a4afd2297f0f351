"""streamtrain on a secured broker (``broker up --secure``): SASL_SSL with SCRAM-SHA-512, and
ACLs that deny whatever was not granted.

produce, train and serve run with exactly the ACLs ``broker acl grant`` writes; one right less
fails at once with a one-line error naming it (exit 8) and commits nothing; a wrong password and
a client without TLS and SASL are refused within the connect bound.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from oracle import offline
from topics import fill, read_log

from streamtrain.broker import LocalBroker
from streamtrain.broker.acls import Acl, command_acls, grant
from streamtrain.broker.process import broker_answers
from streamtrain.broker.security import ADMIN_USER
from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_METRICS_TOPIC
from streamtrain.kafka.clients import ensure_topic
from streamtrain.kafka.reader import READER_GROUP_PREFIX
from streamtrain.serving.app import BackgroundServer, create_kafka_app
from streamtrain.state.keys import SigningKey
from streamtrain.state.store import CheckpointStore, ensure_checkpoint_topic

pytestmark = pytest.mark.kafka

SECRET = "secured-broker-test-secret-0123456789"
KEY = SigningKey(SECRET.encode(), "STREAMTRAIN_SECRET")
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run(*argv)``: the CLI in this process; its exit code, stdout and stderr."""
    monkeypatch.setenv("STREAMTRAIN_SECRET", SECRET)
    monkeypatch.delenv("STREAMTRAIN_CONFIG", raising=False)

    def call(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call


def _admin(broker: LocalBroker) -> dict[str, Any]:
    assert broker.security is not None
    return {"bootstrap.servers": broker.bootstrap, **broker.security.client_options(ADMIN_USER)}


def _user_config(broker: LocalBroker, user: str, path: Path) -> Path:
    """A config file for ``user`` (made if new), as ``broker up --secure`` writes it."""
    assert broker.security is not None
    broker.add_user(user)
    path.write_text(broker.security.render_client_config(broker.bootstrap, user))
    return path


def _acls_of(broker: LocalBroker, user: str) -> set[tuple[str, str, str, str]]:
    admin = AdminClient(_admin(broker))
    match = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        f"User:{user}",
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    found = admin.describe_acls(match, request_timeout=30).result(timeout=35)
    return {(b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name) for b in found}


def _summary(path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(path.read_text())
    return summary


def test_produce_and_train_work_with_exactly_the_granted_acls(
    secure_broker: LocalBroker, run: Run, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    topic, name = unique_name("sec"), unique_name("model")
    where = ["--data-dir", str(secure_broker.data_dir), "--port", str(secure_broker.port)]
    config = tmp_path / "alice.toml"
    # The broker runs: `up --secure` makes the user and writes its settings, 0600.
    code, out, err = run("broker", "up", "--secure", *where, "--user", "alice",
                         "--client-config", str(config))  # fmt: skip
    assert code == 0, err
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    security = secure_broker.security
    assert security is not None
    password = security.users()["alice"]
    assert password in config.read_text() and password not in out + err
    for grant_for in (
        ["produce", "--topic", topic],
        ["train", "--topic", topic],
        ["train", "--topic", topic, "--name", name],
    ):
        code, out, err = run("broker", "acl", "grant", *where, "--user", "alice", "--for",
                             *grant_for)  # fmt: skip
        assert code == 0, err
    wanted = [
        *command_acls("produce", topic=topic),
        *command_acls("train", topic=topic),
        *command_acls("train", topic=topic, name=name),
    ]
    granted = {
        (b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name)
        for acl in wanted
        for b in acl.bindings("User:alice")
    }
    assert _acls_of(secure_broker, "alice") == granted  # exactly these, nothing more

    code, _, err = run("produce", "--config", str(config), "--topic", topic, "--limit", "300")
    assert code == 0, err
    values = read_log(secure_broker.bootstrap, topic, 1, config=_admin(secure_broker))[0]
    assert len(values) == 300
    _, rocauc = offline(values)

    common = ["--config", str(config), "--topic", topic, "--exit-when-idle", "1", "--view", "none"]
    code, _, err = run("train", *common, "--summary", str(tmp_path / "unnamed.json"))
    assert code == 0, err
    unnamed = _summary(tmp_path / "unnamed.json")
    assert unnamed["events_learned"] == 300 and unnamed["metrics"]["ROCAUC"] == rocauc

    code, _, err = run("train", *common, "--name", name, "--summary", str(tmp_path / "named.json"))
    assert code == 0, err
    assert _summary(tmp_path / "named.json")["metrics"]["ROCAUC"] == rocauc
    # Committed, and readable back with these rights (readers need DESCRIBE on their group).
    code, out, err = run("models", "--config", str(config), "--json")
    assert code == 0, err
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert rows[name]["events_learned"] == 300 and rows[name]["metrics"]["ROCAUC"] == rocauc
    # serve, as a user with serve's rights only: the committed model answers, and the request
    # is logged to its log topic (200 only once the broker acknowledged that write).
    served = unique_name("served")
    serve_acls = command_acls("serve", topic="", name=name, log_topic=served)
    grant(_admin(secure_broker), "User:sam", serve_acls, timeout=30)
    secure_broker.add_user("sam")
    as_sam = KafkaSettings(secure_broker.bootstrap, options=security.client_options("sam"))
    app = create_kafka_app(as_sam, KEY, name, log_topic=served)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        deadline = time.monotonic() + 30
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "serve never loaded the model"
            time.sleep(0.2)
        answer = http.post("/predict", json={"id": "r1", "x": json.loads(values[0])["x"]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["events_learned"] == 300
    logged = read_log(secure_broker.bootstrap, served, 1, config=_admin(secure_broker))[0]
    assert [json.loads(v)["id"] for v in logged] == ["r1"]
    # No password in the broker's logs or configuration.
    written = [secure_broker.log_path, secure_broker.stdout_path, secure_broker.config_path]
    text = "".join(path.read_text(errors="replace") for path in written)
    assert not any(pw in text for pw in security.users().values())


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        (("group", "READ"), "needs READ on consumer group 'streamtrain.{name}'"),
        (("transactional-id", "WRITE"), "needs WRITE on transactional id 'streamtrain.{name}'"),
        (("topic", "READ"), "needs READ on topic '{topic}'"),
    ],
    ids=["group", "transactional-id", "input-topic"],
)
def test_train_without_one_right_fails_at_once_and_commits_nothing(
    secure_broker: LocalBroker,
    run: Run,
    tmp_path: Path,
    unique_name: Callable[..., str],
    missing: tuple[str, str],
    says: str,
) -> None:
    topic, name, user = unique_name("sec"), unique_name("model"), unique_name("user")
    admin = _admin(secure_broker)
    fill(secure_broker.bootstrap, topic, [b'{"x": {"a": 1.0}, "y": true}'] * 20, config=admin)
    acls = []
    for acl in command_acls("train", topic=topic, name=name):
        if acl.resource == missing[0] and (acl.name in (topic, f"streamtrain.{name}")):
            kept = tuple(op for op in acl.operations if op != missing[1])
            if not kept:
                continue
            acl = type(acl)(acl.resource, acl.name, kept, acl.prefixed)
        acls.append(acl)
    grant(admin, f"User:{user}", acls, timeout=30)
    config = _user_config(secure_broker, user, tmp_path / "user.toml")

    started = time.monotonic()
    code, _, err = run("train", "--config", str(config), "--topic", topic, "--name", name,
                       "--exit-when-idle", "1", "--view", "none")  # fmt: skip
    elapsed = time.monotonic() - started
    assert code == 8, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamtrain: error: not authorized: "), err
    assert says.format(name=name, topic=topic) in lines[0]
    # The refusal ends the run; nothing waits for a right to appear (that would be minutes).
    # 45 s, not less: the group case took 31 s once at load average 14 on two cores.
    assert elapsed < 45
    assert secure_broker.security is not None
    as_admin = secure_broker.security.client_options(ADMIN_USER)
    store = CheckpointStore(
        KafkaSettings(secure_broker.bootstrap, options=as_admin),
        KEY,
        patience=5,
    )
    assert store.partitions() is None or store.latest_raw(name) is None


def _without(acls: list[Acl], resource: str, name: str, operation: str) -> list[Acl]:
    """``acls`` less ``operation`` on one resource."""
    kept = []
    for acl in acls:
        if (acl.resource, acl.name) == (resource, name):
            acl = Acl(resource, name, tuple(o for o in acl.operations if o != operation),
                      acl.prefixed)  # fmt: skip
        if acl.operations:
            kept.append(acl)
    return kept


CHECKPOINTS_READ = ("topic", DEFAULT_CHECKPOINT_TOPIC, "READ")
READERS_DESCRIBE = ("group", READER_GROUP_PREFIX, "DESCRIBE")


@pytest.mark.parametrize(
    ("command", "missing", "says"),
    [
        ("serve", CHECKPOINTS_READ, f"needs READ on topic '{DEFAULT_CHECKPOINT_TOPIC}'"),
        ("serve", READERS_DESCRIBE, f"needs DESCRIBE on consumer group '{READER_GROUP_PREFIX}*'"),
        ("predict", CHECKPOINTS_READ, f"needs READ on topic '{DEFAULT_CHECKPOINT_TOPIC}'"),
    ],
    ids=["serve-checkpoint-topic", "serve-reader-group", "predict-checkpoint-topic"],
)
def test_serve_and_predict_without_one_right_fail_at_once(
    secure_broker: LocalBroker,
    run: Run,
    tmp_path: Path,
    unique_name: Callable[..., str],
    command: str,
    missing: tuple[str, str, str],
    says: str,
) -> None:
    name, user = unique_name("model"), unique_name("user")
    admin = _admin(secure_broker)
    # The topics exist, so nothing but the missing right could keep serve waiting.
    as_admin = KafkaSettings(secure_broker.bootstrap, options=admin)
    ensure_checkpoint_topic(as_admin)
    ensure_topic(as_admin, DEFAULT_METRICS_TOPIC)
    acls = _without(command_acls("serve", topic="", name=name), *missing)
    grant(admin, f"User:{user}", acls, timeout=30)
    config = _user_config(secure_broker, user, tmp_path / "user.toml")
    (tmp_path / "in.jsonl").write_text('{"x": {"a": 1.0}}\n')
    argv = {
        "serve": ["serve", "--port", "0"],
        "predict": ["predict", "--input", str(tmp_path / "in.jsonl")],
    }[command]

    started = time.monotonic()
    code, _, err = run(*argv, "--config", str(config), "--name", name)
    elapsed = time.monotonic() - started
    assert code == 8, err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("streamtrain: error: not authorized: "), err
    assert says in errors[0]
    assert elapsed < 30  # it stops on the refusal rather than staying unready


def test_models_requests_work_with_the_models_rights_and_need_write_on_events(
    secure_broker: LocalBroker, run: Run, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """``--for models``: list, history and a request to the trainer (add-challenger), which
    the trainer (``--for train``'s rights) applies; without WRITE on the events topic the
    request is refused at once, one line, nothing written."""
    topic, name = unique_name("sec"), unique_name("model")
    trainer, operator, other = (unique_name("user") for _ in range(3))
    admin = _admin(secure_broker)
    fill(secure_broker.bootstrap, topic, [b'{"x": {"a": 1.0}, "y": true}'] * 20, config=admin)
    grant(admin, f"User:{trainer}", command_acls("train", topic=topic, name=name), timeout=30)
    models_acls = command_acls("models", topic="")
    grant(admin, f"User:{operator}", models_acls, timeout=30)
    no_write = _without(models_acls, "topic", "streamtrain.events", "WRITE")
    grant(admin, f"User:{other}", no_write, timeout=30)
    as_trainer = _user_config(secure_broker, trainer, tmp_path / "trainer.toml")
    train = ("train", "--config", str(as_trainer), "--topic", topic, "--name", name)
    train += ("--exit-when-idle", "1", "--view", "none")
    code, _, err = run(*train)
    assert code == 0, err

    as_other = _user_config(secure_broker, other, tmp_path / "other.toml")
    code, out, err = run("models", "add-challenger", name, "GaussianNB", "--config", str(as_other))
    assert code == 8 and out == "" and err.count("\n") == 1, (code, err)
    as_operator = _user_config(secure_broker, operator, tmp_path / "operator.toml")
    for argv in (("history", name), ("add-challenger", name, "GaussianNB")):
        code, _, err = run("models", *argv, "--config", str(as_operator))
        assert code == 0, (argv, err)
    code, _, err = run(*train)  # applies the request at its first checkpoint
    assert code == 0, err
    code, out, err = run("models", "--json", "--config", str(as_operator))
    assert code == 0, err
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert list(rows[name]["challengers"]) == ["c1"]


def test_produce_without_write_names_the_topic(
    secure_broker: LocalBroker, run: Run, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    config = _user_config(secure_broker, unique_name("user"), tmp_path / "user.toml")
    topic = unique_name("sec")
    code, _, err = run("produce", "--config", str(config), "--topic", topic, "--limit", "5")
    assert code == 8, err
    assert f"needs WRITE on topic '{topic}' (TOPIC_AUTHORIZATION_FAILED)" in err
    with pytest.raises(KafkaException):  # and the topic was not made
        admin = AdminClient(_admin(secure_broker))
        admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=30)


def test_a_wrong_password_is_refused_within_the_connect_bound(
    secure_broker: LocalBroker, run: Run, tmp_path: Path
) -> None:
    config = _user_config(secure_broker, "mallory", tmp_path / "mallory.toml")
    started = time.monotonic()
    code, _, err = run("produce", "--config", str(config), "-X", "sasl.password=guessed",
                       "--connect-timeout", "3", "--limit", "1")  # fmt: skip
    assert time.monotonic() - started < 3 + 5
    assert code == 8, err
    assert "refused the login (_AUTHENTICATION)" in err and "guessed" not in err


def test_clients_without_tls_and_sasl_are_refused(secure_broker: LocalBroker, run: Run) -> None:
    started = time.monotonic()
    code, _, err = run("produce", "--bootstrap-servers", secure_broker.bootstrap,
                       "--connect-timeout", "3", "--limit", "1")  # fmt: skip
    assert code == 3, err
    assert time.monotonic() - started < 3 + 5
    assert secure_broker.security is not None
    tls_only = {
        "security.protocol": "SSL",
        "ssl.ca.location": str(secure_broker.security.tls.ca_pem),
    }
    host = secure_broker.host
    for port in (secure_broker.port, secure_broker.internal_port, secure_broker.controller_port):
        # Neither plaintext nor TLS without a SASL login or the broker's certificate gets in
        # (the controller's TLS listener is set up as the internal one).
        assert not broker_answers(f"{host}:{port}", timeout=1)
        if port != secure_broker.controller_port:
            assert not broker_answers(f"{host}:{port}", timeout=1, config=tls_only)
    # While the broker itself does, in the same time.
    assert any(secure_broker.answers(timeout=1) for _ in range(3))
