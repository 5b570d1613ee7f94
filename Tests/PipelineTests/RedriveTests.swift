import EmbeddedBroker
import Foundation
import Kafka
import LocalRun
import Logging
import Pipeline
import PipelineModel
import PipelineTools
import StreamCore
import Testing

/// Dead letters sent back after a fix, through real worker processes: readings over a schema's
/// maximum are dead-lettered; the schema is relaxed and validate restarted; `Redrive` re-publishes
/// them; the sink then holds every reading exactly once, and a second redrive sends nothing.
@Suite struct RedriveTests {
    static func schema(maximum: Int) -> String {
        #"{"type":"object","required":["n","v"],"properties":{"n":{"type":"integer"},"v":{"type":"integer","maximum":\#(maximum)}}}"#
    }

    @Test func redriveAfterASchemaFixDeliversEachDeadLetterOnce() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-redrive-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work.appendingPathComponent("schemas"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let schemaFile = work.appendingPathComponent("schemas/reading.json")
        try Self.schema(maximum: 10).write(to: schemaFile, atomically: true, encoding: .utf8)
        let file = work.appendingPathComponent("redrive.yaml").path
        try """
        name: redrive-test
        kafka:
          bootstrap: "${KAFKA_BROKERS:-127.0.0.1:9092}"
          # The embedded broker takes about this long per group membership change.
          consumer: { session.timeout.ms: 6000, heartbeat.interval.ms: 500 }
        topics:
          raw: { name: "${TOPIC_PREFIX:-}rd.raw", partitions: 2 }
          valid: { name: "${TOPIC_PREFIX:-}rd.valid", partitions: 2 }
          dead: { name: "${TOPIC_PREFIX:-}rd.dead", partitions: 1 }
        dead_letter: dead
        ingest:
          output: raw
          source: { type: stdin }
          key: "to_string(n)"
        validate: { input: raw, output: valid, schema: reading }
        persist:
          input: valid
          sink:
            type: sqlite
            path: \(work.path)/out.sqlite
            table: readings
            key: [n]
            columns: { n: integer, v: integer }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let local = try await LocalPipeline.launch(.init(pipelineFile: file, workDirectory: work.path, environment: [:]))
        do {
            try await local.start([.validate, .persist])
            try await local.start(.ingest)
            let ingest = try #require(local.process(.ingest))
            let lines = (1...20).map { "{\"n\":\($0),\"v\":\($0)}\n" }.joined() + "not json\n"
            try ingest.writeToStandardInput(Data(lines.utf8))
            try ingest.closeStandardInput()
            #expect(await finished(ingest, "ingest") == .init(code: 0, signaled: false))
            try await local.waitUntilDrained(timeout: .seconds(60))
            #expect(try await local.sinkRowCount() == 10)
            #expect(try await local.readAll("dead").count == 11)

            // The fix: a wider maximum, picked up by a restarted validate worker.
            try Self.schema(maximum: 100).write(to: schemaFile, atomically: true, encoding: .utf8)
            _ = await local.terminate(.validate)
            try await local.start(.validate)

            let spec = try PipelineSpec.load(file: file, environment: ["KAFKA_BROKERS": local.bootstrapServers])
            let logger = Logger(label: "test")
            // A dry run selects without sending; a filter on another class selects nothing.
            let dry = try await Redrive(spec: spec, filter: .init(stages: ["validate"]), dryRun: true, logger: logger).run()
            #expect(dry.read == 11 && dry.redrivenTotal == 10 && dry.filteredOut == 1)
            let none = try await Redrive(spec: spec, filter: .init(errorClasses: ["EnrichmentMissing"]), logger: logger).run()
            #expect(none.redrivenTotal == 0)

            let first = try await Redrive(spec: spec, filter: .init(stages: ["validate"]), logger: logger).run()
            #expect(first.redrivenTotal == 10)
            #expect(first.redriven == ["validate SchemaViolation → rd.raw": 10])
            try await local.waitUntilDrained(timeout: .seconds(60))
            #expect(try await local.sinkRowCount() == 20, "every reading once")
            #expect(try await local.readAll("dead").count == 11, "nothing dead-lettered again")

            let valid = try await local.readAll("valid")
            let redriven = valid.filter { $0.header(Redrive.ofHeader) != nil }
            #expect(redriven.count == 10)
            #expect(redriven.allSatisfy { $0.header(DeadLetterHeader.exceptionClass) == nil }, "error headers are removed")
            #expect(redriven.allSatisfy { $0.header(RecordHeader.id) != nil }, "lineage kept")

            let second = try await Redrive(spec: spec, filter: .init(stages: ["validate"]), logger: logger).run()
            #expect(second.redrivenTotal == 0)
            #expect(second.alreadyRedriven == 10)
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

    @Test func aRunThatCrashedMidSliceIsCompletedWithoutSendingTwice() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-redrive-crash-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let file = work.appendingPathComponent("p.yaml").path
        try """
        name: crash
        kafka: { bootstrap: "${KAFKA_BROKERS:-127.0.0.1:9092}" }
        topics:
          raw: { name: c.raw, partitions: 1 }
          dead: { name: c.dead, partitions: 1 }
        dead_letter: dead
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let local = try await LocalPipeline.launch(.init(pipelineFile: file, workDirectory: work.path, environment: [:]))
        let spec = try PipelineSpec.load(file: file, environment: ["KAFKA_BROKERS": local.bootstrapServers])
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(kafka: spec.kafka))
        // Three dead letters from validate.
        for n in 0..<3 {
            _ = try await producer.send(
                KafkaProducerMessage(
                    topic: "c.dead", key: Array("k\(n)".utf8), value: Array("{\"n\":\(n)}".utf8),
                    headers: [
                        KafkaHeader(key: DeadLetterHeader.topic, value: "c.raw"),
                        KafkaHeader(key: DeadLetterHeader.stage, value: "validate"),
                        KafkaHeader(key: DeadLetterHeader.exceptionClass, value: "SchemaViolation"),
                        KafkaHeader(key: RecordHeader.id, value: "id-\(n)"),
                    ]))
        }
        // A run that crashed: it announced a slice of letters 0 and 1, letter 0 reached c.raw, then it died.
        _ = try await producer.send(
            KafkaProducerMessage(
                topic: "c.dead.redrive-ledger", key: Array("pending/dead0000/0".utf8),
                value: Array(#"{"coordinates":["c.dead/0/0","c.dead/0/1"],"targets":["c.raw"]}"#.utf8)))
        _ = try await producer.send(
            KafkaProducerMessage(
                topic: "c.raw", key: Array("k0".utf8), value: Array("{\"n\":0}".utf8),
                headers: [KafkaHeader(key: Redrive.ofHeader, value: "c.dead/0/0"), KafkaHeader(key: RecordHeader.id, value: "id-0")]))
        await producer.shutdown()

        let report = try await Redrive(spec: spec, logger: Logger(label: "t")).run()
        #expect(report.redrivenTotal == 2, "letters 1 and 2; letter 0 had arrived")
        #expect(report.alreadyRedriven == 1)
        let raw = try await local.readAll("raw")
        let of = raw.compactMap { $0.header(Redrive.ofHeader)?.value.map { String(decoding: $0, as: UTF8.self) } }
        #expect(of.sorted() == ["c.dead/0/0", "c.dead/0/1", "c.dead/0/2"], "each dead letter exactly once")
        let again = try await Redrive(spec: spec, logger: Logger(label: "t")).run()
        #expect(again.redrivenTotal == 0 && again.alreadyRedriven == 3)
        _ = await local.stop()
    }
}
