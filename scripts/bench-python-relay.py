"""The consume -> produce loop a user would write in Python instead of a Streamfirst stage.

`streamfirst-bench stage` runs it as a second baseline beside the C relay: confluent-kafka (the
same librdkafka underneath), batches of up to 10 000 records, key / value / headers passed on,
an idempotent producer with linger.ms as given. With --schema it validates each record the way a
Python user would: orjson to parse, fastjsonschema to check; records that fail go to --dead.
Offsets are committed by the consumer's auto-commit of what it has consumed (at-least-once only
if the process is stopped cleanly - the simple loop, not a hardened one).

Needs confluent-kafka (and orjson + fastjsonschema with --schema): `make bench-deps`.
"""

import argparse
import json
import signal
import sys

from confluent_kafka import Consumer, Producer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--from", dest="source", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--dead", default=None)
    parser.add_argument("--schema", default=None, help="a JSON Schema file: validate every record")
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    parser.add_argument("--linger", type=int, default=2)
    args = parser.parse_args()

    check = None
    if args.schema:
        import fastjsonschema
        import orjson

        with open(args.schema, "rb") as f:
            validator = fastjsonschema.compile(json.load(f))

        def check(value):
            try:
                validator(orjson.loads(value))
                return True
            except (orjson.JSONDecodeError, fastjsonschema.JsonSchemaException):
                return False

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": args.fetch_wait_ms,
        "queued.min.messages": 1000000,
    })
    producer = Producer({
        "bootstrap.servers": args.brokers,
        "enable.idempotence": True,
        "linger.ms": args.linger,
    })
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.subscribe([args.source])
    while running:
        batch = consumer.consume(10000, timeout=0.1)
        for m in batch:
            if m.error():
                continue
            value = m.value()
            topic = args.to
            if check is not None and (value is None or not check(value)):
                topic = args.dead or args.to
            while True:
                try:
                    producer.produce(topic, value=value, key=m.key(), headers=m.headers())
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
    producer.flush(10)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
