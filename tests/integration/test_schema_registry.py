"""The local schema registry: up is idempotent, status tells, and it refuses an incompatible
schema version (global compatibility BACKWARD, as Confluent's default)."""

from __future__ import annotations

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientRegistryError

from streamtrain.cli.main import main
from streamtrain.schema_registry import LocalSchemaRegistry


def test_up_again_is_a_no_op_and_status_answers(
    local_schema_registry: LocalSchemaRegistry | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if local_schema_registry is None:
        pytest.skip("an external registry is not ours to start")
    same = LocalSchemaRegistry(data_dir=local_schema_registry.data_dir)
    assert same.up(wait_seconds=5) is False
    assert same.url == local_schema_registry.url
    assert main(["registry", "status", "--data-dir", str(same.data_dir)]) == 0
    assert "running" in capsys.readouterr().out


def test_an_incompatible_version_is_refused(schema_registry: str, unique_name) -> None:
    client = SchemaRegistryClient({"url": schema_registry})
    subject = unique_name("compat") + "-value"

    def record(*fields: str) -> Schema:
        return Schema(
            '{"type": "record", "name": "R", "fields": [' + ", ".join(fields) + "]}", "AVRO"
        )

    client.register_schema(subject, record('{"name": "a", "type": "double"}'))
    client.register_schema(
        subject,
        record('{"name": "a", "type": "double"}', '{"name": "b", "type": "long", "default": 0}'),
    )
    with pytest.raises(ClientRegistryError) as refused:
        client.register_schema(subject, record('{"name": "a", "type": "string"}'))
    assert refused.value.http_status_code == 409
    assert len(client.get_versions(subject)) == 2
