/// The class of a dead letter: why a stage refused a record, as a stable name that tools can
/// filter on (`__connect.errors.exception.class.name`, `streamfirst redrive --reason`, the
/// `streamfirst_records_dead_lettered_total` breakdown in `/stats`).
///
/// The classes Streamfirst's own stages and steps use are the static members below. A custom
/// ``RawRepresentable`` value (or a string literal) names your own, e.g. from a `RecordProcessor`.
public struct DeadLetterClass: RawRepresentable, Hashable, Sendable, Codable, ExpressibleByStringLiteral,
    CustomStringConvertible
{
    public let rawValue: String

    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    /// Not JSON (any stage that reads JSON), or a tombstone (no value). Fix the producer.
    public static let malformedJSON: DeadLetterClass = "MalformedJSON"
    /// Not Avro in the Confluent wire format, or not valid data for the schema its id names (any
    /// stage reading a topic with `format: avro`). Fix the producer.
    public static let malformedAvro: DeadLetterClass = "MalformedAvro"
    /// The schema id of an Avro record is not in the registry (or is not an Avro schema): register
    /// it, then redrive.
    public static let unknownSchemaID: DeadLetterClass = "UnknownSchemaId"
    /// The source itself refused the bytes (ingest: e.g. a CSV line with the wrong column count).
    public static let sourceRejected: DeadLetterClass = "SourceRejected"
    /// The record breaks its JSON Schema (validate); `sf.errors.violations` says where.
    public static let schemaViolation: DeadLetterClass = "SchemaViolation"
    /// The record names a schema version this worker does not have (validate): deploy it, redrive.
    public static let unknownSchemaVersion: DeadLetterClass = "UnknownSchemaVersion"
    /// A migration (upcast) between schema versions failed (validate).
    public static let upcastFailed: DeadLetterClass = "UpcastFailed"
    /// An expression of a step failed on this record (process: `set`, `filter`, `route`, keys, …).
    public static let expressionError: DeadLetterClass = "ExpressionError"
    /// `enrich` with `missing: dead-letter` found no row.
    public static let enrichmentMissing: DeadLetterClass = "EnrichmentMissing"
    /// `enrich` from a topic whose table outgrew `max_rows`: a miss may be a dropped row.
    public static let enrichmentTableIncomplete: DeadLetterClass = "EnrichmentTableIncomplete"
    /// A processor routed the record to a topic the pipeline does not declare.
    public static let unknownRoute: DeadLetterClass = "UnknownRoute"
    /// A stateful operator found no event time in the record (`time:`).
    public static let missingEventTime: DeadLetterClass = "MissingEventTime"
    /// A window or join found no key to group or join the record by.
    public static let missingKey: DeadLetterClass = "MissingKey"
    /// An aggregate could not take the record's value (e.g. `sum` of a string).
    public static let aggregateError: DeadLetterClass = "AggregateError"
    /// The record arrived after its window closed (its watermark passed the grace period) and the
    /// pipeline sends late records to the dead-letter topic.
    public static let lateRecord: DeadLetterClass = "LateRecord"
    /// The sink refused the record (persist: e.g. a value of the wrong column type).
    public static let sinkRejected: DeadLetterClass = "SinkRejected"

    /// Every class Streamfirst's own stages and steps use.
    public static let builtIn: [DeadLetterClass] = [
        .malformedJSON, .malformedAvro, .unknownSchemaID, .sourceRejected, .schemaViolation, .unknownSchemaVersion, .upcastFailed,
        .expressionError,
        .enrichmentMissing, .enrichmentTableIncomplete, .unknownRoute, .missingEventTime, .missingKey, .aggregateError,
        .lateRecord, .sinkRejected,
    ]
}
