import EmbeddedBroker
import Foundation
import Testing

@testable import Kafka

/// Python's confluent-kafka (its own bundled librdkafka) against the Swift client, both ways.
/// `make test` installs it into .venv and sets STREAMFIRST_PYTHON.
@Suite("Interop with an independent client (confluent-kafka)", .serialized, .timeLimit(.minutes(2)))
struct InteropTests {
    func python() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let candidates = [env["STREAMFIRST_PYTHON"], FileManager.default.currentDirectoryPath + "/.venv/bin/python"].compactMap { $0 }
        guard let p = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw KafkaError.client(
                "SETUP", "no Python with confluent-kafka: run `make test` (it creates .venv) or set STREAMFIRST_PYTHON")
        }
        return p
    }

    var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Interop/confluent_interop.py").path
    }

    @Test("records produced by confluent-kafka are read by the Swift consumer, headers intact")
    func pythonToSwift() async throws {
        let topic = uniqueName("py2swift")
        let broker = try await launchBroker(topics: [topic: 2])
        let run = try await runProcess(try python(), [script, "produce", broker.bootstrapServers, topic, "50"])
        #expect(run.status == 0, "\(run.stderr)")
        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: uniqueName("g")))
        try await consumer.subscribe(topics: [topic])
        let got = try await collect(consumer, count: 50)
        await consumer.close()
        let byIndex = Dictionary(uniqueKeysWithValues: got.map { (text($0.header("index")?.value) ?? "", $0) })
        for i in 0..<50 {
            let m = try #require(byIndex["\(i)"])
            #expect(text(m.key) == "py-key-\(i)")
            #expect(text(m.value) == "py-value-\(i)")
            #expect(m.timestamp?.milliseconds == 1_700_000_000_000 + Int64(i))
            #expect(m.headers.map(\.key) == ["origin", "index", "empty"])
            #expect(text(m.header("origin")?.value) == "python")
            #expect(m.header("empty") != nil && m.header("empty")?.value == nil)
        }
        _ = try await broker.terminate()
    }

    @Test("records produced by the Swift producer are read by confluent-kafka, headers intact")
    func swiftToPython() async throws {
        let topic = uniqueName("swift2py")
        let broker = try await launchBroker(topics: [topic: 2])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        let reports = await producer.send(
            (0..<40).map {
                KafkaProducerMessage(
                    topic: topic, key: bytes("swift-key-\($0)"), value: $0 == 5 ? nil : bytes("swift-value-\($0)"),
                    headers: [
                        KafkaHeader(key: "origin", value: "swift"), KafkaHeader(key: "index", value: "\($0)"),
                        KafkaHeader(key: "none", value: nil),
                    ],
                    timestamp: 1_710_000_000_000 + Int64($0))
            })
        #expect(reports.allSatisfy { $0.error == nil })
        await producer.shutdown()
        let run = try await runProcess(try python(), [script, "consume", broker.bootstrapServers, topic, "40"])
        #expect(run.status == 0, "\(run.stderr)")
        let records = run.stdout.compactMap(jsonObject).filter { $0["offset"] != nil }
        #expect(records.count == 40)
        for r in records {
            let headers = r["headers"] as? [[Any]] ?? []
            let index = headers.first { ($0.first as? String) == "index" }?.last as? String ?? "?"
            #expect(r["key"] as? String == "swift-key-\(index)")
            if index == "5" { #expect(r["value"] is NSNull) } else { #expect(r["value"] as? String == "swift-value-\(index)") }
            #expect((r["timestamp"] as? Int).map { $0 - 1_710_000_000_000 } == Int(index))
            #expect(headers.map { $0.first as? String } == ["origin", "index", "none"])
            #expect(headers.last?.last is NSNull)
        }
        _ = try await broker.terminate()
    }
}
