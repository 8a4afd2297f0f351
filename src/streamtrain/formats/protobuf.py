"""Protobuf without generated code: message classes built from the schemas a registry holds.

confluent-kafka's ``ProtobufDeserializer`` parses every record with the one message class it
was built with. A trainer has no generated classes for the user's topics, so the reader builds
the class from the writer's registered schema (a ``FileDescriptorProto``) in a descriptor pool
of its own per schema id, and gives each schema id its own deserializer: a new schema version
mid-stream gets a new class, and records written with the old one keep theirs.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import re
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

_WELL_KNOWN = re.compile(r"google/protobuf/([a-z_]+)\.proto")


class UnusableProtobufSchema(Exception):
    """The registered schema cannot be turned into a message class here."""


def file_descriptor(serialized_schema: str) -> descriptor_pb2.FileDescriptorProto:
    """The ``FileDescriptorProto`` of a schema fetched in the registry's ``serialized`` format
    (base64)."""
    try:
        return descriptor_pb2.FileDescriptorProto.FromString(
            base64.standard_b64decode(serialized_schema.encode("ascii"))
        )
    except (binascii.Error, UnicodeEncodeError, DecodeError) as err:
        raise UnusableProtobufSchema(f"not a serialized Protobuf schema: {err}") from err


def message_class(file: descriptor_pb2.FileDescriptorProto, indexes: list[int]) -> type[Message]:
    """The class of the message at ``indexes`` (the wire format's message-index path) in
    ``file``, built in a pool of its own. Imports other than Protobuf's well-known types are
    not resolved."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in file.dependency:
        known = _WELL_KNOWN.fullmatch(dependency)
        if known is None:
            raise UnusableProtobufSchema(
                f"the schema imports {dependency!r}; only Protobuf's well-known types can be"
            )
        module = importlib.import_module(f"google.protobuf.{known.group(1)}_pb2")
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    try:
        built = pool.Add(file)
    except TypeError as err:  # the pool's way of refusing a malformed file
        raise UnusableProtobufSchema(f"invalid Protobuf schema: {err}") from err
    path = indexes or [0]
    try:
        descriptor: Descriptor = built.message_types_by_name[file.message_type[path[0]].name]
        for index in path[1:]:
            descriptor = descriptor.nested_types[index]
    except IndexError as err:
        raise UnusableProtobufSchema(f"no message at index path {path} in the schema") from err
    return message_factory.GetMessageClass(descriptor)


def message_to_dict(message: Message) -> dict[str, Any]:
    """A message as plain Python values: nested messages as dicts, enums by name, unset
    optional fields and messages as None, int64 kept as int (unlike ``json_format``)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                out[field.name] = {k: _value(value_field, v) for k, v in value.items()}
            else:
                out[field.name] = [_value(field, item) for item in value]
        elif field.has_presence and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _value(field, value)
    return out


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_to_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    return value
