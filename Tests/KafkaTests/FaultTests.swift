import EmbeddedBroker
import Foundation
import Logging
import Synchronization
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
        _ = await tasks[0].value // the cluster is up and known
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

    // Without a handler, an error-free DR event is counted without reading its reports (the bulk path);
    // these are the cases where it must not be: awaited records in the same events, and a refused batch.
    @Test("fire-and-forget counts without a handler: awaited sends mixed in get their reports; a refused record counts as failed")
    func bulkCountedDeliveries() async throws {
        let topic = uniqueName("bulk")
        let broker = try await launchBroker(topics: [topic: 2])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        try producer.prepare(topics: [topic])
        // One partition, so that awaited and fire-and-forget records share produce requests and DR events.
        let awaited = Task {
            var offsets: [Int64] = []
            for i in 0..<40 {
                let r = try await producer.send(KafkaProducerMessage(topic: topic, partition: 0, value: bytes("a\(i)")))
                offsets.append(r.offset)
            }
            return offsets
        }
        for i in 0..<3000 {
            try await producer.enqueue(KafkaProducerMessage(topic: topic, partition: 0, value: bytes("f\(i)")))
        }
        // A report the bulk path skipped would leave its send waiting forever: bound the wait.
        let offsets = try #require(try await value(of: awaited, within: .seconds(60)), "every awaited send got its report")
        try await producer.flush()
        #expect(offsets.count == 40 && offsets == offsets.sorted() && Set(offsets).count == 40)
        #expect(producer.deliveryCounts.delivered == 3000)
        #expect(producer.deliveryCounts.failed == 0)

        // A refused produce request: its DR event carries the error, so its record is read and counted as failed.
        try await broker.control.pushRequestErrors(api: "Produce", errors: ["TOPIC_AUTHORIZATION_FAILED"])
        try await producer.enqueue(KafkaProducerMessage(topic: topic, partition: 1, value: bytes("refused")))
        try await producer.flush()
        let counts = producer.deliveryCounts
        #expect(counts.delivered == 3000)
        #expect(counts.failed == 1)
        #expect(counts.lastError?.codeName == "TOPIC_AUTHORIZATION_FAILED")
        await producer.shutdown()
        _ = try await broker.terminate()
    }

    // While only fire-and-forget records are outstanding, the event thread serves reports every
    // `reportCoalescing` instead of on each event. Here that interval is a minute, so each wait below
    // finishes in time only if the waiter woke the sleeping thread itself.
    @Test("an awaited send, a sender waiting for queue space and a flush each wake the coalescing event thread")
    func coalescingWakeups() async throws {
        let topic = uniqueName("coalesce")
        let broker = try await launchBroker(topics: [topic: 1])
        let sleeps = SleepCounter()
        var config = producerConfig(broker.bootstrapServers)
        config.queueMaxMessages = 2
        let producer = try KafkaProducer(
            configuration: config, logger: Logger(label: "test"), deliveryReports: nil, statistics: nil, errors: nil,
            reportCoalescing: .seconds(60), onCoalescingSleep: { sleeps.add() }, deferredDestroyBound: .seconds(60))
        _ = try await producer.send(KafkaProducerMessage(topic: topic, partition: 0, value: bytes("warm-up")))
        // Each record now stays in flight ~2 s, long enough for the event thread to fall asleep.
        try await broker.control.setRTT(broker: 1, milliseconds: 2000)

        let bound = Duration.seconds(30)
        func outstandingRecordsPutThreadToSleep(_ values: String...) async throws {
            let before = sleeps.count
            for v in values { try producer.tryEnqueue(KafkaProducerMessage(topic: topic, partition: 0, value: bytes(v))) }
            // Bounded too: a thread that never sleeps must fail the test, not hang it.
            let slept = Task { () async throws in await sleeps.wait(above: before) }
            try #require(try await value(of: slept, within: bound) != nil, "the event thread fell asleep with records in flight")
        }

        try await outstandingRecordsPutThreadToSleep("a") // one of two places: the awaited send below fits
        let awaited = Task { try await producer.send(KafkaProducerMessage(topic: topic, partition: 0, value: bytes("b"))) }
        #expect(try await value(of: awaited, within: bound) != nil, "the awaited send woke the thread")
        // A send returns when its report is read, a moment before librdkafka frees its queue place (when
        // the event is destroyed): flush, so that the next step starts with an empty queue.
        try await producer.flush()

        try await outstandingRecordsPutThreadToSleep("c", "c2") // the queue is full: this send waits for space
        let full = Task { try await producer.enqueue(KafkaProducerMessage(topic: topic, partition: 0, value: bytes("d"))) }
        #expect(try await value(of: full, within: bound) != nil, "the sender waiting for space woke the thread")
        try await producer.flush()

        try await outstandingRecordsPutThreadToSleep("e")
        let flush = Task { try await producer.flush() }
        #expect(try await value(of: flush, within: bound) != nil, "the flush woke the thread")
        #expect(producer.deliveryCounts.delivered == 5)

        try await broker.control.setRTT(broker: 1, milliseconds: 0)
        await producer.shutdown()
        _ = try await broker.terminate()
    }

    // While only fire-and-forget records are in flight, the event thread counts a DR event and leaves
    // it for the next send to destroy (the records are freed by the thread that allocated them, and
    // only then is their queue place free). Here a left event is never freed for being old, so each
    // step below finishes only if the one who needs the places freed frees them.
    @Test("counted reports left for the sender are freed by a sender waiting for space and by a flush")
    func deferredReportsFreedBySenderAndFlush() async throws {
        let topic = uniqueName("deferred")
        let broker = try await launchBroker(topics: [topic: 3])
        var config = producerConfig(broker.bootstrapServers)
        config.queueMaxMessages = 10
        let producer = try KafkaProducer(
            configuration: config, logger: Logger(label: "test"), deliveryReports: nil, statistics: nil, errors: nil,
            reportCoalescing: .milliseconds(5), onCoalescingSleep: nil, deferredDestroyBound: .seconds(3600))
        // 500 records through 10 places: the sender gets space only by destroying what was left to it.
        let sender = Task {
            for i in 0..<500 {
                try await producer.enqueue(KafkaProducerMessage(topic: topic, partition: Int32(i % 3), value: bytes("r\(i)")))
            }
        }
        #expect(try await value(of: sender, within: .seconds(30)) != nil, "the sender freed queue places itself")
        // Every record is counted once its report is served; the report of the last one is served after
        // the last send, so it is still left for a send, and its record still counts as outstanding.
        try await waitUntil(producer.deliveryCounts.delivered == 500)
        #expect(producer.outstanding > 0, "the last reports wait for a send")
        // A flush waits for the queue to drain: the event thread destroys the left reports for it.
        let flush = Task { try await producer.flush(timeout: .seconds(20)) }
        #expect(try await value(of: flush, within: .seconds(30)) != nil, "the flush returned")
        #expect(producer.outstanding == 0)
        #expect(producer.deliveryCounts.delivered == 500)
        #expect(producer.deliveryCounts.failed == 0)
        await producer.shutdown()
        _ = try await broker.terminate()
    }

    @Test("counted reports no send takes are freed within the coalescing interval, without a flush")
    func deferredReportsFreedWhenNoSendComes() async throws {
        let (broker, producer, topic) = try await brokerWithWarmProducer("deferred-idle", partitions: 3)
        for i in 0..<300 {
            try await producer.enqueue(KafkaProducerMessage(topic: topic, partition: Int32(i % 3), value: bytes("r\(i)")))
        }
        // No event announces it; bounded by waitUntil (the default bound is one coalescing interval, 5 ms).
        try await waitUntil(producer.deliveryCounts.delivered == 300 && producer.outstanding == 0)
        #expect(producer.outstanding == 0, "the records of reports no send took were freed")
        await producer.shutdown()
        _ = try await broker.terminate()
    }

    // Shutdown flushes within its timeout, then purges: the records still queued or in flight must
    // each complete their send, with an error, before the handle is destroyed. A report served after
    // the handle is gone would never come, and the send would wait forever. A 5 s RTT keeps the
    // records in flight past the flush timeout.
    @Test("shutdown with records in flight past its flush timeout completes every awaited send with an error")
    func shutdownWithRecordsInFlight() async throws {
        let (broker, producer, topic) = try await brokerWithWarmProducer("inflight")
        try await broker.control.setRTT(broker: 1, milliseconds: 5000)
        let pending = Task { () async throws in
            await producer.send((0..<50).map { KafkaProducerMessage(topic: topic, partition: 0, value: bytes("p\($0)")) })
        }
        // No event says "queued": poll the queue length, bounded (the records are queued at once).
        try await waitUntil(producer.outstanding >= 50)
        #expect(producer.outstanding >= 50, "the sends were queued before the shutdown")
        await producer.shutdown(timeout: .milliseconds(500))
        let reports = try #require(try await value(of: pending, within: .seconds(30)), "every send completed")
        #expect(reports.count == 50)
        #expect(reports.allSatisfy { $0.error != nil }, "\(reports.filter { $0.error == nil }.count) reported delivered")
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

/// Counts the producer event thread's coalescing sleeps; a test awaits the next one.
final class SleepCounter: Sendable {
    private let state = Mutex<(count: Int, waiters: [(above: Int, CheckedContinuation<Void, Never>)])>((0, []))

    var count: Int { state.withLock { $0.count } }

    func add() {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.count += 1
            let n = s.count
            let ready = s.waiters.filter { $0.above < n }.map(\.1)
            s.waiters.removeAll { $0.above < n }
            return ready
        }
        for c in ready { c.resume() }
    }

    /// Returns once the count exceeds `above`.
    func wait(above: Int) async {
        await withCheckedContinuation { c in
            let now = state.withLock { s -> Bool in
                if s.count > above { return true }
                s.waiters.append((above, c))
                return false
            }
            if now { c.resume() }
        }
    }
}
