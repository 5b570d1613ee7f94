#!/usr/bin/env python3
"""An independent Kafka client (confluent-kafka, with its own bundled librdkafka) for interop tests.

    confluent_interop.py produce BOOTSTRAP TOPIC COUNT   -> prints one JSON line: {"produced": COUNT}
    confluent_interop.py consume BOOTSTRAP TOPIC COUNT   -> prints one JSON line per record, then {"done": COUNT}

Records produced here: key "py-key-<i>", value "py-value-<i>", timestamp 1700000000000+i,
headers origin=python, index=<i>, and a header "empty" with a null value.
"""
import json
import sys
import uuid

from confluent_kafka import Consumer, Producer


def produce(bootstrap, topic, count):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    failures = []

    def report(err, msg):
        if err is not None:
            failures.append(str(err))

    for i in range(count):
        p.produce(
            topic,
            key=f"py-key-{i}".encode(),
            value=f"py-value-{i}".encode(),
            headers=[("origin", b"python"), ("index", str(i).encode()), ("empty", None)],
            timestamp=1700000000000 + i,
            on_delivery=report,
        )
        p.poll(0)
    left = p.flush(30)
    if left or failures:
        print(json.dumps({"error": f"undelivered={left} failures={failures[:3]}"}))
        sys.exit(1)
    print(json.dumps({"produced": count}))


def text(b):
    return None if b is None else b.decode("utf-8", "replace")


def consume(bootstrap, topic, count):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"interop-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got = 0
    idle = 0
    while got < count and idle < 60:
        m = c.poll(1.0)
        if m is None:
            idle += 1
            continue
        if m.error():
            print(json.dumps({"event": "error", "error": str(m.error())}), file=sys.stderr)
            continue
        got += 1
        ts_type, ts = m.timestamp()
        print(
            json.dumps(
                {
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "key": text(m.key()),
                    "value": text(m.value()),
                    "timestamp": ts,
                    "headers": [[k, text(v)] for k, v in (m.headers() or [])],
                }
            ),
            flush=True,
        )
    c.close()
    print(json.dumps({"done": got}), flush=True)
    sys.exit(0 if got == count else 1)


if __name__ == "__main__":
    mode, bootstrap, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    {"produce": produce, "consume": consume}[mode](bootstrap, topic, count)
