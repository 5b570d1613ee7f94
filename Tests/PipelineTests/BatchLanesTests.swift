import Dispatch
import Foundation
import Kafka
import StreamCore
import Synchronization
import Testing

@testable import Pipeline

/// `concurrency:`: a batch split by partition into lanes handled on concurrent tasks, broker-free.
@Suite struct BatchLanesTests {
    static func batch(_ partitions: [(Int32, Int)]) -> [KafkaMessage] {
        // Interleaved runs, as a poll returns them: a run of each partition, twice.
        var out: [KafkaMessage] = []
        var next: [Int32: Int64] = [:]
        for half in 0..<2 {
            for (p, n) in partitions {
                let count = half == 0 ? n / 2 : n - n / 2
                for _ in 0..<count {
                    let offset = next[p, default: 0]
                    next[p] = offset + 1
                    out.append(
                        KafkaMessage(
                            topic: "in", partition: p, offset: offset, key: nil, value: Array(#"{"p":\#(p),"o":\#(offset)}"#.utf8),
                            headers: [KafkaHeader(key: RecordHeader.id, value: "in:\(p):\(offset)")]))
                }
            }
        }
        return out
    }

    @Test func lanesHoldWholePartitionsInOrderBalancedByRecords() throws {
        let batch = Self.batch([(0, 200), (1, 100), (2, 100)])
        let lanes = try #require(BatchLanes.lanes(of: batch, count: 2))
        #expect(lanes.count == 2)
        #expect(Set(lanes[0].map(\.partition)) == [0] && Set(lanes[1].map(\.partition)) == [1, 2])
        #expect(lanes.map(\.count) == [200, 200])
        // Every record once, each lane in the batch's order.
        #expect(lanes.joined().count == batch.count)
        for lane in lanes {
            let positions = lane.map { m in batch.firstIndex { $0.partition == m.partition && $0.offset == m.offset } ?? -1 }
            #expect(positions == positions.sorted() && !positions.contains(-1))
        }
        #expect(BatchLanes.lanes(of: Self.batch([(0, 300), (1, 300), (2, 300)]), count: 8)?.count == 3, "no more lanes than partitions")
        #expect(BatchLanes.lanes(of: batch, count: 1) == nil)
        #expect(BatchLanes.lanes(of: Self.batch([(4, 400)]), count: 2) == nil, "one partition: one lane")
        #expect(BatchLanes.lanes(of: Self.batch([(0, 10), (1, 10)]), count: 2) == nil, "too small to split")
    }

    /// Meets the other lane's first record, or gives up after 10 s (then the lanes did not run at once).
    final class Rendezvous: Sendable {
        let arrived = Atomic<Int>(0)
        let met = Atomic<Int>(0)
        let semaphore = DispatchSemaphore(value: 0)

        func meet() {
            if arrived.add(1, ordering: .acquiringAndReleasing).newValue == 2 {
                semaphore.signal()
                met.add(1, ordering: .relaxed)
            } else if semaphore.wait(timeout: .now() + 10) == .success {
                met.add(1, ordering: .relaxed)
            }
        }
    }

    /// Forwards each record with its value; the first record of partitions 0 and 1 meet each other.
    struct MeetingHandler: StageHandler {
        let rendezvous: Rendezvous
        func handle(_ message: KafkaMessage, into emitter: inout StageEmitter) {
            if message.offset == 0 && message.partition < 2 { rendezvous.meet() }
            emitter.emit(topic: "out", key: message.key, value: message.value ?? [], headers: message.headers)
        }
    }

    static func lanes(_ handler: any StageHandler, concurrency: Int) -> BatchLanes {
        BatchLanes(
            traced: TracedHandler(
                handler: handler, deadLetters: DeadLetterWriter(pipeline: "p", stage: "process", topic: "dead"),
                tracer: RecordTracer(stage: "process", pipeline: "p", topic: "in", group: "p.process", tracer: PropagatingTracer())),
            concurrency: concurrency, logger: .init(label: "test"))
    }

    @Test func lanesRunConcurrentlyAndKeepEachPartitionsOrder() async throws {
        let batch = Self.batch([(0, 150), (1, 150), (2, 60), (3, 40)])
        let rendezvous = Rendezvous()
        let handled = await Self.lanes(MeetingHandler(rendezvous: rendezvous), concurrency: 2).handle(batch, nowMs: 0)
        #expect(rendezvous.met.load(ordering: .relaxed) == 2, "the lanes of partitions 0 and 1 did not run at the same time")
        #expect(handled.outputs == batch.count && handled.filtered == 0 && handled.deadLetterClasses.isEmpty)
        // Per input partition, the outputs are the inputs in order.
        func byPartition(_ values: [[UInt8]?]) -> [String: [String]] {
            var out: [String: [String]] = [:]
            for v in values {
                let text = String(decoding: v ?? [], as: UTF8.self)
                let p = String(text.split(separator: ",")[0].dropFirst(5))
                out[p, default: []].append(text)
            }
            return out
        }
        #expect(byPartition(handled.messages.map(\.value)) == byPartition(batch.map(\.value)))
        #expect(handled.messages.count == batch.count)
    }

    struct Echo: StageHandler {
        func handle(_ message: KafkaMessage, into emitter: inout StageEmitter) { emitter.forwardInput(to: "out") }
    }

    @Test func oneLaneHandlesTheBatchInOrder() async throws {
        let batch = Self.batch([(0, 150), (1, 150)])
        let handled = await Self.lanes(Echo(), concurrency: 1).handle(batch, nowMs: 0)
        #expect(handled.messages.map(\.value) == batch.map(\.value), "one lane: the batch's own order")
        #expect(handled.messages.allSatisfy { $0.isForwarded })
    }
}
