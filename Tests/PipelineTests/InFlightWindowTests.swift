import Kafka
import Testing

@testable import Pipeline

/// The in-order release rule of ``InFlightWindow``, without a broker: a batch's offsets are
/// released only when it and every earlier batch are acknowledged, whatever order the
/// acknowledgements come in.
@Suite struct InFlightWindowTests {
    static func batch(_ partition: Int32, _ offsets: ClosedRange<Int64>, topic: String = "in") -> [KafkaMessage] {
        offsets.map { KafkaMessage(topic: topic, partition: partition, offset: $0, key: nil, value: [1]) }
    }

    static func tp(_ partition: Int32) -> KafkaTopicPartition { KafkaTopicPartition(topic: "in", partition: partition) }

    static func offsets(_ list: [KafkaTopicPartitionOffset]) -> [Int32: Int64] {
        Dictionary(uniqueKeysWithValues: list.map { ($0.partition, $0.offset) })
    }

    @Test func acknowledgementsOutOfOrderReleaseOffsetsInConsumptionOrder() {
        var w = InFlightWindow()
        let a = w.open(Self.batch(0, 0...9), messages: 10, bytes: 100)
        let b = w.open(Self.batch(0, 10...19), messages: 10, bytes: 100)
        let c = w.open(Self.batch(0, 20...29), messages: 10, bytes: 100)
        #expect(w.count == 3 && w.messages == 30 && w.bytes == 300)
        #expect(w.acknowledge(c).isEmpty, "the newest batch is acknowledged first: nothing may be stored yet")
        #expect(w.acknowledge(b).isEmpty, "the oldest is still in flight")
        #expect(w.count == 3)
        let released = w.acknowledge(a)
        #expect(Self.offsets(released) == [0: 30], "the head completes the run: all three at once, the highest offset")
        #expect(w.isEmpty && w.messages == 0 && w.bytes == 0)
    }

    @Test func aLaterBatchOfAnotherPartitionWaitsForEarlierBatches() {
        var w = InFlightWindow()
        let a = w.open(Self.batch(0, 0...4), messages: 5, bytes: 5)
        let b = w.open(Self.batch(1, 0...4), messages: 5, bytes: 5)
        let c = w.open(Self.batch(0, 5...6) + Self.batch(2, 0...0), messages: 3, bytes: 3)
        #expect(w.acknowledge(b).isEmpty, "partition 1's batch waits for the earlier batch of partition 0")
        #expect(Self.offsets(w.acknowledge(a)) == [0: 5, 1: 5])
        #expect(w.head == c)
        #expect(w.messages == 3)
        #expect(Self.offsets(w.acknowledge(c)) == [0: 7, 2: 1])
        #expect(w.head == nil)
    }

    @Test func onlyTheAcknowledgedPrefixIsReleased() {
        var w = InFlightWindow()
        let ids = (0..<5).map { i in w.open(Self.batch(0, Int64(i * 10)...Int64(i * 10 + 9)), messages: 10, bytes: 10) }
        #expect(Self.offsets(w.acknowledge(ids[0])) == [0: 10])
        #expect(w.acknowledge(ids[2]).isEmpty)
        #expect(w.acknowledge(ids[4]).isEmpty)
        #expect(Self.offsets(w.acknowledge(ids[1])) == [0: 30], "batches 1 and 2, not 4 (3 is in flight)")
        #expect(w.count == 2 && w.head == ids[3])
        #expect(Self.offsets(w.acknowledge(ids[3])) == [0: 50])
    }

    @Test func repeatedAndUnknownAcknowledgementsChangeNothing() {
        var w = InFlightWindow()
        let a = w.open(Self.batch(0, 0...0), messages: 1, bytes: 1)
        let b = w.open(Self.batch(0, 1...1), messages: 1, bytes: 1)
        #expect(w.acknowledge(b).isEmpty)
        #expect(w.acknowledge(b).isEmpty)
        #expect(w.acknowledge(999).isEmpty)
        #expect(w.count == 2)
        #expect(Self.offsets(w.acknowledge(a)) == [0: 2])
        #expect(w.acknowledge(a).isEmpty, "already released")
    }

    @Test func aBatchWithNothingToProduceStillWaitsForEarlierOnes() {
        var w = InFlightWindow()
        let a = w.open(Self.batch(0, 0...9), messages: 10, bytes: 10)
        let filtered = w.open(Self.batch(0, 10...19), messages: 0, bytes: 0)
        #expect(w.acknowledge(filtered).isEmpty)
        #expect(Self.offsets(w.acknowledge(a)) == [0: 20])
    }
}
