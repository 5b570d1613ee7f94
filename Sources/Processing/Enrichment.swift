import Config
import Foundation
import StreamCore

/// `enrich:` — adds columns of a table to records whose `match` expression finds a row.
///
/// The table is either a static file (`table:` — CSV with a header, a JSON array of objects, or
/// NDJSON — read once at start, looked up by its `on` column) or a topic of the pipeline (`topic:` —
/// the latest JSON object per Kafka key, supplied by a ``LookupTable``, looked up by the key).
struct Enrichment: Sendable {
    enum Missing: String, Sendable {
        case keep, filter
        case deadLetter = "dead-letter"
    }

    /// Where rows come from.
    enum Source: Sendable {
        /// A file: rows indexed by the text of their `on` column.
        case file(index: [String: [String: JSONValue]], on: String, name: String)
        /// A logical topic: rows by Kafka key.
        case topic(String, any LookupTable)
    }

    /// Default of `max_rows` for `topic:` tables.
    static let defaultMaxRows = 1_000_000

    let match: Expression
    let fields: [String]?
    let into: [PathSegment]?
    let missing: Missing
    let source: Source

    /// The logical table topic, when the step reads one.
    var tableTopic: String? {
        if case .topic(let t, _) = source { return t }
        return nil
    }

    init(_ node: ConfigNode, baseDirectory: String, tables: LookupTableProvider) throws(ConfigError) {
        let m = try node.mapping()
        let tableNode = m.optional("table")
        let topicNode = m.optional("topic")
        match = try StepProcessor.expression(try m.required("match", hint: "the record's lookup value, e.g. sensor_id"))
        fields = try m.optional("fields")?.stringList()
        into = try m.optional("into").map { n throws(ConfigError) in try StepProcessor.fieldPath(try n.string(), at: n) }
        let missingText = try m.choice("missing", ["keep", "filter", "dead-letter"], default: "keep")
        missing = Missing(rawValue: missingText) ?? .keep
        switch (tableNode, topicNode) {
        case (nil, nil):
            throw node.error("enrich needs 'table' (a CSV, JSON or NDJSON file) or 'topic' (a logical topic of the pipeline)")
        case (.some, .some(let topicNode)):
            throw topicNode.error("enrich takes either 'table' (a file) or 'topic' (a logical topic), not both")
        case (.some(let tableNode), nil):
            let on = try m.required("on", hint: "the table column to look up").string()
            try m.finish()
            source = try Self.loadFile(tableNode, on: on, fields: fields, baseDirectory: baseDirectory)
        case (nil, .some(let topicNode)):
            if let onNode = m.optional("on") {
                throw onNode.error("'on' is for table files; with 'topic' the match expression is compared with the topic's Kafka key")
            }
            let maxRows = try m.int("max_rows", default: Self.defaultMaxRows, in: 1...Int(Int32.max))
            try m.finish()
            let topic = try topicNode.string()
            source = .topic(topic, try tables(LookupTableRequest(topic: topic, maxRows: maxRows, node: topicNode)))
        }
    }

    static func loadFile(_ tableNode: ConfigNode, on: String, fields: [String]?, baseDirectory: String) throws(ConfigError) -> Source {
        let table = try tableNode.string()
        let path = table.hasPrefix("/") ? table : URL(fileURLWithPath: baseDirectory).appendingPathComponent(table).path
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
        return .file(index: index, on: on, name: table)
    }

    /// The lookup text of a value: a string as it is, anything else as its JSON text (`42`, `true`).
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
            throw ProcessingError(step: step, errorClass: .expressionError, message: error.message)
        }
        let found: [String: JSONValue]?
        var skipColumn: String?
        switch source {
        case .file(let index, let on, _):
            found = lookup == .null ? nil : index[Self.key(lookup)]
            skipColumn = on
        case .topic(let topic, let table):
            found = lookup == .null ? nil : table.row(forKey: Self.key(lookup))
            if found == nil, lookup != .null, let why = table.incompleteReason {
                // The row may exist upstream but was not kept: say so rather than guess.
                throw ProcessingError(
                    step: step, errorClass: .enrichmentTableIncomplete,
                    message: "no row with key \(lookup.jsonString) in topic \(topic), and the table is incomplete: \(why)")
            }
        }
        guard let row = found else {
            switch missing {
            case .keep: return value
            case .filter: return nil
            case .deadLetter:
                let what: String
                switch source {
                case .file(_, let on, let name): what = "no row with \(on) = \(lookup.jsonString) in \(name)"
                case .topic(let topic, _): what = "no row with key \(lookup.jsonString) in topic \(topic)"
                }
                throw ProcessingError(step: step, errorClass: .enrichmentMissing, message: what)
            }
        }
        var added: [String: JSONValue] = [:]
        for (k, v) in row where k != skipColumn && (fields?.contains(k) ?? true) { added[k] = v }
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
            guard case .array(let items) = try JSONValue.parse(bytes) else {
                throw Failure(description: "expected a JSON array of objects")
            }
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
// Hand-written: SwiftCSV and CSV.swift are mirrored here but only this small reader is needed, and
// the file source needs byte-exact rows for dead letters, which they do not expose.
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
                        if n == "\"" {
                            field.append("\"")
                        } else {
                            inQuotes = false
                            pending = n
                        }
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
