import Processing

// The documentation of the two stateful operators, in the steps' format (`StepSpec`): rendered into
// docs/reference/processors/ and checked against the readers (`WindowSpec.init`, `JoinSpec.init`).

extension WindowSpec {
    public static let spec = StepSpec(
        name: "window",
        summary:
            "Event-time windows per key — tumbling, hopping, sliding or session — with aggregates (count, sum, min, max, avg, distinct, "
            + "percentile).",
        form: "a mapping with the keys below, beside `state:` (and `late:`)",
        placement: .stage,
        fields: [
            .init("type", "tumbling | hopping | sliding | session", default: "tumbling", "the kind of window"),
            .init("size", "duration", default: "required (not for session)", "the window length"),
            .init("advance", "duration", default: "required for hopping", "how far hopping windows start apart (at most size)"),
            .init("gap", "duration", default: "required for session", "the inactivity that closes a session"),
            .init("grace", "duration", default: "0s", "records up to this much out of order still count; later ones go to `late:`"),
            .init(
                "time", "expression | $timestamp | $event_time", default: "$event_time",
                "the event time: a field (epoch ms or ISO-8601), the Kafka timestamp, or ingest's sf.event_time"),
            .init("key", "expression", default: "the record key", "the group key (must not move records across partitions)"),
            .init("key_field", "string", default: "key", "the key's name in the result"),
            .init("emit", "final | update", default: "final", "one result when a window closes, or one on every change"),
            .init("aggregate", "mapping", "output field → count() | sum(x) | min(x) | max(x) | avg(x) | distinct(x) | percentile(x, p)"),
            .init(
                "idle_timeout", "duration", default: "30s",
                "a partition without records this long moves its clock with the wall clock; 0s: never"),
        ],
        examples: [
            "type: tumbling\nsize: 1m\ngrace: 10s\ntime: ts\nkey: sensor_id\nkey_field: sensor_id\naggregate:\n  readings: count()\n  "
                + "p95_c: percentile(temperature_c, 95)",
            "type: hopping\nsize: 5m\nadvance: 1m\naggregate:\n  avg_c: avg(temperature_c)",
            "type: session\ngap: 30s\nemit: update\naggregate:\n  events: count()",
        ],
        notes: """
            A result is `{<key_field>, window_start, window_end, <aggregates>}` with id `<key>@<window start ms>`; \
            persist it with `key: [<key_field>, window_start]`. The section also needs \
            `state: { changelog: <topic>, memory_budget: 64MiB, snapshot_bytes: 1MiB }`. \
            See docs/PIPELINES.md, *Windows and joins*.
            """)
}

extension JoinSpec {
    public static let spec = StepSpec(
        name: "join",
        summary: "A windowed stream–stream join of the input with a second, co-partitioned topic (inner, left or outer).",
        form: "a mapping with the keys below, beside `state:`",
        placement: .stage,
        fields: [
            .init("with", "logical topic", "the second input (same partition count and key partitioning as the input)"),
            .init("type", "inner | left | outer", default: "inner", "which unmatched records are emitted (with null for the other side)"),
            .init("window", "duration", "how far apart in event time two records may be"),
            .init("grace", "duration", default: "0s", "records up to this much out of order still join"),
            .init("time", "expression | $timestamp | $event_time", default: "$event_time", "the event time of both sides"),
            .init("left_time", "expression", default: "time", "the input's event time"),
            .init("right_time", "expression", default: "time", "the second input's event time"),
            .init("as", "{ left, right }", default: "{ left: left, right: right }", "the names of the two sides in the result"),
            .init("key_field", "string", default: "key", "the key's name in the result"),
            .init(
                "idle_timeout", "duration", default: "30s",
                "a partition without records this long moves its clock with the wall clock; 0s: never"),
        ],
        examples: [
            "with: payments\ntype: left\nwindow: 5m\ngrace: 30s\ntime: ts\nas: { left: order, right: payment }"
        ],
        notes: """
            A result is `{<key_field>, <left>: {…}, <right>: {…}}` with id `<left id>+<right id>`. \
            The section also needs `state: { changelog: <topic> }`. See docs/PIPELINES.md, *Windows and joins*.
            """)
}
