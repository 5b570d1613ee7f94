import StreamCore

// Written here, from the Apache Avro 1.11 specification: no Swift Avro library is mirrored on the
// machines this project builds on. Fuzzed by `make fuzz` (target `avro`).

/// A parsed Avro schema: its root type and the named types (records, enums, fixed) it declares,
/// which the tree refers to by index, so recursive types need no reference cycles.
public struct AvroSchema: Sendable, Hashable {
    /// A type in the schema tree.
    public indirect enum Node: Sendable, Hashable {
        case null, boolean, int, long, float, double, bytes, string
        /// A record, enum or fixed type: an index into ``AvroSchema/named``.
        case named(Int)
        case array(Node)
        case map(Node)
        case union([Node])
        /// A logical type over its underlying type (an unknown or invalid one is ignored, as the
        /// specification says, and only the underlying type is kept).
        case logical(AvroLogicalType, Node)
    }

    /// A record, enum or fixed type.
    public struct NamedType: Sendable, Hashable {
        public enum Kind: Sendable, Hashable {
            case record([Field])
            case enumeration(symbols: [String], default: String?)
            case fixed(size: Int)
        }

        /// The full name (`namespace.name`).
        public var fullName: String
        /// Full names this type is also known by (for schema resolution).
        public var aliases: [String]
        public var kind: Kind

        /// The unqualified name.
        public var name: Substring { fullName.split(separator: ".").last ?? Substring(fullName) }
    }

    /// A record field.
    public struct Field: Sendable, Hashable {
        public var name: String
        public var type: Node
        /// The default as written in the schema (JSON), used when a writer lacks the field.
        public var defaultValue: JSONValue?
        public var aliases: [String]
    }

    public let root: Node
    public let named: [NamedType]

    /// A node's type as Avro names it (`long`, `map`, a named type's full name via `name(of:)`);
    /// a logical type is named by its underlying type.
    static func typeName(_ node: Node, named name: (Int) -> String) -> String {
        switch node {
        case .null: return "null"
        case .boolean: return "boolean"
        case .int: return "int"
        case .long: return "long"
        case .float: return "float"
        case .double: return "double"
        case .bytes: return "bytes"
        case .string: return "string"
        case .named(let i): return name(i)
        case .array: return "array"
        case .map: return "map"
        case .union: return "union"
        case .logical(_, let inner): return typeName(inner, named: name)
        }
    }

    /// The named type at `index`.
    public func type(_ index: Int) -> NamedType { named[index] }

    /// The index of the named type with this full name.
    public func index(of fullName: String) -> Int? { named.firstIndex { $0.fullName == fullName } }
}

/// Avro's logical types.
public enum AvroLogicalType: Sendable, Hashable {
    case decimal(precision: Int, scale: Int)
    case uuid
    case date
    case timeMillis, timeMicros
    case timestampMillis, timestampMicros
    case localTimestampMillis, localTimestampMicros
}

/// A schema that is not valid Avro: where (a JSON-pointer-like path) and why.
public struct AvroSchemaError: Error, Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

extension AvroSchema {
    /// The deepest nesting of types a schema may have (a hostile schema cannot exhaust the stack).
    public static let maxDepth = 64

    /// Parses a schema from its JSON text.
    public init(json text: String) throws(AvroSchemaError) {
        let value: JSONValue
        do {
            value = try JSONValue.parse(Array(text.utf8))
        } catch {
            throw AvroSchemaError(path: "", message: "the schema is not JSON: \(error)")
        }
        try self.init(value)
    }

    /// Parses a schema from its JSON value.
    public init(_ json: JSONValue) throws(AvroSchemaError) {
        var parser = SchemaParser()
        let root = try parser.parse(json, namespace: nil, path: "", depth: 0)
        // Named types referenced before their definition completed (recursion) are resolved already:
        // a reference is only accepted to a name whose definition has begun.
        self.root = root
        self.named = parser.named.map { $0! }
    }
}

/// Builds the tree and the named-type table.
private struct SchemaParser {
    var named: [AvroSchema.NamedType?] = []
    var byName: [String: Int] = [:]

    static let primitives: [String: AvroSchema.Node] = [
        "null": .null, "boolean": .boolean, "int": .int, "long": .long, "float": .float, "double": .double, "bytes": .bytes,
        "string": .string,
    ]

    func fail(_ path: String, _ message: String) -> AvroSchemaError { AvroSchemaError(path: path, message: message) }

    mutating func parse(_ json: JSONValue, namespace: String?, path: String, depth: Int) throws(AvroSchemaError) -> AvroSchema.Node {
        guard depth < AvroSchema.maxDepth else { throw fail(path, "nested deeper than \(AvroSchema.maxDepth) levels") }
        switch json {
        case .string(let name):
            return try reference(name, namespace: namespace, path: path)
        case .array(let branches):
            guard !branches.isEmpty else { throw fail(path, "a union needs at least one branch") }
            var nodes: [AvroSchema.Node] = []
            var seen: Set<String> = []
            for (i, b) in branches.enumerated() {
                let node = try parse(b, namespace: namespace, path: "\(path)/\(i)", depth: depth + 1)
                if case .union = node { throw fail("\(path)/\(i)", "a union may not directly contain a union") }
                let key = unionKey(node)
                guard seen.insert(key).inserted else { throw fail("\(path)/\(i)", "the union has two branches of type \(key)") }
                nodes.append(node)
            }
            return .union(nodes)
        case .object(let o):
            guard let typeValue = o["type"] else { throw fail(path, "missing \"type\"") }
            let node: AvroSchema.Node
            switch typeValue {
            case .string("record"), .string("error"):
                node = try record(o, namespace: namespace, path: path, depth: depth)
            case .string("enum"):
                node = try enumeration(o, namespace: namespace, path: path)
            case .string("fixed"):
                node = try fixed(o, namespace: namespace, path: path)
            case .string("array"):
                guard let items = o["items"] else { throw fail(path, "an array needs \"items\"") }
                node = .array(try parse(items, namespace: namespace, path: "\(path)/items", depth: depth + 1))
            case .string("map"):
                guard let values = o["values"] else { throw fail(path, "a map needs \"values\"") }
                node = .map(try parse(values, namespace: namespace, path: "\(path)/values", depth: depth + 1))
            default:
                // `{"type": "int", "logicalType": …}` and `{"type": {…}}`.
                node = try parse(typeValue, namespace: namespace, path: "\(path)/type", depth: depth + 1)
            }
            if case .string(let logical)? = o["logicalType"], let l = Self.logicalType(logical, o, over: node, named: named) {
                return .logical(l, node)
            }
            return node
        default:
            throw fail(path, "expected a type name, a union (array) or a type definition (object)")
        }
    }

    func unionKey(_ node: AvroSchema.Node) -> String {
        AvroSchema.typeName(node) { named[$0]?.fullName ?? "#\($0)" }
    }

    func fullName(_ name: String, namespace: String?) -> String {
        if name.contains(".") || namespace == nil || namespace == "" { return name }
        return "\(namespace!).\(name)"
    }

    mutating func reference(_ name: String, namespace: String?, path: String) throws(AvroSchemaError) -> AvroSchema.Node {
        if let p = Self.primitives[name] { return p }
        for candidate in [fullName(name, namespace: namespace), name] {
            if let i = byName[candidate] { return .named(i) }
        }
        throw fail(path, "unknown type '\(name)' (not a primitive, and no named type of that name is defined before it)")
    }

    static func checkName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else {
            return false
        }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    mutating func declare(
        _ o: [String: JSONValue], namespace: String?, path: String
    ) throws(AvroSchemaError) -> (index: Int, fullName: String, namespace: String?, aliases: [String]) {
        guard case .string(let name)? = o["name"] else { throw fail(path, "a named type needs a \"name\" string") }
        var ns = namespace
        if case .string(let given)? = o["namespace"] { ns = given }
        let full = fullName(name, namespace: ns)
        for part in full.split(separator: ".", omittingEmptySubsequences: false) where !Self.checkName(String(part)) {
            throw fail(path, "'\(full)' is not a valid Avro name ([A-Za-z_][A-Za-z0-9_]*, dot-separated)")
        }
        guard Self.primitives[full] == nil else { throw fail(path, "'\(full)' is a primitive type name") }
        guard byName[full] == nil else { throw fail(path, "the type '\(full)' is defined twice") }
        let typeNamespace = full.contains(".") ? String(full[..<full.lastIndex(of: ".")!]) : nil
        var aliases: [String] = []
        if case .array(let list)? = o["aliases"] {
            for case .string(let a) in list { aliases.append(fullName(a, namespace: typeNamespace)) }
        }
        named.append(nil)
        byName[full] = named.count - 1
        return (named.count - 1, full, typeNamespace, aliases)
    }

    mutating func record(_ o: [String: JSONValue], namespace: String?, path: String, depth: Int) throws(AvroSchemaError) -> AvroSchema.Node
    {
        let d = try declare(o, namespace: namespace, path: path)
        // The definition begins before its fields are parsed, so a field may refer to the record.
        named[d.index] = AvroSchema.NamedType(fullName: d.fullName, aliases: d.aliases, kind: .record([]))
        guard case .array(let fieldList)? = o["fields"] else { throw fail(path, "a record needs a \"fields\" array") }
        var fields: [AvroSchema.Field] = []
        var names: Set<String> = []
        for (i, f) in fieldList.enumerated() {
            let fp = "\(path)/fields/\(i)"
            guard case .object(let fo) = f, case .string(let fname)? = fo["name"] else { throw fail(fp, "a field needs a \"name\" string") }
            guard Self.checkName(fname) else { throw fail(fp, "'\(fname)' is not a valid field name") }
            guard names.insert(fname).inserted else { throw fail(fp, "the field '\(fname)' appears twice") }
            guard let ftype = fo["type"] else { throw fail(fp, "the field '\(fname)' needs a \"type\"") }
            let node = try parse(ftype, namespace: d.namespace, path: "\(fp)/type", depth: depth + 1)
            var aliases: [String] = []
            if case .array(let list)? = fo["aliases"] { for case .string(let a) in list { aliases.append(a) } }
            fields.append(AvroSchema.Field(name: fname, type: node, defaultValue: fo["default"], aliases: aliases))
        }
        named[d.index]?.kind = .record(fields)
        return .named(d.index)
    }

    mutating func enumeration(_ o: [String: JSONValue], namespace: String?, path: String) throws(AvroSchemaError) -> AvroSchema.Node {
        let d = try declare(o, namespace: namespace, path: path)
        guard case .array(let list)? = o["symbols"] else { throw fail(path, "an enum needs a \"symbols\" array") }
        var symbols: [String] = []
        for case .string(let s) in list {
            guard Self.checkName(s) else { throw fail(path, "'\(s)' is not a valid enum symbol") }
            guard !symbols.contains(s) else { throw fail(path, "the symbol '\(s)' appears twice") }
            symbols.append(s)
        }
        guard symbols.count == list.count else { throw fail(path, "enum symbols must be strings") }
        var defaultSymbol: String?
        if case .string(let s)? = o["default"] {
            guard symbols.contains(s) else { throw fail(path, "the default '\(s)' is not one of the symbols") }
            defaultSymbol = s
        }
        named[d.index] = AvroSchema.NamedType(
            fullName: d.fullName, aliases: d.aliases, kind: .enumeration(symbols: symbols, default: defaultSymbol))
        return .named(d.index)
    }

    mutating func fixed(_ o: [String: JSONValue], namespace: String?, path: String) throws(AvroSchemaError) -> AvroSchema.Node {
        let d = try declare(o, namespace: namespace, path: path)
        guard case .integer(let size)? = o["size"], size >= 0, size <= 1 << 24 else {
            throw fail(path, "a fixed type needs a \"size\" from 0 to 16777216")
        }
        named[d.index] = AvroSchema.NamedType(fullName: d.fullName, aliases: d.aliases, kind: .fixed(size: Int(size)))
        return .named(d.index)
    }

    /// The logical type `name` on `node`, or nil when it does not apply (then it is ignored).
    static func logicalType(
        _ name: String, _ o: [String: JSONValue], over node: AvroSchema.Node, named: [AvroSchema.NamedType?]
    ) -> AvroLogicalType? {
        switch (name, node) {
        case ("decimal", .bytes), ("decimal", .named):
            guard case .integer(let precision)? = o["precision"], precision > 0 else { return nil }
            var scale: Int64 = 0
            if let s = o["scale"] {
                guard case .integer(let v) = s, v >= 0, v <= precision else { return nil }
                scale = v
            }
            if case .named(let i) = node {
                guard case .fixed(let size)? = named[i]?.kind else { return nil }
                // The largest precision `size` bytes of two's complement can hold.
                let maxDigits = size >= 1 ? Int((Double(8 * size - 1) * 0.30102999566398120).rounded(.down)) : 0
                guard precision <= maxDigits else { return nil }
            }
            return .decimal(precision: Int(precision), scale: Int(scale))
        case ("uuid", .string): return .uuid
        case ("date", .int): return .date
        case ("time-millis", .int): return .timeMillis
        case ("time-micros", .long): return .timeMicros
        case ("timestamp-millis", .long): return .timestampMillis
        case ("timestamp-micros", .long): return .timestampMicros
        case ("local-timestamp-millis", .long): return .localTimestampMillis
        case ("local-timestamp-micros", .long): return .localTimestampMicros
        default: return nil
        }
    }
}
