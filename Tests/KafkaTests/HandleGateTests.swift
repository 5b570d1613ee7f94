import EmbeddedBroker
import Foundation
import Synchronization
import Testing

@testable import Kafka

/// The gate that keeps a client's `rd_kafka_t` alive under calls from other threads, and the clients
/// built on it: a call racing a shutdown or close either finishes before the handle is destroyed or
/// throws `CLOSED`; it never uses a freed handle.
@Suite("Handle gate: calls racing a shutdown", .serialized, .timeLimit(.minutes(2)))
struct HandleGateTests {
    @Test("a closed gate refuses new users and waits for the ones inside")
    func gateWaitsForUsersInside() {
        let gate = HandleGate()
        #expect(gate.enter())
        #expect(gate.enter())
        #expect(!gate.close(), "two users are inside")
        #expect(!gate.enter(), "a closed gate refuses new users")
        #expect(!gate.waitUntilEmpty(timeoutSeconds: 0.05), "two users are still inside")
        gate.leave()
        #expect(!gate.waitUntilEmpty(timeoutSeconds: 0.05), "one user is still inside")
        gate.leave()
        #expect(gate.waitUntilEmpty(timeoutSeconds: 0), "the last user has left")
        #expect(gate.close(), "closing again is harmless")
        #expect(gate.isClosed)
    }

    @Test("threads entering and leaving while the gate closes: nobody is inside once the wait returns")
    func gateUnderContention() async throws {
        final class Shared: Sendable {
            let gate = HandleGate()
            let inside = Atomic<Int>(0)
            let enteredAfterEmpty = Atomic<Int>(0)
            let empty = Atomic<Bool>(false)
            let uses = Atomic<Int>(0)
        }
        let shared = Shared()
        let threads = 4
        let (finished, finish) = AsyncStream<Void>.makeStream()
        for _ in 0..<threads {
            Thread.detachNewThread {
                while shared.gate.enter() {
                    if shared.empty.load(ordering: .acquiring) { shared.enteredAfterEmpty.add(1, ordering: .relaxed) }
                    shared.inside.add(1, ordering: .relaxed)
                    shared.uses.add(1, ordering: .relaxed)
                    shared.inside.subtract(1, ordering: .relaxed)
                    shared.gate.leave()
                }
                finish.yield()
            }
        }
        // Close while the threads are busy (no event says "busy"; bounded).
        let deadline = ContinuousClock.now + .seconds(10)
        while shared.uses.load(ordering: .relaxed) < 10_000 && ContinuousClock.now < deadline { await Task.yield() }
        shared.gate.close()
        #expect(shared.gate.waitUntilEmpty(timeoutSeconds: 10))
        shared.empty.store(true, ordering: .releasing)
        #expect(shared.inside.load(ordering: .acquiring) == 0, "a user was inside after the wait returned")
        var ended = 0
        for await _ in finished {
            ended += 1
            if ended == threads { break }
        }
        #expect(shared.enteredAfterEmpty.load(ordering: .relaxed) == 0, "a thread entered after the gate was empty")
        #expect(shared.uses.load(ordering: .relaxed) >= 10_000)
    }

    @Test("a producer's handle outlives a call in progress across shutdown; later calls throw CLOSED")
    func producerShutdownWaitsForCallsInside() async throws {
        let (broker, producer, topic) = try await brokerWithWarmProducer("gate-p")
        // The test stands for a call in progress on another thread, e.g. a send preempted between its
        // "still running" check and rd_kafka_produce.
        #expect(producer.client.gate.enter())
        let shutdown = Task { () async throws in await producer.shutdown() }
        try await waitUntil(producer.client.gate.isClosed)
        // The event thread now waits for the call inside. Nothing may be destroyed meanwhile.
        try await Task.sleep(for: .milliseconds(300))
        #expect(!producer.client.isDestroyed, "the handle was destroyed under a call in progress")
        await expectClosed { try await producer.enqueue(KafkaProducerMessage(topic: topic, value: bytes("late"))) }
        await expectClosed { try await producer.flush() }
        await expectClosed { try producer.beginTransaction() }
        producer.client.gate.leave()
        #expect(try await value(of: shutdown, within: .seconds(30)) != nil, "shutdown finished")
        #expect(producer.client.isDestroyed)
        await expectClosed { try await producer.send(KafkaProducerMessage(topic: topic, value: bytes("after"))) }
        _ = try await broker.terminate()
    }

    @Test("a consumer's and an admin client's handles outlive a call in progress across close")
    func consumerAndAdminCloseWaitForCallsInside() async throws {
        let topic = uniqueName("gate-c")
        let broker = try await launchBroker(topics: [topic: 1])
        let tp = KafkaTopicPartition(topic: topic, partition: 0)
        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        try await consumer.assign([tp], startingAt: .beginning)
        #expect(consumer.client.gate.enter())
        let close = Task { () async throws in await consumer.close() }
        try await waitUntil(consumer.client.gate.isClosed)
        try await Task.sleep(for: .milliseconds(300))
        #expect(!consumer.client.isDestroyed, "the consumer's handle was destroyed under a call in progress")
        consumer.client.gate.leave()
        #expect(try await value(of: close, within: .seconds(30)) != nil, "close finished")
        #expect(consumer.client.isDestroyed)
        await expectClosed { _ = try await consumer.committed([tp]) }

        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: broker.bootstrapServers))
        #expect(try await admin.listTopics().contains(topic))
        #expect(admin.client.gate.enter())
        let shutdown = Task { () async throws in await admin.shutdown() }
        try await waitUntil(admin.client.gate.isClosed)
        try await Task.sleep(for: .milliseconds(300))
        #expect(!admin.client.isDestroyed, "the admin handle was destroyed under a call in progress")
        await expectClosed { _ = try await admin.listTopics() }
        admin.client.gate.leave()
        #expect(try await value(of: shutdown, within: .seconds(30)) != nil, "shutdown finished")
        #expect(admin.client.isDestroyed)
        _ = try await broker.terminate()
    }

    // The event thread's teardown purges what is still queued or in flight and serves those reports
    // before rd_kafka_destroy; without it, records of a producer dropped without shutdown vanished
    // with no report at all. A 5 s RTT keeps the records in flight.
    @Test("a producer dropped without shutdown reports the records it still held as failed")
    func droppedProducerReportsWhatItHeld() async throws {
        let topic = uniqueName("gate-drop")
        let broker = try await launchBroker(topics: [topic: 1])
        final class Seen: Sendable { let counts = Mutex((delivered: 0, failed: 0)) }
        let seen = Seen()
        let (allReported, reported) = AsyncStream<Void>.makeStream()
        let records = 50
        var producer: KafkaProducer? = try KafkaProducer(
            configuration: producerConfig(broker.bootstrapServers),
            deliveryReports: { reports in
                let total = seen.counts.withLock { c -> Int in
                    for r in reports {
                        if r.error == nil { c.delivered += 1 } else { c.failed += 1 }
                    }
                    return c.delivered + c.failed
                }
                if total >= records { reported.yield() }
            })
        _ = try await producer?.send(KafkaProducerMessage(topic: topic, partition: 0, value: bytes("warm-up")))
        try await broker.control.setRTT(broker: 1, milliseconds: 5000)
        for i in 0..<records { try await producer?.enqueue(KafkaProducerMessage(topic: topic, partition: 0, value: bytes("r\(i)"))) }
        producer = nil // deinit: the event thread tears down without a flush
        let done = Task { () async throws in for await _ in allReported { return } }
        #expect(try await value(of: done, within: .seconds(30)) != nil, "every record was reported")
        let counts = seen.counts.withLock { $0 }
        #expect(counts.delivered + counts.failed == records)
        #expect(counts.failed == records, "\(counts.delivered) reported delivered through a 5 s RTT")
        try await broker.control.setRTT(broker: 1, milliseconds: 0)
        _ = try await broker.terminate()
    }

    // Senders, awaited sends, flushes and queries keep going while the producer shuts down: each call
    // returns normally or throws CLOSED, and every record a call accepted is reported, delivered or
    // failed, by the time shutdown returns (nothing accepted is dropped silently).
    @Test("a shutdown racing senders, awaited sends and flushes: every call ends, every accepted record is reported")
    func shutdownRacingCalls() async throws {
        let topic = uniqueName("gate-race")
        let broker = try await launchBroker(topics: [topic: 3])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        try producer.prepare(topics: [topic])
        final class Count: Sendable { let accepted = Atomic<Int>(0) }
        let count = Count()
        let (reachedTarget, reached) = AsyncStream<Void>.makeStream()
        let target = 3_000
        let senders = (0..<3).map { s in
            Task { () async throws -> KafkaError? in
                var i = 0
                while true {
                    do {
                        try await producer.enqueue(KafkaProducerMessage(topic: topic, key: "s\(s)", value: "\(i)"))
                    } catch {
                        reached.finish() // so that a sender failing early cannot leave the test waiting
                        return error as? KafkaError
                    }
                    i += 1
                    if count.accepted.add(1, ordering: .relaxed).newValue == target { reached.yield() }
                    // enqueue suspends only when the queue is full: give the other tasks (this test's
                    // own, the flusher) the cooperative pool's two threads now and then.
                    if i % 64 == 0 { await Task.yield() }
                }
            }
        }
        let awaited = Task { () async throws -> (batches: Int, reports: Int, failedWith: [String], end: KafkaError) in
            var (batches, reports) = (0, 0)
            var failed: [String] = []
            while true {
                let batch = await producer.send((0..<10).map { KafkaProducerMessage(topic: topic, value: bytes("a\($0)")) })
                batches += 1
                reports += batch.count
                failed += batch.compactMap { $0.error?.codeName }
                if let closed = batch.first(where: { $0.error?.codeName == "CLOSED" })?.error {
                    return (batches, reports, failed, closed)
                }
            }
        }
        let flusher = Task { () async throws -> KafkaError? in
            while true {
                do {
                    try await producer.flush(timeout: .seconds(5))
                } catch let e as KafkaError where e.codeName == "_TIMED_OUT" {
                    continue // the senders kept the queue from emptying; not what is tested
                } catch {
                    return error as? KafkaError
                }
                _ = producer.outstanding
            }
        }
        for await _ in reachedTarget { break }
        await producer.shutdown()

        for sender in senders {
            let end = try await value(of: sender, within: .seconds(30))
            #expect(end??.codeName == "CLOSED", "a sender ended with \(String(describing: end))")
        }
        let flushEnd = try await value(of: flusher, within: .seconds(30))
        #expect(flushEnd??.codeName == "CLOSED", "the flusher ended with \(String(describing: flushEnd))")
        let awaitedEnd = try #require(try await value(of: awaited, within: .seconds(30)))
        #expect(awaitedEnd.end.codeName == "CLOSED")
        #expect(awaitedEnd.reports == awaitedEnd.batches * 10, "one report per awaited record")
        #expect(Set(awaitedEnd.failedWith).isSubset(of: ["CLOSED", "_PURGE_QUEUE", "_PURGE_INFLIGHT"]), "\(Set(awaitedEnd.failedWith))")
        let counts = producer.deliveryCounts
        #expect(counts.delivered + counts.failed == count.accepted.load(ordering: .relaxed), "accepted records not reported")
        _ = try await broker.terminate()
    }
}

private func expectClosed(_ call: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        try await call()
        Issue.record("the call should have thrown CLOSED", sourceLocation: sourceLocation)
    } catch let e as KafkaError {
        #expect(e.codeName == "CLOSED", "\(e)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}
