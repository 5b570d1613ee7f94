import StreamCore

/// A record for the changelog topic: partition = the input partition whose state it carries.
public struct ChangelogRecord: Sendable, Equatable {
    public var partition: Int32
    public var key: String
    public var value: [UInt8]
}

/// A record read back from the changelog topic (one partition, in offset order).
public struct ChangelogMessage: Sendable {
    public var key: String?
    public var value: [UInt8]?

    public init(key: String?, value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

/// Why a partition's state could not be restored.
public struct StateRestoreError: Error, Sendable, CustomStringConvertible {
    public var partition: Int32
    public var message: String
    public var description: String { "state of partition \(partition): \(message)" }
}

/// Remembers, for every state key changed since the last commit, its value at that commit — the
/// `p` (previous) half of a changelog entry.
struct ChangeTracker: Sendable {
    /// Serialised values (nil: the key did not exist).
    private(set) var previous: [String: [UInt8]?] = [:]
    /// Keys to write even if unchanged: their last changelog entry belongs to a commit that never got
    /// its checkpoint, and must be superseded before a later checkpoint could make it count.
    private(set) var forced: Set<String> = []

    /// Call before changing `key`; `current` is read only the first time in a commit period.
    mutating func touch(_ key: String, current: @autoclosure () -> [UInt8]?) {
        if previous.index(forKey: key) == nil { previous.updateValue(current(), forKey: key) }
    }

    mutating func force(_ key: String, previous value: [UInt8]?) {
        previous.updateValue(value, forKey: key)
        forced.insert(key)
    }

    var isEmpty: Bool { previous.isEmpty }

    mutating func reset() {
        previous.removeAll(keepingCapacity: true)
        forced.removeAll()
    }
}

/// The changelog protocol (see docs/ARCHITECTURE.md, "State and the changelog").
///
/// Each commit of a partition gets the next sequence number `v`. Its changed keys are written as
/// entries `{v, p: value at the previous commit, c: value now}` (null = absent); only after every
/// entry (and every output record of the same batch) is acknowledged does the checkpoint
/// `__checkpoint` = `{v, offsets, clock}` follow. Restoring takes, per key, its last entry: `c` if
/// `v` ≤ the checkpoint's `v`, else `p` — so a crash between the two phases restores exactly the
/// state of the last checkpoint, whose input offsets the stage then seeks to. Only the last entry
/// per key is needed, so the protocol survives log compaction.
///
/// On brokers that delete old segments instead (retention; the embedded broker keeps ~5 MiB per
/// partition), a snapshot — every live key rewritten between `__snapshot_begin` and
/// `__snapshot_end` — is written whenever enough has been written since the last one; a restore
/// whose log no longer starts at offset 0 starts from the last complete snapshot.
public enum Changelog {
    static let checkpointKey = "__checkpoint"
    static let snapshotBegin = "__snapshot_begin"
    static let snapshotEnd = "__snapshot_end"
    /// Written by `streamfirst replay --reset-state`: everything before it is forgotten; the
    /// checkpoint that follows it names the offsets to start from.
    public static let resetKey = "__reset"
    public static let checkpointKeyName = checkpointKey

    /// The records `streamfirst replay --reset-state` writes to a partition: a reset marker and an
    /// empty checkpoint at `offsets`, numbered after everything already in the log.
    public static func resetRecords(partition: Int32, after sequence: Int64, offsets: [String: Int64]) -> [ChangelogRecord] {
        let v = sequence + 1
        var o: [String: JSONValue] = [:]
        for (t, n) in offsets { o[t] = .integer(n) }
        return [
            ChangelogRecord(partition: partition, key: resetKey, value: JSONValue.object(["v": .integer(v)]).serialized()),
            ChangelogRecord(
                partition: partition, key: checkpointKey,
                value: JSONValue.object(["v": .integer(v), "offsets": .object(o), "max": .array([]), "floor": .null]).serialized()),
        ]
    }

    /// The highest sequence number in a changelog partition (0 for an empty one).
    public static func highestSequence(_ messages: [ChangelogMessage]) -> Int64 {
        var highest: Int64 = 0
        for m in messages {
            guard let bytes = m.value, let v = try? JSONValue.parse(bytes), let n = v["v"]?.int64Value else { continue }
            highest = max(highest, n)
        }
        return highest
    }

    /// `{"c":…,"p":…,"v":n}` from already serialised values (keys in sorted order, as the
    /// serializer writes objects), without building a tree.
    static func entry(v: Int64, previous: [UInt8]?, current: [UInt8]?) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity((previous?.count ?? 4) + (current?.count ?? 4) + 32)
        out += Array(#"{"c":"#.utf8)
        out += current ?? Array("null".utf8)
        out += Array(#","p":"#.utf8)
        out += previous ?? Array("null".utf8)
        out += Array(#","v":"#.utf8)
        out += Array(String(v).utf8)
        out.append(UInt8(ascii: "}"))
        return out
    }

    struct Restored {
        var values: [String: JSONValue]
        var checkpoint: JSONValue?
        /// The highest sequence number in the log (checkpointed or not): the next commit uses a higher one.
        var sequence: Int64
        /// Keys whose last entry was never checkpointed (restored to its `p`); the next commit must
        /// rewrite them, or a later checkpoint with a higher number would make that entry count.
        var uncommitted: [String]
    }

    /// Replays one partition's changelog. `complete`: the log still starts at offset 0.
    static func restore(_ messages: [ChangelogMessage], complete: Bool, partition: Int32) throws(StateRestoreError) -> Restored {
        var parsed: [(String, JSONValue)] = []
        parsed.reserveCapacity(messages.count)
        for m in messages {
            guard let key = m.key, let bytes = m.value else { continue } // tombstones: compaction leftovers
            guard let v = try? JSONValue.parse(bytes) else {
                throw StateRestoreError(
                    partition: partition, message: "changelog record '\(key)' is not JSON: the topic holds something else")
            }
            parsed.append((key, v))
        }
        var start = 0
        if let reset = parsed.lastIndex(where: { $0.0 == resetKey }) {
            // A reset (replay): nothing before it counts, whatever retention kept.
            parsed.removeFirst(reset)
        } else if !complete {
            // The last snapshot whose end marker made it.
            var ends = Set<Int64>()
            var found: Int?
            for i in parsed.indices.reversed() {
                let (k, v) = parsed[i]
                if k == snapshotEnd, let n = v["v"]?.int64Value { ends.insert(n) }
                if k == snapshotBegin, let n = v["v"]?.int64Value, ends.contains(n) {
                    found = i
                    break
                }
            }
            guard let found else {
                throw StateRestoreError(
                    partition: partition,
                    message: "the broker deleted the start of the changelog and no complete snapshot survives; "
                        + "lower snapshot_bytes or raise the changelog topic's retention (or use a compacted topic)")
            }
            start = found
        }
        var checkpoint: JSONValue?
        for (k, v) in parsed where k == checkpointKey { checkpoint = v }
        let committed = checkpoint?["v"]?.int64Value ?? 0
        var last: [String: JSONValue] = [:]
        for (k, v) in parsed[start...] where !k.hasPrefix("__") { last[k] = v }
        var values: [String: JSONValue] = [:]
        var uncommitted: [String] = []
        var highest = committed
        for (k, e) in last {
            guard let v = e["v"]?.int64Value else {
                throw StateRestoreError(partition: partition, message: "changelog entry '\(k)' has no sequence number")
            }
            highest = max(highest, v)
            if v > committed { uncommitted.append(k) }
            let chosen = v <= committed ? e["c"] : e["p"]
            if let chosen, chosen != .null { values[k] = chosen }
        }
        for (k, v) in parsed[start...] where k == snapshotBegin || k == snapshotEnd {
            highest = max(highest, v["v"]?.int64Value ?? 0)
        }
        return Restored(values: values, checkpoint: checkpoint, sequence: highest, uncommitted: uncommitted.sorted())
    }
}
