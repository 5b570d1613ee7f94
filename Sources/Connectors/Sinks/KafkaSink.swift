import Config
import Foundation
import Kafka
import Logging
import NIOConcurrencyHelpers
import StreamCore

/// `type: kafka` — forwards records to a Kafka topic (of this or another cluster) with their key and
/// headers. At-least-once: the persist worker commits its input offsets only after every record of the
/// batch is acknowledged; a redelivered record arrives again with the same `sf.id`.
public final class KafkaSink: RecordSink, Sendable {
    public static let spec = ConnectorSpec(
        type: "kafka",
        summary: "Produces records to a Kafka topic with key and headers; at-least-once with stable ids.",
        fields: [
            .init("topic", "string", "the Kafka topic name"),
            .init("bootstrap", "string", default: "the pipeline's cluster", "another cluster's bootstrap servers"),
            .init("key_field", "string", default: "the record's key", "take the key from this top-level field instead"),
        ],
        examples: ["topic: readings.clean\nkey_field: sensor_id"])

    public let topic: String
    public let keyField: String?
    let configuration: KafkaProducerConfiguration
    let logger: Logger
    private let producer = NIOLockedValueBox<KafkaProducer?>(nil)
    private let delivered = NIOLockedValueBox(0)

    public var name: String { "kafka:\(topic)" }
    public var storesOffsets: Bool { false }

    public init(topic: String, keyField: String?, configuration: KafkaProducerConfiguration, logger: Logger) {
        self.topic = topic
        self.keyField = keyField
        self.configuration = configuration
        self.logger = logger
    }

    convenience init(_ m: ConfigMapping, kafka: KafkaProducerConfiguration, logger: Logger) throws(ConfigError) {
        var config = kafka
        if let b = try m.string("bootstrap") { config.kafka.bootstrapServers = b }
        self.init(topic: try m.required("topic").string(), keyField: try m.string("key_field"), configuration: config, logger: logger)
    }

    public func open() async throws {
        let p = try KafkaProducer(configuration: configuration, logger: logger)
        try p.prepare(topics: [topic])
        producer.withLockedValue { $0 = p }
    }

    public func storedOffsets(consumerGroup: String, topic: String) async throws -> [Int32: Int64] { [:] }

    public func write(_ batch: [SinkRecord], offsets: [SinkOffset], consumerGroup: String) async throws -> [SinkRejection] {
        guard let p = producer.withLockedValue({ $0 }) else { throw ConnectorError("the Kafka sink is not open") }
        let messages = batch.map { r -> KafkaProducerMessage in
            var key = r.key
            if let keyField, let v = r.value[keyField] {
                key = v.stringValue.map { Array($0.utf8) } ?? v.serialized()
            }
            return KafkaProducerMessage(
                topic: topic, key: key, value: r.value.serialized(),
                headers: r.headers.map { KafkaHeader(key: $0.0, value: $0.1) })
        }
        let reports = await p.send(messages)
        if let failed = reports.first(where: { $0.error != nil }), let error = failed.error {
            throw ConnectorError("delivery to \(topic) failed: \(error)")
        }
        delivered.withLockedValue { $0 += batch.count }
        return []
    }

    /// Records delivered by this instance.
    public func count() async throws -> Int { delivered.withLockedValue { $0 } }

    public func close() async {
        if let p = producer.withLockedValue({ v -> KafkaProducer? in
            defer { v = nil }
            return v
        }) {
            try? await p.flush(timeout: .seconds(10))
            await p.shutdown()
        }
    }
}
