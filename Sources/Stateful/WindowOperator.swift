import Config
import Processing
import StreamCore

/// The `window:` section of a process stage: how records are grouped in event time and aggregated.
///
/// ```yaml
/// window:
///   type: tumbling          # tumbling | hopping | sliding | session
///   size: 1m                # tumbling, hopping, sliding
///   advance: 15s            # hopping: how far consecutive windows start apart
///   gap: 30s                # session: inactivity that ends a session
///   grace: 10s              # allowed lateness; later records go to the late topic
///   time: ts                # event time (see EventTimeSource); default: sf.event_time
///   key: sensor_id          # group key expression; default: the record key
///   emit: final             # final (once, when the window closes) | update (on every change)
///   aggregate: { readings: count(), avg_temp: avg(temperature_c) }
/// ```
public struct WindowSpec: Sendable {
    public enum Kind: String, Sendable { case tumbling, hopping, sliding, session }
    public enum Emit: String, Sendable { case final, update }

    public var kind: Kind
    public var sizeMs: Int64
    public var advanceMs: Int64
    public var gapMs: Int64
    public var graceMs: Int64
    public var time: EventTimeSource
    public var key: Expression?
    public var keyField: String
    public var emit: Emit
    public var aggregation: Aggregation
    /// After this long without records (wall clock), a partition's event time moves with the wall
    /// clock so its windows close; 0 turns it off (fully deterministic, Kafka Streams semantics).
    public var idleTimeoutMs: Int64

    public init(_ node: ConfigNode) throws(ConfigError) {
        let m = try node.mapping()
        let typeText = try m.choice("type", Kind.allCasesText, default: "tumbling")
        kind = Kind(rawValue: typeText) ?? .tumbling
        sizeMs = 0
        advanceMs = 0
        gapMs = 0
        switch kind {
        case .tumbling, .sliding:
            sizeMs = try Self.positive(m, "size", hint: "the window length, e.g. 1m")
            advanceMs = sizeMs
        case .hopping:
            sizeMs = try Self.positive(m, "size", hint: "the window length, e.g. 1m")
            advanceMs = try Self.positive(m, "advance", hint: "how far windows start apart, e.g. 15s")
            guard advanceMs <= sizeMs else {
                throw (m.optional("advance") ?? node).error(
                    "advance (\(advanceMs) ms) must not exceed size (\(sizeMs) ms); a gap between windows would drop records")
            }
            guard sizeMs / advanceMs <= 1000 else {
                throw (m.optional("advance") ?? node).error(
                    "size / advance is \(sizeMs / advanceMs): each record would update more than 1000 windows")
            }
        case .session:
            gapMs = try Self.positive(m, "gap", hint: "the inactivity that closes a session, e.g. 30s")
        }
        graceMs = try m.duration("grace", defaultMilliseconds: 0)
        time = try EventTimeSource(m.optional("time"))
        if let k = m.optional("key") {
            do {
                key = try Expression(try k.string())
            } catch {
                throw k.error("key: \(error)")
            }
        } else {
            key = nil
        }
        keyField = try m.string("key_field", default: "key")
        emit = Emit(rawValue: try m.choice("emit", ["final", "update"], default: "final")) ?? .final
        aggregation = try Aggregation(try m.required("aggregate", hint: "output field → function, e.g. readings: count()"))
        idleTimeoutMs = try m.duration("idle_timeout", defaultMilliseconds: 30_000)
        try m.finish()
        for reserved in [keyField, "window_start", "window_end", "retracted"]
        where aggregation.fields.contains(where: { $0.name == reserved }) {
            throw node.error("aggregate: '\(reserved)' is a field the window result sets itself; pick another name")
        }
    }

    static func positive(_ m: ConfigMapping, _ key: String, hint: String) throws(ConfigError) -> Int64 {
        let node = try m.required(key, hint: hint)
        let ms = try node.durationMilliseconds()
        guard ms > 0 else { throw node.error("\(key) must be longer than 0") }
        return ms
    }

    /// The windows `[start, end)` a record at `t` belongs to (tumbling and hopping), oldest first.
    func windows(at t: Int64) -> [(start: Int64, end: Int64)] {
        let last = Self.floorDiv(t, advanceMs) * advanceMs
        var out: [(Int64, Int64)] = []
        var s = last
        while s > t - sizeMs {
            out.append((s, s + sizeMs))
            s -= advanceMs
        }
        return out.reversed()
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }
}

extension WindowSpec.Kind {
    static var allCasesText: [String] { ["tumbling", "hopping", "sliding", "session"] }
}

/// One open window of a key.
struct OpenWindow: Sendable, Equatable {
    var start: Int64
    /// Exclusive end for tumbling and hopping; the inclusive end (the record's time) for sliding; the
    /// last record's time for sessions.
    var end: Int64
    var state: AggregateState
}

/// Everything a key holds: its open windows (by start) and, for sliding windows, the records of
/// the last `size + grace` (evaluated aggregate arguments only).
struct KeyWindows: Sendable, Equatable {
    var windows: [OpenWindow] = []
    var buffer: [BufferedArgs] = []
    /// Ids (hashed) of the records in the open windows, with their event times: a record delivered
    /// twice (an upstream stage re-sent a batch after a crash) is counted once. Kept as long as a
    /// window that took it is open; a copy arriving later is late anyway.
    var seen: [UInt64: Int64] = [:]

    /// For the memory budget: the dictionary entry and key, the arrays, each window (see
    /// ``AggregateState/approximateBytes``) and each buffered record.
    var approximateBytes: Int {
        var n = 192 + buffer.count * 64 + seen.count * 32
        for w in windows { n += 64 + w.state.approximateBytes }
        for b in buffer { n += b.args.count * 40 }
        return n
    }

    var isEmpty: Bool { windows.isEmpty && buffer.isEmpty }
}

struct BufferedArgs: Sendable, Equatable {
    var t: Int64
    var args: [JSONValue]
}

/// The windows of one input partition: per key state, a deadline heap for closing, and the bytes held.
struct WindowPartition: Sendable {
    let spec: WindowSpec
    var keys: [String: KeyWindows] = [:]
    var deadlines = DeadlineHeap()
    var bytes = 0
    var windowCount = 0

    init(spec: WindowSpec) {
        self.spec = spec
    }

    /// When a window closes: the close mark (event time − grace) must reach this.
    func deadline(_ w: OpenWindow) -> Int64 {
        switch spec.kind {
        case .tumbling, .hopping: return w.end
        case .sliding: return w.end + 1 // [t − size, t] includes t: complete once the mark passes t
        case .session: return w.end + spec.gapMs
        }
    }

    /// Adds a record at event time `t`. Returns the results to emit now (update mode) and whether
    /// the record was late (no open window could take it).
    mutating func add(
        key: String, t: Int64, args: [JSONValue], idHash: UInt64, closeMark: Int64, tracker: inout ChangeTracker
    ) throws(ExpressionError) -> (results: [StatefulResult], late: Bool, duplicate: Bool) {
        if keys[key]?.seen[idHash] != nil { return ([], false, true) }
        var kw = keys[key] ?? KeyWindows()
        let before = kw.approximateBytes
        let beforeCount = kw.windows.count
        var touched: [OpenWindow] = []
        var retracted: [OpenWindow] = []
        let agg = spec.aggregation

        switch spec.kind {
        case .tumbling, .hopping:
            let candidates = spec.windows(at: t).filter { $0.end > closeMark }
            if candidates.isEmpty { return ([], true, false) }
            tracker.touch(key, current: keys[key].map { Self.encode($0).serialized() })
            for c in candidates {
                if let i = kw.windows.firstIndex(where: { $0.start == c.start }) {
                    try agg.add(args, to: &kw.windows[i].state)
                    touched.append(kw.windows[i])
                } else {
                    var w = OpenWindow(start: c.start, end: c.end, state: agg.empty())
                    try agg.add(args, to: &w.state)
                    kw.windows.append(w)
                    deadlines.push(deadline(w), key)
                    touched.append(w)
                }
            }
            kw.windows.sort { $0.start < $1.start }
        case .sliding:
            if t < closeMark { return ([], true, false) }
            tracker.touch(key, current: keys[key].map { Self.encode($0).serialized() })
            kw.buffer.append(BufferedArgs(t: t, args: args))
            kw.buffer.sort { $0.t < $1.t }
            // Windows ending at or after t that reach back to t take the record.
            for i in kw.windows.indices where kw.windows[i].end >= t && kw.windows[i].end - spec.sizeMs <= t {
                if kw.windows[i].end == t { continue }
                try agg.add(args, to: &kw.windows[i].state)
                touched.append(kw.windows[i])
            }
            if let i = kw.windows.firstIndex(where: { $0.end == t }) {
                try agg.add(args, to: &kw.windows[i].state)
                touched.append(kw.windows[i])
            } else {
                // A new window [t − size, t] over every buffered record in range.
                var w = OpenWindow(start: t - spec.sizeMs, end: t, state: agg.empty())
                for b in kw.buffer where b.t >= t - spec.sizeMs && b.t <= t { try agg.add(b.args, to: &w.state) }
                kw.windows.append(w)
                kw.windows.sort { $0.end < $1.end }
                deadlines.push(deadline(w), key)
                touched.append(w)
            }
        case .session:
            let gap = spec.gapMs
            let absorbing = kw.windows.indices.filter { t >= kw.windows[$0].start - gap && t <= kw.windows[$0].end + gap }
            if absorbing.isEmpty && t + gap <= closeMark { return ([], true, false) }
            tracker.touch(key, current: keys[key].map { Self.encode($0).serialized() })
            var merged = OpenWindow(start: t, end: t, state: agg.empty())
            try agg.add(args, to: &merged.state)
            for i in absorbing {
                let w = kw.windows[i]
                merged.start = min(merged.start, w.start)
                merged.end = max(merged.end, w.end)
                merged.state = agg.merge(w.state, merged.state)
            }
            // Sessions merged into one that starts elsewhere are withdrawn (update mode says so).
            retracted = absorbing.map { kw.windows[$0] }.filter { $0.start != merged.start }
            let absorbedSet = Set(absorbing)
            kw.windows = kw.windows.enumerated().filter { !absorbedSet.contains($0.offset) }.map(\.element)
            kw.windows.append(merged)
            kw.windows.sort { $0.start < $1.start }
            deadlines.push(deadline(merged), key)
            touched.append(merged)
        }
        kw.seen[idHash] = t
        windowCount += kw.windows.count - beforeCount
        keys[key] = kw
        bytes += kw.approximateBytes - before
        guard spec.emit == .update else { return ([], false, false) }
        var out = retracted.map { result(key: key, window: $0, retracted: true) }
        out += touched.map { result(key: key, window: $0, retracted: false) }
        return (out, false, false)
    }

    /// Closes every window whose deadline the close mark has reached, oldest deadline first (then by
    /// key): their final results in final mode. Prunes sliding buffers.
    mutating func advance(closeMark: Int64, tracker: inout ChangeTracker) -> [StatefulResult] {
        var out: [StatefulResult] = []
        while let top = deadlines.peek, top.deadline <= closeMark {
            deadlines.pop()
            guard var kw = keys[top.key] else { continue }
            let due = kw.windows.filter { deadline($0) <= closeMark }
            if due.isEmpty && !(spec.kind == .sliding && !kw.buffer.isEmpty) { continue }
            tracker.touch(top.key, current: Self.encode(kw).serialized())
            let before = kw.approximateBytes
            let beforeCount = kw.windows.count
            if spec.emit == .final {
                for w in due.sorted(by: { $0.start < $1.start }) { out.append(result(key: top.key, window: w, retracted: false)) }
            }
            kw.windows.removeAll { deadline($0) <= closeMark }
            if spec.kind == .sliding {
                // No window still to open can reach records older than this.
                // (A window still to open ends at or after the close mark, so it starts at or after closeMark − size.)
                kw.buffer.removeAll { $0.t < closeMark - spec.sizeMs }
                if kw.windows.isEmpty, let b = kw.buffer.last { deadlines.push(b.t + spec.sizeMs + 1, top.key) }
            }
            // Ids of records whose windows have all closed: a copy of them would be late.
            let keepFrom = min(kw.windows.map(\.start).min() ?? .max, kw.buffer.first?.t ?? .max)
            kw.seen = kw.seen.filter { $0.value >= keepFrom }
            windowCount -= beforeCount - kw.windows.count
            bytes -= before
            if kw.isEmpty {
                keys[top.key] = nil
            } else {
                keys[top.key] = kw
                bytes += kw.approximateBytes
            }
        }
        return out
    }

    /// The earliest deadline still open (the budget moves the close mark here to free memory).
    /// Drops stale heap entries on the way.
    mutating func earliestDeadline() -> Int64? {
        while let top = deadlines.peek {
            if let kw = keys[top.key],
                kw.windows.contains(where: { deadline($0) == top.deadline })
                    || (spec.kind == .sliding && !kw.buffer.isEmpty)
            {
                return top.deadline
            }
            deadlines.pop()
        }
        return nil
    }

    func result(key: String, window w: OpenWindow, retracted: Bool) -> StatefulResult {
        var fields: [String: JSONValue] = [spec.keyField: .string(key)]
        let endExclusive = spec.kind == .sliding || spec.kind == .session ? w.end + 1 : w.end
        fields["window_start"] = .string(TimeFormat.format(w.start))
        fields["window_end"] = .string(TimeFormat.format(endExclusive))
        if retracted {
            fields["retracted"] = .bool(true)
        } else {
            for (name, value) in spec.aggregation.result(w.state) { fields[name] = value }
        }
        return StatefulResult(key: key, value: .object(fields), id: "\(key)@\(w.start)", eventTimeMs: endExclusive - 1)
    }

    // MARK: changelog form

    static func encode(_ kw: KeyWindows) -> JSONValue {
        var o: [String: JSONValue] = [
            "w": .array(kw.windows.map { .array([.integer($0.start), .integer($0.end), $0.state.json]) })
        ]
        if !kw.buffer.isEmpty {
            o["b"] = .array(kw.buffer.map { .array([.integer($0.t), .array($0.args)]) })
        }
        if !kw.seen.isEmpty {
            o["s"] = .array(kw.seen.sorted { $0.key < $1.key }.map { .array([.integer(Int64(bitPattern: $0.key)), .integer($0.value)]) })
        }
        return .object(o)
    }

    func serialize(_ key: String) -> JSONValue? { keys[key].map(Self.encode) }

    var storeKeys: [String] { Array(keys.keys) }

    mutating func restore(key: String, value: JSONValue) -> Bool {
        guard case .array(let ws)? = value["w"] else { return false }
        var kw = KeyWindows()
        for item in ws {
            guard case .array(let a) = item, a.count == 3, let s = a[0].int64Value, let e = a[1].int64Value,
                let state = AggregateState(json: a[2], aggregation: spec.aggregation)
            else { return false }
            kw.windows.append(OpenWindow(start: s, end: e, state: state))
        }
        if case .array(let bs)? = value["b"] {
            for item in bs {
                guard case .array(let a) = item, a.count == 2, let t = a[0].int64Value, case .array(let args) = a[1] else { return false }
                kw.buffer.append(BufferedArgs(t: t, args: args))
            }
        }
        if case .array(let ss)? = value["s"] {
            for item in ss {
                guard case .array(let a) = item, a.count == 2, let h = a[0].int64Value, let t = a[1].int64Value else { return false }
                kw.seen[UInt64(bitPattern: h)] = t
            }
        }
        if let old = keys[key] {
            bytes -= old.approximateBytes
            windowCount -= old.windows.count
        }
        keys[key] = kw
        bytes += kw.approximateBytes
        windowCount += kw.windows.count
        for w in kw.windows { deadlines.push(deadline(w), key) }
        if spec.kind == .sliding, let b = kw.buffer.last { deadlines.push(b.t + spec.sizeMs + 1, key) }
        return true
    }
}

/// A binary min-heap of (deadline, key), ordered by deadline then key so that closing order — and
/// with it the order of results — is deterministic. Entries go stale when a window changes; the
/// owner checks an entry against its state when it pops it.
struct DeadlineHeap: Sendable {
    struct Entry: Sendable {
        var deadline: Int64
        var key: String
        static func < (a: Entry, b: Entry) -> Bool { a.deadline != b.deadline ? a.deadline < b.deadline : a.key < b.key }
    }

    private(set) var items: [Entry] = []

    var peek: Entry? { items.first }
    var count: Int { items.count }

    mutating func push(_ deadline: Int64, _ key: String) {
        items.append(Entry(deadline: deadline, key: key))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i] < items[parent] else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    @discardableResult
    mutating func pop() -> Entry? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < items.count && items[l] < items[m] { m = l }
            if r < items.count && items[r] < items[m] { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}
