"""confluent-kafka's Schema Registry serializers (an independent client, from PyPI) against a registry.

    registry_interop.py serialize URL TOPIC SCHEMA_FILE < values.jsonl  -> one hex line per record
    registry_interop.py deserialize URL TOPIC < records.hex              -> one JSON line per record

`serialize` registers the schema under <TOPIC>-value (AvroSerializer's default subject) and writes
each value in the Confluent wire format; `deserialize` reads records in that format, fetching their
schemas from the registry by id.
"""
import json
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    mode, url, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    client = SchemaRegistryClient({"url": url})
    context = SerializationContext(topic, MessageField.VALUE)
    if mode == "serialize":
        with open(sys.argv[4]) as f:
            schema = f.read()
        serializer = AvroSerializer(client, schema)
        for line in sys.stdin:
            if line.strip():
                print(serializer(json.loads(line), context).hex())
    else:
        deserializer = AvroDeserializer(client)
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(deserializer(bytes.fromhex(line.strip()), context), sort_keys=True))


if __name__ == "__main__":
    main()
