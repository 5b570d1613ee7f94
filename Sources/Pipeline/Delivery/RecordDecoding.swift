import Avro
import Kafka
import Logging
import PipelineModel
import SchemaRegistry
import StreamCore
import Synchronization

/// How a stage reads the values of its input topic: JSON text, or Avro in the Confluent wire format
/// with its schemas from the pipeline's registry.
///
/// Avro schemas are fetched per schema id, once, by ``prepare(_:health:)`` before the batch that
/// first carries the id; ``decode(_:)`` then never waits. A registry that does not answer is
/// retried with backoff while the stage reports not ready (nothing is dead-lettered for an outage);
/// an id the registry does not know, bytes not in the wire format, or data that does not fit its
/// schema are dead letters (`UnknownSchemaId`, `MalformedAvro`) with the reason.
public final class RecordDecoding: Sendable {
    public let format: PipelineSpec.RecordFormat
    let client: SchemaRegistryClient?
    let logger: Logger
    private let readers = Mutex<[Int32: Reader]>([:])

    enum Reader: Sendable {
        case avro(AvroReader)
        case unknown(String)
    }

    /// JSON values: ``KafkaMessage/decodeJSON()``.
    public static let json = RecordDecoding(format: .json, client: nil, logger: Logger(label: "streamfirst.decoding"))

    init(format: PipelineSpec.RecordFormat, client: SchemaRegistryClient?, logger: Logger) {
        self.format = format
        self.client = client
        self.logger = logger
    }

    /// The decoding of `topic`'s values, with `registry` for Avro topics.
    public convenience init(topic: PipelineSpec.Topic, registry: PipelineSpec.SchemaRegistrySettings?, logger: Logger) {
        let client = registry.map { SchemaRegistryClient(url: $0.url, username: $0.username, password: $0.password) }
        self.init(format: topic.format, client: topic.format == .avro ? client : nil, logger: logger)
    }

    /// Fetches the schemas of `batch`'s records not seen before. While the registry does not answer
    /// it retries (0.5 s, doubling to 10 s) with `health` not ready; cancellation ends the wait.
    public func prepare(_ batch: [KafkaMessage], health: StageHealth?) async throws {
        guard format == .avro, let client else { return }
        var missing: Set<Int32> = []
        let known = readers.withLock { Set($0.keys) }
        for m in batch {
            let id = m.withUnsafeValueBytes { raw in try? ConfluentWireFormat.parse(raw).schemaID } ?? nil
            if let id, !known.contains(id) { missing.insert(id) }
        }
        for id in missing.sorted() {
            var backoff: Duration = .milliseconds(500)
            while true {
                do {
                    let registered = try await client.schema(id: id)
                    let reader: Reader
                    if registered.type != "AVRO" {
                        reader = .unknown("schema id \(id) is a \(registered.type) schema; format: avro reads Avro schemas")
                    } else {
                        do {
                            reader = .avro(AvroReader(schema: try AvroSchema(json: registered.text)))
                        } catch {
                            reader = .unknown("schema id \(id) is not a valid Avro schema: \(error)")
                        }
                    }
                    readers.withLock { $0[id] = reader }
                    break
                } catch let error where error.isUnavailable {
                    health?.setReady(false)
                    logger.warning(
                        "schema registry unavailable; retrying",
                        metadata: ["schema_id": "\(id)", "error": "\(error)", "retry_in": "\(backoff)"])
                    try await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(10))
                } catch {
                    readers.withLock { $0[id] = .unknown("schema id \(id): \(error.message)") }
                    break
                }
            }
            health?.setReady(true)
        }
    }

    /// The value of `message`, or why it cannot be read.
    public func decode(_ message: KafkaMessage) -> Result<JSONValue, DeadLetterReason> {
        guard format == .avro else { return message.decodeJSON() }
        let result = message.withUnsafeValueBytes { raw -> Result<JSONValue, DeadLetterReason> in
            let id: Int32
            let payload: UnsafeRawBufferPointer
            do {
                (id, payload) = try ConfluentWireFormat.parse(raw)
            } catch {
                return .failure(DeadLetterReason(component: "avro", errorClass: .malformedAvro, message: "\(error)"))
            }
            switch readers.withLock({ $0[id] }) {
            case .avro(let reader)?:
                do {
                    return .success(try reader.decode(payload))
                } catch {
                    return .failure(DeadLetterReason(component: "avro:\(id)", errorClass: .malformedAvro, message: "\(error)"))
                }
            case .unknown(let why)?:
                return .failure(DeadLetterReason(component: "avro:\(id)", errorClass: .unknownSchemaID, message: why))
            case nil:
                return .failure(
                    DeadLetterReason(component: "avro:\(id)", errorClass: .unknownSchemaID, message: "schema id \(id) was not fetched"))
            }
        }
        return result ?? .failure(.tombstone)
    }
}
