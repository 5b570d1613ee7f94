import Kafka

/// Reads a topic from the beginning to the end it had when the read started (all partitions,
/// no consumer group): for the redrive ledger, the dead-letter topic and tests.
public enum TopicReader {
    public static func readToEnd(
        topic: String, kafka: KafkaConfiguration, timeout: Duration = .seconds(60)
    ) async throws -> [KafkaMessage] {
        let admin = try KafkaAdmin(configuration: kafka)
        let partitions: Int
        var ends: [Int32: Int64] = [:]
        do {
            partitions = try await admin.describeTopic(topic).partitions.count
            for p in 0..<partitions {
                ends[Int32(p)] = try await admin.watermarks(topic: topic, partition: Int32(p)).high
            }
        } catch {
            await admin.shutdown()
            throw error
        }
        await admin.shutdown()
        if ends.values.reduce(0, +) == 0 { return [] }
        var config = KafkaConsumerConfiguration(kafka: kafka, groupID: nil)
        config.fetchWaitMax = .milliseconds(10)
        let consumer = try KafkaConsumer(configuration: config)
        try await consumer.assign((0..<partitions).map { KafkaTopicPartition(topic: topic, partition: Int32($0)) }, startingAt: .beginning)
        var out: [KafkaMessage] = []
        var done = Set(ends.filter { $0.value == 0 }.keys)
        let deadline = ContinuousClock.now + timeout
        while done.count < partitions {
            guard ContinuousClock.now < deadline else {
                await consumer.close()
                throw PipelineError.setup("reading \(topic) did not reach its end within \(timeout)")
            }
            for m in try await consumer.poll(maxMessages: 1000, timeout: .milliseconds(200)) {
                if m.offset < ends[m.partition] ?? 0 { out.append(m) }
                if m.offset + 1 >= ends[m.partition] ?? 0 { done.insert(m.partition) }
            }
        }
        await consumer.close()
        return out
    }
}
