import Config
import EmbeddedBroker
import Foundation
import Kafka
import Logging
import Pipeline
import PipelineModel
import PipelineTools
import Stateful
import StreamCore
import Testing

/// The stateful process stage as real worker processes on the embedded broker: instances added and
/// removed mid-stream, instances SIGKILLed and restarted. The oracle is the broker-free engine
/// (``StatefulTestDriver``) fed each partition's records in the same order: the window results in
/// the output topic — deduplicated by `sf.id`, as a sink's upsert would — must equal its results
/// exactly, with no window missing, added or counted twice.
@Suite(.serialized) struct StatefulEndToEndTests {
    static let partitions: Int32 = 6
    static let windowYAML = """
        type: tumbling
        size: 10s
        grace: 2s
        time: ts
        idle_timeout: 0s
        aggregate: { n: count(), total: sum(v), avg_v: avg(v), max_v: max(v), kinds: distinct(kind), p90: "percentile(v, 90)" }
        """

    static func pipelineYAML() -> String {
        let window = windowYAML.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n")
        return """
            name: window-e2e
            kafka:
              bootstrap: ${KAFKA_BROKERS:-127.0.0.1:9092}
              consumer: { session.timeout.ms: "6000", heartbeat.interval.ms: "500" }
            topics:
              in:        { name: w.in, partitions: \(partitions) }
              out:       { name: w.out, partitions: \(partitions) }
              changelog: { name: w.changelog, partitions: \(partitions) }
              late:      { name: w.late, partitions: \(partitions) }
              dead:      { name: w.dead, partitions: 1 }
            dead_letter: dead
            process:
              input: in
              output: out
              batch_size: 200
              late: late
              state: { changelog: changelog, memory_budget: 32MiB }
              window:
            \(window)
            """
    }

    struct Input: Sendable {
        var key: String
        var partition: Int32
        var ts: Int64
        var v: Int64
        var id: String
    }

    /// Keys spread over the partitions; per partition event time moves forward with jitter inside
    /// the grace, so nothing is late but windows see out-of-order records.
    static func inputs(count: Int, seed: UInt64) -> [Input] {
        var rng = SplitMix64(seed: seed)
        var clock = [Int64](repeating: 0, count: Int(partitions))
        return (0..<count).map { i in
            let k = Int(rng.below(120))
            let p = Int32(k % Int(partitions))
            clock[Int(p)] += Int64(rng.below(400))
            let ts = max(0, clock[Int(p)] - Int64(rng.below(1_500)))
            return Input(key: "key-\(k)", partition: p, ts: ts, v: Int64(rng.below(1000)), id: "r\(i)")
        }
    }

    static func flush() -> [Input] {
        (0..<partitions).map { Input(key: "flush-\($0)", partition: $0, ts: 1_000_000_000, v: 0, id: "flush-\($0)") }
    }

    static func value(_ i: Input) -> JSONValue {
        ["ts": .integer(i.ts), "v": .integer(i.v), "kind": .string("k\(i.v % 5)")]
    }

    /// What the engine computes with the records of each partition in order.
    static func expected(_ inputs: [Input]) throws -> [String: JSONValue] {
        let spec = try WindowSpec(try ConfigNode.parse(yaml: windowYAML, source: ConfigSource(file: "w.yaml", environment: [:])))
        var driver = StatefulTestDriver(op: .window(spec), inputTopics: ["w.in"], partitions: partitions)
        for i in inputs {
            try driver.pipe(partition: i.partition, key: i.key, value: value(i), eventTimeMs: i.ts, id: i.id)
        }
        var out: [String: JSONValue] = [:]
        for r in driver.results { out[r.id] = r.value }
        return out
    }

    final class Harness: Sendable {
        let broker: EmbeddedBrokerProcess
        let file: String
        let work: String
        let producer: KafkaProducer
        let instances = Instances()

        init() async throws {
            work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-window-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            file = work + "/window.yaml"
            try StatefulEndToEndTests.pipelineYAML().write(toFile: file, atomically: true, encoding: .utf8)
            broker = try await EmbeddedBrokerProcess.launch(arguments: ["--pipeline", file])
            producer = try KafkaProducer(
                configuration: KafkaProducerConfiguration(kafka: KafkaConfiguration(bootstrapServers: broker.bootstrapServers)))
        }

        func produce(_ inputs: [Input]) async throws {
            let messages = inputs.map {
                KafkaProducerMessage(
                    topic: "w.in", partition: $0.partition, key: Array($0.key.utf8), value: StatefulEndToEndTests.value($0).serialized(),
                    headers: [KafkaHeader(key: RecordHeader.id, value: $0.id)])
            }
            for report in await producer.send(messages) where report.error != nil {
                throw LocalTestError("produce failed: \(report.error.map { "\($0)" } ?? "")")
            }
        }

        @discardableResult
        func startInstance() throws -> ChildProcess {
            let n = instances.all.count
            let p = try ChildProcess(
                executable: try ChildProcess.locate("process"), arguments: ["--pipeline", file],
                environment: ["KAFKA_BROKERS": broker.bootstrapServers, "HTTP_PORT": "0", "LOG_LEVEL": "info"],
                logFile: "\(work)/process-\(n).log")
            instances.append(p)
            return p
        }

        /// Until the group has committed every input record (checkpoints come first) twice in a row.
        func waitUntilDrained() async throws {
            let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: broker.bootstrapServers))
            defer { Task { await admin.shutdown() } }
            let deadline = ContinuousClock.now + .seconds(180)
            var zero = 0
            while ContinuousClock.now < deadline {
                let lags = (try? await admin.groupLag(group: "window-e2e.process", topics: ["w.in"])) ?? []
                if lags.count == Int(partitions), lags.allSatisfy({ $0.lag == 0 }) {
                    zero += 1
                    if zero >= 3 { return }
                } else {
                    zero = 0
                }
                try await Task.sleep(for: .milliseconds(500))
            }
            throw LocalTestError("the process group did not drain")
        }

        /// Until the group's lag drops below `n` records (polling: lag has no push channel).
        func waitUntilLag(below n: Int) async throws {
            let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: broker.bootstrapServers))
            defer { Task { await admin.shutdown() } }
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                let lags = (try? await admin.groupLag(group: "window-e2e.process", topics: ["w.in"])) ?? []
                if lags.count == Int(partitions), lags.reduce(0, { $0 + $1.lag }) < n { return }
                try await Task.sleep(for: .milliseconds(20))
            }
            throw LocalTestError("the process group did not get below a lag of \(n)")
        }

        /// The output topic, last record per `sf.id`.
        func results() async throws -> (byID: [String: JSONValue], written: Int) {
            let messages = try await TopicReader.readToEnd(
                topic: "w.out", kafka: KafkaConfiguration(bootstrapServers: broker.bootstrapServers))
            var out: [String: JSONValue] = [:]
            for m in messages {
                guard let id = m.header(RecordHeader.id)?.value.map({ String(decoding: $0, as: UTF8.self) }), let v = m.value else {
                    continue
                }
                out[id] = try JSONValue.parse(v)
            }
            return (out, messages.count)
        }

        func logs() -> String {
            instances.all.enumerated().map { "instance \($0.offset):\n\($0.element.standardError.suffix(3000))" }.joined(separator: "\n")
        }

        func stop() async {
            for p in instances.all where p.exited == nil { _ = await p.terminate(timeout: .seconds(20)) }
            await producer.shutdown()
            _ = try? await broker.terminate()
            try? FileManager.default.removeItem(atPath: work)
        }
    }

    /// 1 → 2 → 3 → 2 instances while records flow: identical to a single instance.
    @Test func scalingInAndOutGivesTheSingleInstanceResults() async throws {
        let all = Self.inputs(count: 24_000, seed: 11)
        let expected = try Self.expected(all + Self.flush())
        let h = try await Harness()
        do {
            let chunks = stride(from: 0, to: all.count, by: 6_000).map { Array(all[$0..<min(all.count, $0 + 6_000)]) }
            let first = try h.startInstance()
            try await h.produce(chunks[0])
            try h.startInstance()
            try await h.produce(chunks[1])
            try h.startInstance()
            try await h.produce(chunks[2])
            let stopped = await first.terminate(timeout: .seconds(30))
            #expect(stopped.status == .init(code: 0, signaled: false), "SIGTERM: graceful exit")
            try await h.produce(chunks[3])
            try await h.produce(Self.flush())
            try await h.waitUntilDrained()
            let (actual, written) = try await h.results()
            #expect(actual.count == expected.count, "windows: \(actual.count) emitted, \(expected.count) expected")
            #expect(actual == expected, "results differ from a single instance's")
            print(
                "stateful scaling: \(all.count) records, 1→2→3→2 instances, \(expected.count) windows, "
                    + "\(written) result records written")
        } catch {
            Issue.record("\(error)\n\(h.logs())")
        }
        await h.stop()
    }

    /// SIGKILL an instance while it works, start it again, several times, while upstream sends
    /// some records twice: identical results (every record counted once).
    @Test func killingInstancesMidStreamGivesTheCrashFreeResults() async throws {
        let all = Self.inputs(count: 24_000, seed: 12)
        let expected = try Self.expected(all + Self.flush())
        let h = try await Harness()
        do {
            var victim = try h.startInstance()
            try h.startInstance()
            var kills = 0
            for start in stride(from: 0, to: all.count, by: 4_000) {
                // Each chunk, then a tenth of it again with the same ids: what an upstream stage
                // that crashed after producing but before committing sends (its redelivery).
                let chunk = Array(all[start..<min(all.count, start + 4_000)])
                try await h.produce(chunk)
                try await h.produce(chunk.enumerated().filter { $0.offset % 10 == 3 }.map(\.element))
                if kills < 4 {
                    // Kill while the chunk is being worked on: once some of it is committed, not all.
                    try await h.waitUntilLag(below: chunk.count * 2 / 3)
                    _ = await victim.kill()
                    kills += 1
                    victim = try h.startInstance()
                }
            }
            try await h.produce(Self.flush())
            try await h.waitUntilDrained()
            let (actual, written) = try await h.results()
            #expect(kills == 4)
            #expect(actual.count == expected.count, "windows: \(actual.count) emitted, \(expected.count) expected")
            #expect(actual == expected, "results differ from the crash-free run")
            let missing = Set(expected.keys).subtracting(actual.keys).count
            let wrong = expected.filter { actual[$0.key] != nil && actual[$0.key] != $0.value }.count
            print(
                "stateful crash test: \(all.count) records, \(kills) SIGKILLs, \(expected.count) windows, missing \(missing), "
                    + "wrong \(wrong), \(written) result records written (re-emitted identical: \(written - actual.count))"
            )
        } catch {
            Issue.record("\(error)\n\(h.logs())")
        }
        await h.stop()
    }
}

extension StatefulEndToEndTests {
    /// `streamfirst replay rewind --to-beginning --reset-state`, then the stage runs again: every
    /// window's result is byte-identical to the first run's (compared by digest, per id).
    @Test func aReplayFromTheBeginningReproducesEveryWindowByteForByte() async throws {
        let all = Self.inputs(count: 8_000, seed: 13)
        let h = try await Harness()
        do {
            let first = try h.startInstance()
            try await h.produce(all + Self.flush())
            try await h.waitUntilDrained()
            let spec = try PipelineSpec.load(file: h.file, environment: ["KAFKA_BROKERS": h.broker.bootstrapServers])
            let out = try #require(spec.topics["out"])
            let before = try await Replay.digests(topic: out.name, kafka: spec.kafka)
            #expect(await first.terminate(timeout: .seconds(30)).status == .init(code: 0, signaled: false))
            let replay = Replay(spec: spec, stage: .process, logger: Logger(label: "test"))
            await #expect(throws: PipelineError.self) { _ = try await replay.rewind(to: .beginning, resetState: false, dryRun: false) }
            let report = try await replay.rewind(to: .beginning, resetState: true, dryRun: false)
            #expect(report.offsets.allSatisfy { $0.offset == 0 } && report.offsets.count == Int(Self.partitions))
            #expect(report.resetPartitions.count == Int(Self.partitions))
            try h.startInstance()
            // The replay re-emits every result: wait for the group to catch up again.
            try await h.waitUntilDrained()
            let after = try await Replay.digests(topic: out.name, kafka: spec.kafka)
            let (_, written) = try await h.results()
            let c = Replay.compare(before, after)
            #expect(c.same == before.count && c.different.isEmpty && c.onlyBefore.isEmpty && c.onlyAfter.isEmpty, "\(c)")
            #expect(written >= 2 * before.count, "the replay wrote every result again (\(written) records for \(before.count) windows)")
            print(
                "replay: \(before.count) windows, \(c.same) identical after a rewind to the beginning, "
                    + "\(written) result records in the topic"
            )
        } catch {
            Issue.record("\(error)\n\(h.logs())")
        }
        await h.stop()
    }
}

struct LocalTestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

final class Instances: @unchecked Sendable {
    // @unchecked: guarded by the lock.
    private let lock = NSLock()
    private var items: [ChildProcess] = []
    func append(_ p: ChildProcess) { lock.withLock { items.append(p) } }
    var all: [ChildProcess] { lock.withLock { items } }
}
