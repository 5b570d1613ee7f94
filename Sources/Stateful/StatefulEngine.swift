import Config
import Processing
import StreamCore

/// The stateful operator of a process stage: a window aggregation or a stream–stream join.
public enum StatefulOperator: Sendable {
    case window(WindowSpec)
    case join(JoinSpec)

    var graceMs: Int64 {
        switch self {
        case .window(let w): return w.graceMs
        case .join(let j): return j.graceMs
        }
    }

    var idleTimeoutMs: Int64 {
        switch self {
        case .window(let w): return w.idleTimeoutMs
        case .join(let j): return j.idleTimeoutMs
        }
    }
}

/// What the engine did with one record.
public struct RecordOutcome: Sendable {
    /// Results to emit (in this order).
    public var results: [StatefulResult] = []
    /// The record came after its windows closed: it belongs in the late-records topic.
    public var late = false
    /// The record was at or before the partition's restored position (a redelivery of something
    /// the state already holds): ignored.
    public var skipped = false
    /// A record with an id the state has already counted (an upstream stage sent it twice): ignored.
    public var duplicate = false
}

/// Counters the stage turns into metrics.
public struct StateCounters: Sendable, Equatable {
    public var late: Int = 0
    /// Windows closed early or join records expired early to stay within the memory budget.
    public var evictions: Int = 0
    public var restoredEntries: Int = 0
    /// Records ignored because their id was already counted.
    public var duplicates: Int = 0

    public init() {}
}

/// The per-partition state of a stateful process stage, independent of Kafka: the stage (and the
/// broker-free ``StatefulTestDriver``) feed it records, and write what ``commit()`` returns to the
/// changelog topic in two phases. See ``Changelog`` for the crash-consistency protocol.
///
/// Event time: each partition tracks the largest event time seen per input (its stream time);
/// the close mark is stream time − grace (for joins: the smaller of the two inputs', so an idle
/// side does not let the other run ahead — unless it has been idle for `idle_timeout`). Windows
/// close, and join records expire, when the close mark passes them; records that arrive after that
/// are late. Everything that depends only on the input order of a partition is deterministic.
public struct StatefulEngine: Sendable {
    public let op: StatefulOperator
    /// Input topic names in side order: [input] or [left, right].
    public let inputTopics: [String]
    /// The memory budget over all partitions this instance holds (bytes, approximate).
    public var budgetBytes: Int
    /// Write a snapshot after this many changelog bytes of a partition (retention-based brokers).
    public var snapshotBytes: Int
    public private(set) var counters = StateCounters()

    struct Partition: Sendable {
        var window: WindowPartition?
        var join: JoinPartition?
        var maxTime: [Int64?]
        var lastArrivalWallMs: [Int64]
        var floor: Int64 = .min
        var sequence: Int64 = 0
        var nextOffsets: [String: Int64] = [:]
        var tracker = ChangeTracker()
        var clockChanged = false
        var bytesSinceSnapshot = 0

        var bytes: Int { (window?.bytes ?? 0) + (join?.bytes ?? 0) + 40 * ((window?.deadlines.count ?? 0) + (join?.deadlines.count ?? 0)) }
        var entries: Int { (window?.windowCount ?? 0) + (join?.itemCount ?? 0) }
    }

    var partitions: [Int32: Partition] = [:]

    public init(op: StatefulOperator, inputTopics: [String], budgetBytes: Int, snapshotBytes: Int = 1 << 20) {
        self.op = op
        self.inputTopics = inputTopics
        self.budgetBytes = budgetBytes
        self.snapshotBytes = snapshotBytes
    }

    public var assignedPartitions: [Int32] { partitions.keys.sorted() }
    public func isAssigned(_ partition: Int32) -> Bool { partitions[partition] != nil }
    /// Approximate bytes of state held, over all partitions.
    public var stateBytes: Int { partitions.values.reduce(0) { $0 + $1.bytes } }
    /// Open windows or buffered join records, over all partitions.
    public var stateEntries: Int { partitions.values.reduce(0) { $0 + $1.entries } }

    func emptyPartition(nowWallMs: Int64) -> Partition {
        var p = Partition(
            maxTime: Array(repeating: nil, count: inputTopics.count),
            lastArrivalWallMs: Array(repeating: nowWallMs, count: inputTopics.count))
        switch op {
        case .window(let w): p.window = WindowPartition(spec: w)
        case .join(let j): p.join = JoinPartition(spec: j)
        }
        return p
    }

    /// Takes over `partition`, restoring its state from its changelog records (in offset order;
    /// `complete`: the log starts at offset 0). Returns the input offsets to resume from (the last
    /// checkpoint), or an empty map when there is none (start from the group's position).
    public mutating func assign(
        partition: Int32, changelog: [ChangelogMessage], complete: Bool, nowWallMs: Int64
    ) throws(StateRestoreError) -> [String: Int64] {
        let restored = try Changelog.restore(changelog, complete: complete, partition: partition)
        var p = emptyPartition(nowWallMs: nowWallMs)
        for key in restored.values.keys.sorted() {
            guard let value = restored.values[key] else { continue }
            let ok: Bool
            ok = p.window?.restore(key: key, value: value) ?? p.join?.restore(key: key, value: value) ?? false
            guard ok else {
                throw StateRestoreError(
                    partition: partition,
                    message: "changelog entry '\(key)' does not fit this stage's window/join settings (they changed since it was "
                        + "written); start the state over with a new changelog topic or `streamfirst replay --reset-state`")
            }
        }
        counters.restoredEntries += restored.values.count
        p.sequence = restored.sequence
        for key in restored.uncommitted { p.tracker.force(key, previous: restored.values[key]?.serialized()) }
        if !restored.uncommitted.isEmpty { p.clockChanged = true }
        if let cp = restored.checkpoint {
            if case .object(let offsets)? = cp["offsets"] {
                for (t, o) in offsets { if let n = o.int64Value { p.nextOffsets[t] = n } }
            }
            if case .array(let times)? = cp["max"] {
                for (i, t) in times.enumerated() where i < p.maxTime.count { p.maxTime[i] = t.int64Value }
            }
            p.floor = cp["floor"]?.int64Value ?? .min
        }
        partitions[partition] = p
        return p.nextOffsets
    }

    /// Gives `partition` up (its state lives on in the changelog).
    public mutating func revoke(partition: Int32) {
        partitions[partition] = nil
    }

    func side(of topic: String) -> Int { inputTopics.firstIndex(of: topic) ?? 0 }

    /// Processes one record of an assigned partition (records of other partitions are skipped).
    /// `continuing`: another record derived from the same input record (the steps before the
    /// operator emitted several) — not skipped as a redelivery of the first.
    public mutating func process(
        _ record: StreamRecord, nowWallMs: Int64, continuing: Bool = false
    ) throws(ProcessingError)
        -> RecordOutcome
    {
        var outcome = RecordOutcome()
        if !continuing, let next = partitions[record.partition]?.nextOffsets[record.topic], record.offset < next {
            outcome.skipped = true
            return outcome
        }
        // Taken out of the dictionary while it changes, so its storage is not copied (copy-on-write).
        guard var p = partitions.removeValue(forKey: record.partition) else {
            outcome.skipped = true
            return outcome
        }
        let side = side(of: record.topic)
        defer { partitions[record.partition] = p }
        p.nextOffsets[record.topic] = record.offset + 1
        p.clockChanged = true
        switch op {
        case .window(let spec):
            let t = try spec.time.eventTime(of: record)
            let key: String
            if let k = spec.key {
                let v: JSONValue
                do { v = try k.evaluate(record.value, context: record.context) } catch {
                    throw ProcessingError(step: "window.key", errorClass: .expressionError, message: error.message)
                }
                guard v != .null else {
                    throw ProcessingError(step: "window.key", errorClass: .missingKey, message: "key: \(k.text) is null")
                }
                key = v.stringValue ?? v.jsonString
            } else {
                guard let k = record.key else {
                    throw ProcessingError(
                        step: "window", errorClass: .missingKey, message: "the record has no key to group by (set window.key)")
                }
                key = k
            }
            let args: [JSONValue]
            do { args = try spec.aggregation.arguments(of: record.value, context: record.context) } catch {
                throw ProcessingError(step: "window.aggregate", errorClass: .expressionError, message: error.message)
            }
            p.maxTime[side] = max(p.maxTime[side] ?? .min, t)
            p.lastArrivalWallMs[side] = nowWallMs
            let mark = closeMark(p, nowWallMs: nowWallMs)
            do {
                if let r = try p.window?.add(key: key, t: t, args: args, idHash: Self.hash(record.id), closeMark: mark, tracker: &p.tracker)
                {
                    outcome.results = r.results
                    outcome.late = r.late
                    outcome.duplicate = r.duplicate
                }
            } catch {
                throw ProcessingError(step: "window.aggregate", errorClass: .aggregateError, message: error.message)
            }
            outcome.results += advance(&p, closeMark: mark)
        case .join(let spec):
            let t = try (side == 0 ? spec.leftTime : spec.rightTime).eventTime(of: record)
            guard let key = record.key else {
                throw ProcessingError(step: "join", errorClass: .missingKey, message: "a join needs a record key")
            }
            let before = p.maxTime[side]
            p.maxTime[side] = max(before ?? .min, t)
            p.lastArrivalWallMs[side] = nowWallMs
            let mark = closeMark(p, nowWallMs: nowWallMs)
            if p.join?.index[side][record.id] != nil {
                outcome.duplicate = true
            } else if let before, t < before - spec.graceMs || t + spec.windowMs < mark {
                outcome.late = true
            } else {
                outcome.results = p.join?.add(side: side, key: key, id: record.id, t: t, value: record.value, tracker: &p.tracker) ?? []
            }
            outcome.results += advance(&p, closeMark: mark)
        }
        if outcome.late { counters.late += 1 }
        if outcome.duplicate { counters.duplicates += 1 }
        return outcome
    }

    /// A record id's hash as kept in the state (stable across processes: see ``FNV1a``).
    static func hash(_ id: String) -> UInt64 { FNV1a.hash(id.utf8) }

    /// The close mark of a partition: stream time − grace, never below the budget's floor.
    func closeMark(_ p: Partition, nowWallMs: Int64) -> Int64 {
        let idle = op.idleTimeoutMs
        var active: [Int64] = []
        var idled: [Int64] = []
        var activeUnseen = false
        for s in p.maxTime.indices {
            let quiet = nowWallMs - p.lastArrivalWallMs[s]
            if idle > 0 && quiet >= idle {
                if let t = p.maxTime[s] { idled.append(t + quiet) }
            } else if let t = p.maxTime[s] {
                active.append(t)
            } else {
                activeUnseen = true
            }
        }
        let streamTime: Int64?
        if activeUnseen {
            streamTime = nil
        } else if let m = active.min() {
            streamTime = m
        } else {
            streamTime = idled.max()
        }
        let mark = streamTime.map { $0 - op.graceMs } ?? .min
        return max(mark, p.floor)
    }

    /// Called periodically (and after each batch): moves idle partitions' clocks on, then enforces
    /// the memory budget by closing the oldest windows (expiring the oldest join records) of the
    /// largest partitions early. Returns what that emits, partition by partition.
    public mutating func tick(nowWallMs: Int64) -> [(partition: Int32, result: StatefulResult)] {
        var out: [(Int32, StatefulResult)] = []
        for pid in partitions.keys.sorted() {
            guard var p = partitions.removeValue(forKey: pid) else { continue }
            let mark = closeMark(p, nowWallMs: nowWallMs)
            let emitted = advance(&p, closeMark: mark)
            if !emitted.isEmpty { p.clockChanged = true }
            out += emitted.map { (pid, $0) }
            partitions[pid] = p
        }
        while stateBytes > budgetBytes {
            guard
                let (pid, _) = partitions.max(by: {
                    $0.value.bytes < $1.value.bytes || ($0.value.bytes == $1.value.bytes && $0.key > $1.key)
                }),
                var p = partitions.removeValue(forKey: pid)
            else { break }
            guard let deadline = p.window?.earliestDeadline() ?? p.join?.earliestDeadline() else {
                partitions[pid] = p
                break
            }
            let entriesBefore = p.entries
            p.floor = max(p.floor, deadline)
            p.clockChanged = true
            let emitted = advance(&p, closeMark: closeMark(p, nowWallMs: nowWallMs))
            counters.evictions += max(0, entriesBefore - p.entries)
            out += emitted.map { (pid, $0) }
            partitions[pid] = p
            if entriesBefore == p.entries { break }
        }
        return out
    }

    private func advance(_ p: inout Partition, closeMark: Int64) -> [StatefulResult] {
        p.window?.advance(closeMark: closeMark, tracker: &p.tracker) ?? p.join?.advance(closeMark: closeMark, tracker: &p.tracker) ?? []
    }

    /// The changelog records of everything changed since the last commit, in two phases: write
    /// `changes` (with the batch's outputs), wait for the broker to acknowledge them, then write
    /// `checkpoints`. Advances each changed partition's sequence number.
    public mutating func commit() -> (changes: [ChangelogRecord], checkpoints: [ChangelogRecord]) {
        var changes: [ChangelogRecord] = []
        var checkpoints: [ChangelogRecord] = []
        for pid in partitions.keys.sorted() {
            guard partitions[pid].map({ !$0.tracker.isEmpty || $0.clockChanged }) == true,
                var p = partitions.removeValue(forKey: pid)
            else { continue }
            p.sequence += 1
            let v = p.sequence
            var written = 0
            func add(_ key: String, _ bytes: [UInt8]) {
                changes.append(ChangelogRecord(partition: pid, key: key, value: bytes))
                written += bytes.count + key.utf8.count
            }
            let previous = p.tracker.previous
            if p.bytesSinceSnapshot >= snapshotBytes {
                add(Changelog.snapshotBegin, JSONValue.object(["v": .integer(v)]).serialized())
                var keys = Set(previous.keys)
                if let w = p.window { keys.formUnion(w.storeKeys) }
                if let j = p.join { keys.formUnion(j.storeKeys) }
                for key in keys.sorted() {
                    let current = serialize(p, key)
                    let before = previous.index(forKey: key).map { previous[$0].value } ?? current
                    add(key, Changelog.entry(v: v, previous: before, current: current))
                }
                add(Changelog.snapshotEnd, JSONValue.object(["v": .integer(v)]).serialized())
                p.bytesSinceSnapshot = 0
            } else {
                for key in previous.keys.sorted() {
                    let before = previous[key] ?? nil
                    let current = serialize(p, key)
                    if before == current && !p.tracker.forced.contains(key) { continue }
                    add(key, Changelog.entry(v: v, previous: before, current: current))
                }
                p.bytesSinceSnapshot += written
            }
            var offsets: [String: JSONValue] = [:]
            for (t, o) in p.nextOffsets { offsets[t] = .integer(o) }
            let checkpoint: JSONValue = .object([
                "v": .integer(v), "offsets": .object(offsets),
                "max": .array(p.maxTime.map { $0.map { .integer($0) } ?? .null }),
                "floor": p.floor == .min ? .null : .integer(p.floor),
            ])
            checkpoints.append(ChangelogRecord(partition: pid, key: Changelog.checkpointKey, value: checkpoint.serialized()))
            p.tracker.reset()
            p.clockChanged = false
            partitions[pid] = p
        }
        return (changes, checkpoints)
    }

    func serialize(_ p: Partition, _ key: String) -> [UInt8]? {
        if let w = p.window { return w.serialize(key)?.serialized() }
        if let j = p.join { return j.serialize(key)?.serialized() }
        return nil
    }
}
