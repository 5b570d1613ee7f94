import Config
import Foundation
import StreamCore

/// How records become rows: the table, its columns and where each column's value comes from, and
/// the upsert key. Shared by the SQLite and PostgreSQL sinks.
///
/// ```yaml
/// table: readings
/// key: [sensor_id, seq]            # default [id]: a column `id` holding the record id
/// columns:
///   sensor_id: text                # short form: the field of the same name
///   temperature_c: { type: real, field: readings.temp }
///   event_time: { type: timestamp, from: $event_time }
///   payload: { type: json, from: $value, required: true }
/// ```
public struct TableMapping: Sendable {
    public enum ColumnType: String, Sendable, CaseIterable {
        case text, integer, real, boolean, json, timestamp
    }

    public enum Origin: Sendable, Equatable {
        case field([FieldStep])
        case meta(String)
    }

    public enum FieldStep: Sendable, Equatable {
        case key(String)
        case index(Int)
    }

    public struct Column: Sendable {
        public var name: String
        public var type: ColumnType
        public var origin: Origin
        public var required: Bool
    }

    /// A column value ready to bind.
    public enum Value: Sendable, Equatable {
        case null
        case text(String)
        case integer(Int64)
        case real(Double)
        case boolean(Bool)
        case json(String)
        case timestamp(Int64)
    }

    public let table: String
    public let key: [String]
    public let columns: [Column]

    static let metaNames = ["$id", "$key", "$event_time", "$topic", "$partition", "$offset", "$value"]

    public init(_ m: ConfigMapping) throws(ConfigError) {
        let tableNode = try m.required("table", hint: "the table to write (created if missing)")
        table = try Self.identifier(try tableNode.string(), at: tableNode)
        var columns: [Column] = []
        let columnsNode = try m.required("columns", hint: "column: type, or column: { type, field | from, required }")
        let cm = try columnsNode.mapping()
        for name in cm.keys {
            let node = try cm.required(name)
            let column = try Self.identifier(name, at: node)
            if case .scalar = node.node {
                let typeText = try node.choice(ColumnType.allCases.map(\.rawValue))
                columns.append(
                    Column(name: column, type: ColumnType(rawValue: typeText) ?? .text, origin: .field([.key(name)]), required: false))
            } else {
                let c = try node.mapping()
                let typeText = try c.required("type").choice(ColumnType.allCases.map(\.rawValue))
                var origin = Origin.field([.key(name)])
                if let f = c.optional("field") {
                    origin = .field(try Self.path(try f.string(), at: f))
                }
                if let from = c.optional("from") {
                    let text = try from.string()
                    if text.hasPrefix("$") {
                        guard Self.metaNames.contains(text) else {
                            throw from.error("'\(text)' is not one of \(Self.metaNames.joined(separator: ", "))")
                        }
                        origin = .meta(String(text.dropFirst()))
                    } else {
                        origin = .field(try Self.path(text, at: from))
                    }
                }
                columns.append(
                    Column(
                        name: column, type: ColumnType(rawValue: typeText) ?? .text, origin: origin,
                        required: try c.bool("required", default: false)))
                try c.finish()
            }
        }
        try cm.finish()
        var key = ["id"]
        if let k = m.optional("key") {
            key = try k.stringList()
            for name in key where !columns.contains(where: { $0.name == name }) {
                throw k.error("key column '\(name)' is not among the columns")
            }
            if key.isEmpty { throw k.error("the key needs at least one column") }
        } else if !columns.contains(where: { $0.name == "id" }) {
            columns.insert(Column(name: "id", type: .text, origin: .meta("id"), required: true), at: 0)
        }
        self.key = key
        self.columns = columns
    }

    static func identifier(_ s: String, at node: ConfigNode) throws(ConfigError) -> String {
        guard let first = s.first, first.isLetter || first == "_", s.count <= 63,
            s.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
        else {
            throw node.error("'\(s)' is not a valid SQL name: letters, digits and '_', starting with a letter, at most 63 characters")
        }
        return s
    }

    /// `a.b[0].c` → steps.
    static func path(_ text: String, at node: ConfigNode) throws(ConfigError) -> [FieldStep] {
        var steps: [FieldStep] = []
        for part in text.split(separator: ".", omittingEmptySubsequences: false) {
            var name = Substring(part)
            var indexes: [Int] = []
            while name.hasSuffix("]"), let open = name.lastIndex(of: "[") {
                guard let i = Int(name[name.index(after: open)..<name.index(before: name.endIndex)]), i >= 0 else {
                    throw node.error("bad index in field path '\(text)'")
                }
                indexes.insert(i, at: 0)
                name = name[..<open]
            }
            guard !name.isEmpty || !indexes.isEmpty else { throw node.error("empty segment in field path '\(text)'") }
            if !name.isEmpty { steps.append(.key(String(name))) }
            steps += indexes.map { .index($0) }
        }
        return steps
    }

    /// The row of a record, or why it cannot be one.
    public func row(for record: SinkRecord) -> Result<[Value], SinkRejection> {
        var values: [Value] = []
        values.reserveCapacity(columns.count)
        for column in columns {
            let raw: JSONValue
            switch column.origin {
            case .field(let steps): raw = Self.lookup(record.value, steps)
            case .meta(let name):
                switch name {
                case "id": raw = .string(record.id)
                case "key": raw = record.key.map { .string(String(decoding: $0, as: UTF8.self)) } ?? .null
                case "event_time": raw = record.eventTimeMs.map { .integer($0) } ?? .null
                case "topic": raw = .string(record.topic)
                case "partition": raw = .integer(Int64(record.partition))
                case "offset": raw = .integer(record.offset)
                default: raw = record.value
                }
            }
            if raw == .null {
                if column.required || key.contains(column.name) {
                    return .failure(
                        SinkRejection(
                            record: record,
                            reason: "column \(column.name): no value (\(key.contains(column.name) ? "a key column" : "required"))"))
                }
                values.append(.null)
                continue
            }
            guard let v = Self.convert(raw, to: column.type) else {
                return .failure(
                    SinkRejection(
                        record: record,
                        reason:
                            "column \(column.name) (\(column.type.rawValue)): "
                            + "cannot store \(raw.typeName) \(String(raw.jsonString.prefix(60)))"
                    ))
            }
            values.append(v)
        }
        return .success(values)
    }

    static func lookup(_ root: JSONValue, _ steps: [FieldStep]) -> JSONValue {
        var current = root
        for s in steps {
            switch (s, current) {
            case (.key(let k), .object(let o)): current = o[k] ?? .null
            case (.index(let i), .array(let a)): current = i < a.count ? a[i] : .null
            default: return .null
            }
        }
        return current
    }

    static func convert(_ v: JSONValue, to type: ColumnType) -> Value? {
        switch type {
        case .text:
            switch v {
            case .string(let s): return .text(s)
            case .integer, .number, .bool: return .text(v.jsonString)
            default: return nil
            }
        case .integer:
            if case .string(let s) = v { return Int64(s).map { .integer($0) } }
            if case .bool = v { return nil }
            return v.int64Value.map { .integer($0) }
        case .real:
            if case .string(let s) = v { return Double(s).flatMap { $0.isFinite ? .real($0) : nil } }
            return v.doubleValue.map { .real($0) }
        case .boolean:
            if case .bool(let b) = v { return .boolean(b) }
            return nil
        case .json:
            return .json(v.jsonString)
        case .timestamp:
            switch v {
            case .integer(let ms): return .timestamp(ms)
            case .number(let d) where d.isFinite && abs(d) < 1e15: return .timestamp(Int64(d))
            case .string(let s): return SinkTime.parse(s).map { .timestamp($0) }
            default: return nil
            }
        }
    }

    /// The records' rows and the refusals; within the batch a later record with the same key wins.
    public func rows(for batch: [SinkRecord]) -> (rows: [[Value]], rejections: [SinkRejection]) {
        var rejections: [SinkRejection] = []
        var order: [[Value]] = []
        var positions: [[Value]: Int] = [:]
        let keyIndexes = key.compactMap { k in columns.firstIndex { $0.name == k } }
        for record in batch {
            switch row(for: record) {
            case .failure(let r): rejections.append(r)
            case .success(let values):
                let k = keyIndexes.map { values[$0] }
                if let at = positions[k] {
                    order[at] = values
                } else {
                    positions[k] = order.count
                    order.append(values)
                }
            }
        }
        return (order, rejections)
    }
}

extension TableMapping.Value: Hashable {}

/// ISO-8601 ⇄ milliseconds for timestamp columns.
enum SinkTime {
    static func parse(_ s: String) -> Int64? {
        if let d = try? Date(s, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) {
            return Int64((d.timeIntervalSince1970 * 1000).rounded())
        }
        if let d = try? Date(s, strategy: Date.ISO8601FormatStyle()) {
            return Int64((d.timeIntervalSince1970 * 1000).rounded())
        }
        return nil
    }
}
