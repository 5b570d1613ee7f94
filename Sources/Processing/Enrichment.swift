import Config
import Foundation
import StreamCore

/// `enrich:` — adds columns of a static table (CSV with a header, a JSON array of objects, or NDJSON)
/// to records whose `match` expression equals the table's `on` column. The table is read once, at start.
struct Enrichment: Sendable {
    enum Missing: String, Sendable { case keep, filter, deadLetter = "dead-letter" }

    let match: Expression
    let on: String
    let fields: [String]?
    let into: [PathSegment]?
    let missing: Missing
    let index: [String: [String: JSONValue]]
    let tableName: String

    init(_ node: ConfigNode, baseDirectory: String) throws(ConfigError) {
        let m = try node.mapping()
        let tableNode = try m.required("table", hint: "a CSV, JSON or NDJSON file, relative to the pipeline file")
        let table = try tableNode.string()
        let path = table.hasPrefix("/") ? table : URL(fileURLWithPath: baseDirectory).appendingPathComponent(table).path
        match = try StepProcessor.expression(try m.required("match", hint: "the record's lookup value, e.g. sensor_id"))
        on = try m.required("on", hint: "the table column to look up").string()
        fields = try m.optional("fields")?.stringList()
        into = try m.optional("into").map { n throws(ConfigError) in try StepProcessor.fieldPath(try n.string(), at: n) }
        let missingText = try m.choice("missing", ["keep", "filter", "dead-letter"], default: "keep")
        missing = Missing(rawValue: missingText) ?? .keep
        try m.finish()
        tableName = table
        let rows: [[String: JSONValue]]
        do {
            rows = try TableFile.load(path: path)
        } catch {
            throw tableNode.error("cannot load \(path): \(error)")
        }
        var index: [String: [String: JSONValue]] = [:]
        for row in rows {
            guard let keyValue = row[on] else {
                throw tableNode.error("\(path): a row has no column '\(on)'")
            }
            index[Self.key(keyValue)] = row
        }
        if let fields, let first = rows.first {
            for f in fields where first[f] == nil {
                throw tableNode.error("\(path) has no column '\(f)' (columns: \(first.keys.sorted().joined(separator: ", ")))")
            }
        }
        self.index = index
    }

    static func key(_ v: JSONValue) -> String {
        if case .string(let s) = v { return s }
        return v.jsonString
    }

    /// The enriched record, or nil to filter it.
    func apply(_ value: JSONValue, context: RecordContext, step: String) throws(ProcessingError) -> JSONValue? {
        let lookup: JSONValue
        do {
            lookup = try match.evaluate(value, context: context)
        } catch {
            throw ProcessingError(step: step, errorClass: "ExpressionError", message: error.message)
        }
        guard lookup != .null, let row = index[Self.key(lookup)] else {
            switch missing {
            case .keep: return value
            case .filter: return nil
            case .deadLetter:
                throw ProcessingError(
                    step: step, errorClass: "EnrichmentMissing",
                    message: "no row with \(on) = \(lookup.jsonString) in \(tableName)")
            }
        }
        var added: [String: JSONValue] = [:]
        for (k, v) in row where k != on && (fields?.contains(k) ?? true) { added[k] = v }
        if let into {
            var target = ExprEnv.lookup(value, into).objectValue ?? [:]
            target.merge(added) { $1 }
            return FieldPaths.setting(value, into, to: .object(target))
        }
        var object = value.objectValue ?? [:]
        object.merge(added) { $1 }
        return .object(object)
    }
}

/// Reads table files for enrichment.
enum TableFile {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func load(path: String) throws -> [[String: JSONValue]] {
        guard let data = FileManager.default.contents(atPath: path) else { throw Failure(description: "no such file") }
        let bytes = [UInt8](data)
        if path.hasSuffix(".json") {
            guard case .array(let items) = try JSONValue.parse(bytes) else { throw Failure(description: "expected a JSON array of objects") }
            return try items.map { item in
                guard case .object(let o) = item else { throw Failure(description: "expected a JSON array of objects") }
                return o
            }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        if path.hasSuffix(".ndjson") || path.hasSuffix(".jsonl") {
            var rows: [[String: JSONValue]] = []
            for (n, line) in text.split(whereSeparator: \.isNewline).enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                guard case .object(let o) = try JSONValue.parse(String(line)) else {
                    throw Failure(description: "line \(n + 1) is not a JSON object")
                }
                rows.append(o)
            }
            return rows
        }
        let records = try CSV.parse(text)
        guard let header = records.first else { return [] }
        var rows: [[String: JSONValue]] = []
        for (n, fields) in records.dropFirst().enumerated() {
            if fields.count == 1 && fields[0].isEmpty { continue }
            guard fields.count == header.count else {
                throw Failure(description: "row \(n + 2) has \(fields.count) fields, the header \(header.count)")
            }
            var row: [String: JSONValue] = [:]
            for (k, v) in zip(header, fields) { row[k] = CSV.infer(v) }
            rows.append(row)
        }
        return rows
    }
}

/// RFC 4180 CSV: quoted fields with commas, doubled quotes and line breaks; CRLF or LF.
/// Hand-written: SwiftCSV and CSV.swift are mirrored here but only this small reader is needed, and
/// the file source needs byte-exact rows for dead letters, which they do not expose.
public enum CSV {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// All records of a CSV text.
    public static func parse(_ text: String) throws -> [[String]] {
        var records: [[String]] = []
        var field = ""
        var fields: [String] = []
        var inQuotes = false
        var iterator = text.makeIterator()
        var pending: Character? = nil
        func nextChar() -> Character? {
            if let p = pending {
                pending = nil
                return p
            }
            return iterator.next()
        }
        var line = 1
        while let c = nextChar() {
            if inQuotes {
                if c == "\"" {
                    if let n = nextChar() {
                        if n == "\"" { field.append("\"") } else { inQuotes = false; pending = n }
                    } else {
                        inQuotes = false
                    }
                } else {
                    if c == "\n" || c == "\r\n" { line += 1 }
                    field.append(c)
                }
                continue
            }
            switch c {
            case "\"" where field.isEmpty: inQuotes = true
            case ",":
                fields.append(field)
                field = ""
            case "\n", "\r\n", "\r":
                fields.append(field)
                records.append(fields)
                fields = []
                field = ""
                line += 1
            default: field.append(c)
            }
        }
        if inQuotes { throw Failure(description: "unterminated quoted field at line \(line)") }
        if !field.isEmpty || !fields.isEmpty {
            fields.append(field)
            records.append(fields)
        }
        return records
    }

    /// A CSV field as a JSON value: integers, decimals, true/false, empty → null, else text.
    public static func infer(_ s: String) -> JSONValue {
        if s.isEmpty { return .null }
        if let i = Int64(s) { return .integer(i) }
        if let d = Double(s), d.isFinite, s.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), !s.hasPrefix("."), s.first != "+" {
            return .number(d)
        }
        if s == "true" { return .bool(true) }
        if s == "false" { return .bool(false) }
        return .string(s)
    }
}
