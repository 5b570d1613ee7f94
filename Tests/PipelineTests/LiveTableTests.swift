import EmbeddedBroker
import Foundation
import Kafka
import Logging
import Pipeline
import PipelineModel
import StreamCore
import Testing

/// The live table of `enrich:` with `topic:`: fed from a topic on the embedded broker through the
/// process stage's handler (bootstrap, then following), and its row bound (broker-free).
@Suite struct LiveTableTests {
    static func record(_ key: String?, _ value: String?, offset: Int64) -> KafkaMessage {
        KafkaMessage(
            topic: "tbl", partition: 0, offset: offset, key: key.map { Array($0.utf8) }, value: value.map { Array($0.utf8) }, headers: [])
    }

    @Test func bootstrapsEveryPartitionBeforeTheFirstRecordThenFollowsUpdates() async throws {
        let broker = try await EmbeddedBrokerProcess.launch(arguments: ["--topic", "tbl:3", "--topic", "in:1"])
        let kafka = KafkaConfiguration(bootstrapServers: broker.bootstrapServers, clientID: "live-table-test")
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(kafka: kafka))
        @discardableResult
        func produce(_ records: [(String?, String?)]) async throws -> Set<Int32> {
            let reports = await producer.send(records.map { KafkaProducerMessage(topic: "tbl", key: $0.0, value: $0.1) })
            for r in reports { if let e = r.error { throw e } }
            return Set(reports.map(\.partition))
        }
        let partitions = try await produce([
            ("s1", #"{"site":"north","floor":1}"#), ("s2", #"{"site":"south"}"#), ("s3", #"{"site":"west"}"#),
            ("s4", #"{"site":"east"}"#), ("s5", #"{"site":"nowhere"}"#),
            ("s1", #"{"site":"north","floor":2}"#), // an update
            ("s2", nil), // a tombstone
            ("s3", "[1,2]"), // not an object: skipped, the row stays
            ("s4", "{not json"), // not JSON: skipped
            (nil, #"{"site":"keyless"}"#), // no key: skipped
        ])
        #expect(partitions.count > 1, "the rows are spread over several partitions, all of which the table reads")

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-livetable-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("p.yaml").path
        try """
        name: lt
        kafka: { bootstrap: "\(broker.bootstrapServers)" }
        topics:
          in: { name: in }
          out: { name: out }
          sensors: { name: tbl, partitions: 3 }
          dead: { name: dead }
        dead_letter: dead
        process:
          input: in
          output: out
          steps:
            - enrich: { topic: sensors, match: sensor_id, missing: dead-letter }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let spec = try PipelineSpec.load(file: file, environment: [:])
        let handler = try ProcessHandler.make(spec: spec, common: try #require(spec.stages[.process]))
        let table = try #require(handler.liveTables.first)

        try await handler.start(kafka: spec.kafka, logger: Logger(label: "live-table-test"))
        do {
            // Bootstrap: everything produced before start is there when start returns.
            #expect(table.row(forKey: "s1") == ["site": "north", "floor": 2])
            #expect(table.row(forKey: "s2") == nil, "deleted by the tombstone")
            #expect(table.row(forKey: "s3") == ["site": "west"], "a non-object value is skipped")
            #expect(table.row(forKey: "s4") == ["site": "east"], "a non-JSON value is skipped")
            #expect(table.row(forKey: "s5") == ["site": "nowhere"])
            #expect(table.count == 4)
            #expect(table.skippedCount == 3)
            #expect(table.incompleteReason == nil)

            func joined(_ sensor: String) throws -> JSONValue? {
                let message = KafkaMessage(
                    topic: "in", partition: 0, offset: 0, key: nil, value: Array(#"{"sensor_id":"\#(sensor)"}"#.utf8), headers: [])
                guard case .forward(let outputs) = handler.outcome(for: message), let first = outputs.first else { return nil }
                return try JSONValue.parse(first.value)
            }
            #expect(try joined("s1") == ["sensor_id": "s1", "site": "north", "floor": 2])
            if case .deadLetter(let reason) = handler.outcome(for: Self.record(nil, #"{"sensor_id":"s2"}"#, offset: 1)) {
                #expect(reason.errorClass == "EnrichmentMissing")
            } else {
                Issue.record("a deleted row must not join")
            }

            // Following: a later update and a new key become visible without restarting.
            try await produce([("s1", #"{"site":"north","floor":3}"#), ("s6", #"{"site":"annex"}"#), ("s5", nil)])
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline,
                table.row(forKey: "s1")?["floor"] != 3 || table.row(forKey: "s6") == nil || table.row(forKey: "s5") != nil
            {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(table.row(forKey: "s1") == ["site": "north", "floor": 3])
            #expect(table.row(forKey: "s6") == ["site": "annex"])
            #expect(table.row(forKey: "s5") == nil)
            #expect(try joined("s6") == ["sensor_id": "s6", "site": "annex"])
        } catch {
            await handler.stop()
            throw error
        }
        await handler.stop()
        await handler.stop() // idempotent
        #expect(table.row(forKey: "s6") == ["site": "annex"], "rows stay readable after stop")
        await producer.shutdown()
        _ = try await broker.terminate()
    }

    @Test func aFullTableRefusesNewKeysLoudlyButAppliesUpdatesAndDeletes() {
        let table = LiveTable(topic: "tbl", maxRows: 2)
        let logger = Logger(label: "live-table-test")
        table.apply([Self.record("a", #"{"v":1}"#, offset: 0), Self.record("b", #"{"v":2}"#, offset: 1)], logger: logger)
        #expect(table.incompleteReason == nil)
        table.apply([Self.record("c", #"{"v":3}"#, offset: 2), Self.record("a", #"{"v":10}"#, offset: 3)], logger: logger)
        #expect(table.row(forKey: "c") == nil, "a new key beyond max_rows is refused")
        #expect(table.row(forKey: "a") == ["v": 10], "present keys are still updated")
        #expect(table.refusedCount == 1)
        #expect(table.incompleteReason?.contains("max_rows 2") == true)
        table.apply([Self.record("b", nil, offset: 4), Self.record("d", #"{"v":4}"#, offset: 5)], logger: logger)
        #expect(table.row(forKey: "b") == nil && table.row(forKey: "d") == ["v": 4], "a delete makes room")
        #expect(table.incompleteReason != nil, "a refused key stays unknown, so misses stay dead letters")
    }
}
