import Foundation
import Kafka
import Logging
import Metrics
import NIOConcurrencyHelpers
import Processing
import StreamCore

/// The table of an `enrich:` step with `topic:` (a "global table"): the latest JSON object per Kafka
/// key of a topic, read from every partition of it and kept current while the stage runs.
///
/// - **Feeding**: a group-less consumer assigned to *all* partitions from the beginning; each record
///   sets the row of its key (the value must be a JSON object), a tombstone (null value) deletes it.
///   A record without a key, or whose value is not a JSON object, is skipped — the previous row of
///   its key, if any, stays — and counted and logged; it never stops the table.
/// - **Bootstrap**: ``start(kafka:logger:)`` returns only after every partition was read up to the
///   high watermark it had when `start` began, so the first record the stage processes already sees
///   the whole table. Then a background task follows the topic (the client's `poll` suspends; no
///   thread of the cooperative pool blocks). Loading has no deadline of its own: it ends when the
///   partitions are read (records of a still-open transaction wait for it, `read_committed`), when
///   the task is cancelled (a graceful shutdown cancels it), or with an error.
/// - **Bound** (`max_rows`): when the table holds `maxRows` keys, a record for a *new* key is refused
///   (updates and deletes of present keys still apply). Refusing is never silent: it is logged,
///   counted (`streamfirst_table_refused_total`), and from then on ``incompleteReason`` is set, so an
///   `enrich` step that finds no row dead-letters the record (`EnrichmentTableIncomplete`, redrivable
///   after raising `max_rows`) instead of treating it as unmatched. The flag stays until restart:
///   once a key was refused, a missing key can no longer be told apart from a refused one.
/// - **Stop / destroy order**: ``stop()`` cancels the follower task and waits for it (no poll in
///   flight, no row applied afterwards), then closes the consumer (assign mode: no group to leave,
///   nothing committed; the client is destroyed on its own polling thread). The process stage stops
///   its tables after its own consumer and producer are closed, so the last batch still joins.
///   Rows stay readable (frozen) after `stop`.
///
/// Metrics (label `topic`): `streamfirst_table_rows` (gauge), `streamfirst_table_updates_total`
/// (rows set or deleted), `streamfirst_table_skipped_total`, `streamfirst_table_refused_total`.
public final class LiveTable: LookupTable {
    /// The Kafka topic read.
    public let topic: String
    /// The most keys held; see the type's documentation for what happens beyond.
    public let maxRows: Int
    /// Extra librdkafka properties for the table's consumer (the pipeline's `kafka.consumer`).
    let consumerProperties: [String: String]

    private struct Rows {
        var rows: [String: [String: JSONValue]] = [:]
        var refused = 0
        var skipped = 0
    }

    private struct Lifecycle {
        var consumer: KafkaConsumer?
        var follower: Task<Void, Never>?
        var started = false
        var stopped = false
    }

    /// Errors of the table's lifecycle.
    public enum Failure: Error, CustomStringConvertible, Sendable {
        /// ``stop()`` was called while ``start(kafka:logger:)`` was still bootstrapping.
        case stoppedDuringBootstrap(String)
        /// The topic has no partitions (or does not exist on a cluster that does not auto-create).
        case noPartitions(String)

        public var description: String {
            switch self {
            case .stoppedDuringBootstrap(let t): return "the table of topic \(t) was stopped while loading"
            case .noPartitions(let t): return "the table topic \(t) has no partitions"
            }
        }
    }

    private let state = NIOLockedValueBox(Rows())
    private let lifecycle = NIOLockedValueBox(Lifecycle())
    private let rowsGauge: Gauge
    private let updatesCounter: Counter
    private let skippedCounter: Counter
    private let refusedCounter: Counter
    /// Records skipped or refused beyond this many are counted but logged at debug level only.
    static let loggedProblems = 100

    /// A table over `topic`, empty until ``start(kafka:logger:)``. Connects to nothing yet.
    public init(topic: String, maxRows: Int, consumerProperties: [String: String] = [:]) {
        self.topic = topic
        self.maxRows = max(1, maxRows)
        self.consumerProperties = consumerProperties
        let dims = [("topic", topic)]
        rowsGauge = Gauge(label: "streamfirst_table_rows", dimensions: dims)
        updatesCounter = Counter(label: "streamfirst_table_updates_total", dimensions: dims)
        skippedCounter = Counter(label: "streamfirst_table_skipped_total", dimensions: dims)
        refusedCounter = Counter(label: "streamfirst_table_refused_total", dimensions: dims)
    }

    // MARK: - LookupTable

    public func row(forKey key: String) -> [String: JSONValue]? {
        state.withLockedValue { $0.rows[key] }
    }

    public var incompleteReason: String? {
        let refused = state.withLockedValue { $0.refused }
        guard refused > 0 else { return nil }
        return "\(refused) record(s) for new keys were refused because the table reached max_rows \(maxRows)"
    }

    /// The number of rows held.
    public var count: Int { state.withLockedValue { $0.rows.count } }
    /// Records for new keys refused because of `maxRows`, since start.
    public var refusedCount: Int { state.withLockedValue { $0.refused } }
    /// Records skipped (no key, not a JSON object), since start.
    public var skippedCount: Int { state.withLockedValue { $0.skipped } }

    // MARK: - Lifecycle

    /// Loads the table: every partition up to the high watermark it had when this call began, then
    /// keeps following the topic in the background. Cancellable (throws `CancellationError`). A
    /// second call does nothing.
    public func start(kafka: KafkaConfiguration, logger: Logger) async throws {
        let first = lifecycle.withLockedValue { s -> Bool in
            defer { s.started = true }
            return !s.started && !s.stopped
        }
        guard first else { return }
        let began = ContinuousClock.now
        var config = KafkaConsumerConfiguration(kafka: kafka, groupID: nil)
        config.autoOffsetReset = .earliest
        config.fetchWaitMax = .milliseconds(10)
        config.properties = consumerProperties
        let consumer = try KafkaConsumer(configuration: config, logger: logger)
        let stoppedMeanwhile = lifecycle.withLockedValue { s -> Bool in
            if !s.stopped { s.consumer = consumer }
            return s.stopped
        }
        if stoppedMeanwhile {
            await consumer.close()
            throw Failure.stoppedDuringBootstrap(topic)
        }

        // Partitions and where the bootstrap ends in each (the high watermark now).
        let admin = try KafkaAdmin(configuration: kafka, logger: logger)
        let description: KafkaTopicDescription
        do {
            description = try await admin.describeTopic(topic)
        } catch {
            await admin.shutdown()
            throw error
        }
        await admin.shutdown()
        let partitions = description.partitions.map { KafkaTopicPartition(topic: topic, partition: $0.id) }
        guard !partitions.isEmpty else { throw Failure.noPartitions(topic) }
        var pending: [KafkaTopicPartition: Int64] = [:]
        for tp in partitions {
            let (low, high) = try await consumer.watermarks(topic: topic, partition: tp.partition)
            if high > low { pending[tp] = high }
        }
        logger.info(
            "loading table",
            metadata: ["topic": "\(topic)", "partitions": "\(partitions.count)", "records": "\(pending.values.reduce(0, +))"])
        try await consumer.assign(partitions, startingAt: .beginning)

        while !pending.isEmpty {
            try Task.checkCancellation()
            if lifecycle.withLockedValue({ $0.stopped }) { throw Failure.stoppedDuringBootstrap(topic) }
            let batch = try await consumer.poll(maxMessages: 1000, timeout: .milliseconds(100))
            apply(batch, logger: logger)
            for m in batch {
                if let end = pending[m.topicPartition], m.offset + 1 >= end { pending[m.topicPartition] = nil }
            }
            if batch.isEmpty && !pending.isEmpty {
                // The last offsets may hold no record for us (transaction markers, compacted away):
                // the consumer's position tells whether a partition is read to its end.
                for p in try consumer.position(Array(pending.keys)) {
                    if let end = pending[p.topicPartition], p.offset >= end { pending[p.topicPartition] = nil }
                }
            }
        }
        let elapsed = ContinuousClock.now - began
        logger.info(
            "table loaded",
            metadata: [
                "topic": "\(topic)", "rows": "\(count)", "refused": "\(refusedCount)", "skipped": "\(skippedCount)",
                "duration": "\(elapsed)",
            ])

        let follower = Task.detached { [self] in
            while !Task.isCancelled {
                do {
                    let batch = try await consumer.poll(maxMessages: 1000, timeout: .milliseconds(200))
                    apply(batch, logger: logger)
                } catch {
                    // Only a fatal consumer error ends a poll by throwing: rows freeze as they are.
                    logger.error("table consumer failed; rows are no longer updated", metadata: ["topic": "\(topic)", "error": "\(error)"])
                    return
                }
            }
        }
        let stoppedNow = lifecycle.withLockedValue { s -> Bool in
            if !s.stopped { s.follower = follower }
            return s.stopped
        }
        if stoppedNow {
            follower.cancel()
            await follower.value
        }
    }

    /// Stops following the topic: cancels the follower and waits for it, then closes the consumer.
    /// Rows stay readable. Idempotent.
    public func stop() async {
        let (follower, consumer) = lifecycle.withLockedValue { s -> (Task<Void, Never>?, KafkaConsumer?) in
            s.stopped = true
            defer {
                s.follower = nil
                s.consumer = nil
            }
            return (s.follower, s.consumer)
        }
        follower?.cancel()
        await follower?.value
        await consumer?.close()
    }

    // MARK: - Rows

    /// Applies records in order: set, delete, skip or refuse. Public for tests and custom feeds.
    public func apply(_ batch: [KafkaMessage], logger: Logger) {
        guard !batch.isEmpty else { return }
        enum Problem {
            case skipped(String)
            case refused
        }
        var problems: [(KafkaMessage, Problem, Int)] = []
        var updates = 0
        var skipped = 0
        var refused = 0
        // Parse outside the lock; readers only wait for the dictionary updates.
        let parsed: [(key: String?, row: [String: JSONValue]?, problem: String?)] = batch.map { m in
            guard let key = m.key else { return (nil, nil, "the record has no key") }
            let text = String(decoding: key, as: UTF8.self)
            guard let value = m.value else { return (text, nil, nil) }
            do {
                guard case .object(let o) = try JSONValue.parse(value) else {
                    return (text, nil, "the value is not a JSON object")
                }
                return (text, o, nil)
            } catch {
                return (text, nil, "the value is not JSON: \(error)")
            }
        }
        let rowCount = state.withLockedValue { s -> Int in
            for (m, p) in zip(batch, parsed) {
                if let why = p.problem {
                    s.skipped += 1
                    skipped += 1
                    problems.append((m, .skipped(why), s.skipped))
                    continue
                }
                guard let key = p.key else { continue }
                guard let row = p.row else {
                    s.rows[key] = nil
                    updates += 1
                    continue
                }
                if s.rows[key] == nil && s.rows.count >= maxRows {
                    s.refused += 1
                    refused += 1
                    problems.append((m, .refused, s.refused))
                    continue
                }
                s.rows[key] = row
                updates += 1
            }
            return s.rows.count
        }
        if updates > 0 { updatesCounter.increment(by: updates) }
        if skipped > 0 { skippedCounter.increment(by: skipped) }
        if refused > 0 { refusedCounter.increment(by: refused) }
        rowsGauge.record(rowCount)
        for (m, problem, n) in problems {
            let level: Logger.Level = n <= Self.loggedProblems ? .warning : .debug
            var metadata: Logger.Metadata = [
                "topic": "\(m.topic)", "partition": "\(m.partition)", "offset": "\(m.offset)",
                "key": "\(m.key.map { String(decoding: $0, as: UTF8.self) } ?? "null")",
            ]
            switch problem {
            case .skipped(let why):
                metadata["reason"] = "\(why)"
                logger.log(level: level, "table record skipped", metadata: metadata)
            case .refused:
                metadata["max_rows"] = "\(maxRows)"
                logger.log(
                    level: level, "table full: record for a new key refused (enrich misses are dead-lettered from now on)",
                    metadata: metadata)
            }
            if n == Self.loggedProblems {
                logger.warning("further skipped or refused table records are only counted", metadata: ["topic": "\(m.topic)"])
            }
        }
    }
}
