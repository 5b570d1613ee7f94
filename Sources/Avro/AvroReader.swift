import StreamCore

/// Reads Avro binary data written with one schema (the writer's) as values shaped by another (the
/// reader's), by the specification's schema-resolution rules; with one schema for both, plainly.
///
/// Values come out as the pipeline's JSON values, the same a JSON record of that shape would give:
///
/// | Avro | value |
/// |---|---|
/// | null, boolean | `null`, `true` / `false` |
/// | int, long | integer |
/// | float, double | number (NaN and infinities are kept; JSON text writes them as `null`) |
/// | string, enum | string |
/// | bytes, fixed | string of the code points U+0000–U+00FF, one per byte (as Avro's JSON encoding) |
/// | array, map, record | array, object, object |
/// | union | the branch's value itself, not wrapped |
/// | decimal | string of the exact decimal number (`"-12.30"`) |
/// | uuid; date, time, timestamps | string; the underlying integer (days, ms or µs) |
///
/// Hostile bytes give an ``AvroDecodingError``, never a crash: lengths and counts are checked against
/// the bytes left, nesting is bounded (``maxDepth``), and the data must end where the value ends.
public struct AvroReader: Sendable {
    public let writer: AvroSchema
    public let reader: AvroSchema
    let root: Plan
    let records: [RecordPlan]

    /// The deepest nesting of values (records, arrays, maps, unions) a record may have.
    public static let maxDepth = 128
    /// The most items all arrays and maps of one value may hold together when their items take no
    /// bytes (e.g. an array of nulls), which the bytes left cannot bound.
    public static let maxEmptyItems = 1_000_000

    /// Reads data written with `schema` as it is.
    public init(schema: AvroSchema) {
        var builder = PlanBuilder(writer: schema, reader: schema)
        // The same schema on both sides always resolves.
        let root = (try? builder.plan(schema.root, schema.root, path: "")) ?? .fail("unresolvable")
        self.writer = schema
        self.reader = schema
        self.root = root
        self.records = builder.records.map { $0 ?? RecordPlan(steps: [], defaults: []) }
    }

    /// Reads data written with `writer` as `reader` expects it. Throws when the two can never match
    /// (e.g. a reader field without default that the writer lacks); a writer union branch the reader
    /// cannot read fails only for data that takes that branch.
    public init(writer: AvroSchema, reader: AvroSchema) throws(AvroSchemaError) {
        var builder = PlanBuilder(writer: writer, reader: reader)
        let root = try builder.plan(writer.root, reader.root, path: "")
        self.writer = writer
        self.reader = reader
        self.root = root
        self.records = builder.records.map { $0 ?? RecordPlan(steps: [], defaults: []) }
    }

    /// Decodes one value that fills `bytes` exactly.
    public func decode(_ bytes: UnsafeRawBufferPointer) throws(AvroDecodingError) -> JSONValue {
        var d = Decoder(bytes: bytes, records: records)
        let value = try d.read(root, depth: 0)
        guard d.offset == bytes.count else {
            throw AvroDecodingError(offset: d.offset, message: "\(bytes.count - d.offset) bytes left after the value")
        }
        return value
    }

    /// Decodes one value that fills `bytes` exactly.
    public func decode(_ bytes: [UInt8]) throws(AvroDecodingError) -> JSONValue {
        let result = bytes.withUnsafeBytes { buffer in Result { () throws(AvroDecodingError) in try decode(buffer) } }
        return try result.get()
    }
}

/// Bytes that are not a value of the schema: where, and why.
public struct AvroDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var offset: Int
    public var message: String
    public var description: String { "invalid Avro data at byte \(offset): \(message)" }
}

/// How to read one writer value into the reader's shape.
indirect enum Plan: Sendable {
    case null, boolean
    /// int or long, as an integer (`asDouble`: promoted to a float or double reader); `int32`: the
    /// writer's type is int, so a value beyond 32 bits is invalid data.
    case varint(asDouble: Bool, int32: Bool)
    case float, double
    /// UTF-8 text (a string, or bytes read as a string: checked to be UTF-8).
    case text
    /// Bytes as code points U+0000–U+00FF (bytes, or a string read as bytes).
    case bytes
    case fixed(size: Int)
    case decimalBytes(scale: Int)
    case decimalFixed(size: Int, scale: Int)
    /// Writer symbol index → the reader's symbol (nil: not in the reader, and it has no default).
    case enumeration([String?])
    case array(Plan)
    case map(Plan)
    /// A writer union: a plan per writer branch.
    case union([Plan])
    case record(Int)
    /// Data the reader cannot read (a writer union branch with no match in the reader).
    case fail(String)
}

struct RecordPlan: Sendable {
    enum Step: Sendable {
        case read(String, Plan)
        case skip(Plan)
    }
    var steps: [Step]
    /// Reader fields the writer does not have, with their defaults.
    var defaults: [(String, JSONValue)]
}

/// Compiles the resolution of two schemas into plans (the specification's "Schema Resolution").
struct PlanBuilder {
    let writer: AvroSchema
    let reader: AvroSchema
    var records: [RecordPlan?] = []
    var recordIndex: [Pair: Int] = [:]

    struct Pair: Hashable {
        var writer: Int
        var reader: Int
        /// The reader side is the writer's schema too (a field the reader skips is read as written).
        var asWritten: Bool
    }

    func fail(_ path: String, _ message: String) -> AvroSchemaError { AvroSchemaError(path: path, message: message) }

    /// The node under any logical type.
    static func base(_ n: AvroSchema.Node) -> AvroSchema.Node {
        if case .logical(_, let inner) = n { return base(inner) }
        return n
    }

    func names(_ schema: AvroSchema, _ i: Int) -> Set<String> {
        let t = schema.named[i]
        return Set([t.fullName, String(t.name)] + t.aliases + t.aliases.map { String($0.split(separator: ".").last ?? "") })
    }

    /// Whether a writer named type and a reader named type are "the same" for resolution: equal
    /// unqualified names, or a reader alias naming the writer.
    func sameNamed(_ w: Int, _ r: Int, asWritten: Bool) -> Bool {
        let wt = writer.named[w]
        let rt = (asWritten ? writer : reader).named[r]
        return wt.name == rt.name || rt.aliases.contains(wt.fullName) || rt.aliases.contains { $0.split(separator: ".").last == wt.name }
    }

    /// Whether writer node `w` can be read by reader node `r` at all (used to choose union branches).
    func matches(_ w: AvroSchema.Node, _ r: AvroSchema.Node, asWritten: Bool = false) -> Bool {
        let reader = asWritten ? writer : reader
        switch (Self.base(w), Self.base(r)) {
        case (.null, .null), (.boolean, .boolean), (.int, .int), (.long, .long), (.float, .float), (.double, .double),
            (.string, .string), (.bytes, .bytes), (.string, .bytes), (.bytes, .string),
            (.int, .long), (.int, .float), (.int, .double), (.long, .float), (.long, .double), (.float, .double),
            (.array, .array), (.map, .map):
            return true
        case (.named(let a), .named(let b)):
            switch (writer.named[a].kind, reader.named[b].kind) {
            case (.record, .record), (.enumeration, .enumeration): return sameNamed(a, b, asWritten: asWritten)
            case (.fixed(let x), .fixed(let y)): return x == y && sameNamed(a, b, asWritten: asWritten)
            default: return false
            }
        default:
            return false
        }
    }

    mutating func plan(_ w: AvroSchema.Node, _ r: AvroSchema.Node, path: String, asWritten: Bool = false) throws(AvroSchemaError) -> Plan {
        let reader = asWritten ? writer : reader
        // A writer union: each branch against the reader.
        if case .union(let wb) = Self.base(w) {
            var plans: [Plan] = []
            for (i, b) in wb.enumerated() {
                do {
                    plans.append(try plan(b, r, path: "\(path)/\(i)", asWritten: asWritten))
                } catch {
                    plans.append(.fail(error.description))
                }
            }
            return .union(plans)
        }
        // A reader union: the first branch the writer matches exactly, else the first it can be promoted to.
        if case .union(let rb) = Self.base(r) {
            let exact = rb.first { Self.sameKind(Self.base(w), Self.base($0)) && matches(w, $0, asWritten: asWritten) }
            guard let branch = exact ?? rb.first(where: { matches(w, $0, asWritten: asWritten) }) else {
                throw fail(path, "no branch of the reader's union can read the writer's \(describe(w, writer))")
            }
            return try plan(w, branch, path: path, asWritten: asWritten)
        }
        let logical: AvroLogicalType? = {
            if case .logical(let l, _) = r { return l }
            return nil
        }()
        switch (Self.base(w), Self.base(r)) {
        case (.null, .null): return .null
        case (.boolean, .boolean): return .boolean
        case (.int, .int), (.int, .long): return .varint(asDouble: false, int32: true)
        case (.long, .long): return .varint(asDouble: false, int32: false)
        case (.int, .float), (.int, .double): return .varint(asDouble: true, int32: true)
        case (.long, .float), (.long, .double): return .varint(asDouble: true, int32: false)
        case (.float, .float), (.float, .double): return .float
        case (.double, .double): return .double
        case (.string, .string), (.bytes, .string): return .text
        case (.bytes, .bytes), (.string, .bytes):
            if case .decimal(_, let scale)? = logical { return .decimalBytes(scale: scale) }
            return .bytes
        case (.array(let wi), .array(let ri)): return .array(try plan(wi, ri, path: "\(path)/items", asWritten: asWritten))
        case (.map(let wv), .map(let rv)): return .map(try plan(wv, rv, path: "\(path)/values", asWritten: asWritten))
        case (.named(let a), .named(let b)):
            guard matches(w, r, asWritten: asWritten) else {
                throw fail(path, "the writer's \(describe(w, writer)) cannot be read as the reader's \(describe(r, reader))")
            }
            switch (writer.named[a].kind, reader.named[b].kind) {
            case (.fixed(let size), .fixed):
                if case .decimal(_, let scale)? = logical { return .decimalFixed(size: size, scale: scale) }
                return .fixed(size: size)
            case (.enumeration(let ws, _), .enumeration(let rs, let rdefault)):
                return .enumeration(ws.map { rs.contains($0) ? $0 : rdefault })
            case (.record(let wf), .record(let rf)):
                return .record(try recordPlan(Pair(writer: a, reader: b, asWritten: asWritten), wf, rf, path: path))
            default:
                throw fail(path, "the writer's \(describe(w, writer)) cannot be read as the reader's \(describe(r, reader))")
            }
        default:
            throw fail(path, "the writer's \(describe(w, writer)) cannot be read as the reader's \(describe(r, reader))")
        }
    }

    static func sameKind(_ a: AvroSchema.Node, _ b: AvroSchema.Node) -> Bool {
        switch (a, b) {
        case (.null, .null), (.boolean, .boolean), (.int, .int), (.long, .long), (.float, .float), (.double, .double),
            (.string, .string), (.bytes, .bytes), (.array, .array), (.map, .map), (.named, .named):
            return true
        default: return false
        }
    }

    mutating func recordPlan(
        _ pair: Pair, _ wf: [AvroSchema.Field], _ rf: [AvroSchema.Field], path: String
    ) throws(AvroSchemaError) -> Int {
        if let i = recordIndex[pair] { return i } // recursion: the plan is being built or done
        records.append(nil)
        let index = records.count - 1
        recordIndex[pair] = index
        var steps: [RecordPlan.Step] = []
        var matched: Set<String> = []
        for f in wf {
            if let target = rf.first(where: { $0.name == f.name || $0.aliases.contains(f.name) }) {
                steps.append(.read(target.name, try plan(f.type, target.type, path: "\(path)/\(f.name)", asWritten: pair.asWritten)))
                matched.insert(target.name)
            } else {
                steps.append(.skip(try plan(f.type, f.type, path: "\(path)/\(f.name)", asWritten: true)))
            }
        }
        var defaults: [(String, JSONValue)] = []
        for f in rf where !matched.contains(f.name) {
            guard let d = f.defaultValue else {
                throw fail(
                    "\(path)/\(f.name)",
                    "the reader's field '\(f.name)' is not in the writer's record and has no default")
            }
            defaults.append(
                (f.name, try AvroDefaults.value(d, as: f.type, in: pair.asWritten ? writer : reader, path: "\(path)/\(f.name)")))
        }
        records[index] = RecordPlan(steps: steps, defaults: defaults)
        return index
    }

    func describe(_ n: AvroSchema.Node, _ s: AvroSchema) -> String {
        AvroSchema.typeName(n) { "'\(s.named[$0].fullName)'" }
    }
}

/// The binary decoder, over borrowed bytes.
struct Decoder {
    let bytes: UnsafeRawBufferPointer
    let records: [RecordPlan]
    var offset = 0
    var emptyItems = 0

    init(bytes: UnsafeRawBufferPointer, records: [RecordPlan]) {
        self.bytes = bytes
        self.records = records
    }

    func fail(_ message: String) -> AvroDecodingError { AvroDecodingError(offset: offset, message: message) }

    mutating func byte() throws(AvroDecodingError) -> UInt8 {
        guard offset < bytes.count else { throw fail("the data ends early") }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// A zig-zag varint of at most 64 bits.
    mutating func long() throws(AvroDecodingError) -> Int64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try byte()
            guard shift < 64, !(shift == 63 && b & 0x7E != 0) else { throw fail("a varint longer than 64 bits") }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { break }
            shift += 7
        }
        return Int64(bitPattern: (result >> 1) ^ (0 &- (result & 1)))
    }

    mutating func int() throws(AvroDecodingError) -> Int64 {
        let v = try long()
        guard v >= Int64(Int32.min), v <= Int64(Int32.max) else { throw fail("an int out of 32-bit range") }
        return v
    }

    /// A byte length (bytes, string), checked against the bytes left.
    mutating func length() throws(AvroDecodingError) -> Int {
        let n = try long()
        guard n >= 0 else { throw fail("a negative length") }
        guard n <= Int64(bytes.count - offset) else { throw fail("a length of \(n) bytes, but only \(bytes.count - offset) are left") }
        return Int(n)
    }

    mutating func take(_ n: Int) throws(AvroDecodingError) -> UnsafeRawBufferPointer {
        guard n <= bytes.count - offset else { throw fail("\(n) bytes needed, \(bytes.count - offset) left") }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n])
    }

    static func latin1(_ raw: UnsafeRawBufferPointer) -> String {
        var s = String.UnicodeScalarView()
        for b in raw { s.append(Unicode.Scalar(b)) }
        return String(s)
    }

    /// The item count of the next block of an array or map (0 at the end), checked against the
    /// bytes left (or the cap on items that take no bytes).
    mutating func blockCount() throws(AvroDecodingError) -> Int {
        var n = try long()
        if n < 0 {
            guard n != Int64.min else { throw fail("a block count out of range") }
            n = -n
            _ = try long() // the block's byte size, which a reader may use to skip it
        }
        let left = Int64(bytes.count - offset)
        if n > left {
            // Only items of zero bytes can outnumber the bytes left.
            emptyItems += Int(min(n, Int64(AvroReader.maxEmptyItems) + 1))
            guard emptyItems <= AvroReader.maxEmptyItems else {
                throw fail("more than \(AvroReader.maxEmptyItems) items in \(left) bytes")
            }
        }
        return Int(n)
    }

    mutating func read(_ plan: Plan, depth: Int) throws(AvroDecodingError) -> JSONValue {
        switch plan {
        case .null: return .null
        case .boolean:
            switch try byte() {
            case 0: return .bool(false)
            case 1: return .bool(true)
            case let b: throw fail("a boolean byte of \(b)")
            }
        case .varint(let asDouble, let int32):
            let v = int32 ? try int() : try long()
            return asDouble ? .number(Double(v)) : .integer(v)
        case .float:
            let raw = try take(4)
            var bits: UInt32 = 0
            for i in 0..<4 { bits |= UInt32(raw[i]) << (8 * UInt32(i)) }
            return .number(Double(Float(bitPattern: bits)))
        case .double:
            let raw = try take(8)
            var bits: UInt64 = 0
            for i in 0..<8 { bits |= UInt64(raw[i]) << (8 * UInt64(i)) }
            return .number(Double(bitPattern: bits))
        case .text:
            let raw = try take(try length())
            guard let s = String(validating: raw, as: UTF8.self) else { throw fail("a string that is not UTF-8") }
            return .string(s)
        case .bytes:
            return .string(Self.latin1(try take(try length())))
        case .fixed(let size):
            return .string(Self.latin1(try take(size)))
        case .decimalBytes(let scale):
            return .string(try AvroDecimal.string(twosComplement: try take(try length()), scale: scale, offset: offset))
        case .decimalFixed(let size, let scale):
            return .string(try AvroDecimal.string(twosComplement: try take(size), scale: scale, offset: offset))
        case .enumeration(let symbols):
            let i = try long()
            guard i >= 0, i < symbols.count else { throw fail("enum index \(i) of \(symbols.count) symbols") }
            guard let s = symbols[Int(i)] else { throw fail("the writer's enum symbol #\(i) is not known to the reader") }
            return .string(s)
        case .array(let item):
            guard depth < AvroReader.maxDepth else { throw fail("nested deeper than \(AvroReader.maxDepth)") }
            var items: [JSONValue] = []
            while true {
                let n = try blockCount()
                if n == 0 { break }
                items.reserveCapacity(min(items.count + n, items.count + bytes.count - offset + 1))
                for _ in 0..<n { items.append(try read(item, depth: depth + 1)) }
            }
            return .array(items)
        case .map(let valuePlan):
            guard depth < AvroReader.maxDepth else { throw fail("nested deeper than \(AvroReader.maxDepth)") }
            var members: [String: JSONValue] = [:]
            while true {
                let n = try blockCount()
                if n == 0 { break }
                for _ in 0..<n {
                    let raw = try take(try length())
                    guard let key = String(validating: raw, as: UTF8.self) else { throw fail("a map key that is not UTF-8") }
                    members[key] = try read(valuePlan, depth: depth + 1)
                }
            }
            return .object(members)
        case .union(let branches):
            guard depth < AvroReader.maxDepth else { throw fail("nested deeper than \(AvroReader.maxDepth)") }
            let i = try long()
            guard i >= 0, i < branches.count else { throw fail("union branch \(i) of \(branches.count)") }
            return try read(branches[Int(i)], depth: depth + 1)
        case .record(let index):
            guard depth < AvroReader.maxDepth else { throw fail("nested deeper than \(AvroReader.maxDepth)") }
            let plan = records[index]
            var members: [String: JSONValue] = [:]
            members.reserveCapacity(plan.steps.count + plan.defaults.count)
            for step in plan.steps {
                switch step {
                case .read(let name, let p): members[name] = try read(p, depth: depth + 1)
                case .skip(let p): _ = try read(p, depth: depth + 1)
                }
            }
            for (name, value) in plan.defaults { members[name] = value }
            return .object(members)
        case .fail(let message):
            throw fail(message)
        }
    }
}
