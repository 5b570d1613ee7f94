import EmbeddedBroker
import Foundation
import Kafka
import LocalRun
import Pipeline
import StreamCore
import Testing

/// A sink that stores its offsets (SQLite here; PostgreSQL the same way) outlives the topic it read:
/// the same database file, a new embedded broker whose topic starts at offset 0 again. The stored
/// offsets are beyond the new partition's end, so persist ignores them (with a warning) and writes
/// the new records instead of skipping them as already written. docs/GETTING-STARTED.md runs into
/// exactly this on a second `streamfirst run` against the same PostgreSQL.
@Suite struct SinkOffsetsTests {
    static func pipeline(_ work: URL) throws -> String {
        let file = work.appendingPathComponent("offsets.yaml").path
        try """
        name: sink-offsets
        kafka: { bootstrap: "${KAFKA_BROKERS:-127.0.0.1:9092}" }
        topics:
          in: { name: "offsets.in", partitions: 1 }
          dead: { name: "offsets.dead", partitions: 1 }
        dead_letter: dead
        persist:
          input: in
          sink:
            type: sqlite
            path: \(work.path)/out.sqlite
            table: readings
            key: [n]
            columns: { n: integer }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    static func produce(_ local: LocalPipeline, _ numbers: Range<Int>) async throws {
        let producer = try KafkaProducer(
            configuration: KafkaProducerConfiguration(kafka: KafkaConfiguration(bootstrapServers: local.bootstrapServers)))
        let reports = await producer.send(
            numbers.map { KafkaProducerMessage(topic: "offsets.in", key: Array("k\($0)".utf8), value: Array("{\"n\":\($0)}".utf8)) })
        #expect(reports.allSatisfy { $0.error == nil })
        await producer.shutdown()
    }

    /// Launches the pipeline on its own embedded broker, runs `body`, and stops it (also when
    /// `body` throws). Returns the stopped pipeline, for its log files.
    static func withPipeline(
        _ file: String, workDirectory: URL, _ body: (LocalPipeline) async throws -> Void
    ) async throws -> LocalPipeline {
        let local = try await LocalPipeline.launch(.init(pipelineFile: file, workDirectory: workDirectory.path, environment: [:]))
        do { try await body(local) } catch {
            _ = await local.stop()
            throw error
        }
        _ = await local.stop()
        return local
    }

    @Test func storedOffsetsBeyondTheEndOfARecreatedTopicAreIgnored() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-offsets-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let file = try Self.pipeline(work)

        // First broker: three records, written; the sink stores next offset 3.
        _ = try await Self.withPipeline(file, workDirectory: work.appendingPathComponent("run1")) { first in
            try await Self.produce(first, 0..<3)
            try await first.start(.persist)
            try await first.waitUntilDrained(timeout: .seconds(60))
            #expect(try await first.sinkRowCount() == 3)
        }

        // A new broker, the same database: two new records at offsets 0 and 1, below the stored 3.
        let second = try await Self.withPipeline(file, workDirectory: work.appendingPathComponent("run2")) { second in
            try await Self.produce(second, 3..<5)
            try await second.start(.persist)
            try await second.waitUntilDrained(timeout: .seconds(60))
            #expect(try await second.sinkRowCount() == 5, "the new topic's records were skipped as already written")
        }
        let log = try String(contentsOfFile: second.logFile(.persist), encoding: .utf8)
        #expect(log.contains("beyond the partition's end"), "\(log.suffix(3000))")
    }
}
