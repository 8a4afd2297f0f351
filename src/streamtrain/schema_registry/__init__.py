"""A local Confluent-compatible schema registry (Apicurio Registry from its runner jar)."""

from streamtrain.schema_registry.local import (
    LocalSchemaRegistry,
    RegistryStatus,
    registry_answers,
)
from streamtrain.schema_registry.runtime import APICURIO_VERSION, ensure_registry_jar

__all__ = [
    "APICURIO_VERSION",
    "LocalSchemaRegistry",
    "RegistryStatus",
    "ensure_registry_jar",
    "registry_answers",
]
