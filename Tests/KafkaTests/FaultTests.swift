import EmbeddedBroker
import Foundation
import Testing

@testable import Kafka

@Suite("Broker faults and unreachable brokers", .serialized, .timeLimit(.minutes(2)))
struct FaultTests {
    @Test("broker down 3 s during produce: every record delivered exactly once")
    func brokerDownDuringProduce() async throws {
        let topic = uniqueName("down")
        let broker = try await launchBroker(topics: [topic: 3])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        var tasks: [Task<[KafkaDeliveryReport], Never>] = []
        func sendBatch(_ range: Range<Int>) {
            let batch = range.map { KafkaProducerMessage(topic: topic, key: "k\($0 % 7)", value: "v\($0)") }
            tasks.append(Task { await producer.send(batch) })
        }
        sendBatch(0..<500)
        _ = await tasks[0].value  // the cluster is up and known
        try await broker.control.brokerDown(1)
        sendBatch(500..<1000)
        sendBatch(1000..<1500)
        // The fault's duration is the scenario itself, not a wait for an event.
        try await Task.sleep(for: .seconds(3))
        try await broker.control.brokerUp(1)
        sendBatch(1500..<2000)
        var reports: [KafkaDeliveryReport] = []
        for t in tasks { reports += await t.value }
        #expect(reports.count == 2000)
        #expect(reports.allSatisfy { $0.error == nil })
        await producer.shutdown()

        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        try await consumer.assign((0..<3).map { KafkaTopicPartition(topic: topic, partition: $0) }, startingAt: .beginning)
        let got = try await collect(consumer, count: 2000)
        let extra = try await consumer.poll(maxMessages: 10, timeout: .milliseconds(500))
        await consumer.close()
        let values = got.compactMap { text($0.value) } + extra.compactMap { text($0.value) }
        #expect(values.count == 2000, "no duplicates")
        #expect(Set(values) == Set((0..<2000).map { "v\($0)" }), "no loss")
        _ = try await broker.terminate()
    }

    @Test("injected retriable request errors are retried; a non-retriable one surfaces by name")
    func injectedErrors() async throws {
        let topic = uniqueName("inject")
        let broker = try await launchBroker(topics: [topic: 1])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        _ = try await producer.send(KafkaProducerMessage(topic: topic, key: nil, value: "warm-up"))
        try await broker.control.pushRequestErrors(
            api: "Produce", errors: ["NOT_LEADER_FOR_PARTITION", "REQUEST_TIMED_OUT", "NOT_ENOUGH_REPLICAS"])
        let ok = try await producer.send(KafkaProducerMessage(topic: topic, key: nil, value: "retried"))
        #expect(ok.offset == 1, "retried through three retriable errors, written once")

        try await broker.control.pushRequestErrors(api: "Produce", errors: ["TOPIC_AUTHORIZATION_FAILED"])
        do {
            try await producer.send(KafkaProducerMessage(topic: topic, key: nil, value: "refused"))
            Issue.record("the send should have failed")
        } catch let e as KafkaError {
            #expect(e.codeName == "TOPIC_AUTHORIZATION_FAILED")
            #expect(!e.isRetriable)
        }
        await producer.shutdown()

        // Consumer side: a retriable Fetch error does not lose or end anything.
        try await broker.control.pushRequestErrors(api: "Fetch", errors: ["NOT_LEADER_FOR_PARTITION", "UNKNOWN_TOPIC_OR_PART"])
        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        try await consumer.assign([KafkaTopicPartition(topic: topic, partition: 0)], startingAt: .beginning)
        let got = try await collect(consumer, count: 2)
        #expect(got.compactMap { text($0.value) } == ["warm-up", "retried"])
        await consumer.close()
        _ = try await broker.terminate()
    }

    @Test("an unreachable broker gives a clear error within the configured bound")
    func unreachableBroker() async throws {
        let servers = "127.0.0.1:\(try closedPort())"
        var config = producerConfig(servers)
        config.messageTimeout = .milliseconds(1500)
        let producer = try KafkaProducer(configuration: config)
        do {
            try await producer.send(KafkaProducerMessage(topic: "nowhere", key: nil, value: "x"))
            Issue.record("the send should have failed")
        } catch let e as KafkaError {
            #expect(e.codeName == "_MSG_TIMED_OUT")
        }
        await producer.shutdown()

        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: servers))
        await #expect(throws: KafkaError.self) { _ = try await admin.listTopics(timeout: .seconds(1)) }
        await admin.shutdown()

        let consumer = try KafkaConsumer(configuration: consumerConfig(servers, group: "g"))
        await #expect(throws: KafkaError.self) {
            _ = try await consumer.committed([KafkaTopicPartition(topic: "nowhere", partition: 0)], timeout: .seconds(1))
        }
        await consumer.close(timeout: .seconds(5))
    }

    /// A loopback port nothing listens on (bound, then closed).
    func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
