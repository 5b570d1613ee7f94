/// Header names every stage reads and writes. A record's lineage travels in its Kafka headers, so any
/// consumer of any topic (a dashboard, another system) sees the same identity the pipeline uses.
public enum RecordHeader {
    /// The record's id: deterministic where the source is replayable (a file and its line, a generator
    /// and its sequence number), so a replayed record carries the id it had the first time. Sinks upsert
    /// by it, which makes redelivery harmless.
    public static let id = "sf.id"
    /// Event time in milliseconds since the epoch (from a field of the record, or the ingest time).
    public static let eventTime = "sf.event_time"
    /// When ingest first read the record, milliseconds since the epoch (end-to-end latency starts here).
    public static let ingestTime = "sf.ingest_time"
    /// Which source produced the record, e.g. `file:/data/a.ndjson` or `http`.
    public static let source = "sf.source"
    /// The content type of the value, `application/json` for every record a stage produces.
    public static let contentType = "content-type"
    /// W3C Trace Context: `00-<trace id>-<span id of the stage that wrote the record>-<flags>`. Every
    /// stage replaces it with its own span's, so along a record id the trace id stays and the span
    /// id changes per hop (docs/ARCHITECTURE.md, "Tracing").
    public static let traceParent = "traceparent"
    /// W3C Trace Context vendor state, carried along with `traceparent` when a tracer has any.
    public static let traceState = "tracestate"
}

/// Header names of a dead letter. Where Kafka Connect has a name for the fact (its
/// `errors.deadletterqueue.context.headers.enable` headers), the same name is used, so tools written
/// for Connect's dead-letter topics read ours.
public enum DeadLetterHeader {
    public static let topic = "__connect.errors.topic"
    public static let partition = "__connect.errors.partition"
    public static let offset = "__connect.errors.offset"
    /// The worker that gave up on the record: `ingest`, `validate`, `process` or `persist`.
    public static let stage = "__connect.errors.stage"
    /// The component within the stage, e.g. `json-parse`, `schema:reading`, `filter`.
    public static let className = "__connect.errors.class.name"
    /// The error class, e.g. `MalformedJSON`, `SchemaViolation`, `ExpressionError`.
    public static let exceptionClass = "__connect.errors.exception.class.name"
    /// A human-readable reason.
    public static let exceptionMessage = "__connect.errors.exception.message"
    /// The pipeline name (Connect's connector name).
    public static let connector = "__connect.errors.connector.name"
    /// When the record was dead-lettered, milliseconds since the epoch (Streamfirst's addition).
    public static let time = "sf.errors.time"
    /// For schema violations: a JSON array of `{ "path", "keyword", "message" }` (JSON Pointers into
    /// record and schema) (Streamfirst's addition).
    public static let violations = "sf.errors.violations"
}
