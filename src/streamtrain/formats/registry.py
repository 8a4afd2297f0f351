"""Records in the schema-registry wire format (magic byte 0, a 4-byte schema id, the payload),
decoded by confluent-kafka's Avro, Protobuf and JSON Schema deserializers.

Each record is read with its writer's schema, looked up by id once (the client caches it): a
new schema version mid-stream is simply another id, read from its first record on without a
restart. No subject is consulted while reading, so no reader-schema migration or rule runs.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer

# The HTTP library the registry client itself uses (httpx2 where installed, else httpx): its
# transport errors are how an unreachable registry shows.
from confluent_kafka.schema_registry.common._httpx_compat import httpx
from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.schema_registry.serde import SchemaId
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError
from google.protobuf.message import DecodeError

from streamtrain.errors import SchemaRegistryUnreachable
from streamtrain.formats.decoding import (
    SCHEMA_MISMATCH,
    UNDECODABLE,
    UNKNOWN_SCHEMA,
    UNUSABLE_SCHEMA,
    RecordUndecodable,
    decode_json,
    is_wire_format,
)
from streamtrain.formats.protobuf import (
    UnusableProtobufSchema,
    file_descriptor,
    message_class,
    message_to_dict,
)
from streamtrain.formats.settings import AUTO, AVRO, JSONSCHEMA, PROTOBUF, FormatSettings

# The registry's schema types and the formats they are.
_SCHEMA_TYPES = {"AVRO": AVRO, "PROTOBUF": PROTOBUF, "JSON": JSONSCHEMA}
# What a deserializer raises when the payload does not match the writer's schema: its own
# SerializationError, or fastavro's and protobuf's errors, which it lets through.
_PAYLOAD_ERRORS = (
    SerializationError,
    DecodeError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    OverflowError,
    struct.error,
)
# Answers worth retrying: the registry is busy or starting, not refusing.
_TRANSIENT_STATUS = (408, 429)
_FIRST_BACKOFF_SECONDS = 0.2
_MAX_BACKOFF_SECONDS = 2.0


def _no_subject(*_args: object) -> None:
    """A subject-name strategy naming no subject: read with the writer's schema only."""
    return None


_READ_CONF = {"subject.name.strategy": _no_subject}


class RegistryDecoder:
    """Decodes wire-format records of ``settings.format`` (``auto``: whatever the schema's type
    is, and plain JSON for values without the magic byte).

    A registry that cannot be reached (connection refused, timeouts, 5xx) is retried with
    backoff for ``settings.registry_wait`` seconds, then
    :class:`~streamtrain.errors.SchemaRegistryUnreachable` is raised; so is a registry that
    refuses access (401/403), a settings problem rather than a record's.
    """

    def __init__(
        self,
        settings: FormatSettings,
        client: SchemaRegistryClient | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client if client is not None else SchemaRegistryClient(_client_conf(settings))
        self._sleep = sleep
        self._clock = clock
        self._avro = AvroDeserializer(self.client, conf=_READ_CONF)
        self._json = JSONDeserializer(None, conf=_READ_CONF, schema_registry_client=self.client)
        self._protobuf: dict[tuple[int, tuple[int, ...]], ProtobufDeserializer] = {}
        self._api_checked = False
        self._schemas: dict[int, Schema] = {}
        self._contexts: dict[str, SerializationContext] = {}

    def __call__(self, value: bytes | None, topic: str) -> dict[str, Any]:
        if not is_wire_format(value):
            if self.settings.format == AUTO:
                return decode_json(value, topic)
            raise RecordUndecodable(
                UNDECODABLE,
                f"not in the schema-registry wire format ({self.settings.format} records start "
                "with the magic byte 0 and a 4-byte schema id)",
            )
        assert value is not None
        schema_id = int.from_bytes(value[1:5], "big")
        schema = self._schemas.get(schema_id)
        if schema is None:
            schema = self._schema(schema_id)
        kind = _SCHEMA_TYPES.get(schema.schema_type or "AVRO")
        if kind is None or (self.settings.format != AUTO and kind != self.settings.format):
            raise RecordUndecodable(
                UNUSABLE_SCHEMA,
                f"schema id {schema_id} is {schema.schema_type}, not {self.settings.format}",
            )
        # Kept only once usable: the client's cache holds it anyway, this saves its lock.
        self._schemas[schema_id] = schema
        ctx = self._contexts.get(topic)
        if ctx is None:
            ctx = self._contexts[topic] = SerializationContext(topic, MessageField.VALUE)
        try:
            if kind == PROTOBUF:
                result = message_to_dict(
                    self._protobuf_deserializer(schema_id, schema, value)(value, ctx)
                )
            elif kind == AVRO:
                result = self._avro(value, ctx)
            else:
                result = self._json(value, ctx)
        except (httpx.TransportError, ClientRegistryError) as err:
            # The schema is cached by now, so this is unexpected: treat it as the registry's.
            raise SchemaRegistryUnreachable(
                f"the schema registry failed while decoding: {_describe(err)}"
            ) from err
        except _PAYLOAD_ERRORS as err:
            raise RecordUndecodable(
                SCHEMA_MISMATCH, f"the record does not match schema id {schema_id}: {err}"
            ) from err
        if not isinstance(result, dict):
            raise RecordUndecodable(
                UNUSABLE_SCHEMA,
                f"schema id {schema_id} describes a {type(result).__name__}, not a record",
            )
        return result

    def _schema(self, schema_id: int) -> Schema:
        """The writer's schema (serialized form: base64 descriptors for Protobuf), retried
        within the bounded wait while the registry does not answer."""
        deadline = self._clock() + self.settings.registry_wait
        backoff = _FIRST_BACKOFF_SECONDS
        while True:
            try:
                return self.client.get_schema(schema_id, fmt="serialized")
            except ClientRegistryError as err:
                status = err.http_status_code
                if status == 404:
                    self._check_api()
                    raise RecordUndecodable(
                        UNKNOWN_SCHEMA, f"schema id {schema_id} is not in the registry"
                    ) from err
                if status in (401, 403):
                    raise SchemaRegistryUnreachable(
                        f"the schema registry at {self.settings.schema_registry} refused access "
                        f"(HTTP {status}); check the -S basic.auth.* settings"
                    ) from err
                if status < 500 and status not in _TRANSIENT_STATUS:
                    raise RecordUndecodable(
                        UNKNOWN_SCHEMA,
                        f"the registry answered HTTP {status} for schema id {schema_id}",
                    ) from err
                failure: Exception = err
            except httpx.TransportError as err:
                failure = err
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise SchemaRegistryUnreachable(
                    f"no schema registry answered at {self.settings.schema_registry} within "
                    f"{self.settings.registry_wait:g} s: {_describe(failure)}"
                ) from failure
            self._sleep(min(backoff, remaining))
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)

    def _check_api(self) -> None:
        """Once: make sure a 404 comes from a registry, not from a URL that is none (every
        record would be dead-lettered as ``unknown-schema`` otherwise)."""
        if self._api_checked:
            return
        try:
            self.client.get_subjects()
        except (ClientRegistryError, httpx.TransportError) as err:
            raise SchemaRegistryUnreachable(
                f"no schema registry API answers at {self.settings.schema_registry} "
                f"({_describe(err)} listing its subjects); check --schema-registry"
            ) from err
        self._api_checked = True

    def _protobuf_deserializer(
        self, schema_id: int, schema: Schema, value: bytes
    ) -> ProtobufDeserializer:
        framing = SchemaId("PROTOBUF")
        try:
            framing.from_bytes(io.BytesIO(value))
        except _PAYLOAD_ERRORS as err:
            raise RecordUndecodable(UNDECODABLE, f"bad Protobuf message indexes: {err}") from err
        key = (schema_id, tuple(framing.message_indexes or ()))
        deserializer = self._protobuf.get(key)
        if deserializer is None:
            try:
                cls = message_class(file_descriptor(schema.schema_str or ""), list(key[1]))
            except UnusableProtobufSchema as err:
                raise RecordUndecodable(UNUSABLE_SCHEMA, f"schema id {schema_id}: {err}") from err
            deserializer = ProtobufDeserializer(cls, {**_READ_CONF}, self.client)
            self._protobuf[key] = deserializer
        return deserializer


def _client_conf(settings: FormatSettings) -> dict[str, Any]:
    # One attempt per call: the decoder's own loop bounds the whole wait.
    return {"max.retries": 0, **settings.client_config()}


def _describe(err: BaseException) -> str:
    if isinstance(err, ClientRegistryError):
        return f"HTTP {err.http_status_code}"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
