import Foundation
import LocalRun
import Pipeline
import PipelineModel
import Testing

/// The demo pipeline's worker processes against a real Kafka cluster — runs only when KAFKA_BROKERS
/// is set (e.g. `docker compose up -d kafka` then `KAFKA_BROKERS=localhost:9092 make test`).
/// Topics get a unique prefix per run, so reruns against the same cluster do not mix.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["KAFKA_BROKERS"] != nil, "set KAFKA_BROKERS to run against a real cluster"))
struct RealClusterPipelineTests {
    @Test func pipelineOnARealClusterReconciles() async throws {
        let brokers = try #require(ProcessInfo.processInfo.environment["KAFKA_BROKERS"])
        let work = EndToEndTests.workDirectory("real")
        defer { try? FileManager.default.removeItem(atPath: work) }
        var env = EndToEndTests.environment(count: 2000, rate: 0)
        env["TOPIC_PREFIX"] = "sf-\(UUID().uuidString.prefix(8).lowercased())."
        let local = try await LocalPipeline.launch(
            .init(pipelineFile: EndToEndTests.pipelineFile, workDirectory: work, environment: env, bootstrapServers: brokers))
        for stage in [PipelineSpec.StageName.validate, .process, .persist, .ingest] { try await local.start(stage) }
        let ingest = try #require(local.process(.ingest))
        _ = await finished(ingest, "ingest")
        try await local.waitUntilDrained(timeout: .seconds(180))
        let dead = try await local.readAll(local.spec.deadLetter.logical)
        let exits = await local.stop()
        let rows = try await EndToEndTests.dumpTable(path: URL(fileURLWithPath: work).appendingPathComponent("pipeline.sqlite").path)
        #expect(rows.count + dead.count == 2000)
        for (_, status) in exits { #expect(status.code == 0 && !status.signaled) }
    }
}
