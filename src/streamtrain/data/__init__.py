"""Event format (decode and validate) and the sources that replay datasets into Kafka."""
