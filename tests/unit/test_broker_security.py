"""The secured broker's pure parts: certificates, users file, properties, client settings, and
the ACLs each command is granted."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from streamtrain.broker.acls import Acl, command_acls
from streamtrain.broker.security import ADMIN_USER, BrokerSecurity, check_user_name
from streamtrain.broker.single import LocalBroker
from streamtrain.broker.tls import BROKER_PRINCIPAL, ensure_tls
from streamtrain.cli.main import main
from streamtrain.config import resolve_kafka
from streamtrain.errors import ConfigError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_broker_certificate_is_signed_by_the_ca_and_names_the_host(tmp_path: Path) -> None:
    tls = ensure_tls(tmp_path / "security", "broker.example")
    ca = x509.load_pem_x509_certificate(tls.ca_pem.read_bytes())
    key_pem, cert_pem = tls.broker_key_and_cert()
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cert.verify_directly_issued_by(ca)  # raises unless the CA signed it
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"broker.example", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert f"User:{cert.subject.rfc4514_string()}" == BROKER_PRINCIPAL
    assert key_pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, as Kafka's PEM store reads
    assert _mode(tls.broker_pem) == 0o600
    assert _mode(tmp_path / "security") == 0o700
    # Kept: a second call makes nothing new, so clients keep trusting the same CA.
    again = ensure_tls(tmp_path / "security", "broker.example")
    assert again.ca_pem.read_bytes() == tls.ca_pem.read_bytes()


def test_users_get_random_private_passwords(tmp_path: Path) -> None:
    security = BrokerSecurity.ensure(tmp_path, "localhost")
    assert list(security.users()) == [ADMIN_USER]
    assert security.add_user("alice") is True
    assert security.add_user("alice") is False
    users = security.users()
    assert users["alice"] != users[ADMIN_USER] and len(users["alice"]) >= 32
    assert _mode(security.directory / "users.json") == 0o600
    assert BrokerSecurity.load(tmp_path) == security
    assert BrokerSecurity.load(tmp_path / "elsewhere") is None
    with pytest.raises(ConfigError):
        check_user_name("bob,admin")


def test_client_config_file_gives_sasl_ssl_settings_that_stay_masked(tmp_path: Path) -> None:
    security = BrokerSecurity.ensure(tmp_path, "localhost")
    security.add_user("alice")
    text = security.render_client_config("localhost:9092", "alice")
    kafka = resolve_kafka({}, file=tomllib.loads(text), env={})
    assert kafka.bootstrap_servers == "localhost:9092"
    assert kafka.options["security.protocol"] == "SASL_SSL"
    assert kafka.options["sasl.mechanism"] == "SCRAM-SHA-512"
    assert kafka.options["sasl.password"] == security.users()["alice"]
    assert kafka.options["ssl.ca.location"] == str(security.tls.ca_pem)
    assert security.users()["alice"] not in repr(kafka)


def test_secured_node_has_no_plaintext_listener_and_denies_by_default(tmp_path: Path) -> None:
    BrokerSecurity.ensure(tmp_path, "localhost")
    broker = LocalBroker(data_dir=tmp_path, port=19092, controller_port=19093, internal_port=19094)
    assert broker.secure  # a secured data directory stays secured
    props = dict(
        line.split("=", 1)
        for line in broker.server_properties().splitlines()
        if line and not line.startswith("#")
    )
    assert props["listeners"] == (
        "CLIENT://localhost:19092,INTERNAL://localhost:19094,CONTROLLER://localhost:19093"
    )
    assert "PLAINTEXT" not in props["listener.security.protocol.map"]
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == f"{BROKER_PRINCIPAL};User:admin"
    assert props["listener.name.internal.ssl.client.auth"] == "required"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert "ANONYMOUS" not in broker.server_properties()


def test_unnamed_train_reads_input_and_a_fresh_group_writes_outputs() -> None:
    acls = command_acls("train", topic="clicks")
    assert acls == [
        Acl("topic", "clicks", ("READ",)),
        Acl("topic", "clicks.dlq", ("WRITE", "CREATE")),
        Acl("topic", "clicks.predictions", ("WRITE", "CREATE")),
        Acl("topic", "streamtrain.metrics", ("WRITE", "CREATE")),
        Acl("topic", "streamtrain.events", ("WRITE", "CREATE")),
        Acl("group", "streamtrain.ephemeral.", ("READ",), prefixed=True),
    ]


def test_partitioned_train_gets_prefixed_transactional_ids_and_the_labels_topic() -> None:
    acls = command_acls("train", topic="f", name="m", partitioned=True, labels_topic="l")
    assert Acl("topic", "l", ("READ",)) in acls
    assert Acl("transactional-id", "streamtrain.m.", ("WRITE",), prefixed=True) in acls
    assert Acl("group", "streamtrain.m", ("READ",)) in acls
    assert not any(a.resource == "transactional-id" and not a.prefixed for a in acls)


def test_produce_and_serve_rights() -> None:
    assert command_acls("produce", topic="f", labels_topic="l") == [
        Acl("topic", "f", ("WRITE", "CREATE")),
        Acl("topic", "l", ("WRITE", "CREATE")),
    ]
    serve = command_acls("serve", topic="ignored", name="m", log_topic="served")
    assert [str(a) for a in serve] == [
        "topic streamtrain.checkpoints: READ",
        "topic streamtrain.checkpoints.history: READ",
        "topic streamtrain.metrics: READ",
        "topic served: WRITE, CREATE",
        "group streamtrain.reader.*: DESCRIBE",
    ]
    with pytest.raises(ConfigError):
        command_acls("serve", topic="x")
    with pytest.raises(ConfigError):
        command_acls("predict", topic="x")


def test_bindings_are_allow_rules_for_the_principal_from_any_host() -> None:
    from confluent_kafka.admin import AclPermissionType, ResourcePatternType

    bindings = Acl("topic", "t", ("READ", "WRITE")).bindings("User:alice")
    assert len(bindings) == 2
    for binding in bindings:
        assert binding.principal == "User:alice" and binding.host == "*"
        assert binding.permission_type == AclPermissionType.ALLOW
        assert binding.resource_pattern_type == ResourcePatternType.LITERAL


@pytest.mark.parametrize(
    "argv",
    [
        ["broker", "up", "--client-config", "c.toml"],
        ["broker", "up", "--secure", "--user", "bob,admin"],
        ["broker", "acl", "grant", "--user", "u", "--for", "serve", "--dry-run"],
        ["broker", "acl", "grant", "--user", "u", "--for", "train", "--partitioned"],
    ],
    ids=["client-config-unsecured", "bad-user", "serve-no-name", "part-no-name"],
)
def test_secured_broker_cli_misuse_is_one_line_and_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, *(["--data-dir", str(tmp_path)] if argv[1] == "up" else [])])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_acl_grant_dry_run_lists_what_it_would_grant(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["broker", "acl", "grant", "--user", "bob", "--for", "produce", "--topic", "t"]
    assert main([*argv, "--labels-topic", "l", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "would grant User:bob: topic t: WRITE, CREATE",
        "would grant User:bob: topic l: WRITE, CREATE",
    ]


def test_a_secured_cluster_gets_an_internal_port_per_node_kept_in_its_layout(
    tmp_path: Path,
) -> None:
    from streamtrain.broker.cluster import LocalCluster
    from streamtrain.broker.layout import ClusterLayout

    cluster = LocalCluster(data_dir=tmp_path / "c", base_port=20000, secure=True)
    layout = cluster._layout
    assert cluster.secure and layout.secured
    # After every (broker, controller) pair, so no node's port is another's internal one.
    assert [n.internal_port for n in layout.nodes] == [20006, 20007, 20008]
    assert ClusterLayout.from_json(layout.to_json()) == layout
    assert cluster.internal_bootstrap == "localhost:20006,localhost:20007,localhost:20008"
    plain = ClusterLayout.new("localhost", [(1, 2), (3, 4), (5, 6)])
    assert not plain.secured and "internal_port" not in plain.to_json()
    # A cluster made plain cannot be secured later: its nodes have no port for it.
    (tmp_path / "p").mkdir()
    plain.save(tmp_path / "p")
    with pytest.raises(ConfigError, match="made without --secure"):
        LocalCluster(data_dir=tmp_path / "p", secure=True)
    with pytest.raises(ConfigError, match="internal_ports"):
        LocalCluster(data_dir=tmp_path / "q", ports=[(1, 2), (3, 4), (5, 6)], secure=True)
