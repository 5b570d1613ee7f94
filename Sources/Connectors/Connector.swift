import Config
import StreamCore

// The two interfaces between the outside world and the pipeline. Sources feed the ingest worker;
// sinks are where the persist worker writes. Each connector reads its own settings from a
// `ConfigMapping` (unknown keys rejected with their line) and documents them with a `ConnectorSpec`.

// MARK: - Sources

/// One record read from a source: the raw bytes of one JSON document (one NDJSON line, or a CSV row
/// already turned into a JSON object), before ingest parses it.
public struct SourceRecord: Sendable {
    /// The record's bytes, untouched (a malformed line reaches the dead-letter topic as it was read).
    public var bytes: [UInt8]
    /// A deterministic id when the source is replayable (`file:<path>:<line>`, `gen:<seed>:<n>`), so the
    /// same input read twice yields the same id; nil lets ingest assign a random one.
    public var id: String?
    /// Where to resume after this record (opaque to ingest; given back to the source on restart).
    /// Nil for sources that cannot resume (stdin, HTTP).
    public var checkpoint: String?
    /// When the source read it, milliseconds since the epoch.
    public var receivedAtMs: Int64
    /// Set when the source already knows the record is bad (a CSV row with the wrong number of
    /// fields, a line over the size limit): ingest sends `bytes` to the dead-letter topic with this reason.
    public var rejection: String?
    /// The Kafka key when ingest has no `key:` expression (the MQTT source gives the MQTT topic).
    public var key: [UInt8]?
    /// Extra Kafka headers the source knows (e.g. `mqtt.topic`), added after the lineage headers.
    public var headers: [(String, String)]
    /// W3C Trace Context the source received with the record (e.g. the HTTP request's `traceparent`
    /// and `tracestate` headers): ingest's span continues that trace. Nil: ingest starts one.
    public var traceParent: String?
    public var traceState: String?

    public init(
        bytes: [UInt8], id: String? = nil, checkpoint: String? = nil, receivedAtMs: Int64, rejection: String? = nil,
        key: [UInt8]? = nil, headers: [(String, String)] = [], traceParent: String? = nil, traceState: String? = nil
    ) {
        self.bytes = bytes
        self.id = id
        self.checkpoint = checkpoint
        self.receivedAtMs = receivedAtMs
        self.rejection = rejection
        self.key = key
        self.headers = headers
        self.traceParent = traceParent
        self.traceState = traceState
    }
}

/// Why a source could not hand records over.
public enum EmitError: Error, Sendable {
    /// The pipeline is overloaded (producer queue full); an HTTP source answers 429.
    case backpressure
    /// The worker is shutting down; an HTTP source answers 503.
    case shuttingDown
    /// Delivery to Kafka failed.
    case deliveryFailed(String)
}

/// What a source hands its records to (implemented by the ingest worker).
public protocol RecordEmitter: Sendable {
    /// Hands records over and returns once they are queued for delivery, waiting while the
    /// producer's queue is full (backpressure for sources that can wait: files, generator, stdin).
    func emit(_ records: [SourceRecord]) async throws(EmitError)

    /// Hands records over and returns only when all are durably delivered to Kafka (HTTP answers
    /// its client after this). Throws `.backpressure` at once instead of waiting when overloaded.
    func emitAndWait(_ records: [SourceRecord]) async throws(EmitError)
}

/// A source of records for the ingest worker.
public protocol RecordSource: Sendable {
    /// Short description for logs and the `sf.source` header, e.g. `file:/data/a.ndjson`.
    var name: String { get }

    /// Reads until the input ends (returns) or the task is cancelled (returns promptly).
    /// `checkpoint` is the last checkpoint ingest persisted after delivery, nil on a first run.
    func run(resumingFrom checkpoint: String?, emitter: any RecordEmitter) async throws
}

// MARK: - Sinks

/// One record for a sink: the parsed value with its lineage and where it was consumed from.
public struct SinkRecord: Sendable {
    public var id: String
    public var key: [UInt8]?
    public var value: JSONValue
    public var eventTimeMs: Int64?
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    /// All Kafka headers of the consumed record (lineage, for the Kafka sink to pass on).
    public var headers: [(String, [UInt8]?)]

    public init(
        id: String, key: [UInt8]?, value: JSONValue, eventTimeMs: Int64?, topic: String, partition: Int32,
        offset: Int64, headers: [(String, [UInt8]?)] = []
    ) {
        self.id = id
        self.key = key
        self.value = value
        self.eventTimeMs = eventTimeMs
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.headers = headers
    }
}

/// The next offset to read for one partition, stored by a sink together with the rows it belongs to.
public struct SinkOffset: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    /// The offset of the next record to consume (last written + 1), as Kafka commits it.
    public var nextOffset: Int64

    public init(topic: String, partition: Int32, nextOffset: Int64) {
        self.topic = topic
        self.partition = partition
        self.nextOffset = nextOffset
    }
}

/// A record the sink refused (e.g. a value that does not fit a column): goes to the dead-letter topic.
public struct SinkRejection: Error, Sendable {
    public var record: SinkRecord
    public var reason: String
    public init(record: SinkRecord, reason: String) {
        self.record = record
        self.reason = reason
    }
}

/// A destination for the persist worker.
public protocol RecordSink: Sendable {
    var name: String { get }

    /// True when the sink stores consumed offsets atomically with its data (SQLite, PostgreSQL,
    /// NDJSON); the persist worker then seeks from ``storedOffsets(consumerGroup:topic:)`` on assignment
    /// and Kafka's committed offsets are only informational. False (the Kafka sink): the worker
    /// commits to the consumer group after ``write(_:offsets:consumerGroup:)`` returns.
    var storesOffsets: Bool { get }

    /// Connects, creates tables / files from config. Called once before anything else.
    func open() async throws

    /// The offsets stored with the data for this group and topic: partition -> next offset.
    func storedOffsets(consumerGroup: String, topic: String) async throws -> [Int32: Int64]

    /// Writes a batch and the offsets in one transaction: either both are stored or neither.
    /// Writing a record whose key is already stored replaces it (idempotent upsert), so a redelivered
    /// record never becomes a second row. Records that cannot be written are returned, not thrown;
    /// a thrown error means the whole batch failed (retry it).
    func write(_ batch: [SinkRecord], offsets: [SinkOffset], consumerGroup: String) async throws -> [SinkRejection]

    /// The records of `batch` that ``write(_:offsets:consumerGroup:)`` would refuse, with reasons —
    /// a pure check, no I/O. The persist worker dead-letters these *before* writing the rest, so a
    /// crash between the write and the dead letter cannot lose a refused record.
    func rejections(in batch: [SinkRecord]) -> [SinkRejection]

    /// The number of stored rows (the demo's summary and tests read it).
    func count() async throws -> Int

    /// Flushes and releases everything.
    func close() async
}

extension RecordSink {
    /// Sinks that accept every record (NDJSON, Kafka) refuse nothing.
    public func rejections(in batch: [SinkRecord]) -> [SinkRejection] { [] }
}

// MARK: - Self-description

/// A connector's documentation: its type name, what it does, and its settings.
public struct ConnectorSpec: Sendable {
    public typealias Field = SettingSpec

    public var type: String
    public var summary: String
    public var fields: [Field]
    /// Minimal valid settings (YAML, the keys beside `type`), one per form the connector takes:
    /// shown in the reference pages, and the starting points from which a test feeds every
    /// documented key through the real reader. Empty: the reference derives one from the required fields.
    public var examples: [String]

    public init(type: String, summary: String, fields: [Field], examples: [String] = []) {
        self.type = type
        self.summary = summary
        self.fields = fields
        self.examples = examples
    }
}
