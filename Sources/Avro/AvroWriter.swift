import StreamCore

/// Writes pipeline JSON values as Avro binary data of a schema: the inverse of ``AvroReader`` (the
/// same value mapping). A union takes the first branch the value fits: `null`; a boolean; an
/// integer as int (if in range), long, float or double; a number as double or float; a string as
/// string, enum (one of its symbols), bytes, fixed (of that length) or decimal; an array; an object as
/// the record whose fields it has (required ones present, no unknown keys), else a map.
public struct AvroWriter: Sendable {
    public let schema: AvroSchema

    public init(schema: AvroSchema) {
        self.schema = schema
    }

    /// The binary encoding of `value`, or an error naming the path where it does not fit the schema.
    public func encode(_ value: JSONValue) throws(AvroEncodingError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        try encode(value, as: schema.root, path: "", depth: 0, into: &out)
        return out
    }

    /// Appends the encoding of `value` to `out`.
    public func encode(_ value: JSONValue, into out: inout [UInt8]) throws(AvroEncodingError) {
        try encode(value, as: schema.root, path: "", depth: 0, into: &out)
    }

    func fail(_ path: String, _ message: String) -> AvroEncodingError { AvroEncodingError(path: path, message: message) }

    static func long(_ v: Int64, into out: inout [UInt8]) {
        var z = UInt64(bitPattern: (v << 1) ^ (v >> 63))
        while z >= 0x80 {
            out.append(UInt8(z & 0x7F) | 0x80)
            z >>= 7
        }
        out.append(UInt8(z))
    }

    /// A string of code points U+0000–U+00FF as the bytes they stand for; nil if another code point occurs.
    static func latin1Bytes(_ s: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count)
        for scalar in s.unicodeScalars {
            guard scalar.value <= 0xFF else { return nil }
            bytes.append(UInt8(scalar.value))
        }
        return bytes
    }

    func encode(_ value: JSONValue, as node: AvroSchema.Node, path: String, depth: Int, into out: inout [UInt8]) throws(AvroEncodingError) {
        guard depth < AvroReader.maxDepth else { throw fail(path, "nested deeper than \(AvroReader.maxDepth)") }
        switch (node, value) {
        case (.null, .null): return
        case (.boolean, .bool(let b)): out.append(b ? 1 : 0)
        case (.int, .integer(let i)):
            guard i >= Int64(Int32.min), i <= Int64(Int32.max) else { throw fail(path, "\(i) is out of an int's range") }
            Self.long(i, into: &out)
        case (.int, .number(let d)), (.long, .number(let d)):
            guard d.rounded() == d, let i = Int64(exactly: d) else { throw fail(path, "\(d) is not a whole number") }
            try encode(.integer(i), as: node, path: path, depth: depth, into: &out)
        case (.long, .integer(let i)): Self.long(i, into: &out)
        case (.float, .integer(let i)): try encode(.number(Double(i)), as: node, path: path, depth: depth, into: &out)
        case (.float, .number(let d)):
            let bits = Float(d).bitPattern
            for k in 0..<4 { out.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt32(k)))) }
        case (.double, .integer(let i)): try encode(.number(Double(i)), as: node, path: path, depth: depth, into: &out)
        case (.double, .number(let d)):
            let bits = d.bitPattern
            for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(k)))) }
        case (.string, .string(let s)):
            Self.long(Int64(s.utf8.count), into: &out)
            out.append(contentsOf: s.utf8)
        case (.bytes, .string(let s)):
            guard let bytes = Self.latin1Bytes(s) else { throw fail(path, "bytes are written as a string of code points U+0000–U+00FF") }
            Self.long(Int64(bytes.count), into: &out)
            out.append(contentsOf: bytes)
        case (.array(let item), .array(let items)):
            if !items.isEmpty {
                Self.long(Int64(items.count), into: &out)
                for (i, v) in items.enumerated() { try encode(v, as: item, path: "\(path)/\(i)", depth: depth + 1, into: &out) }
            }
            out.append(0)
        case (.map(let valueNode), .object(let members)):
            if !members.isEmpty {
                Self.long(Int64(members.count), into: &out)
                // Sorted keys: the same value always gives the same bytes.
                for key in members.keys.sorted() {
                    Self.long(Int64(key.utf8.count), into: &out)
                    out.append(contentsOf: key.utf8)
                    try encode(members[key]!, as: valueNode, path: "\(path)/\(key)", depth: depth + 1, into: &out)
                }
            }
            out.append(0)
        case (.union(let branches), _):
            guard let i = branches.firstIndex(where: { fits(value, $0) }) else {
                throw fail(path, "\(value.typeName) fits no branch of the union")
            }
            Self.long(Int64(i), into: &out)
            try encode(value, as: branches[i], path: path, depth: depth + 1, into: &out)
        case (.named(let index), _):
            try encodeNamed(value, schema.named[index], path: path, depth: depth, into: &out)
        case (.logical(let logical, let inner), _):
            try encodeLogical(value, logical, inner, path: path, depth: depth, into: &out)
        default:
            throw fail(path, "expected \(expectation(node)), got \(value.typeName)")
        }
    }

    func encodeNamed(
        _ value: JSONValue, _ type: AvroSchema.NamedType, path: String, depth: Int, into out: inout [UInt8]
    ) throws(AvroEncodingError) {
        switch (type.kind, value) {
        case (.record(let fields), .object(let members)):
            for f in fields {
                let v: JSONValue
                if let given = members[f.name] {
                    v = given
                } else if let d = f.defaultValue {
                    do {
                        v = try AvroDefaults.value(d, as: f.type, in: schema, path: "\(path)/\(f.name)")
                    } catch {
                        throw fail("\(path)/\(f.name)", "the field's default is not valid: \(error.message)")
                    }
                } else if fits(.null, f.type) {
                    v = .null // an absent optional field
                } else {
                    throw fail("\(path)/\(f.name)", "missing field of record '\(type.fullName)'")
                }
                try encode(v, as: f.type, path: "\(path)/\(f.name)", depth: depth + 1, into: &out)
            }
        case (.enumeration(let symbols, _), .string(let s)):
            guard let i = symbols.firstIndex(of: s) else {
                throw fail(path, "'\(s.prefix(64))' is not a symbol of enum '\(type.fullName)' (\(symbols.joined(separator: ", ")))")
            }
            Self.long(Int64(i), into: &out)
        case (.fixed(let size), .string(let s)):
            guard let bytes = Self.latin1Bytes(s), bytes.count == size else {
                throw fail(path, "fixed '\(type.fullName)' takes exactly \(size) bytes (a string of code points U+0000–U+00FF)")
            }
            out.append(contentsOf: bytes)
        default:
            throw fail(path, "expected \(expectation(.named(schema.index(of: type.fullName) ?? 0))), got \(value.typeName)")
        }
    }

    func encodeLogical(
        _ value: JSONValue, _ logical: AvroLogicalType, _ inner: AvroSchema.Node, path: String, depth: Int, into out: inout [UInt8]
    ) throws(AvroEncodingError) {
        guard case .decimal(_, let scale) = logical else {
            return try encode(value, as: inner, path: path, depth: depth, into: &out)
        }
        let text: String
        switch value {
        case .string(let s): text = s
        case .integer(let i): text = String(i)
        case .number(let d) where d.isFinite: text = "\(d)"
        default: throw fail(path, "a decimal is written from a string or a number, got \(value.typeName)")
        }
        var size: Int?
        if case .named(let i) = inner, case .fixed(let n) = schema.named[i].kind { size = n }
        guard let bytes = AvroDecimal.bytes(text, scale: scale, size: size) else {
            throw fail(path, "'\(text.prefix(64))' is not a decimal of scale \(scale)\(size.map { " in \($0) bytes" } ?? "")")
        }
        if size == nil { Self.long(Int64(bytes.count), into: &out) }
        out.append(contentsOf: bytes)
    }

    /// Whether `value` can be written as `node` (the union branch choice; shallow for records:
    /// required fields present and no unknown keys).
    func fits(_ value: JSONValue, _ node: AvroSchema.Node) -> Bool {
        switch (node, value) {
        case (.null, .null), (.boolean, .bool), (.long, .integer), (.float, .integer), (.double, .integer),
            (.float, .number), (.double, .number), (.string, .string), (.array, .array), (.map, .object):
            return true
        case (.int, .integer(let i)): return i >= Int64(Int32.min) && i <= Int64(Int32.max)
        case (.bytes, .string(let s)): return Self.latin1Bytes(s) != nil
        case (.logical(.decimal(_, let scale), let inner), .string(let s)):
            var size: Int?
            if case .named(let i) = inner, case .fixed(let n) = schema.named[i].kind { size = n }
            return AvroDecimal.bytes(s, scale: scale, size: size) != nil
        case (.logical(_, let inner), _): return fits(value, inner)
        case (.named(let i), _):
            switch (schema.named[i].kind, value) {
            case (.enumeration(let symbols, _), .string(let s)): return symbols.contains(s)
            case (.fixed(let size), .string(let s)): return Self.latin1Bytes(s)?.count == size
            case (.record(let fields), .object(let members)):
                let names = Set(fields.map(\.name))
                guard members.keys.allSatisfy({ names.contains($0) }) else { return false }
                return fields.allSatisfy { f in members[f.name] != nil || f.defaultValue != nil || fits(.null, f.type) }
            default: return false
            }
        default: return false
        }
    }

    func expectation(_ node: AvroSchema.Node) -> String {
        switch node {
        case .null: return "null"
        case .boolean: return "a boolean"
        case .int: return "an int"
        case .long: return "a long"
        case .float, .double: return "a number"
        case .string: return "a string"
        case .bytes: return "bytes (a string)"
        case .array: return "an array"
        case .map: return "an object (map)"
        case .union: return "a union"
        case .logical(_, let inner): return expectation(inner)
        case .named(let i):
            switch schema.named[i].kind {
            case .record: return "an object (record '\(schema.named[i].fullName)')"
            case .enumeration: return "a string (enum '\(schema.named[i].fullName)')"
            case .fixed: return "a string (fixed '\(schema.named[i].fullName)')"
            }
        }
    }
}

/// A value that does not fit the schema: where and why.
public struct AvroEncodingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// Field defaults: JSON as written in a schema → the value a reader gives (the same mapping as
/// decoding; a union's default is of its first branch, as the specification says).
enum AvroDefaults {
    static func value(
        _ d: JSONValue, as node: AvroSchema.Node, in schema: AvroSchema, path: String
    ) throws(AvroSchemaError)
        -> JSONValue
    {
        func bad() -> AvroSchemaError {
            AvroSchemaError(path: path, message: "the default \(d.jsonString.prefix(80)) does not fit the field's type")
        }
        switch (node, d) {
        case (.null, .null), (.boolean, .bool), (.string, .string), (.bytes, .string): return d
        case (.int, .integer), (.long, .integer): return d
        case (.float, .integer(let i)), (.double, .integer(let i)): return .number(Double(i))
        case (.float, .number), (.double, .number): return d
        case (.array(let item), .array(let items)):
            var out: [JSONValue] = []
            for (i, v) in items.enumerated() { out.append(try value(v, as: item, in: schema, path: "\(path)/\(i)")) }
            return .array(out)
        case (.map(let valueNode), .object(let members)):
            var out: [String: JSONValue] = [:]
            for (k, v) in members { out[k] = try value(v, as: valueNode, in: schema, path: "\(path)/\(k)") }
            return .object(out)
        case (.union(let branches), _):
            guard let first = branches.first else { throw bad() }
            return try value(d, as: first, in: schema, path: path)
        case (.logical(.decimal(_, let scale), let inner), .string(let s)):
            // A decimal default is written as bytes (code points); read it as the reader would.
            guard let bytes = AvroWriter.latin1Bytes(s) else { throw bad() }
            if case .named(let i) = inner, case .fixed(let n) = schema.named[i].kind, n != bytes.count { throw bad() }
            do {
                return .string(
                    try bytes.withUnsafeBytes { raw throws(AvroDecodingError) in
                        try AvroDecimal.string(twosComplement: raw, scale: scale, offset: 0)
                    })
            } catch {
                throw bad()
            }
        case (.logical(_, let inner), _): return try value(d, as: inner, in: schema, path: path)
        case (.named(let i), _):
            switch (schema.named[i].kind, d) {
            case (.enumeration(let symbols, _), .string(let s)):
                guard symbols.contains(s) else { throw bad() }
                return d
            case (.fixed(let size), .string(let s)):
                guard AvroWriter.latin1Bytes(s)?.count == size else { throw bad() }
                return d
            case (.record(let fields), .object(let members)):
                var out: [String: JSONValue] = [:]
                for f in fields {
                    guard let v = members[f.name] ?? f.defaultValue else { throw bad() }
                    out[f.name] = try value(v, as: f.type, in: schema, path: "\(path)/\(f.name)")
                }
                return .object(out)
            default: throw bad()
            }
        default: throw bad()
        }
    }
}
