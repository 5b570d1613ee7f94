import Config
import Foundation
import Processing
import StreamCore

/// The aggregate functions of a window's `aggregate:` section.
///
/// ```yaml
/// aggregate:
///   readings: count()
///   avg_temp: avg(temperature_c)
///   max_temp: max(temperature_c)
///   p95_temp: percentile(temperature_c, 95)
///   sites: distinct(building)
/// ```
///
/// Every state is mergeable (session windows merge) and serialises to JSON (the changelog).
/// `percentile` is approximate: a log-bucketed sketch with 1 % relative accuracy (see
/// ``QuantileSketch``). `distinct` is exact: it keeps a 64-bit hash per distinct value, so it costs
/// 8 bytes per distinct value per window (counted against the memory budget).
public struct Aggregation: Sendable {
    public enum Function: String, Sendable, CaseIterable {
        case count, sum, min, max, avg, distinct, percentile
    }

    public struct Field: Sendable {
        public let name: String
        public let function: Function
        /// The argument (nil for `count()`).
        public let argument: Processing.Expression?
        /// For `percentile`: 0…100.
        public let percentile: Double
    }

    public let fields: [Field]

    public init(fields: [Field]) {
        self.fields = fields
    }

    /// Reads an `aggregate:` mapping of output field → `function(expression)`.
    public init(_ node: ConfigNode) throws(ConfigError) {
        let m = try node.mapping()
        var fields: [Field] = []
        for name in m.keys {
            let valueNode = try m.required(name)
            let text = try valueNode.string().trimmingCharacters(in: .whitespaces)
            fields.append(try Self.parse(name: name, text: text, node: valueNode))
        }
        try m.finish()
        guard !fields.isEmpty else {
            throw node.error("aggregate: needs at least one field, e.g. readings: count()")
        }
        self.fields = fields
    }

    static func parse(name: String, text: String, node: ConfigNode) throws(ConfigError) -> Field {
        let names = Function.allCases.map(\.rawValue).joined(separator: ", ")
        guard let open = text.firstIndex(of: "("), text.hasSuffix(")") else {
            throw node.error("'\(text)' is not an aggregate: write function(expression), one of \(names)")
        }
        let fname = String(text[..<open]).trimmingCharacters(in: .whitespaces)
        guard let function = Function(rawValue: fname) else {
            throw node.error("unknown aggregate function '\(fname)' (known: \(names))")
        }
        var inner = String(text[text.index(after: open)..<text.index(before: text.endIndex)]).trimmingCharacters(
            in: .whitespaces)
        var percentile = 0.0
        if function == .percentile {
            guard let comma = Self.lastTopLevelComma(inner) else {
                throw node.error("percentile needs two arguments: percentile(expression, 95)")
            }
            let pText = inner[inner.index(after: comma)...].trimmingCharacters(in: .whitespaces)
            guard let p = Double(pText), p >= 0, p <= 100 else {
                throw node.error("percentile(…, \(pText)): the percentile must be a number from 0 to 100")
            }
            percentile = p
            inner = String(inner[..<comma]).trimmingCharacters(in: .whitespaces)
        }
        if function == .count {
            guard inner.isEmpty else {
                throw node.error("count() takes no argument (it counts records; use distinct(…) to count values)")
            }
            return Field(name: name, function: .count, argument: nil, percentile: 0)
        }
        guard !inner.isEmpty else { throw node.error("\(fname)(…) needs an expression, e.g. \(fname)(temperature_c)") }
        do {
            return Field(name: name, function: function, argument: try Processing.Expression(inner), percentile: percentile)
        } catch {
            throw node.error("\(fname)(…): \(error)")
        }
    }

    static func lastTopLevelComma(_ s: String) -> String.Index? {
        var depth = 0
        var quote: Character?
        var found: String.Index?
        var i = s.startIndex
        while i < s.endIndex {
            let c = s[i]
            if let q = quote {
                if c == "\\" { i = s.index(after: i) } else if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "(" || c == "[" {
                depth += 1
            } else if c == ")" || c == "]" {
                depth -= 1
            } else if c == ",", depth == 0 {
                found = i
            }
            if i < s.endIndex { i = s.index(after: i) }
        }
        return found
    }

    /// Evaluates the arguments of one record: what a window adds (and what sliding windows buffer).
    public func arguments(of value: JSONValue, context: RecordContext) throws(ExpressionError) -> [JSONValue] {
        var out: [JSONValue] = []
        out.reserveCapacity(fields.count)
        for f in fields {
            out.append(try f.argument?.evaluate(value, context: context) ?? .null)
        }
        return out
    }

    public func empty() -> AggregateState {
        AggregateState(
            cells: fields.map { f in
                switch f.function {
                case .count: return .count(0)
                case .sum: return .sum(0, integral: true, seen: false)
                case .min: return .min(nil)
                case .max: return .max(nil)
                case .avg: return .avg(0, 0)
                case .distinct: return .distinct([])
                case .percentile: return .sketch(QuantileSketch())
                }
            })
    }

    /// Adds one record's evaluated arguments. Nulls are skipped by every function but `count`;
    /// non-numbers given to numeric functions are errors (the record is dead-lettered).
    public func add(_ args: [JSONValue], to state: inout AggregateState) throws(ExpressionError) {
        for i in fields.indices {
            let arg = i < args.count ? args[i] : .null
            let f = fields[i]
            switch state.cells[i] {
            case .count(let n):
                state.cells[i] = .count(n + 1)
            case .sum(let s, let integral, _):
                if arg == .null { continue }
                let d = try Self.number(arg, f)
                state.cells[i] = .sum(s + d, integral: integral && arg.int64Value != nil && !(arg.isDouble), seen: true)
            case .min(let m):
                if arg == .null { continue }
                let d = try Self.number(arg, f)
                state.cells[i] = .min(m.map { Swift.min($0, d) } ?? d)
            case .max(let m):
                if arg == .null { continue }
                let d = try Self.number(arg, f)
                state.cells[i] = .max(m.map { Swift.max($0, d) } ?? d)
            case .avg(let s, let n):
                if arg == .null { continue }
                state.cells[i] = .avg(s + (try Self.number(arg, f)), n + 1)
            case .distinct(var set):
                if arg == .null { continue }
                set.insert(Self.hash(arg))
                state.cells[i] = .distinct(set)
            case .sketch(var sketch):
                if arg == .null { continue }
                sketch.add(try Self.number(arg, f))
                state.cells[i] = .sketch(sketch)
            }
        }
    }

    /// The state of the union of two record sets (session windows that merge).
    public func merge(_ a: AggregateState, _ b: AggregateState) -> AggregateState {
        var out = a
        for i in out.cells.indices where i < b.cells.count {
            switch (a.cells[i], b.cells[i]) {
            case (.count(let x), .count(let y)): out.cells[i] = .count(x + y)
            case (.sum(let x, let ix, let sx), .sum(let y, let iy, let sy)): out.cells[i] = .sum(x + y, integral: ix && iy, seen: sx || sy)
            case (.min(let x), .min(let y)): out.cells[i] = .min(Self.combine(x, y, Swift.min))
            case (.max(let x), .max(let y)): out.cells[i] = .max(Self.combine(x, y, Swift.max))
            case (.avg(let s1, let n1), .avg(let s2, let n2)): out.cells[i] = .avg(s1 + s2, n1 + n2)
            case (.distinct(let x), .distinct(let y)): out.cells[i] = .distinct(x.union(y))
            case (.sketch(var x), .sketch(let y)):
                x.merge(y)
                out.cells[i] = .sketch(x)
            default: break
            }
        }
        return out
    }

    /// The output fields, in the order of the `aggregate:` section.
    public func result(_ state: AggregateState) -> [(String, JSONValue)] {
        var out: [(String, JSONValue)] = []
        for (i, f) in fields.enumerated() where i < state.cells.count {
            let v: JSONValue
            switch state.cells[i] {
            case .count(let n): v = .integer(n)
            case .sum(let s, let integral, let seen):
                if !seen { v = .null } else if integral, let n = Int64(exactly: s) { v = .integer(n) } else { v = .number(s) }
            case .min(let m): v = m.map(Self.numberValue) ?? .null
            case .max(let m): v = m.map(Self.numberValue) ?? .null
            case .avg(let s, let n): v = n == 0 ? .null : .number(s / Double(n))
            case .distinct(let set): v = .integer(Int64(set.count))
            case .sketch(let sketch): v = sketch.quantile(f.percentile / 100).map { .number($0) } ?? .null
            }
            out.append((f.name, v))
        }
        return out
    }

    static func combine(_ a: Double?, _ b: Double?, _ f: (Double, Double) -> Double) -> Double? {
        switch (a, b) {
        case (nil, let y): return y
        case (let x, nil): return x
        case (let x?, let y?): return f(x, y)
        }
    }

    static func numberValue(_ d: Double) -> JSONValue {
        if let n = Int64(exactly: d) { return .integer(n) }
        return .number(d)
    }

    static func number(_ v: JSONValue, _ f: Field) throws(ExpressionError) -> Double {
        guard let d = v.doubleValue else {
            throw ExpressionError("\(f.function.rawValue)(\(f.argument?.text ?? "")) needs a number, got \(v.typeName) \(v.jsonString)")
        }
        return d
    }

    /// FNV-1a over the value's canonical JSON (stable, so sets restored from the changelog match).
    static func hash(_ v: JSONValue) -> UInt64 { FNV1a.hash(v.serialized()) }
}

extension JSONValue {
    var isDouble: Bool {
        if case .number = self { return true }
        return false
    }
}

/// The running state of one window's aggregates (one cell per `aggregate:` field).
public struct AggregateState: Sendable, Equatable {
    public enum Cell: Sendable, Equatable {
        case count(Int64)
        case sum(Double, integral: Bool, seen: Bool)
        case min(Double?)
        case max(Double?)
        case avg(Double, Int64)
        case distinct(Set<UInt64>)
        case sketch(QuantileSketch)
    }

    public var cells: [Cell]

    /// Roughly what this state holds in memory, for the memory budget.
    // Calibrated against the process's RSS growth (a Swift array, set or dictionary costs a heap object
    // of its own; small ones are mostly header). See docs/decisions/0029-window-state-accounting.md.
    public var approximateBytes: Int {
        var n = 48
        for c in cells {
            switch c {
            case .distinct(let s): n += 160 + s.count * 24
            case .sketch(let k): n += 320 + k.bucketCount * 40
            default: n += 40
            }
        }
        return n
    }

    /// The changelog form: an array with one entry per cell.
    public var json: JSONValue {
        .array(
            cells.map { c in
                switch c {
                case .count(let n): return .integer(n)
                case .sum(let s, let integral, let seen): return .array([.number(s), .bool(integral), .bool(seen)])
                case .min(let m), .max(let m): return m.map { .number($0) } ?? .null
                case .avg(let s, let n): return .array([.number(s), .integer(n)])
                case .distinct(let set): return .array(set.sorted().map { .string(String($0, radix: 16)) })
                case .sketch(let k): return k.json
                }
            })
    }

    /// Reads the changelog form for `aggregation`; nil when it does not fit (the aggregation changed
    /// since the state was written — the stage then refuses to start).
    public init?(json: JSONValue, aggregation: Aggregation) {
        guard case .array(let items) = json, items.count == aggregation.fields.count else { return nil }
        var cells: [Cell] = []
        for (f, item) in zip(aggregation.fields, items) {
            switch f.function {
            case .count:
                guard let n = item.int64Value else { return nil }
                cells.append(.count(n))
            case .sum:
                guard case .array(let a) = item, a.count == 3, let s = a[0].doubleValue, let i = a[1].boolValue,
                    let seen = a[2].boolValue
                else { return nil }
                cells.append(.sum(s, integral: i, seen: seen))
            case .min:
                cells.append(.min(item.doubleValue))
            case .max:
                cells.append(.max(item.doubleValue))
            case .avg:
                guard case .array(let a) = item, a.count == 2, let s = a[0].doubleValue, let n = a[1].int64Value else { return nil }
                cells.append(.avg(s, n))
            case .distinct:
                guard case .array(let a) = item else { return nil }
                var set = Set<UInt64>()
                for h in a {
                    guard let s = h.stringValue, let v = UInt64(s, radix: 16) else { return nil }
                    set.insert(v)
                }
                cells.append(.distinct(set))
            case .percentile:
                guard let k = QuantileSketch(json: item) else { return nil }
                cells.append(.sketch(k))
            }
        }
        self.cells = cells
    }

    init(cells: [Cell]) {
        self.cells = cells
    }
}
