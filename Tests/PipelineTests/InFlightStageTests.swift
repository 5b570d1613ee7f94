import EmbeddedBroker
import Foundation
import Kafka
import LocalRun
import Pipeline
import StreamCore
import Testing

/// A pass-through process worker with many small batches in flight at once (`in_flight_batches: 16`,
/// `batch_size: 25`, and a producer `linger.ms` that keeps acknowledgements slow), as a real process
/// on the embedded broker:
///
/// - SIGKILLed mid-stream: every input record below the group's committed offset has its output in
///   the output topic (offsets never move past an unacknowledged record), and after a restart every
///   input record has its output, with the same value;
/// - SIGTERMed mid-stream: the in-flight batches are drained before the final commit, so what was
///   produced is exactly what was committed; the rest of the run produces every record exactly once
///   and in input order per key (batches in flight do not reorder a partition's records).
@Suite(.serialized) struct InFlightStageTests {
    static let records = 16000
    static let keys = 40

    static func pipeline(linger: Int) -> String {
        """
        name: inflight
        kafka:
          consumer: { session.timeout.ms: "6000", heartbeat.interval.ms: "500" }
          producer: { linger.ms: "\(linger)" }
        topics:
          in: { name: inflight.in, partitions: 4 }
          out: { name: inflight.out, partitions: 4 }
          dead: { name: inflight.dead, partitions: 1 }
        dead_letter: dead
        process:
          input: in
          output: out
          batch_size: 25
          in_flight_batches: 16
          steps: []

        """
    }

    static func launch(_ name: String, linger: Int) async throws -> (LocalPipeline, String) {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-inflight-\(name)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let file = (work as NSString).appendingPathComponent("pipeline.yaml")
        try Data(pipeline(linger: linger).utf8).write(to: URL(fileURLWithPath: file))
        let local = try await LocalPipeline.launch(.init(pipelineFile: file, workDirectory: work, logLevel: "warning"))
        return (local, work)
    }

    /// Produces the input: record i has key `k<i mod keys>`, value `{"n": i}` and id `r<i>`.
    static func fill(_ local: LocalPipeline) async throws {
        let producer = try KafkaProducer(
            configuration: KafkaProducerConfiguration(kafka: KafkaConfiguration(bootstrapServers: local.bootstrapServers)))
        var messages: [KafkaProducerMessage] = []
        for i in 0..<records {
            messages.append(
                KafkaProducerMessage(
                    topic: "inflight.in", key: Array("k\(i % keys)".utf8), value: Array("{\"n\":\(i)}".utf8),
                    headers: [KafkaHeader(key: RecordHeader.id, value: "r\(i)")]))
        }
        let reports = await producer.send(messages)
        #expect(reports.allSatisfy { $0.error == nil })
        await producer.shutdown()
    }

    static func id(_ m: KafkaMessage) -> String? {
        m.header(RecordHeader.id)?.value.map { String(decoding: $0, as: UTF8.self) }
    }

    static func n(_ m: KafkaMessage) -> Int64? {
        guard let v = m.value, case .integer(let n)? = (try? JSONValue.parse(v))?["n"] else { return nil }
        return n
    }

    static func outputCount(_ local: LocalPipeline) async throws -> Int64 {
        try await local.topicCounts()["out"] ?? 0
    }

    static func waitForOutputs(_ local: LocalPipeline, atLeast n: Int64) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if try await outputCount(local) >= n { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw LocalRunError("fewer than \(n) outputs after 120 s")
    }

    /// The group's committed offset per input partition (0 where none).
    static func committed(_ local: LocalPipeline) async throws -> [Int32: Int64] {
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: local.bootstrapServers))
        let offsets = try await admin.groupOffsets(group: "inflight.process", topics: ["inflight.in"])
        await admin.shutdown()
        return Dictionary(uniqueKeysWithValues: offsets.map { ($0.partition, max(0, $0.offset)) })
    }

    /// Every input record below its partition's committed offset has an output with its id.
    static func expectCommittedRecordsWereDelivered(_ local: LocalPipeline, input: [KafkaMessage]) async throws -> Int {
        let committed = try await committed(local)
        let outIDs = Set(try await local.readAll("out").compactMap(id))
        let covered = input.filter { $0.offset < (committed[$0.partition] ?? 0) }
        let missing = covered.filter { !outIDs.contains(id($0) ?? "") }
        #expect(missing.isEmpty, "committed past \(missing.count) records without output, e.g. \(missing.prefix(3))")
        return covered.count
    }

    @Test func sigkillWithBatchesInFlightLosesNothing() async throws {
        let (local, work) = try await Self.launch("kill", linger: 100)
        defer { try? FileManager.default.removeItem(atPath: work) }
        do {
            try await local.start(.process)
            try await Self.fill(local)
            let input = try await local.readAll("in")
            #expect(input.count == Self.records)
            try await Self.waitForOutputs(local, atLeast: Int64(Self.records / 3))
            // Let auto-commit (every second) commit offsets of delivered batches while batches are
            // in flight, then kill without warning.
            let before = try await Self.committed(local)
            while try await Self.committed(local) == before { try await Task.sleep(for: .milliseconds(50)) }
            let killedAt = try await Self.outputCount(local)
            _ = try await local.kill(.process)
            #expect(killedAt < Int64(Self.records), "the worker was killed after it finished: the test proves nothing")
            let covered = try await Self.expectCommittedRecordsWereDelivered(local, input: input)
            #expect(covered > 0, "nothing was committed before the kill")

            try await local.start(.process)
            try await local.waitUntilDrained(timeout: .seconds(120))
            let output = try await local.readAll("out")
            var byID: [String: Int64] = [:]
            for m in output {
                guard let id = Self.id(m), let n = Self.n(m) else {
                    Issue.record("an output without id or n: \(m)")
                    continue
                }
                if let earlier = byID[id] { #expect(earlier == n, "\(id) has two different values") }
                byID[id] = n
            }
            #expect(byID.count == Self.records, "records lost: \(Self.records - byID.count)")
            #expect((0..<Self.records).allSatisfy { byID["r\($0)"] == Int64($0) })
            print(
                "in-flight kill: killed at \(killedAt) outputs, \(covered) records committed before the kill, "
                    + "\(output.count) outputs for \(Self.records) records after the restart")
            _ = await local.stop()
        } catch {
            if let p = local.process(.process) { Issue.record("process stderr:\n\(p.standardError.suffix(3000))") }
            _ = await local.stop()
            throw error
        }
    }

    @Test func sigtermDrainsBatchesInFlightAndKeepsOrderPerKey() async throws {
        let (local, work) = try await Self.launch("term", linger: 100)
        defer { try? FileManager.default.removeItem(atPath: work) }
        do {
            try await local.start(.process)
            try await Self.fill(local)
            #expect(try await local.readAll("in").count == Self.records)
            try await Self.waitForOutputs(local, atLeast: Int64(Self.records / 3))
            let result = await local.terminate(.process)
            #expect(result?.status == .init(code: 0, signaled: false) && result?.timedOut == false)
            // A graceful stop waits for every batch in flight and commits its offsets: what was
            // produced is exactly what was committed (no rebalance, no crash: no duplicates).
            let produced = try await Self.outputCount(local)
            let committed = try await Self.committed(local).values.reduce(0, +)
            #expect(produced == committed, "produced \(produced) outputs but committed \(committed) offsets")
            #expect(produced < Int64(Self.records), "the worker had finished before SIGTERM: the drain was not exercised")

            try await local.start(.process)
            try await local.waitUntilDrained(timeout: .seconds(120))
            let output = try await local.readAll("out")
            #expect(output.count == Self.records, "a graceful stop and restart must neither lose nor duplicate")
            // Per key, the outputs come in input order (one key is in one output partition).
            var lastByKey: [String: Int64] = [:]
            var outOfOrder = 0
            for m in output {
                guard let key = m.key.map({ String(decoding: $0, as: UTF8.self) }), let n = Self.n(m) else { continue }
                if let last = lastByKey[key], last >= n { outOfOrder += 1 }
                lastByKey[key] = n
            }
            #expect(outOfOrder == 0, "\(outOfOrder) outputs came before an earlier record of their key")
            #expect(lastByKey.count == Self.keys)
            print(
                "in-flight drain: SIGTERM after \(produced) outputs, all committed; \(output.count) outputs in key order after the restart")
            _ = await local.stop()
        } catch {
            if let p = local.process(.process) { Issue.record("process stderr:\n\(p.standardError.suffix(3000))") }
            _ = await local.stop()
            throw error
        }
    }
}
