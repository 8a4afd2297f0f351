"""Record formats without a registry: settings, the JSON decoder, Protobuf messages as dicts,
and the decoder's bounded wait on a registry that does not answer (a fake client)."""

from __future__ import annotations

import base64

import pytest
from google.protobuf import descriptor_pb2

from streamtrain.cli.main import main
from streamtrain.data.events import InvalidEvent, Reason
from streamtrain.errors import ConfigError, SchemaRegistryUnreachable
from streamtrain.formats import decoder
from streamtrain.formats.decoding import REASONS, UNDECODABLE, RecordUndecodable, decode_json
from streamtrain.formats.protobuf import file_descriptor, message_class, message_to_dict
from streamtrain.formats.settings import FormatSettings, resolve_format_settings
from streamtrain.records.loading import load_records
from streamtrain.train.settings import TrainSettings

URL = "http://127.0.0.1:8081/apis/ccompat/v7"


def test_registry_options_merge_file_env_and_flags_and_stay_out_of_repr() -> None:
    settings = resolve_format_settings(
        {"format": "avro", "schema_registry": URL},
        file={"schema_registry_options": {"timeout": 3, "ssl.ca.location": "/file"}},
        env={"STREAMTRAIN_S_SSL_CA_LOCATION": "/env", "STREAMTRAIN_REGISTRY_WAIT": "4"},
        raw_flags=["basic.auth.user.info=me:s3cret"],
    )
    assert settings.registry_wait == 4.0
    assert settings.client_config() == {
        "url": URL,
        "timeout": 3.0,
        "ssl.ca.location": "/env",
        "basic.auth.user.info": "me:s3cret",
    }
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("kwargs", "flags"),
    [
        ({"format": "avro"}, []),
        ({"format": "xml"}, []),
        ({"format": "avro", "schema_registry": URL}, ["timeout=soon"]),
        ({"format": "avro", "schema_registry": URL}, ["url=http://elsewhere"]),
        ({"format": "avro", "schema_registry": URL}, ["no-equals-sign"]),
    ],
)
def test_misuse_is_a_config_error(kwargs: dict[str, str], flags: list[str]) -> None:
    with pytest.raises(ConfigError):
        resolve_format_settings(kwargs, env={}, raw_flags=flags)


def test_json_decoder_gives_objects_and_refuses_the_rest() -> None:
    json_decoder = decoder(FormatSettings())
    assert json_decoder(b'{"a": {"b": 1}, "y": true}', "t") == {"a": {"b": 1}, "y": True}
    for bad in (b"[1, 2]", b"\x00\x00\x00\x00\x01abc", b"", None):
        with pytest.raises(RecordUndecodable) as refused:
            decode_json(bad)
        assert refused.value.reason == UNDECODABLE


def test_a_protobuf_message_built_from_its_schema_reads_back_as_plain_values() -> None:
    T = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="t.proto", package="p", syntax="proto3")
    row = file.message_type.add(name="Row")
    row.field.add(name="amount", number=1, type=T.TYPE_DOUBLE, label=T.LABEL_OPTIONAL)
    row.field.add(name="count", number=2, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    row.field.add(
        name="maybe", number=3, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL, proto3_optional=True
    )
    row.oneof_decl.add(name="_maybe")
    row.field[2].oneof_index = 0
    row.field.add(name="tags", number=4, type=T.TYPE_STRING, label=T.LABEL_REPEATED)
    serialized = base64.standard_b64encode(file.SerializeToString()).decode()
    cls = message_class(file_descriptor(serialized), [0])
    message = cls(amount=1.5, count=2**40, tags=["a", "b"])
    assert message_to_dict(cls.FromString(message.SerializeToString())) == {
        "amount": 1.5,
        "count": 2**40,
        "maybe": None,
        "tags": ["a", "b"],
    }


class _Unreachable:
    def __init__(self) -> None:
        self.calls = 0

    def get_schema(self, *_args: object, **_kwargs: object) -> None:
        from streamtrain.formats import registry

        self.calls += 1
        # What the registry client raises when nothing listens.
        raise registry.httpx.ConnectError("[Errno 111] Connection refused")


def test_an_unreachable_registry_stops_the_run_after_the_bounded_wait() -> None:
    from streamtrain.formats import registry

    now = [0.0]
    client = _Unreachable()
    decode = registry.RegistryDecoder(
        FormatSettings(format="avro", schema_registry=URL, registry_wait=5),
        client,  # type: ignore[arg-type]
        sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
        clock=lambda: now[0],
    )
    with pytest.raises(SchemaRegistryUnreachable):
        decode(b"\x00\x00\x00\x00\x07payload", "t")
    assert 5.0 <= now[0] < 7.0 and client.calls > 3


def test_every_decoder_refusal_is_a_dead_letter_reason_of_the_steps() -> None:
    assert set(REASONS) <= {reason.value for reason in Reason}


def test_a_registry_format_loader_turns_refusals_into_invalid_events() -> None:
    settings = FormatSettings(format="avro", schema_registry="http://127.0.0.1:9", registry_wait=1)
    load = load_records(settings, "payments")
    assert load is not None
    with pytest.raises(InvalidEvent) as bad:
        load(b"{}")  # no wire-format header: no record of an Avro topic
    assert bad.value.reason is Reason.UNDECODABLE
    assert load_records(FormatSettings(), "payments") is None  # JSON: the shape's own reader


def test_a_registry_format_needs_flat_records() -> None:
    formats = FormatSettings(format="protobuf", schema_registry="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="--target"):
        TrainSettings(formats=formats)
    assert TrainSettings(formats=formats, target="y").record_shape() is not None


def test_registry_split_records_need_a_labels_topic_of_their_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Feature and label records have different schemas: one subject cannot hold both.
    code = main(
        [
            "produce", "--topic", "t", "--labels-topic", "t", "--format", "avro",
            "--schema-registry", "http://127.0.0.1:9/apis/ccompat/v7", "--limit", "5",
            "--bootstrap-servers", "127.0.0.1:9", "-q",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code
    assert err.startswith("streamtrain: error:") and "labels topic of its own" in err
    assert len(err.strip().splitlines()) == 1
