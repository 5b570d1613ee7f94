import Config
import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import StreamCore

/// `type: postgres` — rows upserted into a PostgreSQL table, the consumed offsets in the same
/// transaction (one connection, owned here; reconnects on the next write after a failure).
public final class PostgresSink: RecordSink, Sendable {
    public static let spec = ConnectorSpec(
        type: "postgres",
        summary: "Upserts into a PostgreSQL table (created from the columns); offsets stored in the same transaction.",
        fields: [
            .init("url", "string", "postgres://user:password@host:5432/database"),
            .init("table", "string", "the table"),
            .init("key", "list of columns", default: "[id]", "upsert key"),
            .init("columns", "mapping", "as for sqlite"),
        ],
        examples: [
            "url: postgres://streamfirst:streamfirst@127.0.0.1:5432/streamfirst\ntable: readings\nkey: [sensor_id, seq]\ncolumns:\n"
                + "  sensor_id: text\n  seq: integer\n  temperature_c: real"
        ])

    public let configuration: PostgresConnection.Configuration
    public let mapping: TableMapping
    let logger: Logger
    private let connection = NIOLockedValueBox<PostgresConnection?>(nil)

    public var name: String { "postgres" }
    public var storesOffsets: Bool { true }

    public init(configuration: PostgresConnection.Configuration, mapping: TableMapping, logger: Logger) {
        self.configuration = configuration
        self.mapping = mapping
        self.logger = logger
    }

    convenience init(_ m: ConfigMapping, logger: Logger) throws(ConfigError) {
        let urlNode = try m.required("url", hint: "postgres://user:password@host:5432/database")
        let text = try urlNode.string()
        guard let url = URLComponents(string: text), url.scheme == "postgres" || url.scheme == "postgresql", let host = url.host,
            let user = url.user
        else {
            throw urlNode.error("expected postgres://user:password@host:port/database")
        }
        let database = url.path.hasPrefix("/") ? String(url.path.dropFirst()) : url.path
        let configuration = PostgresConnection.Configuration(
            host: host, port: url.port ?? 5432, username: user, password: url.password,
            database: database.isEmpty ? nil : database, tls: .disable)
        self.init(configuration: configuration, mapping: try TableMapping(m), logger: logger)
    }

    func db() async throws -> PostgresConnection {
        if let c = connection.withLockedValue({ $0 }), !c.isClosed { return c }
        let c = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        connection.withLockedValue { $0 = c }
        return c
    }

    public func open() async throws {
        let c = try await db()
        let columns = mapping.columns.map { "\"\($0.name)\" \(Self.sqlType($0.type))" }.joined(separator: ", ")
        let key = mapping.key.map { "\"\($0)\"" }.joined(separator: ", ")
        try await c.query(
            PostgresQuery(unsafeSQL: "CREATE TABLE IF NOT EXISTS \"\(mapping.table)\" (\(columns), PRIMARY KEY (\(key)))"), logger: logger)
        try await c.query(
            PostgresQuery(
                unsafeSQL:
                    "CREATE TABLE IF NOT EXISTS streamfirst_offsets (consumer_group TEXT NOT NULL, topic TEXT NOT NULL, "
                    + "partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
                    + "PRIMARY KEY (consumer_group, topic, partition))"
            ),
            logger: logger)
    }

    static func sqlType(_ t: TableMapping.ColumnType) -> String {
        switch t {
        case .text: return "TEXT"
        case .integer: return "BIGINT"
        case .real: return "DOUBLE PRECISION"
        case .boolean: return "BOOLEAN"
        case .json: return "JSONB"
        case .timestamp: return "TIMESTAMPTZ"
        }
    }

    public func storedOffsets(consumerGroup: String, topic: String) async throws -> [Int32: Int64] {
        var binds = PostgresBindings()
        binds.append(consumerGroup)
        binds.append(topic)
        let rows = try await db().query(
            PostgresQuery(
                unsafeSQL: "SELECT partition, next_offset FROM streamfirst_offsets WHERE consumer_group = $1 AND topic = $2", binds: binds),
            logger: logger)
        var out: [Int32: Int64] = [:]
        for try await (p, o) in rows.decode((Int32, Int64).self) { out[p] = o }
        return out
    }

    public func rejections(in batch: [SinkRecord]) -> [SinkRejection] { mapping.rows(for: batch).rejections }

    public func write(_ batch: [SinkRecord], offsets: [SinkOffset], consumerGroup: String) async throws -> [SinkRejection] {
        let (rows, rejections) = mapping.rows(for: batch)
        let c = try await db()
        do {
            try await c.query("BEGIN", logger: logger)
            let names = mapping.columns.map { "\"\($0.name)\"" }.joined(separator: ", ")
            let updates = mapping.columns.filter { !mapping.key.contains($0.name) }.map { "\"\($0.name)\" = EXCLUDED.\"\($0.name)\"" }
            let conflict = mapping.key.map { "\"\($0)\"" }.joined(separator: ", ")
            let onConflict = updates.isEmpty ? "DO NOTHING" : "DO UPDATE SET \(updates.joined(separator: ", "))"
            let perStatement = max(1, 30_000 / max(1, mapping.columns.count))
            var start = 0
            while start < rows.count {
                let chunk = rows[start..<min(rows.count, start + perStatement)]
                var binds = PostgresBindings(capacity: chunk.count * mapping.columns.count)
                var tuples: [String] = []
                var n = 0
                for row in chunk {
                    var placeholders: [String] = []
                    for (value, column) in zip(row, mapping.columns) {
                        n += 1
                        placeholders.append(column.type == .json ? "$\(n)::jsonb" : "$\(n)")
                        Self.bind(value, into: &binds)
                    }
                    tuples.append("(" + placeholders.joined(separator: ", ") + ")")
                }
                let sql =
                    "INSERT INTO \"\(mapping.table)\" (\(names)) VALUES \(tuples.joined(separator: ", ")) ON CONFLICT (\(conflict)) "
                    + "\(onConflict)"
                try await c.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger)
                start += chunk.count
            }
            for o in offsets {
                var binds = PostgresBindings()
                binds.append(consumerGroup)
                binds.append(o.topic)
                binds.append(o.partition)
                binds.append(o.nextOffset)
                try await c.query(
                    PostgresQuery(
                        unsafeSQL:
                            "INSERT INTO streamfirst_offsets (consumer_group, topic, partition, next_offset, updated_at) "
                            + "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (consumer_group, topic, partition) "
                            + "DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
                        binds: binds),
                    logger: logger)
            }
            try await c.query("COMMIT", logger: logger)
        } catch {
            _ = try? await c.query("ROLLBACK", logger: logger)
            throw error
        }
        return rejections
    }

    static func bind(_ v: TableMapping.Value, into binds: inout PostgresBindings) {
        switch v {
        case .null: binds.appendNull()
        case .text(let s), .json(let s): binds.append(s)
        case .integer(let i): binds.append(i)
        case .real(let d): binds.append(d)
        case .boolean(let b): binds.append(b)
        case .timestamp(let ms): binds.append(Date(timeIntervalSince1970: Double(ms) / 1000))
        }
    }

    public func count() async throws -> Int {
        let rows = try await db().query(PostgresQuery(unsafeSQL: "SELECT COUNT(*) FROM \"\(mapping.table)\""), logger: logger)
        for try await n in rows.decode(Int64.self) { return Int(n) }
        return 0
    }

    public func close() async {
        if let c = connection.withLockedValue({ v -> PostgresConnection? in
            defer { v = nil }
            return v
        }) {
            try? await c.close()
        }
    }
}
