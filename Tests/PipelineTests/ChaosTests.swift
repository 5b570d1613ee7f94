import EmbeddedBroker
import Foundation
import Kafka
import Logging
import Pipeline
import StreamCore
import Testing

@testable import LocalRun

/// A CI-sized chaos run (`streamfirst chaos`): workers SIGKILLed and restarted, brokers taken down,
/// slowed, erroring and moving leaders, while 6000 readings flow; every record must end in the sink
/// or the dead-letter topic exactly once, and every worker must end healthy and exit 0.
@Suite(.serialized) struct ChaosTests {
    static let pipelineFile = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("pipelines/iot-sensors.yaml").path

    @Test func killsAndBrokerFaultsLoseAndDuplicateNothing() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-chaos-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        let run = ChaosRun(
            options: .init(pipelineFile: Self.pipelineFile, workDirectory: work, records: 6000, rate: 400, interval: .seconds(2), seed: 11))
        let report = try await run.run()
        print(report.text)
        #expect(report.passed, "\(report.text)")
        #expect(report.kills.count + report.brokerFaults.count >= 4, "the schedule injected too few faults: \(report.text)")
        #expect(report.lost.isEmpty)
        #expect(report.duplicatedRows == 0)
    }

    static let windowsFile = URL(fileURLWithPath: pipelineFile).deletingLastPathComponent().appendingPathComponent("iot-windows.yaml").path

    /// `streamfirst chaos pipelines/iot-windows.yaml`: the same faults against the stateful window
    /// stage (state restored from its changelog after every kill). The windows in the output topic
    /// and the sink's rows must equal what the broker-free engine computes from the same generated
    /// records; no window id may carry two values (a reading counted twice); every generated record
    /// reaches the window stage or the dead-letter topic, and the dead letters are the oracle's.
    @Test func statefulWindowsUnderKillsAndBrokerFaultsEqualTheBrokerFreeEngine() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-chaosw-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        let run = ChaosRun(
            options: .init(pipelineFile: Self.windowsFile, workDirectory: work, records: 6000, rate: 400, interval: .seconds(2), seed: 18))
        let report = try await run.run()
        print(report.text)
        #expect(report.stateful)
        #expect(report.passed, "\(report.text)")
        // Seed 18's schedule starts by killing the window stage (and kills it twice more if time allows).
        #expect(report.kills.contains("process"), "the window stage was never killed: \(report.text)")
        #expect(report.windows > 100, "too few windows to compare: \(report.text)")
        #expect(report.sinkRows == report.windows)
        #expect(report.doubleCounted.isEmpty && report.windowMismatches.isEmpty)
        #expect(report.lost.isEmpty && report.rows + report.deadLettered == report.records)
    }

    /// The loss diagnosis of a chaos run, against the real embedded broker: records written straight
    /// into the pipeline's topics as if some hop had dropped them — one never reaching raw, one
    /// stopping in raw, one in valid, one reaching enriched (so lost by persist) — are located by the
    /// run's tap in every topic, and each is blamed on the hop that had it last.
    @Test func theTapBlamesTheHopThatHadALostRecordLast() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-chaosd-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        let local = try await LocalPipeline.launch(
            .init(pipelineFile: Self.pipelineFile, workDirectory: work, environment: ["IOT_COUNT": "10"]))
        let tap = RecordTap(topics: ChaosRun.tappedTopics(local.spec, stateful: false), seed: 42, count: 10, started: .now)
        do {
            try await tap.start(bootstrapServers: local.bootstrapServers)
            let producer = try KafkaProducer(
                configuration: KafkaProducerConfiguration(kafka: KafkaConfiguration(bootstrapServers: local.bootstrapServers)))
            let raw = try #require(local.spec.topics["raw"]).name
            let valid = try #require(local.spec.topics["valid"]).name
            let enriched = try #require(local.spec.topics["enriched"]).name
            // n = 1: raw only; 2: raw and valid; 3: raw, valid, enriched; 0: nowhere.
            var messages: [KafkaProducerMessage] = []
            for (n, topics) in [(1, [raw]), (2, [raw, valid]), (3, [raw, valid, enriched])] {
                for t in topics {
                    messages.append(
                        KafkaProducerMessage(
                            topic: t, partition: 2, key: nil, value: Array("{}".utf8),
                            headers: [KafkaHeader(key: RecordHeader.id, value: "gen:42:\(n)")]))
                }
            }
            for r in await producer.send(messages) { #expect(r.error == nil) }
            await producer.shutdown()
            let ends = await ChaosRun.highWatermarks(local, topics: tap.topics)
            #expect(await tap.waitUntilRead(upTo: ends, timeout: .seconds(30)))
            let lost = ["gen:42:0", "gen:42:1", "gen:42:2", "gen:42:3"]
            let located = ChaosRun.locate(lost, seed: 42, tap: tap, chain: ChaosRun.chain(local.spec, stateful: false)) { _ in 2 }
            #expect(located.map(\.hop) == ["ingest", "validate", "process", "persist"])
            #expect(located[1].input?.topic == raw && located[1].input?.sighting.partition == 2 && located[1].input?.sighting.offset == 0)
            #expect(located[3].input?.topic == enriched)
            let evidence = await ChaosRun.diagnose(
                local, lost: lost, seed: 42, count: 10, tap: tap, stateful: false, events: [(atMs: 0, what: "killed validate")])
            print(evidence.lines.joined(separator: "\n"))
            #expect(evidence.hops == ["ingest": 1, "validate": 1, "process": 1, "persist": 1])
            #expect(evidence.lines.contains { $0.hasPrefix("lost at hop validate: 1 record(s) of \(raw)[2] offsets 0…0") })
            #expect(evidence.lines.contains { $0.contains("\(raw)[2] low 0 high 3") })
            #expect(evidence.lines.contains { $0.contains("killed validate") })
        } catch {
            await tap.stop()
            _ = await local.stop()
            throw error
        }
        await tap.stop()
        _ = await local.stop()
    }

    /// What lost the 4 records of chaos seed 2026, on the real embedded broker: a produce request
    /// fails while the next one for the same partition is in flight; the next one succeeds (the
    /// embedded broker does not check idempotent sequence numbers for producers without a
    /// transactional.id, so it appends it), and librdkafka's idempotent producer then acknowledges
    /// the failed request's record *implicitly* — reported delivered, without an offset, and not in
    /// the topic. `sendConfirmed` (every stage's send) re-sends such records until the broker writes
    /// them. The slow broker (400 ms RTT) keeps the first request in flight while the second is sent;
    /// `batch.num.messages=1` puts the two records in two requests.
    @Test func implicitlyAcknowledgedRecordsAreSentAgainUntilTheBrokerHasThem() async throws {
        let broker = try await EmbeddedBrokerProcess.launch(arguments: [
            "--topic", "warm:1", "--topic", "plain:1", "--topic", "confirmed:1",
        ])
        var config = KafkaProducerConfiguration(kafka: KafkaConfiguration(bootstrapServers: broker.bootstrapServers))
        config.linger = .zero
        config.properties["batch.num.messages"] = "1"
        let producer = try KafkaProducer(configuration: config)
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: broker.bootstrapServers))
        func records(_ topic: String) -> [KafkaProducerMessage] {
            ["a", "b"].map {
                KafkaProducerMessage(
                    topic: topic, partition: 0, value: Array("{}".utf8),
                    headers: [KafkaHeader(key: RecordHeader.id, value: "\(topic):\($0)")])
            }
        }
        do {
            try producer.prepare(topics: ["warm", "plain", "confirmed"])
            // Producer id and metadata first, at full speed.
            #expect(try await producer.send(KafkaProducerMessage(topic: "warm", partition: 0, value: Array("{}".utf8))).offset == 0)
            try await broker.control.setRTT(broker: 1, milliseconds: 400)

            // The artefact: both records reported delivered, only the second one written.
            try await broker.control.pushRequestErrors(api: "Produce", errors: ["NOT_ENOUGH_REPLICAS"])
            let plain = await producer.send(records("plain"))
            #expect(plain.allSatisfy { $0.error == nil }, "\(plain)")
            #expect(plain[0].offset < 0 && plain[1].offset == 0, "the first record should be acknowledged implicitly: \(plain)")
            #expect(try await admin.watermarks(topic: "plain", partition: 0).high == 1, "the embedded broker has only the second record")

            // The fix: the implicitly acknowledged record is sent again and lands.
            try await broker.control.pushRequestErrors(api: "Produce", errors: ["NOT_ENOUGH_REPLICAS"])
            let confirmed = await producer.sendConfirmed(records("confirmed"), logger: Logger(label: "test"))
            #expect(confirmed.succeeded && confirmed.withoutOffset.isEmpty, "\(confirmed)")
            #expect(try await admin.watermarks(topic: "confirmed", partition: 0).high == 2)
        } catch {
            Issue.record("\(error)")
        }
        await producer.shutdown()
        await admin.shutdown()
        _ = try? await broker.terminate()
    }
}
