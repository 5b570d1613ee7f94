import Kafka
import Testing

/// `nextOffsets` of a polled batch: per partition, one past the highest offset, whatever the runs.
@Suite struct NextOffsetsTests {
    static func record(_ topic: String, _ partition: Int32, _ offset: Int64) -> KafkaMessage {
        KafkaMessage(topic: topic, partition: partition, offset: offset, key: nil, value: nil)
    }

    @Test func onePastTheHighestOffsetPerPartitionAcrossRunsAndTopics() {
        let batch = [
            Self.record("a", 0, 5), Self.record("a", 0, 6), Self.record("a", 1, 9), Self.record("b", 1, 2),
            Self.record("a", 0, 7), Self.record("a", 1, 3), Self.record("b", 1, 1), Self.record("b", 0, 40),
        ]
        #expect(
            batch.nextOffsets == [
                KafkaTopicPartition(topic: "a", partition: 0): 8, KafkaTopicPartition(topic: "a", partition: 1): 10,
                KafkaTopicPartition(topic: "b", partition: 1): 3, KafkaTopicPartition(topic: "b", partition: 0): 41,
            ])
        #expect([KafkaMessage]().nextOffsets.isEmpty)
        #expect([Self.record("a", 3, 0)].nextOffsets == [KafkaTopicPartition(topic: "a", partition: 3): 1])
    }
}
