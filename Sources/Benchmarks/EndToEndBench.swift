import ArgumentParser
import CBaseline
import EmbeddedBroker
import Foundation
import Histogram
import Kafka
import Logging
import Pipeline
import PipelineTools

/// `streamfirst-bench e2e`: the four real workers (ingest → validate → process → persist) at a
/// constant input rate against a four-hop C chain (source → relay → relay → relay) at the same rate
/// and `fetch.wait.max.ms`; end-to-end latency percentiles (HdrHistogram) measured the same way for
/// both: a C consumer on the last topic takes now − the record's `sf.ingest_time` header.
struct EndToEndBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "Four workers vs a four-hop C relay chain at a constant rate: p50 / p99 / p99.9 end-to-end latency and ratios.",
        discussion: """
            Swift: ingest (generator source at --rate) → validate (JSON Schema) → process (one set step) → persist (Kafka \
            sink, so that the last hop writes a topic like the C chain's). C: `streamfirst-bench c-source` at --rate → three \
            `c-relay` processes. Every hop produces once (4 produces per record in both), all consumers use \
            --fetch-wait-ms, all producers --linger. Latency: wall clock when the measuring consumer (C, in this process) \
            sees the record minus its sf.ingest_time header (milliseconds, set by ingest / the C source when sending), \
            so both sides carry the same 0–1 ms truncation. The first --warmup-seconds of records are left out.
            """
    )

    @Option(help: "Records per second into the first hop.") var rate = 2000
    @Option(help: "Seconds of input per run.") var seconds = 15
    @Option(help: "Records left out at the start, in seconds of input (group joins settle, caches warm).") var warmupSeconds = 2
    @Option(help: "Partitions of every topic.") var partitions = 6
    @Option(help: "Rounds (each runs both chains, alternating which goes first).") var rounds = 3
    @Option(help: "fetch.wait.max.ms of every consumer (the embedded broker holds each fetch this long; see notes).")
    var fetchWaitMs = 1
    @Option(help: "linger.ms of every producer (the stage runtime's default is 2).") var linger = 2
    @Flag(help: "socket.nagle.disable=true on every client of both sides (librdkafka's default leaves Nagle on).")
    var nagleDisable = false
    @Option(help: "Directory for pipeline files and worker state.") var workDirectory = "/tmp/streamfirst-bench-e2e"

    struct Run {
        var p50: Double
        var p99: Double
        var p999: Double
        var max: Double
        var count: Int
        var cpu: Double
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        guard let selfExe = Bundle.main.executableURL else { throw ValidationError("cannot find this executable") }
        let broker = try await EmbeddedBrokerProcess.launch()
        let brokers = broker.bootstrapServers
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; librdkafka \(KafkaClientInfo.librdkafkaVersion)")
        print("broker: embedded (librdkafka mock cluster, separate process) at \(brokers)")
        print(
            "workload: \(rate) records/s for \(seconds) s (first \(warmupSeconds) s left out), \(partitions) partitions, "
                + "fetch.wait.max.ms=\(fetchWaitMs), linger.ms=\(linger)\(nagleDisable ? ", socket.nagle.disable=true" : ""); "
                + "\(rounds) rounds\n"
        )
        var cRuns: [Run] = []
        var sRuns: [Run] = []
        for round in 0..<rounds {
            for which in (round % 2 == 0 ? ["c", "swift"] : ["swift", "c"]) {
                let id = "\(round)-\(which)-\(UUID().uuidString.prefix(8).lowercased())"
                if which == "c" {
                    cRuns.append(try await runC(id: id, brokers: brokers, broker: broker, selfExe: selfExe))
                } else {
                    sRuns.append(try await runSwift(id: id, brokers: brokers, broker: broker))
                }
            }
            let c = cRuns.last!
            let s = sRuns.last!
            print(
                String(
                    format:
                        "round %d: C p50 %.2f p99 %.2f p99.9 %.2f ms (%d rec, %.1f CPU s); Swift p50 %.2f p99 %.2f p99.9 %.2f ms (%d "
                        + "rec, %.1f CPU s); p99 ratio %.2f",
                    round + 1, c.p50, c.p99, c.p999, c.count, c.cpu, s.p50, s.p99, s.p999, s.count, s.cpu, s.p99 / c.p99))
        }
        func med(_ runs: [Run], _ f: (Run) -> Double) -> Double { median(runs.map(f)) }
        print("\nend-to-end latency, ms (median of \(rounds) rounds)")
        print(
            String(
                format: "  C chain : p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  CPU %.2f s per run", med(cRuns, \.p50), med(cRuns, \.p99),
                med(cRuns, \.p999), med(cRuns, \.max), med(cRuns, \.cpu)))
        print(
            String(
                format: "  Swift   : p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  CPU %.2f s per run", med(sRuns, \.p50), med(sRuns, \.p99),
                med(sRuns, \.p999), med(sRuns, \.max), med(sRuns, \.cpu)))
        let p99Ratio = med(sRuns, \.p99) / med(cRuns, \.p99)
        print(
            String(
                format: "  Swift/C: p50 %.2f  p99 %.2f%@  p99.9 %.2f", med(sRuns, \.p50) / med(cRuns, \.p50), p99Ratio,
                p99Ratio <= 1.5 ? " (target ≤ 1.5: met)" : " (target ≤ 1.5: missed)", med(sRuns, \.p999) / med(cRuns, \.p999)))
        _ = try? await broker.terminate()
    }

    var total: Int { rate * seconds }

    /// Starts the measuring consumer on `topic` on its own thread (it blocks in librdkafka).
    func startMeasuring(_ brokers: String, topic: String) -> Task<[Int64], any Error> {
        let (total, partitions, fetchWaitMs) = (self.total, self.partitions, self.fetchWaitMs)
        return Task {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<[Int64], any Error>) in
                let thread = Thread {
                    var latencies = [Int64](repeating: 0, count: total)
                    var err = [CChar](repeating: 0, count: 256)
                    let got = latencies.withUnsafeMutableBufferPointer { buf in
                        cb_latency_consume(
                            brokers, topic, Int32(partitions), Int64(total), Int32(fetchWaitMs), 60, buf.baseAddress, &err, Int32(err.count)
                        )
                    }
                    if got < 0 {
                        c.resume(throwing: ValidationError("measuring consumer: \(cString(err))"))
                    } else {
                        c.resume(returning: Array(latencies.prefix(Int(got))))
                    }
                }
                thread.start()
            }
        }
    }

    func summarize(_ latenciesUs: [Int64], cpu: Double) throws -> Run {
        guard latenciesUs.count == total else {
            throw ValidationError("the measuring consumer saw \(latenciesUs.count) of \(total) records")
        }
        var h = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        for l in latenciesUs.dropFirst(rate * warmupSeconds) { _ = h.record(UInt64(max(0, l))) }
        func ms(_ q: Double) -> Double { Double(h.valueAtPercentile(q)) / 1000 }
        return Run(p50: ms(50), p99: ms(99), p999: ms(99.9), max: Double(h.max) / 1000, count: latenciesUs.count, cpu: cpu)
    }

    func runC(id: String, brokers: String, broker: EmbeddedBrokerProcess, selfExe: URL) async throws -> Run {
        let topics = (1...4).map { "e2e-c\($0)-\(id)" }
        for t in topics { try await broker.control.createTopic(t, partitions: partitions) }
        var relays: [BenchProcess] = []
        for hop in 0..<3 {
            relays.append(
                try BenchProcess(
                    executable: selfExe,
                    arguments: [
                        "c-relay", "--brokers", brokers, "--group", "e2e-c\(hop)-\(id)", "--from", topics[hop], "--to", topics[hop + 1],
                        "--fetch-wait-ms", String(fetchWaitMs), "--linger", String(linger),
                    ] + (nagleDisable ? ["--nagle-disable"] : [])))
        }
        for r in relays { try await r.waitForLine(containing: "assigned") }
        let measuring = startMeasuring(brokers, topic: topics[3])
        let source = try BenchProcess(
            executable: selfExe,
            arguments: [
                "c-source", "--brokers", brokers, "--topic", topics[0], "--count", String(total), "--rate", String(rate),
                "--linger", String(linger),
            ] + (nagleDisable ? ["--nagle-disable"] : []))
        let processes = relays + [source]
        let cpu0 = processes.map { processCPUSeconds($0.child.processIdentifier) ?? 0 }.reduce(0, +)
        let latencies = try await measuring.value
        // The source may have exited already: its CPU is then gone from /proc; count the relays only then.
        let cpu1 = processes.map { processCPUSeconds($0.child.processIdentifier) ?? 0 }.reduce(0, +)
        for p in processes { await p.stop() }
        try await checkComplete(latencies, brokers: brokers, topics: topics, processes: processes)
        return try summarize(latencies, cpu: cpu1 - cpu0)
    }

    func runSwift(id: String, brokers: String, broker: EmbeddedBrokerProcess) async throws -> Run {
        let names = ["raw", "valid", "enriched", "out"].map { "e2e-s-\($0)-\(id)" }
        let dead = "e2e-s-dead-\(id)"
        for t in names { try await broker.control.createTopic(t, partitions: partitions) }
        try await broker.control.createTopic(dead, partitions: 1)
        let dir = URL(fileURLWithPath: workDirectory).appendingPathComponent(id)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("schemas"), withIntermediateDirectories: true)
        try Data(readingSchema.utf8).write(to: dir.appendingPathComponent("schemas/reading.json"))
        let pipeline = """
            name: bench-e2e
            \(benchKafkaSection(brokers: brokers, fetchWaitMs: fetchWaitMs, linger: linger, nagleDisable: nagleDisable))topics:
              raw: { name: "\(names[0])", partitions: \(partitions) }
              valid: { name: "\(names[1])", partitions: \(partitions) }
              enriched: { name: "\(names[2])", partitions: \(partitions) }
              out: { name: "\(names[3])", partitions: \(partitions) }
              dead: { name: "\(dead)", partitions: 1 }
            dead_letter: dead
            ingest:
              output: raw
              source: { type: generator, count: \(total), rate: \(rate), seed: 7, sensors: 1000 }
              key: sensor_id
              event_time: ts
            validate:
              input: raw
              output: valid
              schema: reading
            process:
              input: valid
              output: enriched
              steps:
                - set:
                    temperature_f: "round(temperature_c * 9 / 5 + 32, 2)"
            persist:
              input: enriched
              sink: { type: kafka, topic: "\(names[3])" }

            """
        let file = dir.appendingPathComponent("pipeline.yaml")
        try Data(pipeline.utf8).write(to: file)
        let env = [
            "HTTP_PORT": "0", "HTTP_HOST": "127.0.0.1", "LOG_LEVEL": "warning",
            "STREAMFIRST_STATE_DIR": dir.appendingPathComponent("state").path,
        ]
        var workers: [BenchProcess] = []
        for stage in ["validate", "process", "persist"] {
            workers.append(
                try BenchProcess(executable: try ChildProcess.locate(stage), arguments: ["--pipeline", file.path], environment: env))
        }
        defer {
            for (w, name) in zip(workers, ["validate", "process", "persist", "ingest"]) {
                try? Data(w.child.standardError.utf8).write(to: dir.appendingPathComponent("\(name).log"))
            }
        }
        // Every consumer has its partitions before the first record is sent.
        for w in workers { try await waitReady(w) }
        let measuring = startMeasuring(brokers, topic: names[3])
        workers.append(
            try BenchProcess(executable: try ChildProcess.locate("ingest"), arguments: ["--pipeline", file.path], environment: env))
        let cpu0 = workers.map { processCPUSeconds($0.child.processIdentifier) ?? 0 }.reduce(0, +)
        let latencies = try await measuring.value
        let cpu1 = workers.map { processCPUSeconds($0.child.processIdentifier) ?? 0 }.reduce(0, +)
        // Each stage's own view (its /stats, ingest time → its batch done, whole run): where the time goes.
        var perStage: [String] = []
        for (w, name) in zip(workers, ["validate", "process", "persist", "ingest"]) {
            if let port = try? await w.httpPort(), let r = try? await HTTPGet.get(host: "127.0.0.1", port: port, path: "/stats"),
                let stats = try? JSONDecoder().decode(StageStats.self, from: Data(r.body))
            {
                perStage.append(
                    "\(name) p50 \(Double(stats.endToEndMicros.p50) / 1000) ms p99 \(Double(stats.endToEndMicros.p99) / 1000) ms "
                        + "(batch time per record p50 \(stats.processingMicros.p50) µs)")
            }
        }
        print("  Swift stages' /stats end-to-end so far: " + perStage.joined(separator: "; "))
        for w in workers.reversed() { await w.stop() }
        try await checkComplete(latencies, brokers: brokers, topics: names, processes: workers)
        return try summarize(latencies, cpu: cpu1 - cpu0)
    }

    /// A run that lost records says where: records per topic and what the processes wrote to stderr.
    func checkComplete(_ latencies: [Int64], brokers: String, topics: [String], processes: [BenchProcess]) async throws {
        guard latencies.count != total else { return }
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: brokers, clientID: "streamfirst-bench"))
        var counts: [String] = []
        for t in topics { counts.append("\(t): \((try? await topicCount(admin, t, partitions: partitions)) ?? -1)") }
        await admin.shutdown()
        let logs = processes.map {
            "\($0.child.executable) \($0.child.exited.map { "\($0)" } ?? "running"): \($0.child.standardError.suffix(2000))"
        }
        throw ValidationError(
            "the measuring consumer saw \(latencies.count) of \(total) records; records per topic: \(counts.joined(separator: ", "))\n"
                + logs.joined(separator: "\n"))
    }

    func waitReady(_ worker: BenchProcess) async throws {
        let port = try await worker.httpPort()
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let r = try? await HTTPGet.get(host: "127.0.0.1", port: port, path: "/readyz"), r.status == 200 { return }
            if let status = worker.child.exited {
                throw ValidationError("\(worker.child.executable) exited (\(status)):\n\(worker.child.standardError)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ValidationError("\(worker.child.executable) not ready within a minute")
    }
}

/// The generator's iot-sensors records (7 fields), as the validate stage of the e2e run checks them.
let readingSchema = """
    {
      "$schema": "https://json-schema.org/draft/2020-12/schema",
      "type": "object",
      "required": ["sensor_id", "seq", "ts", "temperature_c", "humidity_pct"],
      "additionalProperties": false,
      "properties": {
        "sensor_id": { "type": "string", "pattern": "^sensor-[0-9]{3,6}$" },
        "seq": { "type": "integer", "minimum": 0 },
        "ts": { "type": "string", "format": "date-time" },
        "temperature_c": { "type": "number", "minimum": -60, "maximum": 150 },
        "humidity_pct": { "type": "number", "minimum": 0, "maximum": 100 },
        "battery_v": { "type": "number", "minimum": 0, "maximum": 5 },
        "site": { "type": "string", "minLength": 1, "maxLength": 64 }
      }
    }
    """
