import Config
import Foundation
import Logging
import NIOConcurrencyHelpers
import SQLiteNIO
import StreamCore

/// `type: sqlite` — rows upserted into an SQLite table, the consumed offsets in the same transaction.
///
/// The database runs in WAL mode with `synchronous=NORMAL`: a committed batch survives a crash of
/// the worker (not necessarily of the machine's power). sqlite-nio runs every call on NIO's thread
/// pool, never on the cooperative pool.
public final class SQLiteSink: RecordSink, Sendable {
    public static let spec = ConnectorSpec(
        type: "sqlite",
        summary: "Upserts into an SQLite table (created from the columns); offsets stored in the same transaction.",
        fields: [
            .init("path", "string", "the database file (parent directories are created)"),
            .init("table", "string", "the table"),
            .init("key", "list of columns", default: "[id]", "upsert key; default: a column id with the record id"),
            .init("columns", "mapping", "column: type (text, integer, real, boolean, json, timestamp) or { type, field | from, required }"),
        ],
        examples: [
            "path: out/readings.sqlite\ntable: readings\nkey: [sensor_id, seq]\ncolumns:\n  sensor_id: text\n  seq: integer\n"
                + "  temperature_c: real\n  event_time: { type: timestamp, from: $event_time }"
        ])

    public let path: String
    public let mapping: TableMapping
    let logger: Logger
    private let connection = NIOLockedValueBox<SQLiteConnection?>(nil)

    public var name: String { "sqlite" }
    public var storesOffsets: Bool { true }

    public init(path: String, mapping: TableMapping, logger: Logger) {
        self.path = path
        self.mapping = mapping
        self.logger = logger
    }

    convenience init(_ m: ConfigMapping, logger: Logger) throws(ConfigError) {
        let path = try m.required("path", hint: "the database file").string()
        self.init(path: path, mapping: try TableMapping(m), logger: logger)
    }

    func db() throws -> SQLiteConnection {
        guard let c = connection.withLockedValue({ $0 }) else { throw ConnectorError("the SQLite sink is not open") }
        return c
    }

    public func open() async throws {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let c = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
        connection.withLockedValue { $0 = c }
        _ = try await c.query("PRAGMA journal_mode=WAL")
        _ = try await c.query("PRAGMA synchronous=NORMAL")
        _ = try await c.query("PRAGMA busy_timeout=5000")
        let columns = mapping.columns.map { "\"\($0.name)\" \(Self.sqlType($0.type))" }.joined(separator: ", ")
        let key = mapping.key.map { "\"\($0)\"" }.joined(separator: ", ")
        _ = try await c.query("CREATE TABLE IF NOT EXISTS \"\(mapping.table)\" (\(columns), PRIMARY KEY (\(key)))")
        _ = try await c.query(
            "CREATE TABLE IF NOT EXISTS streamfirst_offsets (consumer_group TEXT NOT NULL, topic TEXT NOT NULL, "
                + "partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, updated_at TEXT NOT NULL, "
                + "PRIMARY KEY (consumer_group, topic, partition))"
        )
    }

    static func sqlType(_ t: TableMapping.ColumnType) -> String {
        switch t {
        case .text, .json, .timestamp: return "TEXT"
        case .integer, .boolean: return "INTEGER"
        case .real: return "REAL"
        }
    }

    public func storedOffsets(consumerGroup: String, topic: String) async throws -> [Int32: Int64] {
        let rows = try await db().query(
            "SELECT partition, next_offset FROM streamfirst_offsets WHERE consumer_group = ? AND topic = ?",
            [.text(consumerGroup), .text(topic)])
        var out: [Int32: Int64] = [:]
        for row in rows {
            if let p = row.column("partition")?.integer, let o = row.column("next_offset")?.integer {
                out[Int32(p)] = Int64(o)
            }
        }
        return out
    }

    public func rejections(in batch: [SinkRecord]) -> [SinkRejection] {
        mapping.rows(for: batch).rejections
    }

    public func write(_ batch: [SinkRecord], offsets: [SinkOffset], consumerGroup: String) async throws -> [SinkRejection] {
        let c = try db()
        let (rows, rejections) = mapping.rows(for: batch)
        let names = mapping.columns.map { "\"\($0.name)\"" }.joined(separator: ", ")
        let updates = mapping.columns.filter { !mapping.key.contains($0.name) }.map { "\"\($0.name)\" = excluded.\"\($0.name)\"" }
        let conflict = mapping.key.map { "\"\($0)\"" }.joined(separator: ", ")
        let onConflict = updates.isEmpty ? "DO NOTHING" : "DO UPDATE SET \(updates.joined(separator: ", "))"
        let perRow = "(" + Array(repeating: "?", count: mapping.columns.count).joined(separator: ", ") + ")"
        let rowsPerStatement = max(1, 30_000 / max(1, mapping.columns.count))
        _ = try await c.query("BEGIN IMMEDIATE")
        do {
            var start = 0
            while start < rows.count {
                let chunk = rows[start..<min(rows.count, start + rowsPerStatement)]
                let sql =
                    "INSERT INTO \"\(mapping.table)\" (\(names)) VALUES "
                    + Array(repeating: perRow, count: chunk.count).joined(separator: ", ") + " ON CONFLICT (\(conflict)) \(onConflict)"
                _ = try await c.query(sql, chunk.flatMap { $0.map(Self.bind) })
                start += chunk.count
            }
            let now = ISO8601DateFormatter().string(from: Date())
            for o in offsets {
                _ = try await c.query(
                    "INSERT INTO streamfirst_offsets (consumer_group, topic, partition, next_offset, updated_at) "
                        + "VALUES (?, ?, ?, ?, ?) ON CONFLICT (consumer_group, topic, partition) "
                        + "DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
                    [.text(consumerGroup), .text(o.topic), .integer(Int(o.partition)), .integer(Int(o.nextOffset)), .text(now)])
            }
            _ = try await c.query("COMMIT")
        } catch {
            _ = try? await c.query("ROLLBACK")
            throw error
        }
        return rejections
    }

    static func bind(_ v: TableMapping.Value) -> SQLiteData {
        switch v {
        case .null: return .null
        case .text(let s), .json(let s): return .text(s)
        case .integer(let i): return .integer(Int(i))
        case .real(let d): return .float(d)
        case .boolean(let b): return .integer(b ? 1 : 0)
        case .timestamp(let ms): return .text(TimeText.iso8601(ms))
        }
    }

    public func count() async throws -> Int {
        let rows = try await db().query("SELECT COUNT(*) AS n FROM \"\(mapping.table)\"")
        return rows.first?.column("n")?.integer ?? 0
    }

    public func close() async {
        if let c = connection.withLockedValue({ v -> SQLiteConnection? in
            defer { v = nil }
            return v
        }) {
            try? await c.close()
        }
    }
}
