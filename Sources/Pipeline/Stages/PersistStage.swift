import Config
import Connectors
import Foundation
import Kafka
import Logging
import NIOConcurrencyHelpers
import PipelineModel
import ServiceLifecycle
import StreamCore
import Synchronization

/// The persist stage: writes the input topic into a sink in batches.
///
/// Exactly-once into the sink, without Kafka transactions: for sinks that store offsets (SQLite,
/// PostgreSQL, NDJSON files) the batch's rows and the next offsets go in one database transaction,
/// and on every partition assignment the consumer seeks to the offsets stored there — Kafka's
/// committed offsets are then only informational (for `lag` tooling). Rows are upserted by the
/// configured key, so a record that reaches the sink twice (an upstream stage redelivered it after
/// a crash, with the same `sf.id`) is one row.
///
/// The next batch is polled while the sink writes the current one; writes stay sequential, and
/// ``SinkGate`` keeps them consistent with rebalances (docs/ARCHITECTURE.md, "Batches in flight").
///
/// Settings (section `persist:`): `sink` (see docs/CONNECTORS.md), `batch_size` (default 500),
/// `batch_wait` (how long a batch may wait to fill, default 20ms), `retry_backoff` (between failed
/// writes, default 1s; the batch is retried until it is written or the worker is stopped).
public final class PersistStage: Service, ContextualStage, Sendable {
    let context: StageContext
    let sink: any RecordSink
    let retryBackoffMs: Int64
    /// How the input's values are read (JSON, or Avro through the registry).
    let decoding: RecordDecoding
    /// Orders sink writes against the rebalance listener's reads of the sink's offsets.
    let gate = SinkGate()

    public init(context: StageContext) throws(ConfigError) {
        let (spec, common, logger) = (context.spec, context.common, context.logger)
        self.context = context
        let m = try common.mapping()
        let sinkNode = try m.required("sink", hint: "where records go: sqlite, postgres, ndjson or kafka")
        let sinkMapping = try sinkNode.mapping()
        var producerConfig = KafkaProducerConfiguration(kafka: spec.kafka)
        producerConfig.properties = common.producerProperties
        self.sink = try SinkFactory.make(sinkMapping, baseDirectory: spec.baseDirectory, kafka: producerConfig, logger: logger)
        self.retryBackoffMs = try m.duration("retry_backoff", defaultMilliseconds: 1000)
        self.decoding = common.input.map { RecordDecoding(topic: $0, registry: spec.schemaRegistry, logger: logger) } ?? .json
        try m.finish()
    }

    public func run() async throws {
        guard let input = common.input else { return }
        try await sink.open()
        let sink = self.sink
        let group = common.group
        let logger = self.logger
        let gate = self.gate
        let listener: KafkaRebalanceListener? =
            sink.storesOffsets
            ? KafkaRebalanceListener(
                onAssigned: { partitions, context in
                    // Runs on the consumer's polling thread (not the cooperative pool): waiting here
                    // delays only this consumer, which must not fetch before it knows where to start.
                    // The gate waits for a write in progress, so the offsets read include it.
                    gate.rebalancing { positions in
                        let stored = PersistStage.offsetsWithinTheLog(
                            PersistStage.blockingStoredOffsets(sink: sink, group: group, topic: input.name, logger: logger),
                            topic: input.name, assigned: partitions, logger: logger
                        ) { try context.watermarks($0).high }
                        for tp in partitions { positions[tp.partition] = stored[tp.partition] ?? SinkGate.unknown }
                        return partitions.compactMap { tp in
                            stored[tp.partition].map { KafkaTopicPartitionOffset(tp, offset: $0) }
                        }
                    }
                },
                onRevoked: { partitions in
                    gate.rebalancing { positions in
                        for tp in partitions { positions[tp.partition] = nil }
                    }
                })
            : nil
        let clients = try StageClients(spec: spec, common: common, logger: logger, rebalanceListener: listener)
        try clients.producer.prepare(topics: [spec.deadLetter.name])
        try await clients.consumer.subscribe(topics: [input.name])
        let readiness = clients.startReadinessWatch(health: health, logger: logger)
        defer { readiness.cancel() }
        logger.info("persisting", metadata: ["topic": "\(input.name)", "group": "\(group)", "sink": "\(sink.name)"])

        // The next batch is collected while the sink writes this one (writes stay one at a time, in
        // order). Records a rebalance made stale are skipped when written (see ``write``).
        var next: Task<[KafkaMessage], any Error>?
        do {
            try await clients.runLoop(
                health: health, metrics: metrics, logger: logger,
                turn: { stopping in
                    let batch: [KafkaMessage]
                    if let pending = next {
                        next = nil
                        batch = try await pending.value
                    } else {
                        batch = try await collectBatch(clients.consumer, stopping: stopping)
                    }
                    guard !batch.isEmpty else { return }
                    if !stopping.isSet {
                        next = Task { [self] in try await collectBatch(clients.consumer, stopping: stopping) }
                    }
                    try await write(batch, clients: clients, stopping: stopping)
                },
                finish: {
                    // Stopping: a batch collected ahead is not written (nor its offsets stored); it is
                    // read again from the sink's offsets. Wait for its poll before the consumer closes.
                    _ = try? await next?.value
                    next = nil
                })
        } catch {
            _ = try? await next?.value
            next = nil
            await sink.close()
            throw error
        }
        await sink.close()
    }

    /// Polls until the batch is full or `batch_wait` has passed since its first record.
    func collectBatch(_ consumer: KafkaConsumer, stopping: StopFlag) async throws -> [KafkaMessage] {
        var batch = try await consumer.poll(maxMessages: common.batchSize, timeout: .milliseconds(100))
        guard !batch.isEmpty, common.batchWaitMs > 0 else { return batch }
        let deadline = ContinuousClock.now + .milliseconds(common.batchWaitMs)
        while batch.count < common.batchSize && !stopping.isSet {
            let left = deadline - ContinuousClock.now
            if left <= .zero { break }
            let more = try await consumer.poll(maxMessages: common.batchSize - batch.count, timeout: min(left, .milliseconds(100)))
            batch += more
        }
        return batch
    }

    func write(_ polled: [KafkaMessage], clients: StageClients, stopping: StopFlag) async throws {
        await gate.beginWrite()
        defer { gate.endWrite() }
        var batch = polled
        if sink.storesOffsets {
            // A rebalance between this batch's poll and now positioned the consumer at the sink's
            // offsets (read after the last write): records of partitions no longer ours, or below
            // what the sink already has, are read again from there or were written — skip them.
            batch = gate.fresh(polled)
            if batch.count < polled.count {
                logger.info("skipped records polled before a rebalance", metadata: ["records": "\(polled.count - batch.count)"])
            }
            if batch.isEmpty { return }
        }
        let started = ContinuousClock.now
        metrics.recordIn(batch)
        try await decoding.prepare(batch, health: health)
        let now = currentTimeMs()
        var records: [SinkRecord] = []
        records.reserveCapacity(batch.count)
        var originals: [String: KafkaMessage] = [:] // "topic:partition:offset" → message, for rejections
        var dead: [(KafkaMessage, DeadLetterReason)] = []
        var next: [Int32: Int64] = [:]
        // A span per record, open until the sink has it (or it is dead-lettered): the end of its trace.
        var spans = RecordSpans()
        for m in batch {
            let span = spans.start(m, tracer: tracer)
            next[m.partition] = max(next[m.partition] ?? 0, m.offset + 1)
            let value: JSONValue
            switch decoding.decode(m) {
            case .success(let v): value = v
            case .failure(let reason):
                dead.append((m, reason))
                continue
            }
            records.append(
                SinkRecord(
                    id: m.recordID, key: m.key, value: value,
                    eventTimeMs: m.headerString(RecordHeader.eventTime).flatMap { Int64($0) },
                    topic: m.topic, partition: m.partition, offset: m.offset,
                    headers: Self.headers(m, span: span)))
            originals["\(m.topic):\(m.partition):\(m.offset)"] = m
        }
        let offsets = next.map { SinkOffset(topic: clients.input, partition: $0.key, nextOffset: $0.value) }

        // Refused records are dead-lettered (and acknowledged) before the batch's offsets are stored.
        let refused = sink.rejections(in: records)
        if !refused.isEmpty {
            let keys = Set(refused.map { "\($0.record.topic):\($0.record.partition):\($0.record.offset)" })
            records.removeAll { keys.contains("\($0.topic):\($0.partition):\($0.offset)") }
            for r in refused {
                if let m = originals["\(r.record.topic):\(r.record.partition):\(r.record.offset)"] {
                    dead.append((m, DeadLetterReason(component: "sink:\(sink.name)", errorClass: .sinkRejected, message: r.reason)))
                }
            }
        }
        try await sendDeadLetters(dead, clients: clients, nowMs: now, spans: &spans)

        // Rows and offsets in one transaction; retried until written (the records are not lost, the
        // consumer does not move on) or the worker is stopped (then redelivered on restart).
        var rejections: [SinkRejection] = []
        while true {
            do {
                rejections = try await sink.write(records, offsets: offsets, consumerGroup: common.group)
                health.setReady(true)
                break
            } catch {
                health.setReady(false)
                logger.error("sink write failed; retrying", metadata: ["sink": "\(sink.name)", "error": "\(error)"])
                if stopping.isSet { throw PipelineError.sink("\(error)") }
                try await Task.sleep(for: .milliseconds(retryBackoffMs))
            }
        }
        if !rejections.isEmpty {
            // The pre-check should have caught these; dead-letter them now (at-least-once for them).
            logger.warning("the sink refused records its pre-check accepted", metadata: ["count": "\(rejections.count)"])
            var late: [(KafkaMessage, DeadLetterReason)] = []
            for r in rejections {
                if let m = originals["\(r.record.topic):\(r.record.partition):\(r.record.offset)"] {
                    late.append((m, DeadLetterReason(component: "sink:\(sink.name)", errorClass: .sinkRejected, message: r.reason)))
                }
            }
            try await sendDeadLetters(late, clients: clients, nowMs: now, spans: &spans)
            dead += late
        }
        spans.endAll(.persisted)
        if sink.storesOffsets { gate.written(offsets) }
        clients.storeAndCommit(batch, logger: logger)
        metrics.recordOut(records.count - rejections.count)
        for (_, reason) in dead { metrics.recordDeadLetter(errorClass: reason.errorClass) }
        metrics.recordProcessing(nanoseconds: (ContinuousClock.now - started).nanoseconds, records: batch.count)
        metrics.recordEndToEnd(ingestTimesMs: batch.compactMap(\.ingestTimeMs), nowMs: currentTimeMs())
    }

    func sendDeadLetters(
        _ dead: [(KafkaMessage, DeadLetterReason)], clients: StageClients, nowMs: Int64, spans: inout RecordSpans
    ) async throws {
        guard !dead.isEmpty else { return }
        var messages: [KafkaProducerMessage] = []
        for (m, reason) in dead {
            var message = deadLetters.message(for: m, reason: reason, nowMs: nowMs)
            spans.finish(m, stamping: &message, errorClass: reason.errorClass)
            messages.append(message)
        }
        let delivery = await clients.producer.sendConfirmed(messages, logger: logger)
        if let failed = delivery.failures.first {
            throw PipelineError.delivery("dead-letter topic \(failed.topic): \(failed.error)")
        }
    }

    /// A record's headers for the sink (the Kafka sink passes them on), with the persist span's
    /// context as their `traceparent`.
    static func headers(_ m: KafkaMessage, span: RecordSpan) -> [(String, [UInt8]?)] {
        var headers = m.headers
        span.inject(into: &headers)
        return headers.map { ($0.key, $0.value) }
    }

    /// The open spans of a batch, by record position.
    struct RecordSpans {
        private var open: [String: RecordSpan] = [:]

        static func key(_ m: KafkaMessage) -> String { "\(m.topic):\(m.partition):\(m.offset)" }

        mutating func start(_ m: KafkaMessage, tracer: RecordTracer) -> RecordSpan {
            let span = tracer.startConsuming(m)
            open[Self.key(m)] = span
            return span
        }

        /// Ends a dead-lettered record's span, stamping its context on the dead letter.
        mutating func finish(_ m: KafkaMessage, stamping message: inout KafkaProducerMessage, errorClass: DeadLetterClass) {
            guard let span = open.removeValue(forKey: Self.key(m)) else { return }
            span.stamp(&message)
            span.end(.deadLetter, errorClass: errorClass)
        }

        /// Ends every span still open (the records the sink wrote).
        mutating func endAll(_ outcome: RecordOutcome) {
            for span in open.values { span.end(outcome) }
            open = [:]
        }
    }

    /// Drops stored offsets beyond their partition's end (high watermark). Kafka never takes a
    /// written offset back, so such an offset was stored from another incarnation of the topic —
    /// deleted and created again, a fresh embedded broker, another cluster — and the records at
    /// lower offsets now are new ones: resuming there would skip them (the rows already in the
    /// table stay; upserts by key make a re-read harmless). Those partitions start from the group's
    /// committed offset (`auto.offset.reset` without one). An offset whose end cannot be asked is
    /// kept.
    static func offsetsWithinTheLog(
        _ stored: [Int32: Int64], topic: String, assigned: [KafkaTopicPartition], logger: Logger,
        highWatermark: (KafkaTopicPartition) throws -> Int64
    ) -> [Int32: Int64] {
        var kept = stored
        for tp in assigned where tp.topic == topic {
            guard let offset = stored[tp.partition] else { continue }
            let high: Int64
            do { high = try highWatermark(tp) } catch {
                logger.warning(
                    "could not ask the partition's end; resuming from the sink's offset",
                    metadata: ["partition": "\(tp)", "offset": "\(offset)", "error": "\(error)"])
                continue
            }
            if offset > high {
                kept[tp.partition] = nil
                logger.warning(
                    """
                    the sink's stored offset is beyond the partition's end: the topic was created again or this is \
                    another cluster; ignoring it and reading from the group's committed offset
                    """,
                    metadata: ["partition": "\(tp)", "stored_offset": "\(offset)", "high_watermark": "\(high)"])
            }
        }
        return kept
    }

    /// Reads the sink's stored offsets from a synchronous context (the rebalance callback), waiting
    /// for the async sink on a semaphore. Never called on the cooperative pool.
    static func blockingStoredOffsets(sink: any RecordSink, group: String, topic: String, logger: Logger) -> [Int32: Int64] {
        let result = NIOLockedValueBox<[Int32: Int64]?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do {
                let stored = try await sink.storedOffsets(consumerGroup: group, topic: topic)
                result.withLockedValue { $0 = stored }
            } catch {
                logger.warning(
                    "could not read the sink's stored offsets; starting from the group's committed offsets",
                    metadata: ["error": "\(error)"])
            }
            done.signal()
        }
        done.wait()
        let stored = result.withLockedValue { $0 } ?? [:]
        logger.info("assigned; resuming from the sink's offsets", metadata: ["offsets": "\(stored.sorted { $0.key < $1.key })"])
        return stored
    }
}

/// Orders a persist stage's sink writes against its rebalance listener, which reads the sink's
/// offsets on the consumer's polling thread: the listener waits for a write in progress (so the
/// offsets it reads include it) and a write waits for a rebalance in progress. It also keeps, per
/// assigned partition, the next offset the sink expects: where the listener positioned the consumer,
/// moved on by every write. A batch collected while the previous one was written (or across a
/// rebalance) can hold records a rebalance made stale — of a partition no longer assigned, or below
/// that position because the consumer was moved back to the sink's offsets and reads them again —
/// and ``fresh(_:)`` drops exactly those, so no record is applied twice and none is skipped.
final class SinkGate: Sendable {
    /// A partition assigned without offsets in the sink: every record is new until one is written.
    static let unknown: Int64 = -1

    /// A write or a rebalance callback, never both.
    private let gate = BatchRebalanceGate()
    /// Assigned partition → next offset the sink expects. Written inside `gate`.
    private let positions = NIOLockedValueBox<[Int32: Int64]>([:])

    /// Runs a rebalance callback's work (on the polling thread, which may block) with the positions.
    func rebalancing<T>(_ body: (inout [Int32: Int64]) -> T) -> T {
        gate.enterRebalance()
        defer { gate.leaveRebalance() }
        return positions.withLockedValue { body(&$0) }
    }

    /// The records of `batch` to write: of assigned partitions, at or past the sink's position.
    func fresh(_ batch: [KafkaMessage]) -> [KafkaMessage] {
        positions.withLockedValue { p in
            var next = p
            var out: [KafkaMessage] = []
            out.reserveCapacity(batch.count)
            for m in batch {
                guard let expected = next[m.partition], m.offset >= expected else { continue }
                next[m.partition] = m.offset + 1
                out.append(m)
            }
            return out
        }
    }

    /// After a write: the sink now expects these offsets.
    func written(_ offsets: [SinkOffset]) {
        positions.withLockedValue { p in
            for o in offsets where p[o.partition] != nil { p[o.partition] = max(p[o.partition] ?? 0, o.nextOffset) }
        }
    }

    func beginWrite() async { await gate.enterBatch() }

    func endWrite() { gate.leaveBatch() }
}
