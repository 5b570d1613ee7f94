import EmbeddedBroker
import Foundation
import Testing

@testable import Kafka

@Suite("Admin against the embedded broker", .serialized, .timeLimit(.minutes(2)))
struct AdminTests {
    @Test("list and describe topics; list groups; group offsets and lag")
    func adminOnEmbeddedBroker() async throws {
        let topic = uniqueName("adm")
        let broker = try await launchBroker(topics: [topic: 3], brokers: 2)
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: broker.bootstrapServers))
        #expect(try await admin.listTopics().contains(topic))
        let d = try await admin.describeTopic(topic)
        #expect(d.partitions.map(\.id) == [0, 1, 2])
        #expect(d.partitions.allSatisfy { [1, 2].contains($0.leader) })
        let md = try await admin.metadata()
        #expect(md.brokers.map(\.id).sorted() == [1, 2])

        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        _ = await producer.send((0..<30).map { KafkaProducerMessage(topic: topic, partition: Int32($0 % 3), value: bytes("x\($0)")) })
        await producer.shutdown()

        let group = uniqueName("g")
        var config = consumerConfig(broker.bootstrapServers, group: group)
        config.autoCommit = false
        let consumer = try KafkaConsumer(configuration: config)
        try await consumer.subscribe(topics: [topic])
        _ = try await collect(consumer, count: 12, store: true)
        try await consumer.commit()
        // The mock cluster does not implement ListGroups: the error says so by name (real clusters: see RealClusterTests).
        await #expect {
            _ = try await admin.listGroups()
        } throws: { error in
            (error as? KafkaError)?.codeName == "_UNSUPPORTED_FEATURE"
        }
        let offsets = try await admin.groupOffsets(group: group, topics: [topic])
        #expect(offsets.count == 3)
        let lag = try await admin.groupLag(group: group, topics: [topic])
        #expect(lag.reduce(0) { $0 + $1.lag } == 18)
        #expect(lag.map(\.high) == [10, 10, 10])
        await consumer.close()
        await admin.shutdown()
        _ = try await broker.terminate()
    }
}

/// Runs only against a real cluster: `KAFKA_BROKERS=host:port swift test` (see docker-compose.yml).
@Suite(
    "Real cluster integration (KAFKA_BROKERS)", .serialized, .timeLimit(.minutes(3)),
    .enabled(if: ProcessInfo.processInfo.environment["KAFKA_BROKERS"] != nil, "set KAFKA_BROKERS to run against a real cluster"))
struct RealClusterTests {
    let servers = ProcessInfo.processInfo.environment["KAFKA_BROKERS"] ?? ""

    @Test("create, use, describe and delete a topic through the admin API")
    func topicLifecycle() async throws {
        let topic = uniqueName("it")
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: servers))
        try await admin.createTopics([KafkaNewTopic(name: topic, partitions: 3, config: ["retention.ms": "600000"])])
        #expect(try await admin.describeTopic(topic).partitions.count == 3)
        let producer = try KafkaProducer(configuration: producerConfig(servers))
        let t0: Int64 = 1_760_000_000_000
        let reports = await producer.send(
            (0..<30).map {
                KafkaProducerMessage(topic: topic, partition: Int32($0 % 3), value: bytes("v\($0)"), timestamp: t0 + Int64($0) * 1000)
            })
        #expect(reports.allSatisfy { $0.error == nil })
        await producer.shutdown()
        let consumer = try KafkaConsumer(configuration: consumerConfig(servers, group: nil))
        try await consumer.assign((0..<3).map { KafkaTopicPartition(topic: topic, partition: $0) }, startingAt: .timestamp(t0 + 20_000))
        let got = try await collect(consumer, count: 10)
        #expect(Set(got.compactMap { text($0.value) }) == Set((20..<30).map { "v\($0)" }))
        await consumer.close()
        let group = uniqueName("g")
        let member = try KafkaConsumer(configuration: consumerConfig(servers, group: group))
        try await member.subscribe(topics: [topic])
        _ = try await collect(member, count: 1)
        #expect(try await admin.listGroups().contains { $0.name == group })
        await member.close()
        try await admin.deleteTopics([topic])
        await admin.shutdown()
    }
}
