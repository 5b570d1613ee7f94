import Kafka
import Logging
import StreamCore

/// Where the development registry keeps its schemas and settings: a compacted Kafka topic
/// (`_schemas`, one partition), as Confluent's registry does, so they survive a restart and work
/// against a real cluster. Records are keyed by what they describe (a subject's version, or a
/// compatibility setting) with JSON keys and values in Confluent's shape; the newest record of a
/// key wins.
public final class KafkaSchemaLog: Sendable {
    public let topic: String
    let kafka: KafkaConfiguration
    let producer: KafkaProducer
    let logger: Logger

    public init(kafka: KafkaConfiguration, topic: String = "_schemas", logger: Logger) throws {
        self.topic = topic
        self.kafka = kafka
        self.logger = logger
        var config = KafkaProducerConfiguration(kafka: kafka)
        config.linger = .milliseconds(0)
        self.producer = try KafkaProducer(configuration: config, logger: logger)
    }

    /// Creates the topic compacted where the cluster allows it (the embedded broker has no
    /// CreateTopics: create it there with `streamfirst topics create` or the control channel).
    public func createTopicIfMissing() async {
        do {
            let admin = try KafkaAdmin(configuration: kafka)
            defer { Task { await admin.shutdown() } }
            if try await admin.listTopics().contains(topic) { return }
            try await admin.createTopics([
                KafkaNewTopic(name: topic, partitions: 1, replicationFactor: 1, config: ["cleanup.policy": "compact"])
            ])
        } catch {
            logger.notice("could not create the schema topic; expecting it to exist", metadata: ["topic": "\(topic)", "error": "\(error)"])
        }
    }

    /// Writes one record and waits until the broker has it.
    public func append(key: JSONValue, value: JSONValue) async throws {
        _ = try await producer.send(KafkaProducerMessage(topic: topic, partition: 0, key: key.serialized(), value: value.serialized()))
    }

    /// Every record of the topic, oldest first, up to its end when the read began.
    public func load() async throws -> [(key: JSONValue, value: JSONValue?)] {
        var config = KafkaConsumerConfiguration(kafka: kafka, groupID: nil)
        config.autoCommit = false
        let consumer = try KafkaConsumer(configuration: config, logger: logger)
        do {
            let (low, high) = try await consumer.watermarks(topic: topic, partition: 0)
            guard high > low else {
                await consumer.close()
                return []
            }
            try await consumer.assign([KafkaTopicPartition(topic: topic, partition: 0)], startingAt: .beginning)
            var records: [(key: JSONValue, value: JSONValue?)] = []
            var next = low
            let deadline = ContinuousClock.now + .seconds(60)
            while next < high {
                guard ContinuousClock.now < deadline else {
                    throw SchemaLogError(description: "reading \(topic) stopped at offset \(next) of \(high) after 60 s")
                }
                for m in try await consumer.poll(maxMessages: 500, timeout: .seconds(1)) {
                    next = m.offset + 1
                    guard let keyBytes = m.key, let key = try? JSONValue.parse(keyBytes) else { continue }
                    records.append((key, m.value.flatMap { try? JSONValue.parse($0) }))
                }
            }
            await consumer.close()
            return records
        } catch {
            await consumer.close()
            throw error
        }
    }

    public func shutdown() async {
        await producer.shutdown()
    }
}

/// The schema topic could not be read to its end.
public struct SchemaLogError: Error, Sendable, CustomStringConvertible {
    public var description: String
}
