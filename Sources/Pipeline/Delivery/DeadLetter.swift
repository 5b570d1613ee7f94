import Foundation
import Kafka
import Processing
import StreamCore

/// Why a stage could not handle a record: what goes into the dead-letter headers.
public struct DeadLetterReason: Error, Sendable, Equatable {
    /// The component within the stage (`json-parse`, `schema:iot-reading`, `steps[2].set`, `sink:sqlite`).
    public var component: String
    /// The error class (``DeadLetterClass/malformedJSON``, ``DeadLetterClass/schemaViolation``, …).
    public var errorClass: DeadLetterClass
    public var message: String
    /// For schema violations: the JSON array written to `sf.errors.violations`.
    public var violations: JSONValue?

    public init(component: String, errorClass: DeadLetterClass, message: String, violations: JSONValue? = nil) {
        self.component = component
        self.errorClass = errorClass
        self.message = message
        self.violations = violations
    }
}

/// Builds dead-letter records: the original key, value and headers untouched, plus headers that say
/// where the record came from and why it was refused (Kafka Connect's `__connect.errors.*` names).
public struct DeadLetterWriter: Sendable {
    public let pipeline: String
    public let stage: String
    public let topic: String

    public init(pipeline: String, stage: String, topic: String) {
        self.pipeline = pipeline
        self.stage = stage
        self.topic = topic
    }

    /// A dead letter for a record consumed from Kafka.
    public func message(for original: KafkaMessage, reason: DeadLetterReason, nowMs: Int64) -> KafkaProducerMessage {
        var headers = original.headers.filter { !$0.key.hasPrefix("__connect.errors.") && !$0.key.hasPrefix("sf.errors.") }
        headers.append(KafkaHeader(key: DeadLetterHeader.topic, value: original.topic))
        headers.append(KafkaHeader(key: DeadLetterHeader.partition, value: String(original.partition)))
        headers.append(KafkaHeader(key: DeadLetterHeader.offset, value: String(original.offset)))
        append(reason, nowMs: nowMs, to: &headers)
        return KafkaProducerMessage(
            topic: topic, key: original.key, value: original.value, headers: headers)
    }

    /// A dead letter for bytes read by a source (ingest): no Kafka origin, so the source name instead.
    public func message(
        forSourceBytes bytes: [UInt8], id: String, source: String, reason: DeadLetterReason, receivedAtMs: Int64,
        nowMs: Int64
    ) -> KafkaProducerMessage {
        var headers = [
            KafkaHeader(key: RecordHeader.id, value: id),
            KafkaHeader(key: RecordHeader.source, value: source),
            KafkaHeader(key: RecordHeader.ingestTime, value: String(receivedAtMs)),
        ]
        append(reason, nowMs: nowMs, to: &headers)
        return KafkaProducerMessage(topic: topic, key: Array(id.utf8), value: bytes, headers: headers)
    }

    private func append(_ reason: DeadLetterReason, nowMs: Int64, to headers: inout [KafkaHeader]) {
        headers.append(KafkaHeader(key: DeadLetterHeader.connector, value: pipeline))
        headers.append(KafkaHeader(key: DeadLetterHeader.stage, value: stage))
        headers.append(KafkaHeader(key: DeadLetterHeader.className, value: reason.component))
        headers.append(KafkaHeader(key: DeadLetterHeader.exceptionClass, value: reason.errorClass.rawValue))
        headers.append(KafkaHeader(key: DeadLetterHeader.exceptionMessage, value: reason.message))
        headers.append(KafkaHeader(key: DeadLetterHeader.time, value: String(nowMs)))
        if let violations = reason.violations {
            headers.append(KafkaHeader(key: DeadLetterHeader.violations, value: violations.serialized()))
        }
    }
}

/// Milliseconds since the epoch, now.
@inline(__always) func currentTimeMs() -> Int64 {
    Int64((Date().timeIntervalSince1970 * 1000).rounded())
}

extension KafkaMessage {
    /// A header's value as text.
    package func headerString(_ key: String) -> String? {
        guard let v = header(key)?.value else { return nil }
        return String(decoding: v, as: UTF8.self)
    }

    /// The record id: the `sf.id` header, else `<topic>:<partition>:<offset>` (deterministic for a
    /// record that entered the pipeline without one, e.g. written to the input topic by another tool).
    var recordID: String {
        headerString(RecordHeader.id) ?? "\(topic):\(partition):\(offset)"
    }

    /// What an expression sees of this record besides its value (`$id`, `$key`, `$event_time`, …).
    var recordContext: RecordContext {
        RecordContext(
            id: recordID, key: key.map { String(decoding: $0, as: UTF8.self) },
            eventTimeMs: headerString(RecordHeader.eventTime).flatMap { Int64($0) },
            topic: topic, partition: partition, offset: offset)
    }
}

extension DeadLetterReason {
    /// A consumed record without a value (a tombstone): every stage refuses it the same way.
    public static let tombstone = DeadLetterReason(
        component: "json-parse", errorClass: .malformedJSON, message: "the record has no value (tombstone)")

    /// Bytes that are not JSON, with the parser's reason (offset and what was wrong).
    public static func malformedJSON(_ error: JSONParseError) -> DeadLetterReason {
        DeadLetterReason(component: "json-parse", errorClass: .malformedJSON, message: error.description)
    }
}

extension KafkaMessage {
    /// The record's value as JSON, parsed in place from the consumer's buffer, or the reason every
    /// consuming stage gives for refusing it: ``DeadLetterReason/tombstone`` or
    /// ``DeadLetterReason/malformedJSON(_:)``.
    public func decodeJSON() -> Result<JSONValue, DeadLetterReason> {
        let parsed = withUnsafeValueBytes { buffer in Result { () throws(JSONParseError) in try JSONValue.parse(utf8: buffer) } }
        switch parsed {
        case nil: return .failure(.tombstone)
        case .failure(let error)?: return .failure(.malformedJSON(error))
        case .success(let value)?: return .success(value)
        }
    }
}
