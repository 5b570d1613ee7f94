import Processing
import StreamCore

/// Runs a stateful operator without a broker, in the spirit of Kafka Streams' TopologyTestDriver:
/// pipe records in with explicit event times, move the wall clock (idle partitions), read results,
/// restart from the changelog the driver kept — also as if the process had crashed between the two
/// phases of a commit, or as if the broker had deleted the changelog's oldest records.
///
/// ```swift
/// var driver = StatefulTestDriver(op: .window(spec), inputTopics: ["readings"])
/// try driver.pipe(key: "s1", value: ["t": 20], eventTimeMs: 1_000)
/// try driver.pipe(key: "s1", value: ["t": 22], eventTimeMs: 61_000)  // closes [0, 60 s)
/// driver.results  // [{ key: s1, window_start: …, count: 1, … }]
/// ```
public struct StatefulTestDriver: Sendable {
    public private(set) var engine: StatefulEngine
    public let partitions: Int32
    /// Everything written to the changelog, per partition, in order.
    public private(set) var changelog: [Int32: [ChangelogMessage]] = [:]
    /// How many changelog records the simulated broker has deleted from the start of each partition.
    public private(set) var deleted: [Int32: Int] = [:]
    /// Results so far, in emission order.
    public private(set) var results: [StatefulResult] = []
    /// Records that arrived late, by id.
    public private(set) var late: [String] = []
    /// The simulated wall clock (milliseconds).
    public var nowWallMs: Int64 = 0
    /// Commit after every piped record (default) or only when ``commit()`` is called.
    public var autoCommit = true
    var nextOffset: [String: [Int32: Int64]] = [:]
    var pendingCheckpoints: [ChangelogRecord] = []

    public init(
        op: StatefulOperator, inputTopics: [String], partitions: Int32 = 1, budgetBytes: Int = 256 << 20, snapshotBytes: Int = 1 << 20
    ) {
        self.engine = StatefulEngine(op: op, inputTopics: inputTopics, budgetBytes: budgetBytes, snapshotBytes: snapshotBytes)
        self.partitions = partitions
        for p in 0..<partitions {
            // Restoring from nothing cannot fail.
            _ = try? engine.assign(partition: p, changelog: [], complete: true, nowWallMs: 0)
        }
    }

    /// Pipes one record into `topic` (default: the first input) and returns what the engine did.
    @discardableResult
    public mutating func pipe(
        topic: String? = nil, partition: Int32 = 0, key: String?, value: JSONValue, eventTimeMs: Int64, id: String? = nil
    ) throws(ProcessingError) -> RecordOutcome {
        let topic = topic ?? engine.inputTopics[0]
        let offset = nextOffset[topic]?[partition] ?? 0
        nextOffset[topic, default: [:]][partition] = offset + 1
        let record = StreamRecord(
            topic: topic, partition: partition, offset: offset, key: key, value: value,
            id: id ?? "\(topic)-\(partition)-\(offset)", timestampMs: eventTimeMs, eventTimeHeaderMs: eventTimeMs)
        let outcome = try engine.process(record, nowWallMs: nowWallMs)
        results += outcome.results
        if outcome.late { late.append(record.id) }
        if autoCommit { commit() }
        return outcome
    }

    /// Moves the wall clock on and runs the engine's periodic work (idle partitions, memory budget).
    public mutating func advanceWallClock(by ms: Int64) {
        nowWallMs += ms
        results += engine.tick(nowWallMs: nowWallMs).map(\.result)
        if autoCommit { commit() }
    }

    /// Runs the budget check now (the stage runs it after every batch).
    public mutating func enforceBudget() {
        results += engine.tick(nowWallMs: nowWallMs).map(\.result)
    }

    /// Writes both phases of a commit. With `crashBeforeCheckpoint`, only the first phase reaches
    /// the changelog (as if the process died before the checkpoint was acknowledged).
    public mutating func commit(crashBeforeCheckpoint: Bool = false) {
        let (changes, checkpoints) = engine.commit()
        for c in changes { changelog[c.partition, default: []].append(ChangelogMessage(key: c.key, value: c.value)) }
        if !crashBeforeCheckpoint {
            for c in checkpoints { changelog[c.partition, default: []].append(ChangelogMessage(key: c.key, value: c.value)) }
        }
    }

    /// Simulates retention: deletes the oldest `count` changelog records of `partition`.
    public mutating func deleteOldestChangelog(partition: Int32, count: Int) {
        let n = min(count, changelog[partition]?.count ?? 0)
        changelog[partition]?.removeFirst(n)
        deleted[partition, default: 0] += n
    }

    /// Throws away the in-memory state and restores every partition from the changelog, as a new
    /// process would. Returns the input offsets each partition resumes from; records piped after
    /// this continue from those offsets (what the stage's seek does).
    @discardableResult
    public mutating func restart() throws(StateRestoreError) -> [Int32: [String: Int64]] {
        var fresh = StatefulEngine(
            op: engine.op, inputTopics: engine.inputTopics, budgetBytes: engine.budgetBytes, snapshotBytes: engine.snapshotBytes)
        var resume: [Int32: [String: Int64]] = [:]
        for p in 0..<partitions {
            let offsets = try fresh.assign(
                partition: p, changelog: changelog[p] ?? [], complete: (deleted[p] ?? 0) == 0, nowWallMs: nowWallMs)
            resume[p] = offsets
            for topic in engine.inputTopics { nextOffset[topic, default: [:]][p] = offsets[topic] ?? 0 }
        }
        engine = fresh
        return resume
    }
}
