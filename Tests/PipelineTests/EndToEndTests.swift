import EmbeddedBroker
import Foundation
import Kafka
import LocalRun
import Pipeline
import PipelineModel
import PipelineTools
import SQLiteNIO
import StreamCore
import Testing

/// The four workers as separate processes on the embedded broker, driven through `LocalPipeline`
/// (what `streamfirst run` uses): a crash-free run, and a run in which every worker in turn is
/// SIGKILLed mid-stream and restarted; the SQLite table and the dead letters must be identical.
@Suite(.serialized) struct EndToEndTests {
    static let pipelineFile = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("pipelines/iot-sensors.yaml").path

    /// Settings shared by both runs: a fixed seed, a short session timeout so a killed worker's
    /// partitions move on quickly (the mock honours it), a rate slow enough to kill mid-stream.
    static func environment(count: Int, rate: Int) -> [String: String] {
        [
            "IOT_COUNT": String(count), "IOT_RATE": String(rate), "IOT_SEED": "7",
            "KAFKA_SESSION_TIMEOUT_MS": "6000", "KAFKA_HEARTBEAT_MS": "500",
        ]
    }

    struct Outcome {
        var rows: [String]
        var deadLetterIDs: Set<String>
        var deadLetterCount: Int
        var exits: [PipelineSpec.StageName: ChildProcess.ExitStatus]
    }

    static func workDirectory(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-e2e-\(name)-\(UUID().uuidString.prefix(8))").path
        return dir
    }

    /// Runs the pipeline to the end; `during` may disturb it while ingest is running.
    static func run(
        name: String, count: Int, rate: Int,
        during: @Sendable (LocalPipeline) async throws -> Void = { _ in }
    ) async throws -> Outcome {
        let work = workDirectory(name)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let local = try await LocalPipeline.launch(
            .init(pipelineFile: pipelineFile, workDirectory: work, environment: environment(count: count, rate: rate)))
        do {
            try await local.start([.validate, .process, .persist])
            try await local.start(.ingest)
            try await during(local)
            if let ingest = local.process(.ingest) {
                let status = await finished(ingest, "ingest")
                #expect(status == .init(code: 0, signaled: false), "ingest: \(ingest.standardError.suffix(2000))")
            }
            try await local.waitUntilDrained(timeout: .seconds(180))
            let dead = try await local.readAll(local.spec.deadLetter.logical)
            let exits = await local.stop()
            let rows = try await dumpTable(path: URL(fileURLWithPath: work).appendingPathComponent("pipeline.sqlite").path)
            let ids = Set(dead.compactMap { $0.header(RecordHeader.id)?.value.map { String(decoding: $0, as: UTF8.self) } })
            return Outcome(rows: rows, deadLetterIDs: ids, deadLetterCount: dead.count, exits: exits)
        } catch {
            for stage in local.stages {
                if let p = local.process(stage) {
                    Issue.record("\(stage.rawValue) stderr:\n\(p.standardError.suffix(3000))")
                }
            }
            _ = await local.stop()
            throw error
        }
    }

    static func dumpTable(path: String) async throws -> [String] {
        let connection = try await SQLiteConnection.open(storage: .file(path: path))
        let rows = RowCollector()
        try await connection.query("SELECT * FROM readings ORDER BY sensor_id, seq", []) { row in
            rows.append(row.columns.map { "\($0.name)=\($0.data)" }.joined(separator: ","))
        }
        try await connection.close()
        return rows.all
    }

    @Test func crashFreeRunReconcilesAndEveryWorkerStopsGracefully() async throws {
        let count = 3000
        let outcome = try await Self.run(name: "clean", count: count, rate: 0)
        // Every generated reading is either a row or a dead letter (the demo pipeline filters nothing).
        #expect(outcome.rows.count + outcome.deadLetterIDs.count == count)
        #expect(outcome.deadLetterCount == outcome.deadLetterIDs.count, "a crash-free run writes each dead letter once")
        #expect(outcome.deadLetterIDs.count > 0, "the generator mixes in malformed and invalid readings")
        #expect(outcome.rows.count > count * 9 / 10)
        for (stage, status) in outcome.exits {
            #expect(status == .init(code: 0, signaled: false), "\(stage.rawValue) should exit 0 on SIGTERM")
        }
    }

    @Test func killingEachWorkerMidStreamChangesNothing() async throws {
        let count = 6000
        let rate = 500
        let baseline = try await Self.run(name: "baseline", count: count, rate: rate)
        let kills = KillLog()
        let scraped = KillLog()
        let disturbed = try await Self.run(name: "kills", count: count, rate: rate) { local in
            // While records flow (ingest runs for ~12 s): every worker's endpoints answer.
            try await Self.waitForRecords(local, stage: .persist, atLeast: 1)
            try await Self.scrape(local, into: scraped)
            // Kill each worker in turn as ingest passes a mark, and start it again at once (without
            // waiting for its group assignment, so the next kill can land during the rebalance).
            // The marks follow ingest's own count, which only restarts when ingest is killed, last.
            for (stage, mark) in [(PipelineSpec.StageName.persist, 800), (.validate, 1600), (.process, 2400), (.ingest, 3200)] {
                try await Self.waitForRecords(local, stage: .ingest, atLeast: mark)
                let status = try await local.kill(stage)
                kills.add("\(stage.rawValue)@\(mark) (\(status.map { "\($0)" } ?? "?"))")
                try await local.start(stage, waitUntilReady: false)
            }
        }
        #expect(kills.all.count == 4)
        Self.checkMetrics(scraped)
        #expect(disturbed.rows.count == baseline.rows.count, "rows lost or duplicated")
        #expect(disturbed.rows == baseline.rows, "the table differs from the crash-free run")
        #expect(disturbed.deadLetterIDs == baseline.deadLetterIDs, "dead letters lost")
        #expect(baseline.rows.count + baseline.deadLetterIDs.count == count)
        let lost = Set(baseline.rows).subtracting(disturbed.rows).count
        let duplicated = disturbed.rows.count - Set(disturbed.rows).count + Set(disturbed.rows).subtracting(baseline.rows).count
        #expect(lost == 0 && duplicated == 0)
        let report =
            "records \(count), lost \(lost), duplicated or changed rows \(duplicated), kills \(kills.all.joined(separator: ", ")), "
            + "rows \(disturbed.rows.count) (crash-free \(baseline.rows.count)), dead letters \(disturbed.deadLetterIDs.count) "
            + "distinct / \(disturbed.deadLetterCount) written (crash-free \(baseline.deadLetterIDs.count))"
        print("crash test: \(report)")
    }

    static func scrape(_ local: LocalPipeline, into scraped: KillLog) async throws {
        for stage in local.stages {
            guard let port = local.port(stage) else { continue }
            let metrics = try await HTTPGet.get(host: "127.0.0.1", port: port, path: "/metrics")
            scraped.add("\(stage.rawValue) \(metrics.status) " + String(decoding: metrics.body, as: UTF8.self))
            #expect(try await HTTPGet.get(host: "127.0.0.1", port: port, path: "/healthz").status == 200)
            #expect(try await HTTPGet.get(host: "127.0.0.1", port: port, path: "/readyz").status == 200)
        }
    }

    static func checkMetrics(_ scraped: KillLog) {
        #expect(scraped.all.count == 4)
        for text in scraped.all {
            #expect(text.contains(" 200 "), "\(text.prefix(80))")
            for name in [
                "streamfirst_records_in_total", "streamfirst_records_dead_lettered_total", "streamfirst_processing_duration_seconds",
            ] {
                #expect(text.contains(name), "\(text.prefix(40)): no \(name)")
            }
            if !text.hasPrefix("ingest") { #expect(text.contains("streamfirst_consumer_lag"), "\(text.prefix(40)): no lag gauge") }
        }
    }

    /// Waits until a stage's `/stats` reports at least `n` records in (polls its endpoint: the
    /// count is the event; there is no push channel from a worker process).
    static func waitForRecords(_ local: LocalPipeline, stage: PipelineSpec.StageName, atLeast n: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if let s = await local.stats(stage), s.recordsIn >= n { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw LocalRunError("\(stage.rawValue) did not reach \(n) records")
    }
}

final class RowCollector: @unchecked Sendable {
    // @unchecked: appended to from sqlite-nio's thread while the query runs, read after it returns.
    private let lock = NSLock()
    private var rows: [String] = []
    func append(_ s: String) { lock.withLock { rows.append(s) } }
    var all: [String] { lock.withLock { rows } }
}

final class KillLog: @unchecked Sendable {
    // @unchecked: guarded by the lock.
    private let lock = NSLock()
    private var entries: [String] = []
    func add(_ s: String) { lock.withLock { entries.append(s) } }
    var all: [String] { lock.withLock { entries } }
}
