import EmbeddedBroker
import Foundation
import Logging
import Testing

@testable import Kafka

@Suite("Producer and consumer against the embedded broker (separate process)", .serialized, .timeLimit(.minutes(2)))
struct ProducerConsumerTests {
    @Test("round trip keeps keys, null and empty values, headers, timestamps and per-partition order")
    func roundTrip() async throws {
        let topic = uniqueName("rt")
        let broker = try await launchBroker(topics: [topic: 3])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        let t0: Int64 = 1_700_000_000_000
        var sent: [KafkaProducerMessage] = []
        for i in 0..<60 {
            let value: [UInt8]? = i % 10 == 3 ? nil : (i == 7 ? [] : bytes("value-\(i)"))
            let key: [UInt8]? = i == 11 ? nil : bytes("key-\(i % 6)")
            sent.append(
                KafkaProducerMessage(
                    topic: topic, key: key, value: value,
                    headers: [
                        KafkaHeader(key: "seq", value: "\(i)"), KafkaHeader(key: "nil-header", value: nil),
                        KafkaHeader(key: "seq", value: "dup-\(i)"),
                    ],
                    timestamp: t0 + Int64(i) * 1000))
        }
        let reports = await producer.send(sent)
        #expect(reports.count == 60)
        #expect(reports.allSatisfy { $0.error == nil && $0.offset >= 0 })
        // Reports come back in input order; offsets grow per partition.
        var lastOffset: [Int32: Int64] = [:]
        for r in reports {
            #expect(r.offset > lastOffset[r.partition, default: -1])
            lastOffset[r.partition] = r.offset
        }
        await producer.shutdown()

        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        try await consumer.assign((0..<3).map { KafkaTopicPartition(topic: topic, partition: $0) }, startingAt: .beginning)
        let got = try await collect(consumer, count: 60)
        await consumer.close()

        #expect(got.count == 60)
        let bySeq = Dictionary(uniqueKeysWithValues: got.map { (Int(text($0.header("seq")?.value) ?? "-1") ?? -1, $0) })
        for (i, m) in sent.enumerated() {
            let r = try #require(bySeq[i], "record \(i) missing")
            #expect(r.key == m.key)
            #expect(r.value == m.value)
            #expect(r.headers == m.headers)
            // header(_:) looks one name up in place: the first of duplicates, a null value, an absent name.
            #expect(r.header("seq")?.value == bytes("\(i)"))
            #expect(r.header("nil-header").map { $0.value == nil } == true)
            #expect(r.header("absent") == nil)
            #expect(r.timestamp == KafkaTimestamp(milliseconds: t0 + Int64(i) * 1000, kind: .createTime))
            #expect(r.partition == reports[i].partition && r.offset == reports[i].offset)
        }
        #expect(got.contains { $0.value == nil } && got.contains { $0.value == [] })
        // Per partition: offsets strictly increase in consumption order; same key → same partition, in send order.
        var seen: [Int32: Int64] = [:]
        var keySeq: [[UInt8]: (Int32, Int)] = [:]
        for m in got {
            #expect(m.offset > seen[m.partition, default: -1])
            seen[m.partition] = m.offset
            if let k = m.key, let seq = Int(text(m.header("seq")?.value) ?? "") {
                if let (p, last) = keySeq[k] {
                    #expect(p == m.partition)
                    #expect(seq > last)
                }
                keySeq[k] = (m.partition, seq)
            }
        }
        _ = try await broker.terminate()
    }

    @Test("consumed records borrow librdkafka's buffers: in-place accessors, owned copies, equality, use after close")
    func zeroCopyRecords() async throws {
        let topic = uniqueName("zc")
        let broker = try await launchBroker(topics: [topic: 1])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        var sent: [KafkaProducerMessage] = []
        for i in 0..<30 {
            let value: [UInt8]? = i == 5 ? nil : (i == 6 ? [] : bytes("value-\(i)"))
            sent.append(
                KafkaProducerMessage(
                    topic: topic, partition: 0, key: i == 7 ? nil : bytes("k\(i)"), value: value,
                    headers: [KafkaHeader(key: "seq", value: "\(i)")], timestamp: 1_700_000_000_000 + Int64(i)))
        }
        #expect(await producer.send(sent).allSatisfy { $0.error == nil })
        await producer.shutdown()

        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        try await consumer.assign([KafkaTopicPartition(topic: topic, partition: 0)], startingAt: .beginning)
        let got = try await collect(consumer, count: 30)
        // Records outlive their consumer: librdkafka's messages are released with the last record.
        await consumer.close()
        _ = try await broker.terminate()

        #expect(got.count == 30)
        for (i, m) in got.enumerated() {
            #expect(m.offset == Int64(i))
            #expect(m.topic == topic)
            #expect(m.value == sent[i].value)
            #expect(m.key == sent[i].key)
            #expect(m.valueCount == sent[i].value?.count)
            #expect(m.keyCount == sent[i].key?.count)
            #expect(m.withUnsafeValueBytes { Array($0) } == sent[i].value)
            #expect(m.withUnsafeKeyBytes { Array($0) } == sent[i].key)
            #expect(m.headers == sent[i].headers)
            #expect(m.timestamp == KafkaTimestamp(milliseconds: 1_700_000_000_000 + Int64(i), kind: .createTime))
            // An owned record with the same contents is equal and hashes alike.
            let owned = KafkaMessage(
                topic: m.topic, partition: m.partition, offset: m.offset, key: m.key, value: m.value, headers: m.headers,
                timestamp: m.timestamp)
            #expect(owned == m)
            #expect(owned.hashValue == m.hashValue)
            // Setting a field makes an owned copy; the original and the other fields are unchanged.
            var changed = m
            changed.value = bytes("changed")
            #expect(changed.value == bytes("changed") && changed.valueCount == 7)
            #expect(changed.key == m.key && changed.headers == m.headers && changed.offset == m.offset)
            #expect(m.value == sent[i].value)
            #expect(changed != m)
        }
    }

    @Test("explicit partition and awaitable single send return delivery metadata")
    func explicitPartition() async throws {
        let topic = uniqueName("part")
        let broker = try await launchBroker(topics: [topic: 4])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        let before = Int64(Date().timeIntervalSince1970 * 1000)
        let r1 = try await producer.send(KafkaProducerMessage(topic: topic, partition: 2, value: bytes("a")))
        let r2 = try await producer.send(KafkaProducerMessage(topic: topic, partition: 2, value: bytes("b")))
        #expect(r1.partition == 2 && r2.partition == 2)
        #expect(r1.offset == 0 && r2.offset == 1)
        // Real brokers echo nothing for CreateTime topics; the mock answers LogAppendTime 1234 for every produce.
        let ts = try #require(r1.timestamp)
        if ts.kind == .createTime { #expect(ts.milliseconds >= before - 1000) }
        // The reports were served on the producer's own thread, which carries its name (for top -H, perf).
        #expect(threadNames().contains("sf-producer"))
        await producer.shutdown()
        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        try await consumer.assign([KafkaTopicPartition(topic: topic, partition: 2)], startingAt: .beginning)
        let got = try await collect(consumer, count: 2)
        #expect(got.map { text($0.value) } == ["a", "b"])
        #expect(threadNames().contains("sf-consumer"))
        await consumer.close()
        _ = try await broker.terminate()
    }

    @Test("fire-and-forget sends report deliveries in batches; a tiny queue makes senders wait, not fail")
    func fireAndForgetAndQueueFull() async throws {
        let topic = uniqueName("ff")
        let broker = try await launchBroker(topics: [topic: 2])
        let box = ReportBox()
        var config = producerConfig(broker.bootstrapServers)
        config.queueMaxMessages = 10
        let producer = try KafkaProducer(configuration: config, deliveryReports: { box.add($0) })
        for i in 0..<2000 {
            try await producer.enqueue(KafkaProducerMessage(topic: topic, key: nil, value: "m\(i)"))
        }
        try await producer.flush()
        #expect(producer.deliveryCounts.delivered == 2000)
        #expect(producer.deliveryCounts.failed == 0)
        #expect(box.reports.count == 2000)
        #expect(box.batches < 2000, "reports arrive in batches")
        #expect(Set(box.reports.map { "\($0.partition)/\($0.offset)" }).count == 2000)

        // tryEnqueue refuses instead of waiting once the queue is full.
        var refused: KafkaError?
        for i in 0..<100 {
            do { try producer.tryEnqueue(KafkaProducerMessage(topic: topic, key: nil, value: "t\(i)")) } catch let e as KafkaError {
                refused = e
                break
            }
        }
        #expect(refused?.codeName == "_QUEUE_FULL")
        #expect(refused?.isRetriable == true)
        await producer.shutdown()
        _ = try await broker.terminate()
    }

    @Test("a fatal producer error fails queued sends and every later send, and never hangs")
    func fatalError() async throws {
        let topic = uniqueName("fatal")
        let broker = try await launchBroker(topics: [topic: 1])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        _ = try await producer.send(KafkaProducerMessage(topic: topic, key: nil, value: "before"))
        // Simulate what librdkafka does on an idempotence sequence desynchronisation.
        producer.triggerFatalErrorForTesting("test: sequence desynchronised")
        // Wait for the error callback: the producer reports it as its fatal error.
        var error: KafkaError?
        do {
            for _ in 0..<100 {
                try await producer.send(KafkaProducerMessage(topic: topic, key: nil, value: "after"))
            }
        } catch let e as KafkaError {
            error = e
        }
        #expect(error?.isFatal == true)
        #expect(producer.fatalError?.isFatal == true)
        await #expect(throws: KafkaError.self) {
            try await producer.enqueue(KafkaProducerMessage(topic: topic, key: nil, value: "later"))
        }
        await producer.shutdown()
        _ = try await broker.terminate()
    }

    @Test("transactional producer API: init, begin, send offsets, commit and abort")
    func transactions() async throws {
        let input = uniqueName("txin")
        let output = uniqueName("txout")
        let broker = try await launchBroker(topics: [input: 1, output: 1])
        var config = producerConfig(broker.bootstrapServers)
        config.transactionalID = uniqueName("tx")
        let producer = try KafkaProducer(configuration: config)
        try await producer.initTransactions()
        let group = uniqueName("txg")
        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: group))
        try producer.beginTransaction()
        let r = try await producer.send(KafkaProducerMessage(topic: output, key: nil, value: "in-tx"))
        #expect(r.offset >= 0)
        try await producer.sendOffsetsToTransaction([KafkaTopicPartitionOffset(topic: input, partition: 0, offset: 5)], consumer: consumer)
        try await producer.commitTransaction()
        try producer.beginTransaction()
        _ = await producer.send([KafkaProducerMessage(topic: output, key: nil, value: "aborted")])
        try await producer.abortTransaction()
        // Beginning twice without commit is a state error from librdkafka, surfaced as KafkaError.
        try producer.beginTransaction()
        #expect(throws: KafkaError.self) { try producer.beginTransaction() }
        try await producer.abortTransaction()
        await consumer.close()
        await producer.shutdown()
        _ = try await broker.terminate()
    }

    @Test("commit, stop, restart: the group resumes exactly after the last commit")
    func commitAndResume() async throws {
        let topic = uniqueName("resume")
        let broker = try await launchBroker(topics: [topic: 2])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        let reports = await producer.send((0..<100).map { KafkaProducerMessage(topic: topic, key: "k\($0 % 5)", value: "v\($0)") })
        #expect(reports.allSatisfy { $0.error == nil })
        await producer.shutdown()

        let group = uniqueName("g")
        var config = consumerConfig(broker.bootstrapServers, group: group)
        config.autoCommit = false
        let first = try KafkaConsumer(configuration: config)
        try await first.subscribe(topics: [topic])
        let part1 = try await collect(first, count: 40, store: true)
        try await first.commit()
        let committed = try await first.committed([
            KafkaTopicPartition(topic: topic, partition: 0), KafkaTopicPartition(topic: topic, partition: 1),
        ])
        await first.close()

        let second = try KafkaConsumer(configuration: config)
        try await second.subscribe(topics: [topic])
        let part2 = try await collect(second, count: 60, store: true)
        try await second.commit()
        await second.close()

        let all = (part1 + part2).map { "\($0.partition)/\($0.offset)" }
        #expect(Set(all).count == 100, "no record lost or read twice")
        for c in committed {
            let firstAfter = part2.filter { $0.partition == c.partition }.map(\.offset).min()
            let lastBefore = part1.filter { $0.partition == c.partition }.map(\.offset).max() ?? -1
            #expect(c.offset == (lastBefore >= 0 ? lastBefore + 1 : KafkaOffset.invalid))
            if let firstAfter { #expect(firstAfter == max(c.offset, 0)) }
        }
        _ = try await broker.terminate()
    }

    @Test("replay from the beginning, an offset and a timestamp returns exactly the expected records")
    func replay() async throws {
        let topic = uniqueName("replay")
        let broker = try await launchBroker(topics: [topic: 3])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        let t0: Int64 = 1_750_000_000_000
        // 90 records, 30 per partition, timestamps rising by one second.
        let messages = (0..<90).map {
            KafkaProducerMessage(topic: topic, partition: Int32($0 % 3), value: bytes("r\($0)"), timestamp: t0 + Int64($0) * 1000)
        }
        #expect(await producer.send(messages).allSatisfy { $0.error == nil })
        await producer.shutdown()
        let partitions = (0..<3).map { KafkaTopicPartition(topic: topic, partition: Int32($0)) }

        func read(_ position: KafkaStartPosition, expected: Int) async throws -> [String] {
            let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
            try await consumer.assign(partitions, startingAt: position)
            let got = try await collect(consumer, count: expected)
            // Nothing else is there: the next poll finds no more records.
            let extra = try await consumer.poll(maxMessages: 10, timeout: .milliseconds(300))
            #expect(extra.isEmpty)
            await consumer.close()
            return got.compactMap { text($0.value) }
        }

        #expect(Set(try await read(.beginning, expected: 90)) == Set((0..<90).map { "r\($0)" }))
        let fromOffsets = try await read(.offsets([partitions[0]: 25, partitions[1]: 29, partitions[2]: 30]), expected: 6)
        #expect(Set(fromOffsets) == Set([75, 78, 81, 84, 87, 88].map { "r\($0)" }))
        // Timestamp t0 + 60.5 s: records 61...89.
        let fromTime = try await read(.timestamp(t0 + 60_500), expected: 29)
        #expect(Set(fromTime) == Set((61..<90).map { "r\($0)" }))
        // A timestamp after everything: nothing.
        #expect(try await read(.timestamp(t0 + 1_000_000), expected: 0).isEmpty)

        // Seek an active group consumer back in time.
        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: uniqueName("g")))
        try await consumer.subscribe(topics: [topic], startingAt: .beginning)
        _ = try await collect(consumer, count: 90)
        try await consumer.seek(to: .timestamp(t0 + 85_000))
        let replayed = try await collect(consumer, count: 5).compactMap { text($0.value) }
        #expect(Set(replayed) == Set((85..<90).map { "r\($0)" }))
        await consumer.close()
        _ = try await broker.terminate()
    }

    // Records borrow librdkafka's messages, so a consumer closed while records are held destroys its
    // handle only when the last of them goes. The handle's context must not keep the client alive
    // meanwhile (it did, through the rebalance hooks of a group consumer: a handle that reconnected
    // to its gone broker for the rest of the process).
    @Test("a group consumer closed while records are held releases its handle once they are released")
    func closeWhileRecordsAreHeld() async throws {
        let topic = uniqueName("held")
        let broker = try await launchBroker(topics: [topic: 1])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        #expect(
            await producer.send((0..<5).map { KafkaProducerMessage(topic: topic, partition: 0, value: bytes("h\($0)")) }).allSatisfy {
                $0.error == nil
            })
        await producer.shutdown()
        weak var client: RDKafkaClient?
        var held: [KafkaMessage] = []
        do {
            let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: uniqueName("g")))
            client = consumer.client
            try await consumer.subscribe(topics: [topic], startingAt: .beginning)
            held = try await collect(consumer, count: 5)
            await consumer.close()
        }
        #expect(client != nil && client?.isDestroyed == false, "the handle waits for the held records")
        #expect(held.map { text($0.value) } == (0..<5).map { "h\($0)" })
        held = []
        // The polling thread drops its own reference just after `close()` has returned (when its
        // closure ends): a deallocation has no event to wait for, so the check polls, bounded. With
        // the reference cycle this test guards against, the handle is never released and it fails.
        try await waitUntil(client == nil)
        _ = try await broker.terminate()
    }

    @Test("a per-message error becomes an event and the sequence goes on")
    func perMessageErrors() async throws {
        let topic = uniqueName("err")
        let broker = try await launchBroker(topics: [topic: 1])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        _ = await producer.send((0..<5).map { KafkaProducerMessage(topic: topic, key: nil, value: "e\($0)") })
        await producer.shutdown()
        var config = consumerConfig(broker.bootstrapServers, group: nil)
        config.autoOffsetReset = .error
        let consumer = try KafkaConsumer(configuration: config)
        let tp = KafkaTopicPartition(topic: topic, partition: 0)
        try await consumer.assign([tp], startingAt: .offsets([tp: 1000]))
        // The out-of-range offset yields an error event; the sequence itself stays alive.
        let errorSeen = Task { () -> KafkaError? in
            for await event in consumer.events { if case .error(let e) = event { return e } }
            return nil
        }
        let iteration = Task { try await collect(consumer, count: 5) }
        let error = await errorSeen.value
        #expect(error != nil)
        // The partition is in error state now (librdkafka refuses seek there): re-assign it from the beginning.
        try await consumer.assign([tp], startingAt: .beginning)
        let got = try await iteration.value
        #expect(got.compactMap { text($0.value) } == (0..<5).map { "e\($0)" })
        await consumer.close()
        _ = try await broker.terminate()
    }

    @Test("pause stops one partition while others flow; resume delivers what was held back")
    func pauseResume() async throws {
        let topic = uniqueName("pause")
        let broker = try await launchBroker(topics: [topic: 2])
        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        let p0 = KafkaTopicPartition(topic: topic, partition: 0)
        let p1 = KafkaTopicPartition(topic: topic, partition: 1)
        try await consumer.assign([p0, p1], startingAt: .beginning)
        try consumer.pause([p0])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        _ = await producer.send((0..<20).map { KafkaProducerMessage(topic: topic, partition: Int32($0 % 2), value: bytes("p\($0)")) })
        await producer.shutdown()
        let first = try await collect(consumer, count: 10)
        #expect(first.allSatisfy { $0.partition == 1 })
        try consumer.resume([p0])
        let second = try await collect(consumer, count: 10)
        #expect(second.allSatisfy { $0.partition == 0 })
        #expect(second.map(\.offset) == Array(0..<10))
        await consumer.close()
        _ = try await broker.terminate()
    }

    @Test("group events, statistics, librdkafka logs through swift-log, position and lag")
    func eventsStatisticsLogsLag() async throws {
        let topic = uniqueName("ev")
        let broker = try await launchBroker(topics: [topic: 2])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        _ = await producer.send((0..<10).map { KafkaProducerMessage(topic: topic, key: nil, value: "x\($0)") })
        await producer.shutdown()

        let handler = CapturingLogHandler()
        let logger = Logger(label: "test") { _ in handler }
        var config = consumerConfig(broker.bootstrapServers, group: uniqueName("g"))
        config.kafka.statisticsInterval = .milliseconds(100)
        config.kafka.debugContexts = "cgrp"
        config.autoCommit = false
        let consumer = try KafkaConsumer(configuration: config, logger: logger)
        try await consumer.subscribe(topics: [topic])
        let got = try await collect(consumer, count: 6, store: true)
        try await consumer.commit()
        var sawAssigned = false
        var sawStatistics = false
        for await event in consumer.events {
            switch event {
            case .assigned(let p): sawAssigned = p.count == 2
            case .statistics(let s): sawStatistics = s.json.contains("\"type\"") && s.json.contains("consumer")
            default: break
            }
            if sawAssigned && sawStatistics { break }
        }
        #expect(sawAssigned && sawStatistics)
        #expect(handler.all.contains { $0.source == "librdkafka" && $0.level == .debug })
        let lag = try await consumer.lag()
        #expect(lag.reduce(0) { $0 + $1.lag } == 4)
        #expect(lag.reduce(0) { $0 + $1.high } == 10)
        let positions = try consumer.position(try await consumer.assignment())
        let consumedPerPartition = Dictionary(grouping: got, by: \.partition).mapValues { ($0.map(\.offset).max() ?? -1) + 1 }
        for p in positions where consumedPerPartition[p.partition] != nil {
            #expect(p.offset == consumedPerPartition[p.partition])
        }
        await consumer.close()
        _ = try await broker.terminate()
    }
}

/// The names of this process's threads (`/proc/self/task/*/comm`).
func threadNames() -> Set<String> {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return Set(
        tasks.compactMap { try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8) }
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) })
}

final class ReportBox: @unchecked Sendable {
    // `@unchecked`: guarded by `lock`.
    private let lock = NSLock()
    private var _reports: [KafkaDeliveryReport] = []
    private var _batches = 0
    func add(_ r: [KafkaDeliveryReport]) {
        lock.withLock {
            _reports += r
            _batches += 1
        }
    }
    var reports: [KafkaDeliveryReport] { lock.withLock { _reports } }
    var batches: Int { lock.withLock { _batches } }
}
