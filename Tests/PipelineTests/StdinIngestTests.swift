import EmbeddedBroker
import Foundation
import Kafka
import Pipeline
import PipelineTools
import StreamCore
import Testing

@testable import LocalRun

/// The `stdin` source through a real `ingest` process: lines piped in reach the output topic,
/// a malformed one the dead-letter topic, and end of input ends the worker with exit 0.
@Suite struct StdinIngestTests {
    @Test func pipedLinesAreIngestedAndEndOfInputExitsCleanly() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-stdin-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let file = work.appendingPathComponent("stdin.yaml").path
        try """
        name: stdin-test
        kafka: { bootstrap: "${KAFKA_BROKERS:-127.0.0.1:9092}" }
        topics:
          raw: { name: "${TOPIC_PREFIX:-}stdin.raw", partitions: 2 }
          dead: { name: "${TOPIC_PREFIX:-}stdin.dead", partitions: 1 }
        dead_letter: dead
        ingest:
          output: raw
          source: { type: stdin }
          key: user
          event_time: at
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let local = try await LocalPipeline.launch(.init(pipelineFile: file, workDirectory: work.path, environment: [:]))
        try await local.start(.ingest, extraEnvironment: ["HTTP_TOKEN": "t0ken"])
        let ingest = try #require(local.process(.ingest))
        // HTTP_TOKEN guards the metrics, not the health checks.
        let port = try #require(local.port(.ingest))
        #expect(try await HTTPGet.get(host: "127.0.0.1", port: port, path: "/metrics").status == 401)
        #expect(
            try await HTTPGet.get(host: "127.0.0.1", port: port, path: "/metrics", headers: ["Authorization": "Bearer t0ken"]).status == 200
        )
        #expect(try await HTTPGet.get(host: "127.0.0.1", port: port, path: "/healthz").status == 200)
        try ingest.writeToStandardInput(Data("{\"user\":\"ann\",\"at\":\"2026-11-25T09:00:00Z\"}\n{broken\n{\"user\":\"bob\"}\n".utf8))
        try ingest.closeStandardInput()
        let status = await finished(ingest, "ingest")
        #expect(status == .init(code: 0, signaled: false), "\(ingest.standardError.suffix(2000))")

        let raw = try await local.readAll("raw")
        let dead = try await local.readAll("dead")
        _ = await local.stop()
        #expect(raw.count == 2)
        #expect(Set(raw.compactMap { $0.key.map { String(decoding: $0, as: UTF8.self) } }) == ["ann", "bob"])
        let ann = try #require(raw.first { $0.key == Array("ann".utf8) })
        #expect(ann.header(RecordHeader.eventTime)?.value.map { String(decoding: $0, as: UTF8.self) } == "1795597200000")
        #expect(dead.count == 1)
        #expect(dead.first?.value == Array("{broken".utf8), "the original bytes, untouched")
        #expect(dead.first?.header(DeadLetterHeader.exceptionClass)?.value.map { String(decoding: $0, as: UTF8.self) } == "MalformedJSON")
    }

    /// A bounded source can finish before the launcher's first `/readyz` poll (the guide's
    /// seven-row CSV did so on CI): an ingest worker that already exited with code 0 counts as
    /// started, while the same exit from a consuming stage is still a failed start.
    @Test func anIngestThatFinishedBeforeTheReadinessPollIsNotAFailedStart() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-fast-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let file = work.appendingPathComponent("stdin.yaml").path
        try """
        name: fast-ingest
        kafka: { bootstrap: "${KAFKA_BROKERS:-127.0.0.1:9092}" }
        topics:
          raw: { name: "fast.raw", partitions: 1 }
          dead: { name: "fast.dead", partitions: 1 }
        dead_letter: dead
        ingest:
          output: raw
          source: { type: stdin }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let local = try await LocalPipeline.launch(.init(pipelineFile: file, workDirectory: work.path, environment: [:]))
        try await local.start(.ingest, waitUntilReady: false)
        let ingest = try #require(local.process(.ingest))
        let port = try #require(local.port(.ingest))
        try ingest.writeToStandardInput(Data("{\"n\":1}\n".utf8))
        try ingest.closeStandardInput()
        let status = await finished(ingest, "ingest")
        #expect(status == .init(code: 0, signaled: false), "\(ingest.standardError.suffix(2000))")
        // Ingest: finished is as good as ready.
        try await local.waitUntilReady(.ingest, process: ingest, port: port)
        // Any other stage: an exit before /readyz is reported with the worker's log.
        await #expect(throws: LocalRunError.self) {
            try await local.waitUntilReady(.validate, process: ingest, port: port)
        }
        #expect(try await local.readAll("raw").count == 1)
        _ = await local.stop()
    }
}
