import Kafka
import Logging
import StreamCore

/// What handling a batch (or one lane of it) produced: the records to produce, in order, and what
/// to count once they are acknowledged.
struct HandledRecords: Sendable {
    var messages: [KafkaProducerMessage] = []
    var outputs = 0
    var filtered = 0
    var deadLetterClasses: [DeadLetterClass] = []

    mutating func append(_ other: HandledRecords) {
        messages.append(contentsOf: other.messages)
        outputs += other.outputs
        filtered += other.filtered
        deadLetterClasses.append(contentsOf: other.deadLetterClasses)
    }
}

/// Handles a polled batch on up to `concurrency` cores (the stage's `concurrency:`): the batch is
/// split by partition into lanes, each lane runs the traced handler over its records in order on a
/// task of its own, and the lanes' results are joined in lane order.
///
/// - Order: all records of one partition are in one lane and handled in consumption order, and the
///   joined outputs keep that order, so outputs of one input partition reach the producer in order.
///   Outputs of different input partitions may interleave differently than with one lane.
/// - The batch stays one unit for delivery and offsets: it is joined before it is produced, and its
///   offsets are stored only once all of it is acknowledged, as with one lane.
/// - Handlers are `Sendable` and must not block; with more than one lane they run concurrently on
///   different records (never two records of one partition at once).
// Splitting by partition rather than by record keeps per-partition order without any reordering
// step; a batch of one partition (or a small one) is handled inline: a task per lane costs more
// than it saves below a few dozen records.
struct BatchLanes: Sendable {
    let traced: TracedHandler
    let concurrency: Int
    let logger: Logger

    /// A batch with fewer records per lane than this is not split.
    static let minimumRecordsPerLane = 32

    init(traced: TracedHandler, concurrency: Int, logger: Logger) {
        self.traced = traced
        self.concurrency = max(1, concurrency)
        self.logger = logger
    }

    /// Handles `batch`; with more than one lane, on concurrent tasks.
    func handle(_ batch: [KafkaMessage], nowMs: Int64) async -> HandledRecords {
        guard let lanes = Self.lanes(of: batch, count: concurrency) else { return handle(lane: batch, nowMs: nowMs) }
        let parts = await withTaskGroup(of: (Int, HandledRecords).self, returning: [HandledRecords].self) { group in
            for (i, lane) in lanes.enumerated() {
                group.addTask { (i, self.handle(lane: lane, nowMs: nowMs)) }
            }
            var parts = [HandledRecords](repeating: HandledRecords(), count: lanes.count)
            for await (i, part) in group { parts[i] = part }
            return parts
        }
        var joined = HandledRecords()
        joined.messages.reserveCapacity(parts.reduce(0) { $0 + $1.messages.count })
        for part in parts { joined.append(part) }
        return joined
    }

    /// Runs the traced handler over `lane` in order.
    func handle(lane: [KafkaMessage], nowMs: Int64) -> HandledRecords {
        var out = HandledRecords()
        out.messages.reserveCapacity(lane.count)
        for message in lane {
            switch traced.handle(message, nowMs: nowMs, into: &out.messages) {
            case .forwarded(let n):
                out.outputs += n
            case .filtered:
                out.filtered += 1
            case .deadLettered(let reason):
                out.deadLetterClasses.append(reason.errorClass)
                logger.debug(
                    "dead-lettered",
                    metadata: [
                        "topic": "\(message.topic)", "partition": "\(message.partition)", "offset": "\(message.offset)",
                        "class": "\(reason.errorClass)", "reason": "\(reason.message)",
                    ])
            }
        }
        return out
    }

    /// `batch` split into at most `count` lanes, whole partitions per lane, balanced by record count
    /// (largest partition first, each to the lane with the fewest records so far); each lane keeps
    /// the batch's order. nil when the batch should be handled in one lane: `count` is 1, it holds
    /// one partition, or it is too small to be worth splitting.
    static func lanes(of batch: [KafkaMessage], count: Int) -> [[KafkaMessage]]? {
        guard count > 1, batch.count >= 2 * minimumRecordsPerLane else { return nil }
        // Partition runs: a polled batch holds long runs of one partition.
        var sizes: [KafkaTopicPartition: Int] = [:]
        var run: (topic: String, partition: Int32, count: Int)?
        for m in batch {
            if let r = run, r.partition == m.partition, r.topic == m.topic {
                run = (r.topic, r.partition, r.count + 1)
                continue
            }
            if let r = run { sizes[KafkaTopicPartition(topic: r.topic, partition: r.partition), default: 0] += r.count }
            run = (m.topic, m.partition, 1)
        }
        if let r = run { sizes[KafkaTopicPartition(topic: r.topic, partition: r.partition), default: 0] += r.count }
        guard sizes.count > 1 else { return nil }
        let laneCount = min(count, sizes.count, batch.count / minimumRecordsPerLane)
        guard laneCount > 1 else { return nil }
        var load = [Int](repeating: 0, count: laneCount)
        var laneOf: [KafkaTopicPartition: Int] = [:]
        for (tp, size) in sizes.sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }) {
            let lane = load.indices.min { load[$0] != load[$1] ? load[$0] < load[$1] : $0 < $1 } ?? 0
            laneOf[tp] = lane
            load[lane] += size
        }
        var lanes = load.map { n -> [KafkaMessage] in
            var lane: [KafkaMessage] = []
            lane.reserveCapacity(n)
            return lane
        }
        var last: (topic: String, partition: Int32, lane: Int)?
        for m in batch {
            let lane: Int
            if let l = last, l.partition == m.partition, l.topic == m.topic {
                lane = l.lane
            } else {
                lane = laneOf[KafkaTopicPartition(topic: m.topic, partition: m.partition)] ?? 0
                last = (m.topic, m.partition, lane)
            }
            lanes[lane].append(m)
        }
        return lanes
    }
}
