import ArgumentParser
import EmbeddedBroker
import Foundation
import Kafka
import Logging
import Pipeline
import PipelineTools

/// `streamfirst-bench scale`: 1, 2, 3 … instances of the pass-through `process` worker in one consumer
/// group on the embedded broker: records/s, CPU per record (summed over the instances), ratio to one
/// instance. Reuses the stage benchmark's helpers (StageSupport.swift).
struct ScaleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Throughput and CPU per record with 1, 2, 3 instances of the process worker in one group (medians, ratio to 1).",
        discussion: """
            Starts `streamfirst broker` in its own process. Per round and instance count N: a fresh input topic \
            pre-filled with --records 10-field JSON records (C producer), then N `process` workers (pass-through, same \
            pipeline file, so the same consumer group) started together. The span is measured from the moment every \
            instance has handled a record (the group has settled: no instance joins after that) to the last record \
            in the output topic; CPU is the sum over the N processes from /proc over the same span, and the broker's \
            CPU is shown beside it. On a 2-core machine the broker and the instances share two cores: beyond 2 \
            instances (in practice, beyond 1 with the broker busy) the figure is CPU-bound, not a property of the group.
            """
    )

    @Option(help: "Records per run.") var records = 180_000
    @Option(help: "Partitions of the input and output topics (divisible by every instance count keeps the split even).")
    var partitions = 12
    @Option(help: "Rounds (each runs every instance count, rotating the order).") var rounds = 3
    @Option(
        help: """
            Comma-separated configurations: N (N instances, default concurrency: every core) or NxC (N instances with \
            `concurrency: C`). 1x1,1x2,2x1 compares one worker on one and on two cores with two single-core workers.
            """)
    var instances = "1x1,1x2,2x1,3x1"
    @Option(help: "fetch.wait.max.ms of the consumers (the stage runtime's default is 10).") var fetchWaitMs = 10
    @Option(help: "linger.ms of the producers (the stage runtime's default is 2).") var linger = 2
    @Option(help: "Directory for the pipeline files and worker logs.") var workDirectory = "/tmp/streamfirst-bench-scale"

    func validate() throws {
        try checkStageRetention(records: records, partitions: partitions)
        let parsed = configs
        if parsed.isEmpty || parsed.count != instances.split(separator: ",").count
            || parsed.contains(where: { $0.instances < 1 || $0.instances > partitions || ($0.concurrency ?? 1) < 1 })
        {
            throw ValidationError(
                "--instances: comma-separated N or NxC, N between 1 and --partitions (\(partitions)), C at least 1 (e.g. 1x1,1x2,2x1)")
        }
    }

    /// One measured setup: `instances` processes, each with `concurrency:` (nil: the default).
    struct Config {
        var label: String
        var instances: Int
        var concurrency: Int?
    }

    var configs: [Config] {
        instances.split(separator: ",").compactMap { part in
            let pieces = part.split(separator: "x")
            guard let n = pieces.first.flatMap({ Int($0) }) else { return nil }
            if pieces.count == 1 { return Config(label: String(part), instances: n, concurrency: nil) }
            guard pieces.count == 2, let c = Int(pieces[1]) else { return nil }
            return Config(label: String(part), instances: n, concurrency: c)
        }
    }

    struct Sample {
        var stage: StageSample
        var brokerCPU: Double
        var perInstance: [Int]
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        let broker = try await EmbeddedBrokerProcess.launch()
        let brokers = broker.bootstrapServers
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: brokers, clientID: "streamfirst-bench"))
        print(
            "machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; librdkafka \(KafkaClientInfo.librdkafkaVersion); load: "
                + "\(loadAverage())"
        )
        print("broker: embedded (librdkafka mock cluster, separate process) at \(brokers)")
        print(
            "workload: \(records) records x \(benchRecord.count) B (10-field JSON), \(partitions) partitions, "
                + "process worker pass-through (steps: []), fetch.wait.max.ms=\(fetchWaitMs), linger.ms=\(linger); "
                + "instances x concurrency \(configs.map(\.label).joined(separator: ", ")); \(rounds) rounds\n")

        let configs = self.configs
        var samples: [String: [Sample]] = [:]
        for round in 0..<rounds {
            let order = configs.indices.map { configs[($0 + round) % configs.count] }
            for config in order {
                let sample = try await runOnce(config, round: round, broker: broker, admin: admin)
                samples[config.label, default: []].append(sample)
                print(
                    "round \(round + 1) \(config.label): \(fmt(sample.stage.rate)) rec/s, "
                        + "\(String(format: "%.2f", sample.stage.cpuPerMillion)) worker CPU s/M, "
                        + "\(String(format: "%.2f", sample.brokerCPU / Double(sample.stage.records) * 1e6)) broker CPU s/M, "
                        + "records per instance in the span \(sample.perInstance.map(String.init).joined(separator: "/")), "
                        + "wall \(String(format: "%.2f", sample.stage.wall)) s")
            }
        }
        print("\nmedians of \(rounds) rounds (load now: \(loadAverage()))")
        print("  config     records/s  ratio to 1st worker CPU s per M (sum)  ratio to 1st broker CPU s per M")
        let base = samples[configs[0].label] ?? []
        let baseRate = median(base.map(\.stage.rate))
        let baseCPU = median(base.map(\.stage.cpuPerMillion))
        for config in configs {
            let s = samples[config.label] ?? []
            let rate = median(s.map(\.stage.rate))
            let cpu = median(s.map(\.stage.cpuPerMillion))
            let brokerCPU = median(s.map { $0.brokerCPU / Double($0.stage.records) * 1e6 })
            print(
                "  \(config.label.padding(toLength: 9, withPad: " ", startingAt: 0))  "
                    + "\(fmt(rate).padding(toLength: 9, withPad: " ", startingAt: 0))  "
                    + "\(ratioText(rate / baseRate).padding(toLength: 10, withPad: " ", startingAt: 0))  "
                    + "\(String(format: "%.2f", cpu).padding(toLength: 24, withPad: " ", startingAt: 0))  "
                    + "\(ratioText(cpu / baseCPU).padding(toLength: 10, withPad: " ", startingAt: 0))  \(String(format: "%.2f", brokerCPU))"
            )
        }
        print(
            """

            reading: \(ProcessInfo.processInfo.activeProcessorCount) cores are shared by the broker, the instances and \
            this process; a throughput ratio near 1 with CPU per record flat means the instances split the same \
            CPU-bound work, not that the group does not scale. CPU per record rising with N is the cost of more clients \
            (more fetch requests, heartbeats, smaller batches per instance).
            """)
        await admin.shutdown()
        _ = try? await broker.terminate()
    }

    /// One run of `config` on a fresh pre-filled input topic.
    func runOnce(_ config: Config, round: Int, broker: EmbeddedBrokerProcess, admin: KafkaAdmin) async throws -> Sample {
        let n = config.instances
        let brokers = broker.bootstrapServers
        let id = "\(round)-\(config.label)-\(UUID().uuidString.prefix(8).lowercased())"
        let input = "sc-in-\(id)"
        let output = "sc-out-\(id)"
        let dead = "sc-dead-\(id)"
        for t in [input, output] { try await broker.control.createTopic(t, partitions: partitions) }
        try await broker.control.createTopic(dead, partitions: 1)
        try prefill(brokers, input, count: records)

        let dir = URL(fileURLWithPath: workDirectory).appendingPathComponent(id)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let pipeline = """
            name: scale-\(id)
            \(benchKafkaSection(brokers: brokers, fetchWaitMs: fetchWaitMs, linger: linger, nagleDisable: false))topics:
              in: { name: "\(input)", partitions: \(partitions) }
              out: { name: "\(output)", partitions: \(partitions) }
              dead: { name: "\(dead)", partitions: 1 }
            dead_letter: dead

            process:
              input: in
              output: out
              steps: []
            \(config.concurrency.map { "  concurrency: \($0)\n" } ?? "")
            """
        let file = dir.appendingPathComponent("pipeline.yaml")
        try Data(pipeline.utf8).write(to: file)
        var workers: [BenchProcess] = []
        defer {
            for (i, w) in workers.enumerated() {
                try? Data(w.child.standardError.utf8).write(to: dir.appendingPathComponent("process-\(i).log"))
            }
        }
        for i in 0..<n {
            workers.append(
                try BenchProcess(
                    executable: try ChildProcess.locate("process"), arguments: ["--pipeline", file.path],
                    environment: [
                        "HTTP_PORT": "0", "HTTP_HOST": "127.0.0.1", "LOG_LEVEL": "warning",
                        "STREAMFIRST_STATE_DIR": dir.appendingPathComponent("state-\(i)").path,
                    ]))
        }
        var ports: [Int] = []
        for w in workers { ports.append(try await w.httpPort()) }

        // The span starts once every instance has handled a record: all have joined, the last rebalance is over.
        let expected = Int64(records)
        let deadline = ContinuousClock.now + .seconds(180)
        var start: (at: ContinuousClock.Instant, done: Int64, cpu: Double, brokerCPU: Double, perInstance: [Int])?
        while ContinuousClock.now < deadline {
            let perInstance = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
                for (i, port) in ports.enumerated() { group.addTask { (i, try await Self.recordsIn(port: port)) } }
                var r = [Int](repeating: 0, count: ports.count)
                for try await (i, v) in group { r[i] = v }
                return r
            }
            let done = try await topicCount(admin, output, partitions: partitions)
            let now = ContinuousClock.now
            let cpu = workers.reduce(0.0) { $0 + (processCPUSeconds($1.child.processIdentifier) ?? 0) }
            let brokerCPU = processCPUSeconds(broker.processIdentifier) ?? 0
            if start == nil, perInstance.allSatisfy({ $0 > 0 }) {
                start = (now, done, cpu, brokerCPU, perInstance)
            }
            if let s = start, done >= expected {
                for w in workers { await w.stop() }
                let counted = perInstance.enumerated().map { $0.element - s.perInstance[$0.offset] }
                return Sample(
                    stage: StageSample(records: expected - s.done, wall: (now - s.at).seconds, cpu: cpu - s.cpu),
                    brokerCPU: brokerCPU - s.brokerCPU, perInstance: counted)
            }
            for w in workers {
                if let status = w.child.exited {
                    throw ValidationError("process exited (\(status)) after \(done) of \(expected):\n\(w.child.standardError)")
                }
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        for w in workers { await w.stop() }
        throw ValidationError("\(config.label): not done within 180 s")
    }

    static func recordsIn(port: Int) async throws -> Int {
        guard let r = try? await HTTPGet.get(host: "127.0.0.1", port: port, path: "/stats"), r.status == 200,
            let stats = try? JSONDecoder().decode(StageStats.self, from: Data(r.body))
        else { return 0 }
        return stats.recordsIn
    }
}

/// The 1-minute load average (shared machine: quoted next to every figure).
func loadAverage() -> String {
    guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return "?" }
    return text.split(separator: " ").prefix(3).joined(separator: " ")
}
