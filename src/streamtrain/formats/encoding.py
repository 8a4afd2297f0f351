"""Writing records in the schema-registry wire format: a flat record schema derived from the
events (features plus a target field), registered under ``<topic>-value``, and
confluent-kafka's Avro, Protobuf or JSON Schema serializer bound to the registered id.
"""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer

# The HTTP library the registry client uses: its transport errors mean "unreachable".
from confluent_kafka.schema_registry.common._httpx_compat import httpx
from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientRegistryError
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from streamtrain.errors import ConfigError, SchemaRegistryUnreachable
from streamtrain.formats.settings import AVRO, JSONSCHEMA, PROTOBUF, FormatSettings

# Field kinds, widest last among the numbers: an int field that also holds floats is a double.
BOOLEAN, LONG, DOUBLE, STRING = "boolean", "long", "double", "string"
SAMPLE_EVENTS = 1000
"""Events a schema is derived from; later events must fit it."""
# Avro and Protobuf names; JSON Schema takes any.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RECORD_NAME = "Record"
PROTOBUF_PACKAGE = "streamtrain"


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    nullable: bool = False


@dataclass(frozen=True)
class RecordSchema:
    """A flat record: its fields in order, the target last."""

    fields: tuple[Field, ...]

    def avro(self) -> str:
        """The Avro record schema.

        >>> RecordSchema((Field("a", "double"), Field("y", "boolean", True))).avro()
        '{"type":"record","name":"Record","namespace":"streamtrain","fields":[{"name":"a","type":"double"},{"name":"y","type":["null","boolean"],"default":null}]}'
        """
        fields: list[dict[str, Any]] = []
        for f in self.fields:
            if f.nullable:
                fields.append({"name": f.name, "type": ["null", f.kind], "default": None})
            else:
                fields.append({"name": f.name, "type": f.kind})
        return orjson.dumps(
            {"type": "record", "name": RECORD_NAME, "namespace": PROTOBUF_PACKAGE, "fields": fields}
        ).decode()

    def json_schema(self) -> str:
        """The JSON Schema of an object with these properties (all required, nullable ones may
        be null)."""
        kinds = {BOOLEAN: "boolean", LONG: "integer", DOUBLE: "number", STRING: "string"}
        properties = {
            f.name: {"type": [kinds[f.kind], "null"] if f.nullable else kinds[f.kind]}
            for f in self.fields
        }
        return orjson.dumps(
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "title": RECORD_NAME,
                "type": "object",
                "properties": properties,
                "required": [f.name for f in self.fields],
                "additionalProperties": False,
            }
        ).decode()

    def protobuf(self) -> descriptor_pb2.FileDescriptorProto:
        """A proto3 file with one message; nullable fields are ``optional`` (presence)."""
        kinds = {
            BOOLEAN: descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
            LONG: descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
            DOUBLE: descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
            STRING: descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        }
        file = descriptor_pb2.FileDescriptorProto(
            name="streamtrain_record.proto", package=PROTOBUF_PACKAGE, syntax="proto3"
        )
        message = file.message_type.add(name=RECORD_NAME)
        for number, f in enumerate(self.fields, start=1):
            field = message.field.add(
                name=f.name,
                number=number,
                type=kinds[f.kind],
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            )
            if f.nullable:  # proto3 `optional`: a synthetic one-field oneof
                field.proto3_optional = True
                field.oneof_index = len(message.oneof_decl)
                message.oneof_decl.add(name=f"_{f.name}")
        return file


def derive_schema(
    records: Iterable[dict[str, Any]], *, names_must_be_identifiers: bool
) -> RecordSchema:
    """The flat schema the records fit: per field, booleans, longs (ints), doubles (any
    float among the numbers) or strings, nullable when a record lacks it or holds None.

    >>> schema = derive_schema([{"a": 1, "y": True}, {"a": 0.5}], names_must_be_identifiers=True)
    >>> [(f.name, f.kind, f.nullable) for f in schema.fields]
    [('a', 'double', False), ('y', 'boolean', True)]
    """
    kinds: dict[str, set[str]] = {}
    nullable: set[str] = set()
    for count, record in enumerate(records, start=1):
        for name in kinds.keys() - record.keys():
            nullable.add(name)
        for name, value in record.items():
            if name not in kinds:
                kinds[name] = set()
                if count > 1:
                    nullable.add(name)
            if value is None:
                nullable.add(name)
            else:
                kinds[name].add(_kind(name, value))
    fields = []
    for name, seen in kinds.items():
        if names_must_be_identifiers and not _NAME.fullmatch(name):
            raise ConfigError(
                f"field {name!r} is not a valid Avro/Protobuf name (letters, digits, '_'; not "
                "starting with a digit); use --format jsonschema or rename it"
            )
        if seen <= {LONG, DOUBLE}:
            kind = DOUBLE if DOUBLE in seen or not seen else LONG
        elif len(seen) == 1:
            (kind,) = seen
        else:
            raise ConfigError(f"field {name!r} holds values of kinds {sorted(seen)}")
        fields.append(Field(name, kind, name in nullable))
    if not fields:
        raise ConfigError("no events to derive a schema from")
    return RecordSchema(tuple(fields))


def _kind(name: str, value: Any) -> str:
    if type(value) is bool:
        return BOOLEAN
    if type(value) is int:
        return LONG
    if type(value) is float:
        return DOUBLE
    if type(value) is str:
        return STRING
    raise ConfigError(
        f"field {name!r} holds a {type(value).__name__}; flat records take booleans, numbers "
        "and strings"
    )


def flat_records(
    events: Iterable[tuple[dict[str, Any], Any]], target: str
) -> Iterator[dict[str, Any]]:
    """Each ``(x, y)`` event as one flat record: the features and ``target`` set to y."""
    for x, y in events:
        if target in x:
            raise ConfigError(f"a feature is named {target!r} like the target field; pick --target")
        yield {**x, target: y}


class RecordEncoder:
    """Encodes flat records of one :class:`RecordSchema` for ``topic`` with confluent-kafka's
    serializer of ``settings.format``, after registering the schema under ``<topic>-value``.

    Registration happens in :meth:`register`, before anything is produced: a schema the
    registry refuses as incompatible with the subject's latest version is a
    :class:`ConfigError` naming the subject.
    """

    def __init__(self, settings: FormatSettings, topic: str, schema: RecordSchema) -> None:
        self.settings = settings
        self.topic = topic
        self.schema = schema
        self.subject = f"{topic}-value"
        self.client = SchemaRegistryClient({"max.retries": 1, **settings.client_config()})
        self._ctx = SerializationContext(topic, MessageField.VALUE)
        self._message: Any = None
        self._serialize: Any = None
        self.schema_id: int | None = None

    def register(self) -> int:
        """Register the schema (a no-op when the subject already holds it); its id."""
        fmt = self.settings.format
        if fmt == AVRO:
            text, kind = self.schema.avro(), "AVRO"
        elif fmt == JSONSCHEMA:
            text, kind = self.schema.json_schema(), "JSON"
        elif fmt == PROTOBUF:
            file = self.schema.protobuf()
            pool = descriptor_pool.DescriptorPool()
            built = pool.Add(file)
            self._message = message_factory.GetMessageClass(
                built.message_types_by_name[RECORD_NAME]
            )
            text, kind = _serialized(file), "PROTOBUF"
        else:
            raise ConfigError(f"produce --format {fmt} does not use a schema registry")
        try:
            schema_id = int(self.client.register_schema(self.subject, Schema(text, kind)))
        except ClientRegistryError as err:
            if err.http_status_code == 409:
                raise ConfigError(
                    f"the schema registry refused the derived {kind} schema for subject "
                    f"{self.subject}: it is incompatible with the subject's latest version"
                ) from err
            raise SchemaRegistryUnreachable(
                f"the schema registry at {self.settings.schema_registry} did not register the "
                f"schema for {self.subject} (HTTP {err.http_status_code})"
            ) from err
        except httpx.TransportError as err:
            raise SchemaRegistryUnreachable(
                f"no schema registry answered at {self.settings.schema_registry}: {err}"
            ) from err
        conf = {"auto.register.schemas": False, "use.schema.id": schema_id}
        if fmt == AVRO:
            self._serialize = AvroSerializer(self.client, text, conf=conf)
        elif fmt == JSONSCHEMA:
            self._serialize = JSONSerializer(text, self.client, conf=conf)
        else:
            self._serialize = ProtobufSerializer(
                self._message, self.client, {**conf, "use.deprecated.format": False}
            )
        self.schema_id = schema_id
        return schema_id

    def __call__(self, record: dict[str, Any]) -> bytes:
        """The wire-format bytes of one record; a record that does not fit the schema is a
        :class:`ConfigError`."""
        if self._serialize is None:
            raise RuntimeError("register() first")
        try:
            if self._message is not None:
                value = self._message(**{k: v for k, v in record.items() if v is not None})
            else:
                value = record
            return bytes(self._serialize(value, self._ctx))
        except (SerializationError, ValueError, TypeError, KeyError, AttributeError) as err:
            raise ConfigError(
                f"an event does not fit the schema derived from the first {SAMPLE_EVENTS} "
                f"events: {err}"
            ) from err


def event_encoder(
    formats: FormatSettings,
    topic: str,
    events: Iterable[tuple[dict[str, Any], Any]],
    target: str,
) -> Callable[[dict[str, Any], Any], bytes]:
    """Derive a flat record schema (features + ``target``) from the first of ``events``,
    register it for ``topic`` and return the ``(x, y)`` encoder of the registry wire format."""
    sample = flat_records(itertools.islice(iter(events), SAMPLE_EVENTS), target)
    schema = derive_schema(sample, names_must_be_identifiers=formats.format != JSONSCHEMA)
    encoder = RecordEncoder(formats, topic, schema)
    encoder.register()

    def encode(x: dict[str, Any], y: Any) -> bytes:
        if target in x:
            raise ConfigError(f"a feature is named {target!r} like the target field; pick --target")
        return encoder({**x, target: y})

    return encode


def split_encoders(
    formats: FormatSettings,
    topics: tuple[str, str],
    events: Iterable[tuple[dict[str, Any], Any]],
    target: str,
    id_field: str = "id",
) -> tuple[Callable[[str, Any], bytes], Callable[[str, Any], bytes]]:
    """For labels that come later (``produce --labels-topic``): the encoders of feature records
    (``id_field`` and the features) on ``topics[0]`` and of label records (``id_field`` and
    ``target``) on ``topics[1]``, each ``(event id, x or y) -> bytes``, their schemas derived
    from the first of ``events`` and registered under each topic's subject."""
    sample = list(flat_records(itertools.islice(iter(events), SAMPLE_EVENTS), target))
    derived = derive_schema(sample, names_must_be_identifiers=formats.format != JSONSCHEMA)
    if any(f.name == id_field for f in derived.fields):
        raise ConfigError(f"a feature is named {id_field!r} like the id field of split records")
    key = Field(id_field, STRING)
    features = RecordSchema((key, *(f for f in derived.fields if f.name != target)))
    label = next(f for f in derived.fields if f.name == target)
    features_encoder = RecordEncoder(formats, topics[0], features)
    label_encoder = RecordEncoder(formats, topics[1], RecordSchema((key, label)))
    features_encoder.register()
    label_encoder.register()

    def encode_features(event_id: str, x: Any) -> bytes:
        return features_encoder({id_field: event_id, **x})

    def encode_label(event_id: str, y: Any) -> bytes:
        return label_encoder({id_field: event_id, target: y})

    return encode_features, encode_label


def sample_and_rest(
    records: Iterator[dict[str, Any]],
) -> tuple[list[dict[str, Any]], Iterator[dict[str, Any]]]:
    """The first :data:`SAMPLE_EVENTS` records, and all of them again as one iterator."""
    sample = list(itertools.islice(records, SAMPLE_EVENTS))
    return sample, itertools.chain(sample, records)


def _serialized(file: descriptor_pb2.FileDescriptorProto) -> str:
    return base64.standard_b64encode(file.SerializeToString()).decode("ascii")
