import Config
import Processing
import StreamCore

/// A record as the stateful operators see it: parsed value plus where it came from. The process
/// stage builds it from a Kafka message; the test driver builds it directly.
public struct StreamRecord: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    /// The record key as text (nil: no key).
    public var key: String?
    public var value: JSONValue
    /// The record id (`sf.id`), deterministic for replayable sources.
    public var id: String
    /// The Kafka timestamp (CreateTime or LogAppendTime), milliseconds since the epoch.
    public var timestampMs: Int64
    /// The `sf.event_time` header, when the record has one.
    public var eventTimeHeaderMs: Int64?

    public init(
        topic: String, partition: Int32, offset: Int64, key: String?, value: JSONValue, id: String, timestampMs: Int64,
        eventTimeHeaderMs: Int64? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.id = id
        self.timestampMs = timestampMs
        self.eventTimeHeaderMs = eventTimeHeaderMs
    }

    var context: RecordContext {
        RecordContext(id: id, key: key, eventTimeMs: eventTimeHeaderMs, topic: topic, partition: partition, offset: offset)
    }
}

/// One record a stateful operator emits (a window result or a join result).
public struct StatefulResult: Sendable, Equatable {
    /// The output record's key: the group key or the join key.
    public var key: String
    public var value: JSONValue
    /// Deterministic: `<key>@<window start>` for windows, `<left id>+<right id>` for joins; replays
    /// and restarts give the same id to the same result, which downstream upserts rely on.
    public var id: String
    /// The result's event time (`sf.event_time`): the window's last millisecond, or the later of
    /// the two joined records.
    public var eventTimeMs: Int64
}

/// Where a record's event time comes from (`time:`).
///
/// - absent: the `sf.event_time` header ingest sets, else the Kafka timestamp;
/// - `$timestamp`: the Kafka timestamp;
/// - an expression (usually a field): an integer (milliseconds since the epoch) or an ISO-8601 string.
public enum EventTimeSource: Sendable {
    case header
    case kafkaTimestamp
    case expression(Expression)

    public init(_ node: ConfigNode?) throws(ConfigError) {
        guard let node else {
            self = .header
            return
        }
        let text = try node.string()
        switch text {
        case "$event_time": self = .header
        case "$timestamp": self = .kafkaTimestamp
        default:
            do {
                self = .expression(try Expression(text))
            } catch {
                throw node.error("time: \(error)")
            }
        }
    }

    /// The event time of `record`, or an error saying why it has none.
    public func eventTime(of record: StreamRecord) throws(ProcessingError) -> Int64 {
        switch self {
        case .header:
            return record.eventTimeHeaderMs ?? record.timestampMs
        case .kafkaTimestamp:
            return record.timestampMs
        case .expression(let e):
            let v: JSONValue
            do {
                v = try e.evaluate(record.value, context: record.context)
            } catch {
                throw ProcessingError(step: "time", errorClass: .expressionError, message: error.message)
            }
            if let ms = v.int64Value { return ms }
            if let s = v.stringValue, let ms = TimeFormat.parse(s) { return ms }
            throw ProcessingError(
                step: "time", errorClass: .missingEventTime,
                message: "time: \(e.text) gave \(v.jsonString); expected milliseconds since the epoch or an ISO-8601 time")
        }
    }
}
