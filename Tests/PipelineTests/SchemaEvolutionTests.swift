import EmbeddedBroker
import Foundation
import Kafka
import LocalRun
import Logging
import Pipeline
import PipelineModel
import PipelineTools
import SQLiteNIO
import StreamCore
import Testing

/// A new schema version rolled out mid-stream through the four worker processes: while validate
/// knows only v1, v2 orders are dead-lettered (UnknownSchemaVersion), nothing is lost; after v2 and
/// its migration are deployed and validate restarted, v1 and v2 orders flow side by side (v1 upcast),
/// and a redrive brings the early v2 orders in. Every order ends in the table once.
@Suite struct SchemaEvolutionTests {
    static let shipped = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("pipelines/schemas/orders")

    static func order(_ n: Int, version: Int?) -> String {
        let v = version.map { "\"schema_version\":\($0)," } ?? ""
        if version == 2 {
            return "{\(v)\"order_id\":\"o-\(n)\",\"customer_id\":\"c-\(n)\",\"amount\":\(n),\"currency\":\"GBP\",\"channel\":\"store\"}\n"
        }
        return "{\(v)\"order_id\":\"o-\(n)\",\"customer\":\"c-\(n)\",\"amount\":\(n),\"currency\":\"EUR\"}\n"
    }

    @Test func rollingOutV2MidStreamLosesNothing() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-evolve-\(UUID().uuidString.prefix(8))")
        let subjectDir = work.appendingPathComponent("schemas/orders")
        try FileManager.default.createDirectory(at: subjectDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        // Phase 1: only v1 is deployed.
        try FileManager.default.copyItem(
            at: Self.shipped.appendingPathComponent("v1.json"), to: subjectDir.appendingPathComponent("v1.json"))
        try "version_field: schema_version\ndefault_version: 1\n".write(
            to: subjectDir.appendingPathComponent("subject.yaml"), atomically: true, encoding: .utf8)
        let file = work.appendingPathComponent("orders.yaml").path
        let db = work.appendingPathComponent("orders.sqlite").path
        try """
        name: evolve
        kafka:
          bootstrap: "${KAFKA_BROKERS:-127.0.0.1:9092}"
          consumer: { session.timeout.ms: 6000, heartbeat.interval.ms: 500 }
        topics:
          raw: { name: ev.raw, partitions: 2 }
          valid: { name: ev.valid, partitions: 2 }
          out: { name: ev.out, partitions: 2 }
          dead: { name: ev.dead, partitions: 1 }
        dead_letter: dead
        ingest: { output: raw, source: { type: stdin }, key: order_id }
        validate: { input: raw, output: valid, schema: orders }
        process:
          input: valid
          output: out
          steps: [ { set: { amount_cents: "to_int(round(amount * 100))" } } ]
        persist:
          input: out
          sink:
            type: sqlite
            path: \(db)
            table: orders
            key: [order_id]
            columns: { order_id: text, customer_id: text, channel: text, schema_version: integer, amount_cents: integer }
        """.write(toFile: file, atomically: true, encoding: .utf8)

        let local = try await LocalPipeline.launch(.init(pipelineFile: file, workDirectory: work.path, environment: [:]))
        do {
            try await local.start([.validate, .process, .persist])
            try await local.start(.ingest)
            let ingest = try #require(local.process(.ingest))
            try ingest.writeToStandardInput(
                Data(
                    [
                        Self.order(1, version: 1), Self.order(2, version: nil), Self.order(3, version: 2),
                        Self.order(4, version: 1), Self.order(5, version: 2),
                    ].joined().utf8))
            try await Self.waitForRows(local, 3)
            try await local.waitUntilDrained(timeout: .seconds(60))
            let early = try await local.readAll("dead")
            #expect(early.count == 2)
            #expect(early.allSatisfy { $0.header(DeadLetterHeader.exceptionClass)?.value == Array("UnknownSchemaVersion".utf8) })

            // Phase 2: v2 and the migration are deployed; validate restarts; the stream goes on.
            try FileManager.default.copyItem(
                at: Self.shipped.appendingPathComponent("v2.json"), to: subjectDir.appendingPathComponent("v2.json"))
            try FileManager.default.removeItem(at: subjectDir.appendingPathComponent("subject.yaml"))
            try FileManager.default.copyItem(
                at: Self.shipped.appendingPathComponent("subject.yaml"), to: subjectDir.appendingPathComponent("subject.yaml"))
            #expect(await local.terminate(.validate)?.status == .init(code: 0, signaled: false))
            try await local.start(.validate)
            try ingest.writeToStandardInput(
                Data(
                    [
                        Self.order(6, version: 1), Self.order(7, version: 2), Self.order(8, version: nil),
                        Self.order(9, version: 2),
                    ].joined().utf8))
            try ingest.closeStandardInput()
            #expect(await finished(ingest, "ingest") == .init(code: 0, signaled: false))
            try await Self.waitForRows(local, 7)

            // The early v2 orders come back through redrive.
            let spec = try PipelineSpec.load(file: file, environment: ["KAFKA_BROKERS": local.bootstrapServers])
            let report = try await Redrive(spec: spec, filter: .init(errorClasses: ["UnknownSchemaVersion"]), logger: Logger(label: "t"))
                .run()
            #expect(report.redrivenTotal == 2)
            try await Self.waitForRows(local, 9)
            try await local.waitUntilDrained(timeout: .seconds(60))
            #expect(try await local.readAll("dead").count == 2, "nothing new was dead-lettered")
            let exits = await local.stop()
            #expect(exits.values.allSatisfy { $0 == .init(code: 0, signaled: false) })

            let rows = try await Self.rows(db)
            #expect(rows.count == 9, "\(rows)")
            // Phase 1 v1 rows stay as v1 was; phase 2 v1 rows were upcast; v2 rows as sent.
            #expect(rows["o-1"] == "null|null|1|100")
            #expect(rows["o-6"] == "c-6|web|2|600")
            #expect(rows["o-8"] == "c-8|web|null|800", "no version: default_version 1, upcast (the header says v2; no field was added)")
            #expect(rows["o-3"] == "c-3|store|2|300", "redriven")
            #expect(rows["o-7"] == "c-7|store|2|700")
        } catch {
            for stage in local.stages {
                if let p = local.process(stage) { Issue.record("\(stage.rawValue):\n\(p.standardError.suffix(2000))") }
            }
            _ = await local.stop()
            throw error
        }
    }

    /// Waits for the sink to hold `n` rows (the row count is what the test waits for).
    static func waitForRows(_ local: LocalPipeline, _ n: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            if (try? await local.sinkRowCount()) ?? 0 >= n { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw LocalRunError("the sink did not reach \(n) rows")
    }

    static func rows(_ path: String) async throws -> [String: String] {
        let connection = try await SQLiteConnection.open(storage: .file(path: path))
        let rows = RowCollector()
        try await connection.query("SELECT order_id, customer_id, channel, schema_version, amount_cents FROM orders", []) { row in
            let c = row.columns.map { "\($0.data)".replacingOccurrences(of: "\"", with: "") }
            rows.append(c.joined(separator: "|"))
        }
        try await connection.close()
        var out: [String: String] = [:]
        for r in rows.all {
            let parts = r.split(separator: "|", maxSplits: 1).map(String.init)
            if parts.count == 2 { out[parts[0]] = parts[1] }
        }
        return out
    }
}
