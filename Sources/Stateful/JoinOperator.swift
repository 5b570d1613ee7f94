import Config
import Processing
import StreamCore

/// The `join:` section of a process stage: a windowed stream–stream join of the stage's input
/// (left) with another topic (right) on the record key.
///
/// ```yaml
/// join:
///   with: payments          # the right input: a logical topic, co-partitioned with the input
///   type: left              # inner | left | outer
///   window: 5m              # records join when their event times are at most this far apart
///   grace: 30s              # allowed lateness; later records go to the late topic
///   time: ts                # event time of both sides (or left_time / right_time)
///   as: { left: order, right: payment }   # field names of the two sides in the result
/// ```
///
/// A result is `{ key, <left>: {…}, <right>: {…} }`; in left and outer joins a record that found no
/// partner by the time its window closed is emitted once with the other side `null`.
public struct JoinSpec: Sendable {
    public enum Kind: String, Sendable { case inner, left, outer }

    public var right: String
    public var kind: Kind
    public var windowMs: Int64
    public var graceMs: Int64
    public var leftTime: EventTimeSource
    public var rightTime: EventTimeSource
    public var leftName: String
    public var rightName: String
    public var keyField: String
    public var idleTimeoutMs: Int64
    public let node: ConfigNode

    public init(_ node: ConfigNode) throws(ConfigError) {
        self.node = node
        let m = try node.mapping()
        right = try m.required("with", hint: "the logical topic to join with (co-partitioned with the input)").string()
        kind = Kind(rawValue: try m.choice("type", ["inner", "left", "outer"], default: "inner")) ?? .inner
        let w = try m.required("window", hint: "how far apart in event time two records may be, e.g. 5m")
        windowMs = try w.durationMilliseconds()
        guard windowMs >= 0 else { throw w.error("window must not be negative") }
        graceMs = try m.duration("grace", defaultMilliseconds: 0)
        let both = try EventTimeSource(m.optional("time"))
        leftTime = m.optional("left_time") == nil ? both : try EventTimeSource(m.optional("left_time"))
        rightTime = m.optional("right_time") == nil ? both : try EventTimeSource(m.optional("right_time"))
        if let a = m.optional("as") {
            let am = try a.mapping()
            leftName = try am.string("left", default: "left")
            rightName = try am.string("right", default: "right")
            try am.finish()
            guard leftName != rightName else { throw a.error("as: left and right need different names") }
        } else {
            leftName = "left"
            rightName = "right"
        }
        keyField = try m.string("key_field", default: "key")
        idleTimeoutMs = try m.duration("idle_timeout", defaultMilliseconds: 30_000)
        try m.finish()
        guard keyField != leftName && keyField != rightName else {
            throw node.error("key_field '\(keyField)' collides with a side's name in as:")
        }
    }
}

/// A buffered join record.
struct JoinItem: Sendable, Equatable {
    var t: Int64
    var id: String
    var key: String
    var value: JSONValue
    var matched: Bool
    var bytes: Int
}

/// The join buffers of one partition (both sides): records wait until the close mark passes
/// `t + window`, meeting every record of the other side within the window.
struct JoinPartition: Sendable {
    let spec: JoinSpec
    /// side → key → records (in arrival order).
    var sides: [[String: [JoinItem]]] = [[:], [:]]
    /// side → record id → key.
    var index: [[String: String]] = [[:], [:]]
    var deadlines = DeadlineHeap()
    var bytes = 0
    var itemCount = 0

    init(spec: JoinSpec) {
        self.spec = spec
    }

    static func storeKey(side: Int, id: String) -> String { "\(side == 0 ? "L" : "R")|\(id)" }

    /// Adds a record of `side` (0 left, 1 right); returns the joined results it completes.
    mutating func add(side: Int, key: String, id: String, t: Int64, value: JSONValue, tracker: inout ChangeTracker) -> [StatefulResult] {
        // The same record again (a redelivery): its results were emitted the first time.
        if index[side][id] != nil { return [] }
        let other = 1 - side
        var results: [StatefulResult] = []
        var item = JoinItem(
            t: t, id: id, key: key, value: value, matched: false,
            bytes: 96 + id.utf8.count + key.utf8.count + value.serialized().count)
        if var partners = sides[other][key] {
            for i in partners.indices where abs(partners[i].t - t) <= spec.windowMs {
                results.append(side == 0 ? joined(key, left: item, right: partners[i]) : joined(key, left: partners[i], right: item))
                item.matched = true
                if !partners[i].matched {
                    tracker.touch(Self.storeKey(side: other, id: partners[i].id), current: Self.encode(partners[i]).serialized())
                    partners[i].matched = true
                }
            }
            sides[other][key] = partners
        }
        let sk = Self.storeKey(side: side, id: id)
        tracker.touch(sk, current: nil)
        insert(item, side: side, storeKey: sk)
        return results
    }

    private mutating func insert(_ item: JoinItem, side: Int, storeKey: String) {
        sides[side][item.key, default: []].append(item)
        index[side][item.id] = item.key
        bytes += item.bytes
        itemCount += 1
        deadlines.push(item.t + spec.windowMs, "\(side)\(storeKey)")
    }

    func joined(_ key: String, left: JoinItem?, right: JoinItem?) -> StatefulResult {
        let value: JSONValue = .object([
            spec.keyField: .string(key), spec.leftName: left?.value ?? .null, spec.rightName: right?.value ?? .null,
        ])
        return StatefulResult(
            key: key, value: value, id: "\(left?.id ?? "")+\(right?.id ?? "")", eventTimeMs: max(left?.t ?? .min, right?.t ?? .min))
    }

    /// Expires records whose window lies behind the close mark (`t + window < closeMark`); unmatched
    /// ones are emitted with a null partner in left (left side) and outer (both sides) joins.
    mutating func advance(closeMark: Int64, tracker: inout ChangeTracker) -> [StatefulResult] {
        var out: [StatefulResult] = []
        while let top = deadlines.peek, top.deadline < closeMark {
            deadlines.pop()
            let side = top.key.hasPrefix("0") ? 0 : 1
            let sk = String(top.key.dropFirst())
            let id = String(sk.dropFirst(2))
            guard let (key, position) = locate(side: side, id: id), var list = sides[side][key] else { continue }
            let item = list.remove(at: position)
            tracker.touch(sk, current: Self.encode(item).serialized())
            sides[side][key] = list.isEmpty ? nil : list
            index[side][id] = nil
            bytes -= item.bytes
            itemCount -= 1
            if !item.matched && (spec.kind == .outer || (spec.kind == .left && side == 0)) {
                out.append(side == 0 ? joined(item.key, left: item, right: nil) : joined(item.key, left: nil, right: item))
            }
        }
        return out
    }

    func locate(side: Int, id: String) -> (String, Int)? {
        if let key = index[side][id], let i = sides[side][key]?.firstIndex(where: { $0.id == id }) { return (key, i) }
        return nil
    }

    mutating func earliestDeadline() -> Int64? {
        deadlines.peek.map { $0.deadline + 1 }
    }

    // MARK: changelog form

    static func encode(_ item: JoinItem) -> JSONValue {
        .object(["t": .integer(item.t), "k": .string(item.key), "v": item.value, "m": .bool(item.matched)])
    }

    func serialize(_ storeKey: String) -> JSONValue? {
        let side = storeKey.hasPrefix("L|") ? 0 : 1
        let id = String(storeKey.dropFirst(2))
        guard let (key, i) = locate(side: side, id: id), let item = sides[side][key]?[i] else { return nil }
        return Self.encode(item)
    }

    var storeKeys: [String] {
        var out: [String] = []
        for side in 0..<2 { for (_, items) in sides[side] { for it in items { out.append(Self.storeKey(side: side, id: it.id)) } } }
        return out
    }

    mutating func restore(key storeKey: String, value: JSONValue) -> Bool {
        guard storeKey.hasPrefix("L|") || storeKey.hasPrefix("R|") else { return false }
        let side = storeKey.hasPrefix("L|") ? 0 : 1
        let id = String(storeKey.dropFirst(2))
        guard let t = value["t"]?.int64Value, let key = value["k"]?.stringValue, let v = value["v"], let m = value["m"]?.boolValue else {
            return false
        }
        guard index[side][id] == nil else { return true }
        let item = JoinItem(t: t, id: id, key: key, value: v, matched: m, bytes: 96 + id.utf8.count + key.utf8.count + v.serialized().count)
        insert(item, side: side, storeKey: storeKey)
        sides[side][key]?.sort { $0.t < $1.t }
        return true
    }
}
