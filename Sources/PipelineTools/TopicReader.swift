import Kafka
import Pipeline

/// Reports how far a long operation got: a phase ("reading iot.dead-letter"), and done of total
/// units (records). Called from the operation's task, often; the receiver throttles its drawing.
package typealias ProgressHandler = @Sendable (_ phase: String, _ done: Int, _ total: Int) -> Void

/// Reads a topic from the beginning to the end it had when the read started (all partitions,
/// no consumer group): for the redrive ledger, the dead-letter topic and tests.
package enum TopicReader {
    package static func readToEnd(
        topic: String, kafka: KafkaConfiguration, timeout: Duration = .seconds(60), progress: ProgressHandler? = nil
    ) async throws -> [KafkaMessage] {
        let admin = try KafkaAdmin(configuration: kafka)
        let partitions: Int
        var ends: [Int32: Int64] = [:]
        var total: Int64 = 0
        do {
            partitions = try await admin.describeTopic(topic).partitions.count
            for p in 0..<partitions {
                let (low, high) = try await admin.watermarks(topic: topic, partition: Int32(p))
                ends[Int32(p)] = high
                total += max(0, high - low)
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
        let phase = "reading \(topic)"
        progress?(phase, 0, Int(total))
        while done.count < partitions {
            guard ContinuousClock.now < deadline else {
                await consumer.close()
                throw PipelineError.setup("reading \(topic) did not reach its end within \(timeout)")
            }
            for m in try await consumer.poll(maxMessages: 1000, timeout: .milliseconds(200)) {
                if m.offset < ends[m.partition] ?? 0 { out.append(m) }
                if m.offset + 1 >= ends[m.partition] ?? 0 { done.insert(m.partition) }
            }
            progress?(phase, out.count, Int(total))
        }
        await consumer.close()
        return out
    }
}
