import Foundation
import StreamCore

/// Evaluation of an expression tree on one record.
struct ExprEnv {
    let record: JSONValue
    let context: RecordContext

    static let metaNames: Set<String> = ["id", "key", "event_time", "topic", "partition", "offset", "value"]

    struct Failure: Error {
        let message: String
        init(_ m: String) { message = m }
    }

    func eval(_ node: ExprNode) throws(Failure) -> JSONValue {
        switch node {
        case .literal(let v): return v
        case .path(let segments): return Self.lookup(record, segments)
        case .meta(let name): return meta(name)
        case .member(let base, let key): return try eval(base)[key] ?? .null
        case .subscriptExpr(let base, let indexNode):
            let b = try eval(base)
            let i = try eval(indexNode)
            switch (b, i) {
            case (.object(let o), .string(let k)): return o[k] ?? .null
            case (.array(let a), _):
                guard let n = i.int64Value else {
                    if i == .null { return .null }
                    throw Failure("an array index must be an integer, got \(i.typeName)")
                }
                let idx = n < 0 ? Int64(a.count) + n : n
                return idx >= 0 && idx < Int64(a.count) ? a[Int(idx)] : .null
            case (.null, _): return .null
            default: return .null
            }
        case .array(let items):
            var out: [JSONValue] = []
            for item in items { out.append(try eval(item)) }
            return .array(out)
        case .unary(let op, let operand):
            let v = try eval(operand)
            if op == "!" {
                switch v {
                case .bool(let b): return .bool(!b)
                case .null: return .null
                default: throw Failure("'!' needs a boolean, got \(v.typeName)")
                }
            }
            switch v {
            case .integer(let i):
                guard i != Int64.min else { throw Failure("integer overflow in negation") }
                return .integer(-i)
            case .number(let d): return .number(-d)
            case .null: return .null
            default: throw Failure("'-' needs a number, got \(v.typeName)")
            }
        case .binary(let op, let l, let r):
            return try binary(op, l, r)
        case .ternary(let c, let a, let b):
            switch try eval(c) {
            case .bool(true): return try eval(a)
            case .bool(false), .null: return try eval(b)
            case let other: throw Failure("the condition of '?:' must be a boolean, got \(other.typeName)")
            }
        case .call(let name, let args):
            return try Functions.call(name, args, self)
        }
    }

    func meta(_ name: String) -> JSONValue {
        switch name {
        case "id": return .string(context.id)
        case "key": return context.key.map { .string($0) } ?? .null
        case "event_time": return context.eventTimeMs.map { .integer($0) } ?? .null
        case "topic": return .string(context.topic)
        case "partition": return .integer(Int64(context.partition))
        case "offset": return .integer(context.offset)
        default: return record // $value
        }
    }

    static func lookup(_ root: JSONValue, _ segments: [PathSegment]) -> JSONValue {
        var current = root
        for s in segments {
            switch (s, current) {
            case (.key(let k), .object(let o)): current = o[k] ?? .null
            case (.index(let i), .array(let a)): current = i < a.count ? a[i] : .null
            default: return .null
            }
        }
        return current
    }

    func binary(_ op: String, _ ln: ExprNode, _ rn: ExprNode) throws(Failure) -> JSONValue {
        // Short-circuit operators first.
        switch op {
        case "&&":
            let l = try eval(ln)
            if l == .bool(false) { return .bool(false) }
            let r = try eval(rn)
            return try logical(l, r, and: true)
        case "||":
            let l = try eval(ln)
            if l == .bool(true) { return .bool(true) }
            let r = try eval(rn)
            return try logical(l, r, and: false)
        case "??":
            let l = try eval(ln)
            return l == .null ? try eval(rn) : l
        default: break
        }
        let l = try eval(ln)
        let r = try eval(rn)
        switch op {
        case "==": return .bool(l.jsonEquals(r))
        case "!=": return .bool(!l.jsonEquals(r))
        case "<", "<=", ">", ">=":
            guard let c = Self.compare(l, r) else { return .bool(false) }
            switch op {
            case "<": return .bool(c < 0)
            case "<=": return .bool(c <= 0)
            case ">": return .bool(c > 0)
            default: return .bool(c >= 0)
            }
        case "in":
            switch r {
            case .array(let items): return .bool(items.contains { $0.jsonEquals(l) })
            case .string(let s):
                guard case .string(let needle) = l else { throw Failure("'in' a string needs a string on the left, got \(l.typeName)") }
                return .bool(s.contains(needle))
            case .object(let o):
                guard case .string(let k) = l else { return .bool(false) }
                return .bool(o[k] != nil)
            case .null: return .bool(false)
            default: throw Failure("'in' needs an array, string or object on the right, got \(r.typeName)")
            }
        default:
            return try arithmetic(op, l, r)
        }
    }

    func logical(_ l: JSONValue, _ r: JSONValue, and: Bool) throws(Failure) -> JSONValue {
        func b(_ v: JSONValue) throws(Failure) -> Bool? {
            switch v {
            case .bool(let x): return x
            case .null: return nil
            default: throw Failure("'\(and ? "&&" : "||")' needs booleans, got \(v.typeName)")
            }
        }
        let x = try b(l)
        let y = try b(r)
        if and {
            if x == false || y == false { return .bool(false) }
            if x == nil || y == nil { return .null }
            return .bool(true)
        }
        if x == true || y == true { return .bool(true) }
        if x == nil || y == nil { return .null }
        return .bool(false)
    }

    /// Numbers compare by value, strings lexicographically; anything else (or a mix) is not ordered.
    static func compare(_ l: JSONValue, _ r: JSONValue) -> Int? {
        switch (l, r) {
        case (.integer(let a), .integer(let b)): return a < b ? -1 : a > b ? 1 : 0
        case (.string(let a), .string(let b)): return a < b ? -1 : a > b ? 1 : 0
        default:
            guard let a = l.doubleValue, let b = r.doubleValue else { return nil }
            return a < b ? -1 : a > b ? 1 : 0
        }
    }

    func arithmetic(_ op: String, _ l: JSONValue, _ r: JSONValue) throws(Failure) -> JSONValue {
        if l == .null || r == .null { return .null }
        if op == "+" {
            if case .string(let a) = l, case .string(let b) = r { return .string(a + b) }
            if case .array(let a) = l, case .array(let b) = r { return .array(a + b) }
        }
        if case .integer(let a) = l, case .integer(let b) = r {
            switch op {
            case "+":
                let (v, o) = a.addingReportingOverflow(b)
                if o { throw Failure("integer overflow in \(a) + \(b)") }
                return .integer(v)
            case "-":
                let (v, o) = a.subtractingReportingOverflow(b)
                if o { throw Failure("integer overflow in \(a) - \(b)") }
                return .integer(v)
            case "*":
                let (v, o) = a.multipliedReportingOverflow(by: b)
                if o { throw Failure("integer overflow in \(a) * \(b)") }
                return .integer(v)
            case "/":
                guard b != 0 else { throw Failure("division by zero") }
                let (q, o) = a.dividedReportingOverflow(by: b)
                if o { throw Failure("integer overflow in \(a) / \(b)") }
                return a % b == 0 ? .integer(q) : .number(Double(a) / Double(b))
            default:
                guard b != 0 else { throw Failure("modulo by zero") }
                let (v, o) = a.remainderReportingOverflow(dividingBy: b)
                if o { throw Failure("integer overflow in \(a) % \(b)") }
                return .integer(v)
            }
        }
        guard let a = l.doubleValue, let b = r.doubleValue else {
            throw Failure("'\(op)' needs numbers\(op == "+" ? " or two strings" : ""), got \(l.typeName) and \(r.typeName)")
        }
        let result: Double
        switch op {
        case "+": result = a + b
        case "-": result = a - b
        case "*": result = a * b
        case "/":
            guard b != 0 else { throw Failure("division by zero") }
            result = a / b
        default:
            guard b != 0 else { throw Failure("modulo by zero") }
            result = a.truncatingRemainder(dividingBy: b)
        }
        guard result.isFinite else { throw Failure("'\(op)' overflowed to infinity") }
        return .number(result)
    }
}

/// The built-in functions.
enum Functions {
    static let arity: [String: ClosedRange<Int>] = [
        "lower": 1...1, "upper": 1...1, "trim": 1...1, "len": 1...1, "concat": 0...Int.max, "contains": 2...2,
        "starts_with": 2...2, "ends_with": 2...2, "replace": 3...3, "substr": 2...3, "abs": 1...1, "round": 1...2,
        "floor": 1...1, "ceil": 1...1, "min": 1...Int.max, "max": 1...Int.max, "to_number": 1...1, "to_string": 1...1,
        "to_int": 1...1, "exists": 1...1, "coalesce": 1...Int.max, "if": 3...3, "now_ms": 0...0, "parse_time": 1...1,
        "format_time": 1...1, "hash": 1...1, "is_number": 1...1, "is_string": 1...1, "is_null": 1...1,
    ]

    typealias Failure = ExprEnv.Failure

    static func call(_ name: String, _ args: [ExprNode], _ env: ExprEnv) throws(Failure) -> JSONValue {
        // Lazy ones.
        switch name {
        case "if":
            switch try env.eval(args[0]) {
            case .bool(true): return try env.eval(args[1])
            case .bool(false), .null: return try env.eval(args[2])
            case let v: throw Failure("if() needs a boolean condition, got \(v.typeName)")
            }
        case "coalesce":
            for a in args {
                let v = try env.eval(a)
                if v != .null { return v }
            }
            return .null
        case "exists":
            guard case .path(let segs) = args[0] else { return .bool(try env.eval(args[0]) != .null) }
            return .bool(exists(env.record, segs))
        default: break
        }
        var v: [JSONValue] = []
        for a in args { v.append(try env.eval(a)) }
        func str(_ i: Int) throws(Failure) -> String? {
            switch v[i] {
            case .string(let s): return s
            case .null: return nil
            default: throw Failure("\(name)() needs a string, got \(v[i].typeName)")
            }
        }
        func num(_ i: Int) throws(Failure) -> Double? {
            if v[i] == .null { return nil }
            guard let d = v[i].doubleValue else { throw Failure("\(name)() needs a number, got \(v[i].typeName)") }
            return d
        }
        switch name {
        case "lower": return try str(0).map { .string($0.lowercased()) } ?? .null
        case "upper": return try str(0).map { .string($0.uppercased()) } ?? .null
        case "trim": return try str(0).map { .string($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? .null
        case "len":
            switch v[0] {
            case .string(let s): return .integer(Int64(s.count))
            case .array(let a): return .integer(Int64(a.count))
            case .object(let o): return .integer(Int64(o.count))
            case .null: return .null
            default: throw Failure("len() needs a string, array or object, got \(v[0].typeName)")
            }
        case "concat":
            var s = ""
            for x in v {
                switch x {
                case .string(let t): s += t
                case .null: break
                default: s += x.jsonString
                }
            }
            return .string(s)
        case "contains":
            if case .array(let a) = v[0] { return .bool(a.contains { $0.jsonEquals(v[1]) }) }
            guard let s = try str(0), let t = try str(1) else { return .null }
            return .bool(s.contains(t))
        case "starts_with":
            guard let s = try str(0), let t = try str(1) else { return .null }
            return .bool(s.hasPrefix(t))
        case "ends_with":
            guard let s = try str(0), let t = try str(1) else { return .null }
            return .bool(s.hasSuffix(t))
        case "replace":
            guard let s = try str(0), let a = try str(1), let b = try str(2) else { return .null }
            guard !a.isEmpty else { return .string(s) }
            return .string(s.replacingOccurrences(of: a, with: b))
        case "substr":
            guard let s = try str(0) else { return .null }
            guard let start = v[1].int64Value else { throw Failure("substr() needs an integer start") }
            let chars = Array(s)
            let from = max(0, min(Int(clamping: start), chars.count))
            var to = chars.count
            if args.count == 3 {
                guard let n = v[2].int64Value, n >= 0 else { throw Failure("substr() needs a non-negative integer length") }
                to = min(chars.count, from + Int(clamping: n))
            }
            return .string(String(chars[from..<to]))
        case "abs":
            if case .integer(let i) = v[0] {
                guard i != Int64.min else { throw Failure("integer overflow in abs()") }
                return .integer(Swift.abs(i))
            }
            return try num(0).map { .number(Swift.abs($0)) } ?? .null
        case "round":
            if case .integer = v[0], args.count == 1 { return v[0] }
            guard let x = try num(0) else { return .null }
            var digits: Int64 = 0
            if args.count == 2 {
                guard let d = v[1].int64Value, (0...15).contains(d) else { throw Failure("round() digits must be 0...15") }
                digits = d
            }
            let factor = pow(10.0, Double(digits))
            let r = (x * factor).rounded() / factor
            if digits == 0, let i = Int64(exactly: r) { return .integer(i) }
            return .number(r)
        case "floor", "ceil":
            if case .integer = v[0] { return v[0] }
            guard let x = try num(0) else { return .null }
            let r = name == "floor" ? x.rounded(.down) : x.rounded(.up)
            return Int64(exactly: r).map { .integer($0) } ?? .number(r)
        case "min", "max":
            let values = v.count == 1 ? (v[0].arrayValue ?? [v[0]]) : v
            var best: JSONValue = .null
            for x in values where x != .null {
                if best == .null {
                    best = x
                    continue
                }
                guard let c = ExprEnv.compare(x, best) else {
                    throw Failure("\(name)() cannot compare \(x.typeName) with \(best.typeName)")
                }
                if (name == "min" && c < 0) || (name == "max" && c > 0) { best = x }
            }
            return best
        case "to_number":
            switch v[0] {
            case .integer, .number: return v[0]
            case .string(let s):
                let t = s.trimmingCharacters(in: .whitespaces)
                if let i = Int64(t) { return .integer(i) }
                if let d = Double(t), d.isFinite { return .number(d) }
                return .null
            case .bool(let b): return .integer(b ? 1 : 0)
            default: return .null
            }
        case "to_int":
            switch v[0] {
            case .integer: return v[0]
            case .number(let d): return Int64(exactly: d.rounded(.towardZero)).map { .integer($0) } ?? .null
            case .string(let s): return Int64(s.trimmingCharacters(in: .whitespaces)).map { .integer($0) } ?? .null
            case .bool(let b): return .integer(b ? 1 : 0)
            default: return .null
            }
        case "to_string":
            switch v[0] {
            case .string: return v[0]
            case .null: return .null
            default: return .string(v[0].jsonString)
            }
        case "now_ms": return .integer(Int64((Date().timeIntervalSince1970 * 1000).rounded()))
        case "parse_time":
            guard let s = try str(0) else { return .null }
            return TimeFormat.parse(s).map { .integer($0) } ?? .null
        case "format_time":
            guard let ms = v[0].int64Value else { return v[0] == .null ? .null : .string("") }
            return .string(TimeFormat.format(ms))
        case "hash":
            return .integer(Int64(bitPattern: FNV1a.hash(v[0].serialized()) & 0x7FFF_FFFF_FFFF_FFFF))
        case "is_number": return .bool(v[0].doubleValue != nil)
        case "is_string": return .bool(v[0].stringValue != nil)
        case "is_null": return .bool(v[0] == .null)
        default: throw Failure("unknown function \(name)()")
        }
    }

    static func exists(_ root: JSONValue, _ segments: [PathSegment]) -> Bool {
        var current = root
        for s in segments {
            switch (s, current) {
            case (.key(let k), .object(let o)):
                guard let next = o[k] else { return false }
                current = next
            case (.index(let i), .array(let a)):
                guard i < a.count else { return false }
                current = a[i]
            default: return false
            }
        }
        return true
    }
}

/// ISO-8601 (UTC) ⇄ milliseconds since the epoch.
public enum TimeFormat {
    public static func parse(_ s: String) -> Int64? {
        if let d = try? Date(s, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) {
            return Int64((d.timeIntervalSince1970 * 1000).rounded())
        }
        if let d = try? Date(s, strategy: Date.ISO8601FormatStyle()) {
            return Int64((d.timeIntervalSince1970 * 1000).rounded())
        }
        return nil
    }

    /// `2026-01-01T00:00:00.000Z`: UTC, millisecond precision, proleptic Gregorian calendar.
    // Computed arithmetically from days since the epoch: Foundation's formatter costs microseconds per
    // call, and window results format two times each.
    public static func format(_ ms: Int64) -> String {
        let (days, msOfDay) = ms.quotientAndRemainder(dividingBy: 86_400_000)
        let d = msOfDay < 0 ? days - 1 : days
        let t = msOfDay < 0 ? msOfDay + 86_400_000 : msOfDay
        // Civil date from days since 1970-01-01 (era-based, valid for the whole Int64 day range we accept).
        let z = d + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ n: Int64, _ width: Int) -> String {
            let s = String(n)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        let date = "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"
        return "\(date)T\(pad(t / 3_600_000, 2)):\(pad(t / 60_000 % 60, 2)):\(pad(t / 1000 % 60, 2)).\(pad(t % 1000, 3))Z"
    }
}
