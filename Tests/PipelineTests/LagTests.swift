import EmbeddedBroker
import Foundation
import Kafka
import LocalRun
import Pipeline
import PipelineTools
import Testing

/// Lag as a worker reports it, through a real `process` worker on the embedded broker: records
/// behind are counted from what the stage has handled, so a stage that has handled everything
/// reports 0 even while its group's committed offsets trail far behind (auto-commit every 10 min
/// here); the committed lag is its own gauge; both are reported per partition and summed.
@Suite struct LagTests {
    @Test func lagCountsFromTheHandledPositionAndCommittedLagApart() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-lag-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let file = work.appendingPathComponent("lag.yaml").path
        try """
        name: lag-test
        kafka:
          bootstrap: "${KAFKA_BROKERS:-127.0.0.1:9092}"
          consumer: { session.timeout.ms: 6000, heartbeat.interval.ms: 500 }
        topics:
          raw: { name: "lag.raw", partitions: 3 }
          out: { name: "lag.out", partitions: 3 }
          dead: { name: "lag.dead", partitions: 1 }
        dead_letter: dead
        ingest:
          output: raw
          source: { type: stdin }
          key: "to_string(n)"
        process:
          input: raw
          output: out
          steps: []
          # Nothing is committed while the test reads the lag (only at shutdown).
          consumer: { auto.commit.interval.ms: 600000 }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let local = try await LocalPipeline.launch(.init(pipelineFile: file, workDirectory: work.path, environment: [:]))
        do {
            try await local.start(.process)
            try await local.start(.ingest)
            let ingest = try #require(local.process(.ingest))
            let count = 300
            try ingest.writeToStandardInput(Data((1...count).map { "{\"n\":\($0)}\n" }.joined().utf8))
            try ingest.closeStandardInput()
            #expect(await finished(ingest, "ingest") == .init(code: 0, signaled: false))

            // Lag is sampled every ~2 s: wait for a sample taken after every record was handled.
            // The stats document is the only view of a worker process, so it is polled.
            let deadline = ContinuousClock.now + .seconds(60)
            var last: StageStats?
            while ContinuousClock.now < deadline {
                last = await local.stats(.process)
                if let s = last, s.recordsOut == count, s.committedLag == count, s.consumerLag == 0 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            let stats = try #require(last)
            #expect(stats.recordsOut == count)
            #expect(stats.consumerLag == 0, "records behind the handled position: \(stats.consumerLag)")
            #expect(stats.committedLag == count, "committed lag: \(stats.committedLag ?? -1)")
            let partitions = stats.partitionLag ?? []
            #expect(partitions.map(\.partition) == [0, 1, 2] && partitions.allSatisfy { $0.topic == "lag.raw" && $0.lag == 0 })
            #expect(partitions.reduce(0) { $0 + $1.committedLag } == count)
            #expect(partitions.allSatisfy { $0.committedLag > 0 }, "keys spread over the 3 partitions: \(partitions)")

            let port = try #require(local.port(.process))
            let metrics = String(decoding: try await HTTPGet.get(host: "127.0.0.1", port: port, path: "/metrics").body, as: UTF8.self)
            for name in [
                "streamfirst_consumer_lag{", "streamfirst_consumer_committed_lag{", "streamfirst_consumer_partition_lag{",
                "streamfirst_consumer_partition_committed_lag{",
            ] {
                #expect(metrics.contains(name), "no \(name) in /metrics")
            }
            #expect(metrics.contains(#"partition="2""#), "no per-partition series in /metrics")
            let exits = await local.stop()
            #expect(exits.values.allSatisfy { $0 == .init(code: 0, signaled: false) })
        } catch {
            for stage in local.stages {
                if let p = local.process(stage) { Issue.record("\(stage.rawValue):\n\(p.standardError.suffix(2000))") }
            }
            _ = await local.stop()
            throw error
        }
    }
}
