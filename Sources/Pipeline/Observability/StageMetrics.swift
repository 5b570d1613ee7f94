import Foundation
import Histogram
import Kafka
import Metrics
import NIOConcurrencyHelpers
import StreamCore
import Synchronization

/// What a stage counts. Every count goes to swift-metrics (the worker's `main` bootstraps the
/// Prometheus backend behind `/metrics`) and to in-process counters behind `/stats` (JSON, read by
/// `streamfirst demo` and tests), so both views agree.
///
/// Metric names (Prometheus, label `pipeline` and `stage`):
/// - `streamfirst_records_in_total`, `streamfirst_records_out_total`,
///   `streamfirst_records_dead_lettered_total`, `streamfirst_records_filtered_total`
/// - `streamfirst_processing_duration_seconds` (histogram: from poll to delivery, per record)
/// - `streamfirst_end_to_end_latency_seconds` (histogram: from ingest time to this stage's commit)
/// - `streamfirst_consumer_lag` (gauge: records behind the input's end, summed over the assigned
///   partitions: high watermark − the stage's position, the offset after the last record it handled)
/// - `streamfirst_consumer_committed_lag` (gauge: high watermark − the group's committed offset,
///   summed; it trails the position by up to the auto-commit interval and the batches in flight)
/// - `streamfirst_consumer_partition_lag` and `streamfirst_consumer_partition_committed_lag`
///   (the same per assigned partition, with the labels `topic` and `partition` too)
///
/// Lag is sampled about every two seconds (``recordLag(_:)``); the position comes from every
/// batch the stage hands to its logic (``recordIn(_:)-([KafkaMessage])``).
public final class StageMetrics: Sendable {
    public let pipeline: String
    public let stage: String

    private let inCount = Synchronization.Atomic<Int>(0)
    private let outCount = Synchronization.Atomic<Int>(0)
    private let deadCount = Synchronization.Atomic<Int>(0)
    private let filteredCount = Synchronization.Atomic<Int>(0)
    private let lagValue = Synchronization.Atomic<Int>(-1)
    private let committedLagValue = Synchronization.Atomic<Int>(-1)
    /// The offset after the last record handled, per partition (forgotten when it is unassigned).
    private let positions = NIOLockedValueBox<[KafkaTopicPartition: Int64]>([:])
    private let partitionLags = NIOLockedValueBox<[StageStats.PartitionLag]>([])
    private let partitionGauges = NIOLockedValueBox<[KafkaTopicPartition: (behind: Gauge, committed: Gauge)]>([:])
    private let state = NIOLockedValueBox<StageStats.State?>(nil)
    private let deadReasons = NIOLockedValueBox<[String: Int]>([:])
    private let processing = NIOLockedValueBox(
        Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two))
    private let endToEnd = NIOLockedValueBox(Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two))

    private let inCounter: Counter
    private let outCounter: Counter
    private let deadCounter: Counter
    private let filteredCounter: Counter
    private let processingTimer: Metrics.Timer
    private let endToEndTimer: Metrics.Timer
    private let lagGauge: Gauge
    private let committedLagGauge: Gauge

    public init(pipeline: String, stage: String) {
        self.pipeline = pipeline
        self.stage = stage
        let dims = [("pipeline", pipeline), ("stage", stage)]
        inCounter = Counter(label: "streamfirst_records_in_total", dimensions: dims)
        outCounter = Counter(label: "streamfirst_records_out_total", dimensions: dims)
        deadCounter = Counter(label: "streamfirst_records_dead_lettered_total", dimensions: dims)
        filteredCounter = Counter(label: "streamfirst_records_filtered_total", dimensions: dims)
        processingTimer = Metrics.Timer(label: "streamfirst_processing_duration_seconds", dimensions: dims)
        endToEndTimer = Metrics.Timer(label: "streamfirst_end_to_end_latency_seconds", dimensions: dims)
        lagGauge = Gauge(label: "streamfirst_consumer_lag", dimensions: dims)
        committedLagGauge = Gauge(label: "streamfirst_consumer_committed_lag", dimensions: dims)
    }

    /// Counts a polled batch in and moves the stage's position in each partition past it.
    public func recordIn(_ batch: [KafkaMessage]) {
        recordIn(batch.count, nextOffsets: batch.nextOffsets)
    }

    /// Counts `count` records in and moves the stage's position to `next` (a batch's
    /// ``Swift/Sequence/nextOffsets``, for a stage that needs them itself too).
    public func recordIn(_ count: Int, nextOffsets next: [KafkaTopicPartition: Int64]) {
        recordIn(count)
        guard !next.isEmpty else { return }
        positions.withLockedValue { positions in
            for (tp, offset) in next { positions[tp] = max(positions[tp] ?? offset, offset) }
        }
    }

    public func recordIn(_ n: Int) {
        guard n > 0 else { return }
        inCount.add(n, ordering: .relaxed)
        inCounter.increment(by: n)
    }

    public func recordOut(_ n: Int) {
        guard n > 0 else { return }
        outCount.add(n, ordering: .relaxed)
        outCounter.increment(by: n)
    }

    public func recordFiltered(_ n: Int) {
        guard n > 0 else { return }
        filteredCount.add(n, ordering: .relaxed)
        filteredCounter.increment(by: n)
    }

    public func recordDeadLetter(errorClass: DeadLetterClass) {
        deadCount.add(1, ordering: .relaxed)
        deadCounter.increment()
        deadReasons.withLockedValue { $0[errorClass.rawValue, default: 0] += 1 }
    }

    /// Processing time of a batch, attributed to each of its records.
    public func recordProcessing(nanoseconds: Int64, records: Int) {
        guard records > 0, nanoseconds >= 0 else { return }
        let perRecord = UInt64(nanoseconds / Int64(records))
        processing.withLockedValue { _ = $0.record(perRecord / 1000, count: UInt64(records)) }
        processingTimer.recordNanoseconds(Int64(perRecord))
    }

    /// End-to-end latency of records whose ingest time is known (milliseconds since the epoch).
    public func recordEndToEnd(ingestTimesMs: [Int64], nowMs: Int64) {
        guard !ingestTimesMs.isEmpty else { return }
        endToEnd.withLockedValue { h in
            for t in ingestTimesMs {
                let micros = UInt64(max(0, nowMs - t)) * 1000
                _ = h.record(micros)
            }
        }
        for t in ingestTimesMs { endToEndTimer.recordMilliseconds(max(0, nowMs - t)) }
    }

    /// Records the lag of the assigned partitions from their watermarks and committed offsets
    /// (``KafkaConsumer/lag(_:timeout:)``) and the position the stage has handled up to. A partition
    /// whose records the stage has not handled since it was assigned counts from its committed offset
    /// (its earliest retained offset without one). Partitions missing from `lags` are no longer
    /// assigned: their position and per-partition gauges are dropped.
    public func recordLag(_ lags: [KafkaPartitionLag]) {
        let assigned = Set(lags.map { KafkaTopicPartition(topic: $0.topic, partition: $0.partition) })
        let handled = positions.withLockedValue { positions in
            positions = positions.filter { assigned.contains($0.key) }
            return positions
        }
        var rows: [StageStats.PartitionLag] = []
        rows.reserveCapacity(lags.count)
        for l in lags {
            let tp = KafkaTopicPartition(topic: l.topic, partition: l.partition)
            let start = l.committed >= 0 ? l.committed : l.low
            // A position behind the committed offset is from before a rebalance: another member
            // has handled more since.
            let position = max(handled[tp] ?? start, start)
            rows.append(.init(topic: l.topic, partition: l.partition, lag: Int(max(0, l.high - position)), committedLag: Int(l.lag)))
        }
        rows.sort { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
        let total = rows.reduce(0) { $0 + $1.lag }
        let committedTotal = rows.reduce(0) { $0 + $1.committedLag }
        lagValue.store(total, ordering: .relaxed)
        committedLagValue.store(committedTotal, ordering: .relaxed)
        partitionLags.withLockedValue { $0 = rows }
        lagGauge.record(total)
        committedLagGauge.record(committedTotal)
        let (pipeline, stage) = (self.pipeline, self.stage)
        partitionGauges.withLockedValue { gauges in
            for (tp, g) in gauges where !assigned.contains(tp) {
                g.behind.destroy()
                g.committed.destroy()
                gauges[tp] = nil
            }
            for row in rows {
                let tp = KafkaTopicPartition(topic: row.topic, partition: row.partition)
                let g =
                    gauges[tp]
                    ?? {
                        let dims = [
                            ("pipeline", pipeline), ("stage", stage), ("topic", row.topic), ("partition", String(row.partition)),
                        ]
                        let made = (
                            behind: Gauge(label: "streamfirst_consumer_partition_lag", dimensions: dims),
                            committed: Gauge(label: "streamfirst_consumer_partition_committed_lag", dimensions: dims)
                        )
                        gauges[tp] = made
                        return made
                    }()
                g.behind.record(row.lag)
                g.committed.record(row.committedLag)
            }
        }
    }

    /// The state a stateful stage holds (its own gauges and counters are in ``StatefulStage``).
    public func recordState(bytes: Int, entries: Int, evictions: Int, late: Int) {
        state.withLockedValue { $0 = StageStats.State(bytes: bytes, entries: entries, evictions: evictions, late: late) }
    }

    /// A point-in-time view for `/stats`.
    public func snapshot() -> StageStats {
        let p = processing.withLockedValue { $0 }
        let e = endToEnd.withLockedValue { $0 }
        return StageStats(
            pipeline: pipeline, stage: stage,
            recordsIn: inCount.load(ordering: .relaxed), recordsOut: outCount.load(ordering: .relaxed),
            deadLettered: deadCount.load(ordering: .relaxed), filtered: filteredCount.load(ordering: .relaxed),
            consumerLag: lagValue.load(ordering: .relaxed), committedLag: committedLagValue.load(ordering: .relaxed),
            partitionLag: partitionLags.withLockedValue { $0 },
            deadLetterClasses: deadReasons.withLockedValue { $0 },
            processingMicros: .init(p), endToEndMicros: .init(e), state: state.withLockedValue { $0 })
    }
}

/// The `/stats` document of a worker.
public struct StageStats: Sendable, Codable, Equatable {
    public struct Quantiles: Sendable, Codable, Equatable {
        public var count: UInt64
        public var p50: UInt64
        public var p99: UInt64
        public var max: UInt64

        public init(count: UInt64, p50: UInt64, p99: UInt64, max: UInt64) {
            self.count = count
            self.p50 = p50
            self.p99 = p99
            self.max = max
        }

        init(_ h: Histogram<UInt64>) {
            count = h.totalCount
            p50 = h.totalCount == 0 ? 0 : h.valueAtPercentile(50)
            p99 = h.totalCount == 0 ? 0 : h.valueAtPercentile(99)
            max = h.totalCount == 0 ? 0 : h.max
        }
    }

    public var pipeline: String
    public var stage: String
    public var recordsIn: Int
    public var recordsOut: Int
    public var deadLettered: Int
    public var filtered: Int
    /// Records behind the input's end, summed over the assigned partitions: high watermark − the
    /// stage's position (the offset after the last record it handled). -1 until first measured.
    public var consumerLag: Int
    /// High watermark − the group's committed offset, summed; nil from workers that predate it.
    public var committedLag: Int?
    /// Both lags per assigned partition; nil from workers that predate it.
    public var partitionLag: [PartitionLag]?
    public var deadLetterClasses: [String: Int]
    public var processingMicros: Quantiles
    public var endToEndMicros: Quantiles
    /// Stateful stages only.
    public var state: State?

    public init(
        pipeline: String, stage: String, recordsIn: Int, recordsOut: Int, deadLettered: Int, filtered: Int, consumerLag: Int,
        committedLag: Int? = nil, partitionLag: [PartitionLag]? = nil, deadLetterClasses: [String: Int], processingMicros: Quantiles,
        endToEndMicros: Quantiles, state: State?
    ) {
        self.pipeline = pipeline
        self.stage = stage
        self.recordsIn = recordsIn
        self.recordsOut = recordsOut
        self.deadLettered = deadLettered
        self.filtered = filtered
        self.consumerLag = consumerLag
        self.committedLag = committedLag
        self.partitionLag = partitionLag
        self.deadLetterClasses = deadLetterClasses
        self.processingMicros = processingMicros
        self.endToEndMicros = endToEndMicros
        self.state = state
    }

    /// The lag of one assigned input partition.
    public struct PartitionLag: Sendable, Codable, Equatable {
        public var topic: String
        public var partition: Int32
        /// High watermark − the stage's position.
        public var lag: Int
        /// High watermark − the group's committed offset.
        public var committedLag: Int

        public init(topic: String, partition: Int32, lag: Int, committedLag: Int) {
            self.topic = topic
            self.partition = partition
            self.lag = lag
            self.committedLag = committedLag
        }
    }

    /// What a stateful process stage holds.
    public struct State: Sendable, Codable, Equatable {
        /// Approximate bytes of window and join state (against `memory_budget`).
        public var bytes: Int
        /// Open windows or buffered join records.
        public var entries: Int
        /// Windows closed / join records expired early to stay within the budget (since start).
        public var evictions: Int
        /// Records that arrived after their window closed (since start).
        public var late: Int
    }
}
