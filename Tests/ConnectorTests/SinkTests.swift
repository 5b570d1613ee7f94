import Config
import EmbeddedBroker
import Foundation
import Kafka
import Logging
import StreamCore
import Testing

@testable import Connectors

func sinkRecord(_ value: JSONValue, offset: Int64, partition: Int32 = 0, id: String? = nil) -> SinkRecord {
    SinkRecord(
        id: id ?? "r-\(partition)-\(offset)", key: nil, value: value, eventTimeMs: 1_767_225_600_000 + offset, topic: "t",
        partition: partition, offset: offset)
}

let columnsYAML = """
    table: readings
    key: [sensor_id, seq]
    columns:
      sensor_id: text
      seq: integer
      temp: { type: real, field: reading.temp }
      ok: boolean
      extra: json
      event_time: { type: timestamp, from: $event_time }
      record_id: { type: text, from: $id, required: true }
    """

/// The same contract for every sink that stores offsets with its rows.
func exerciseTransactionalSink(_ sink: any RecordSink) async throws {
    try await sink.open()
    let batch = (0..<10).map { i in
        sinkRecord(
            [
                "sensor_id": .string("s\(i % 3)"), "seq": .integer(Int64(i)), "reading": ["temp": .number(20 + Double(i) / 2)], "ok": true,
                "extra": ["n": .integer(Int64(i))],
            ], offset: Int64(i))
    }
    let rejected = try await sink.write(batch, offsets: [SinkOffset(topic: "t", partition: 0, nextOffset: 10)], consumerGroup: "g")
    #expect(rejected.isEmpty)
    #expect(try await sink.count() == 10)
    #expect(try await sink.storedOffsets(consumerGroup: "g", topic: "t") == [0: 10])
    #expect(try await sink.storedOffsets(consumerGroup: "other", topic: "t").isEmpty)

    // Redelivery (a crash before the commit was seen): same keys, no new rows, offsets move on.
    let again = try await sink.write(
        Array(batch[5...]), offsets: [SinkOffset(topic: "t", partition: 0, nextOffset: 10)], consumerGroup: "g")
    #expect(again.isEmpty)
    #expect(try await sink.count() == 10)

    // A value that does not fit its column is refused (before any write) and the rest is stored.
    let bad = sinkRecord(["sensor_id": "s9", "seq": "not a number"], offset: 10)
    let good = sinkRecord(["sensor_id": "s9", "seq": 11], offset: 11)
    let refusals = sink.rejections(in: [bad, good])
    #expect(refusals.map(\.record.offset) == [10])
    #expect(refusals.first?.reason.contains("seq") == true)
    _ = try await sink.write([good], offsets: [SinkOffset(topic: "t", partition: 0, nextOffset: 12)], consumerGroup: "g")
    #expect(try await sink.count() == 11)
    #expect(try await sink.storedOffsets(consumerGroup: "g", topic: "t") == [0: 12])

    // An integer beyond 64 bits (JSON Schema calls 1e29 an integer) cannot be stored exactly: refused.
    let huge = sinkRecord(try JSONValue.parse(Array(#"{"sensor_id":"s9","seq":123456789012345678901234567890}"#.utf8)), offset: 12)
    #expect(sink.rejections(in: [huge]).first?.reason.contains("seq") == true)

    // The same key twice in one batch: the later record wins, one row.
    let first = sinkRecord(["sensor_id": "dup", "seq": 1, "ok": false], offset: 12)
    let second = sinkRecord(["sensor_id": "dup", "seq": 1, "ok": true], offset: 13)
    _ = try await sink.write([first, second], offsets: [SinkOffset(topic: "t", partition: 0, nextOffset: 14)], consumerGroup: "g")
    #expect(try await sink.count() == 12)
    await sink.close()
}

@Suite struct SQLiteSinkTests {
    @Test func upsertsWithOffsetsInTheSameTransaction() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("sub/db.sqlite").path
        let sink = try SinkFactory.make(
            try mapping("type: sqlite\npath: \(path)\n" + columnsYAML), baseDirectory: dir.path, kafka: nil, logger: Logger(label: "t"))
        try await exerciseTransactionalSink(sink)

        // Reopening finds the rows and offsets (what a restarted persist worker seeks from).
        let reopened = try SinkFactory.make(
            try mapping("type: sqlite\npath: \(path)\n" + columnsYAML), baseDirectory: dir.path, kafka: nil, logger: Logger(label: "t"))
        try await reopened.open()
        #expect(try await reopened.count() == 12)
        #expect(try await reopened.storedOffsets(consumerGroup: "g", topic: "t") == [0: 14])
        await reopened.close()
    }

    @Test(arguments: [
        ("table: \"drop table\"\ncolumns: { a: text }", "not a valid SQL name"),
        ("table: t\ncolumns: { a: varchar }", "varchar"),
        ("table: t\nkey: [b]\ncolumns: { a: text }", "key column 'b'"),
        ("table: t\ncolumns: { a: { type: text, from: $nope } }", "$nope"),
        ("table: t", "columns"),
    ])
    func badMappingsFailAtStart(yaml: String, fragment: String) {
        let error = #expect(throws: ConfigError.self) {
            _ = try SinkFactory.make(
                try mapping("type: sqlite\npath: /tmp/x.sqlite\n" + yaml), baseDirectory: "/", kafka: nil, logger: Logger(label: "t"))
        }
        #expect(error?.description.contains(fragment) == true, "\(error?.description ?? "no error")")
    }
}

/// Runs against the PostgreSQL that `make test` starts (scripts/ensure-postgres.sh) and names in
/// STREAMFIRST_POSTGRES_URL; without it the suite is reported as skipped, never as passed.
@Suite(
    .enabled(
        if: ProcessInfo.processInfo.environment["STREAMFIRST_POSTGRES_URL"] != nil, "needs STREAMFIRST_POSTGRES_URL (make test sets it)"))
struct PostgresSinkTests {
    @Test func upsertsWithOffsetsInTheSameTransaction() async throws {
        let url = ProcessInfo.processInfo.environment["STREAMFIRST_POSTGRES_URL"] ?? ""
        let table = "readings_\(UUID().uuidString.prefix(8).lowercased())"
        let yaml = "type: postgres\nurl: \"\(url)\"\n" + columnsYAML.replacingOccurrences(of: "table: readings", with: "table: \(table)")
        let sink = try SinkFactory.make(try mapping(yaml), baseDirectory: "/", kafka: nil, logger: Logger(label: "t"))
        try await exerciseTransactionalSink(sink)
        let reopened = try SinkFactory.make(try mapping(yaml), baseDirectory: "/", kafka: nil, logger: Logger(label: "t"))
        try await reopened.open()
        #expect(try await reopened.count() == 12)
        #expect(try await reopened.storedOffsets(consumerGroup: "g", topic: "t") == [0: 14])
        await reopened.close()
    }

    @Test func anUnreachableServerFailsAtOpenWithTheReason() async throws {
        let sink = try SinkFactory.make(
            try mapping("type: postgres\nurl: \"postgres://nobody:x@127.0.0.1:1/none\"\n" + columnsYAML), baseDirectory: "/", kafka: nil,
            logger: Logger(label: "t"))
        await #expect(throws: (any Error).self) { try await sink.open() }
    }
}

@Suite struct NDJSONSinkTests {
    @Test func appendsLinesAndCutsATornTailOnReopen() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("out.ndjson").path
        let sink = NDJSONSink(path: path)
        try await sink.open()
        _ = try await sink.write(
            (0..<3).map { sinkRecord(["n": .integer(Int64($0))], offset: Int64($0)) },
            offsets: [SinkOffset(topic: "t", partition: 0, nextOffset: 3)], consumerGroup: "g")
        await sink.close()
        // A crash mid-write leaves bytes the sidecar does not cover.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("{\"n\":3".utf8))
        try handle.close()

        let reopened = NDJSONSink(path: path)
        try await reopened.open()
        #expect(try await reopened.storedOffsets(consumerGroup: "g", topic: "t") == [0: 3])
        #expect(try await reopened.count() == 3)
        _ = try await reopened.write(
            [sinkRecord(["n": 3], offset: 3)], offsets: [SinkOffset(topic: "t", partition: 0, nextOffset: 4)], consumerGroup: "g")
        await reopened.close()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines == ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}", "{\"n\":3}"])
    }
}

@Suite struct ConnectorSpecTests {
    @Test func everyConnectorDocumentsItsSettings() {
        for spec in SourceFactory.specs + SinkFactory.specs {
            #expect(!spec.summary.isEmpty)
            #expect(!spec.fields.isEmpty, "\(spec.type)")
            #expect(Set(spec.fields.map(\.name)).count == spec.fields.count, "\(spec.type): duplicate field")
        }
    }
}

@Suite struct ConnectorDocsTests {
    @Test func docsConnectorsMarkdownMatchesTheSpecs() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/CONNECTORS.md")
        let text = try String(contentsOf: file, encoding: .utf8)
        #expect(
            text == ConnectorDocs.markdown(), "docs/CONNECTORS.md is stale: run `swift run streamfirst connectors > docs/CONNECTORS.md`")
    }
}

@Suite struct KafkaSinkTests {
    @Test func producesValuesWithKeyFieldAndHeadersToTheEmbeddedBroker() async throws {
        let broker = try await EmbeddedBrokerProcess.launch(arguments: ["--topic", "out:1"])
        let kafka = KafkaConfiguration(bootstrapServers: broker.bootstrapServers, clientID: "sink-test")
        let sink = KafkaSink(
            topic: "out", keyField: "sensor_id", configuration: KafkaProducerConfiguration(kafka: kafka), logger: Logger(label: "t"))
        try await sink.open()
        var records = (0..<5).map { sinkRecord(["sensor_id": .string("s\($0)"), "v": .integer(Int64($0))], offset: Int64($0)) }
        records[0].headers = [("sf.id", Array("r-0-0".utf8))]
        #expect(try await sink.write(records, offsets: [], consumerGroup: "g").isEmpty)
        #expect(!sink.storesOffsets, "the worker commits to the group after the write")
        #expect(try await sink.count() == 5)
        await sink.close()

        var config = KafkaConsumerConfiguration(kafka: kafka, groupID: nil)
        config.fetchWaitMax = .milliseconds(10)
        let consumer = try KafkaConsumer(configuration: config)
        try await consumer.assign([KafkaTopicPartition(topic: "out", partition: 0)], startingAt: .beginning)
        var got: [KafkaMessage] = []
        for _ in 0..<30 where got.count < 5 { got += try await consumer.poll(maxMessages: 100, timeout: .seconds(1)) }
        await consumer.close()
        #expect(got.map { $0.key.map { String(decoding: $0, as: UTF8.self) } } == ["s0", "s1", "s2", "s3", "s4"])
        #expect(try JSONValue.parse(got[2].value ?? []) == ["sensor_id": "s2", "v": 2])
        #expect(got[0].headers.first { $0.key == "sf.id" }?.value.map { String(decoding: $0, as: UTF8.self) } == "r-0-0")
        _ = try await broker.terminate()
    }
}
