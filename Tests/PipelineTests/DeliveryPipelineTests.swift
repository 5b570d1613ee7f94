import Kafka
import Logging
import StreamCore
import Synchronization
import Testing

@testable import Pipeline

/// The consume → produce stage's delivery window without a broker: a stand-in for the clients holds
/// each batch's delivery until the test releases it and records what offsets the window stores.
@Suite struct DeliveryPipelineTests {
    final class GatedClients: StageDeliveryClients {
        struct State {
            var delivered: [[KafkaProducerMessage]] = []
            var outcomes: [Int: KafkaBatchDelivery] = [:]
            var waiting: [Int: CheckedContinuation<KafkaBatchDelivery, Never>] = [:]
            var stored: [[KafkaTopicPartitionOffset]] = []
        }
        let state = Mutex(State())
        let failStores: Bool
        let producerProperties: [String: String] = [:]

        init(failStores: Bool = false) { self.failStores = failStores }

        func deliver(_ messages: [KafkaProducerMessage], logger: Logger) async -> KafkaBatchDelivery {
            let index = state.withLock { s in
                s.delivered.append(messages)
                return s.delivered.count - 1
            }
            return await withCheckedContinuation { c in
                let ready = state.withLock { s -> KafkaBatchDelivery? in
                    if let outcome = s.outcomes[index] { return outcome }
                    s.waiting[index] = c
                    return nil
                }
                if let ready { c.resume(returning: ready) }
            }
        }

        /// Acknowledges batch `index` (or fails its first record).
        func release(_ index: Int, failing: Bool = false) {
            let count = state.withLock { $0.delivered.count > index ? $0.delivered[index].count : 1 }
            let outcome = KafkaBatchDelivery(
                count: count,
                failures: failing
                    ? [.init(index: 0, topic: "out", error: KafkaError(code: 0, codeName: "TEST", message: "refused", isRetriable: false))]
                    : [])
            let waiter = state.withLock { s -> CheckedContinuation<KafkaBatchDelivery, Never>? in
                s.outcomes[index] = outcome
                return s.waiting.removeValue(forKey: index)
            }
            waiter?.resume(returning: outcome)
        }

        func storeOffsets(_ offsets: [KafkaTopicPartitionOffset]) throws {
            state.withLock { $0.stored.append(offsets) }
            if failStores { throw KafkaError(code: 0, codeName: "STATE", message: "partition not assigned", isRetriable: false) }
        }

        var stored: [[String]] { state.withLock { $0.stored.map { $0.map(\.description).sorted() } } }
    }

    static func summary(_ records: Int) -> DeliveryPipeline.Summary {
        .init(started: .now, records: records, outputs: records, filtered: 0, deadLetterClasses: [], ingestTimesMs: [])
    }

    static func messages(_ n: Int) -> [KafkaProducerMessage] {
        (0..<n).map { KafkaProducerMessage(topic: "out", value: Array("\($0)".utf8)) }
    }

    static func pipeline(_ clients: GatedClients, limit: Int = 8) -> DeliveryPipeline {
        DeliveryPipeline(
            clients: clients, limit: limit, metrics: StageMetrics(pipeline: "p", stage: "process"), logger: Logger(label: "test"))
    }

    static let p0 = KafkaTopicPartition(topic: "in", partition: 0)
    static let p1 = KafkaTopicPartition(topic: "in", partition: 1)

    @Test func offsetsAreStoredInConsumptionOrderWhateverOrderTheAcknowledgementsCome() async throws {
        let clients = GatedClients()
        let window = Self.pipeline(clients)
        try await window.send(Self.messages(3), next: [Self.p0: 10], summary: Self.summary(10))
        try await window.send(Self.messages(2), next: [Self.p0: 20, Self.p1: 5], summary: Self.summary(15))
        #expect(clients.state.withLock { $0.delivered.count } == 2, "both batches are queued before either is acknowledged")
        clients.release(1)
        // Until the later batch's delivery task has finished (bounded: it has nothing left to wait for).
        let deadline = ContinuousClock.now + .seconds(10)
        while window.openDone != [false, true] && ContinuousClock.now < deadline { await Task.yield() }
        #expect(window.openDone == [false, true])
        try await window.harvest()
        #expect(clients.stored.isEmpty, "the later batch is acknowledged, the earlier is not: nothing may be stored")
        clients.release(0)
        try await window.drain()
        // Both at once, when the earlier one is acknowledged: the highest per partition.
        #expect(clients.stored == [["in[0]@20", "in[1]@5"]])
    }

    @Test func aFailedDeliveryFailsTheStageAndStoresNothingOfItOrLater() async throws {
        let clients = GatedClients()
        let window = Self.pipeline(clients)
        try await window.send(Self.messages(1), next: [Self.p0: 1], summary: Self.summary(1))
        try await window.send(Self.messages(1), next: [Self.p0: 2], summary: Self.summary(1))
        try await window.send(Self.messages(1), next: [Self.p0: 3], summary: Self.summary(1))
        clients.release(0)
        clients.release(2)
        clients.release(1, failing: true)
        await #expect(throws: PipelineError.self) { try await window.drain() }
        #expect(clients.stored == [["in[0]@1"]], "only the batch before the failed one")
    }

    @Test func aBatchWithNothingToProduceStillWaitsItsTurn() async throws {
        let clients = GatedClients()
        let window = Self.pipeline(clients)
        try await window.send(Self.messages(2), next: [Self.p0: 4], summary: Self.summary(4))
        try await window.send([], next: [Self.p0: 9], summary: Self.summary(5)) // all filtered
        try await window.harvest()
        #expect(clients.stored.isEmpty, "the filtered batch must not pass the pending one")
        clients.release(0)
        try await window.drain()
        #expect(clients.stored == [["in[0]@9"]], "stored together once the earlier batch is acknowledged")
    }

    @Test func offsetsThatCannotBeStoredDoNotFailTheStage() async throws {
        let clients = GatedClients(failStores: true)
        let window = Self.pipeline(clients)
        try await window.send(Self.messages(1), next: [Self.p0: 1], summary: Self.summary(1))
        clients.release(0)
        try await window.drain()
        #expect(clients.stored == [["in[0]@1"]], "tried, failed (a revoked partition), and the stage goes on")
    }
}
