import ArgumentParser
import EmbeddedBroker
import Foundation
import Kafka
import Logging
import Pipeline
import PipelineTools

/// `streamfirst-bench stage`: one real worker process (pass-through `process`, `validate`, `persist`
/// to SQLite or PostgreSQL) against a C librdkafka consume → produce relay process on the same
/// embedded broker, same input, same run — the relay is the ceiling for a stage on this machine.
struct StageBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stage",
        abstract: "One stage worker against a C consume → produce relay: records/s, CPU per record, ratio (interleaved rounds, medians).",
        discussion: """
            Starts `streamfirst broker` in its own process. Per round and stage: a fresh input topic pre-filled with \
            --records 10-field JSON records (C producer), then the C relay (`streamfirst-bench c-relay`) and the worker \
            executable (from this binary's directory, or STREAMFIRST_BIN_DIR) each read it in their own consumer group. \
            Measured from the first record done to the last: records in the output topic (relay, process, validate) or \
            rows the persist worker reports in /stats; CPU of the process from /proc over the same span. \
            Keep records x ~250 B / partitions under the mock's 5 MiB per partition.
            """
    )

    @Option(help: "Records per run.") var records = 144_000
    @Option(help: "Partitions of every topic.") var partitions = 12
    @Option(help: "Rounds (each runs the relay and the worker per stage, alternating which goes first).") var rounds = 3
    @Option(
        help:
            """
            Comma-separated: pass, validate, sqlite, postgres; pass-1 and validate-1 are the same workers with in_flight_batches: \
            1 (stop-and-wait).
            """
    )
    var stages = "pass,validate,sqlite,postgres"
    @Option(help: "fetch.wait.max.ms of both consumers (the stage runtime's default is 10).") var fetchWaitMs = 10
    @Option(help: "PostgreSQL URL for the postgres stage (default: $STREAMFIRST_POSTGRES_URL; without one it is skipped).")
    var postgresURL: String?
    @Option(help: "batch_size of the worker (the stage runtime's default is 500).") var batchSize: Int?
    @Option(help: "in_flight_batches of the pass and validate workers (the stage runtime's default is 8).") var inFlightBatches: Int?
    @Option(help: "linger.ms of both producers (the stage runtime's default is 2).") var linger = 2
    @Flag(help: "socket.nagle.disable=true on every client of both sides (librdkafka's default leaves Nagle on).")
    var nagleDisable = false
    @Option(help: "Directory for the pipeline files, SQLite files and worker logs.") var workDirectory = "/tmp/streamfirst-bench-stage"
    @Option(
        help: """
            Python with confluent-kafka, orjson and fastjsonschema for the Python baseline of pass and validate \
            (default: .venv/bin/python when it has them; `make bench-deps` installs them). "none" skips it.
            """)
    var python: String?
    @Option(help: "The Python relay script (default: scripts/bench-python-relay.py of the checkout).")
    var pythonRelay = "scripts/bench-python-relay.py"

    /// The Python baseline's interpreter, if one with the modules is at hand.
    func pythonBaseline() -> String? {
        if python == "none" { return nil }
        let candidate = python ?? ".venv/bin/python"
        guard FileManager.default.isExecutableFile(atPath: candidate), FileManager.default.fileExists(atPath: pythonRelay) else {
            return nil
        }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: candidate)
        probe.arguments = ["-c", "import confluent_kafka, orjson, fastjsonschema"]
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { return nil }
        probe.waitUntilExit()
        return probe.terminationStatus == 0 ? candidate : nil
    }

    func validate() throws {
        try checkStageRetention(records: records, partitions: partitions)
        for s in stages.split(separator: ",") where !["pass", "validate", "sqlite", "postgres", "pass-1", "validate-1"].contains(String(s))
        {
            throw ValidationError("--stages: unknown stage '\(s)' (expected pass, validate, sqlite, postgres, pass-1, validate-1)")
        }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        var kinds = stages.split(separator: ",").map(String.init)
        let pgURL = postgresURL ?? ProcessInfo.processInfo.environment["STREAMFIRST_POSTGRES_URL"]
        if kinds.contains("postgres"), pgURL == nil {
            print("postgres: skipped (no --postgres-url or STREAMFIRST_POSTGRES_URL; `bash scripts/ensure-postgres.sh` prints one)")
            kinds.removeAll { $0 == "postgres" }
        }
        guard let selfExe = Bundle.main.executableURL else { throw ValidationError("cannot find this executable") }
        let py = pythonBaseline()
        if py == nil, python != "none" {
            let interpreter = python ?? ".venv/bin/python"
            print("python baseline: skipped (needs \(interpreter) with confluent-kafka, orjson, fastjsonschema: `make bench-deps`)")
        }
        let schemaFile = URL(fileURLWithPath: workDirectory).appendingPathComponent("bench-schema.json")
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        try Data(benchSchema.utf8).write(to: schemaFile)
        let broker = try await EmbeddedBrokerProcess.launch()
        let brokers = broker.bootstrapServers
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: brokers, clientID: "streamfirst-bench"))
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; librdkafka \(KafkaClientInfo.librdkafkaVersion)")
        print("broker: embedded (librdkafka mock cluster, separate process) at \(brokers)")
        print(
            "workload: \(records) records x \(benchRecord.count) B (10-field JSON, key k0..k999, headers sf.id, sf.ingest_time), "
                + "\(partitions) partitions, fetch.wait.max.ms=\(fetchWaitMs), "
                + "linger.ms=\(linger)\(nagleDisable ? ", socket.nagle.disable=true" : ""); \(rounds) rounds\n"
        )

        var cSamples: [String: [StageSample]] = [:]
        var sSamples: [String: [StageSample]] = [:]
        var pySamples: [String: [StageSample]] = [:]
        for round in 0..<rounds {
            for kind in kinds {
                let id = "\(round)-\(kind)-\(UUID().uuidString.prefix(8).lowercased())"
                let input = "st-in-\(id)"
                let cOut = "st-c-\(id)"
                let sOut = "st-s-\(id)"
                let dead = "st-dead-\(id)"
                let pyOut = "st-py-\(id)"
                let pyDead = "st-pydead-\(id)"
                let withPython = py != nil && (kind == "pass" || kind == "validate")
                for t in [input, cOut, sOut] + (withPython ? [pyOut] : []) {
                    try await broker.control.createTopic(t, partitions: partitions)
                }
                try await broker.control.createTopic(dead, partitions: 1)
                if withPython { try await broker.control.createTopic(pyDead, partitions: 1) }
                try prefill(brokers, input, count: records)
                let expected = Int64(records)
                var order = round % 2 == 0 ? ["c", "swift"] : ["swift", "c"]
                if withPython { order.insert("python", at: round % 3) }
                for which in order {
                    if which == "python", let py {
                        let relay = try BenchProcess(
                            executable: URL(fileURLWithPath: py),
                            arguments: [
                                pythonRelay, "--brokers", brokers, "--group", "py-\(id)", "--from", input, "--to", pyOut, "--dead", pyDead,
                                "--fetch-wait-ms", String(fetchWaitMs), "--linger", String(linger),
                            ] + (kind == "validate" ? ["--schema", schemaFile.path] : []))
                        let partitions = self.partitions
                        let sample = try await measureUntilDone(relay, expected: expected) {
                            try await topicCount(admin, pyOut, partitions: partitions) + topicCount(admin, pyDead, partitions: 1)
                        }
                        await relay.stop()
                        pySamples[kind, default: []].append(sample)
                    } else if which == "c" {
                        let relay = try BenchProcess(
                            executable: selfExe,
                            arguments: [
                                "c-relay", "--brokers", brokers, "--group", "c-\(id)", "--from", input, "--to", cOut,
                                "--fetch-wait-ms", String(fetchWaitMs), "--linger", String(linger),
                            ]
                                + (nagleDisable ? ["--nagle-disable"] : []))
                        let sample = try await measureUntilDone(relay, expected: expected) {
                            try await topicCount(admin, cOut, partitions: partitions)
                        }
                        await relay.stop()
                        cSamples[kind, default: []].append(sample)
                    } else {
                        let sample = try await runWorker(
                            kind, id: id, brokers: brokers, input: input, output: sOut, dead: dead, postgresURL: pgURL, admin: admin)
                        sSamples[kind, default: []].append(sample)
                    }
                }
                let c = cSamples[kind]!.last!
                let s = sSamples[kind]!.last!
                print(
                    "round \(round + 1) \(kind): C relay \(fmt(c.rate)) rec/s \(String(format: "%.2f", c.cpuPerMillion)) CPU s/M; "
                        + "Swift \(fmt(s.rate)) rec/s \(String(format: "%.2f", s.cpuPerMillion)) CPU s/M; "
                        + "ratio \(ratioText(s.rate / c.rate))"
                        + (pySamples[kind].map {
                            "; Python \(fmt($0.last!.rate)) rec/s \(String(format: "%.2f", $0.last!.cpuPerMillion)) CPU s/M"
                        } ?? "")
                )
            }
        }
        print("")
        for kind in kinds {
            let c = cSamples[kind] ?? []
            let s = sSamples[kind] ?? []
            let cRate = median(c.map(\.rate))
            let sRate = median(s.map(\.rate))
            let cCPU = median(c.map(\.cpuPerMillion))
            let sCPU = median(s.map(\.cpuPerMillion))
            let target: Double? = kind == "pass" ? 0.8 : kind == "validate" ? 0.5 : nil
            print("\(Self.title(kind)) (median of \(s.count))")
            print("  C relay : \(fmt(cRate)) rec/s  \(String(format: "%.2f", cCPU)) CPU s per M records")
            print("  Swift   : \(fmt(sRate)) rec/s  \(String(format: "%.2f", sCPU)) CPU s per M records")
            let verdict = target.map { sRate / cRate >= $0 ? "  (target ≥ \($0): met)" : "  (target ≥ \($0): missed)" } ?? ""
            print(
                "  Swift/C throughput ratio: \(ratioText(sRate / cRate))\(verdict)   CPU efficiency (C CPU / Swift CPU): "
                    + "\(ratioText(cCPU / sCPU))"
            )
            if let p = pySamples[kind], !p.isEmpty {
                let pRate = median(p.map(\.rate))
                let pCPU = median(p.map(\.cpuPerMillion))
                // Targets of "Stage runtime v2": 2x Python's throughput; CPU efficiency 1.5x (pass), 2x (validate).
                let cpuTarget = kind == "pass" ? 1.5 : 2.0
                print("  Python  : \(fmt(pRate)) rec/s  \(String(format: "%.2f", pCPU)) CPU s per M records (confluent-kafka loop)")
                print(
                    "  Swift/Python throughput: \(ratioText(sRate / pRate)) (target ≥ 2: \(sRate / pRate >= 2 ? "met" : "missed"))   "
                        + "CPU efficiency (Python CPU / Swift CPU): \(ratioText(pCPU / sCPU)) "
                        + "(target ≥ \(cpuTarget): \(pCPU / sCPU >= cpuTarget ? "met" : "missed"))")
            }
        }
        await admin.shutdown()
        _ = try? await broker.terminate()
    }

    static func title(_ kind: String) -> String {
        switch kind {
        case "pass": return "pass-through (process worker, no steps)"
        case "validate": return "validate (10-field JSON Schema)"
        case "pass-1": return "pass-through, in_flight_batches: 1 (stop-and-wait)"
        case "validate-1": return "validate, in_flight_batches: 1 (stop-and-wait)"
        case "sqlite": return "persist to SQLite"
        default: return "persist to PostgreSQL"
        }
    }

    /// Writes the one-stage pipeline file, starts the worker and measures it.
    func runWorker(
        _ kind: String, id: String, brokers: String, input: String, output: String, dead: String, postgresURL: String?,
        admin: KafkaAdmin
    ) async throws -> StageSample {
        let dir = URL(fileURLWithPath: workDirectory).appendingPathComponent(id)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("schemas"), withIntermediateDirectories: true)
        try Data(benchSchema.utf8).write(to: dir.appendingPathComponent("schemas/bench.json"))
        let columns = """
                key: [record_id]
                columns:
                  sensor_id: text
                  seq: integer
                  ts: text
                  temperature_c: real
                  humidity_pct: real
                  battery_v: real
                  site: text
                  status: text
                  firmware: text
                  rssi: integer
                  record_id: { type: text, from: $id }
            """
        let table = "bench_" + id.replacingOccurrences(of: "-", with: "_")
        var batch = batchSize.map { "  batch_size: \($0)\n" } ?? ""
        if kind.hasSuffix("-1") {
            batch += "  in_flight_batches: 1\n"
        } else if let n = inFlightBatches, kind == "pass" || kind == "validate" {
            batch += "  in_flight_batches: \(n)\n"
        }
        let section: String
        let executable: String
        switch kind {
        case "pass", "pass-1":
            executable = "process"
            section = "process:\n  input: in\n  output: out\n  steps: []\n\(batch)"
        case "validate", "validate-1":
            executable = "validate"
            section = "validate:\n  input: in\n  output: out\n  schema: bench\n\(batch)"
        case "sqlite":
            executable = "persist"
            section =
                "persist:\n  input: in\n  sink:\n    type: sqlite\n    path: \"\(dir.path)/bench.sqlite\"\n    table: \(table)\n"
                + "\(columns)\n\(batch)"
        default:
            executable = "persist"
            section =
                "persist:\n  input: in\n  sink:\n    type: postgres\n    url: \"\(postgresURL ?? "")\"\n    table: \(table)\n"
                + "\(columns)\n\(batch)"
        }
        let pipeline = """
            name: bench
            \(benchKafkaSection(brokers: brokers, fetchWaitMs: fetchWaitMs, linger: linger, nagleDisable: nagleDisable))topics:
              in: { name: "\(input)", partitions: \(partitions) }
              out: { name: "\(output)", partitions: \(partitions) }
              dead: { name: "\(dead)", partitions: 1 }
            dead_letter: dead

            """ + section
        let file = dir.appendingPathComponent("pipeline.yaml")
        try Data(pipeline.utf8).write(to: file)
        let worker = try BenchProcess(
            executable: try ChildProcess.locate(executable), arguments: ["--pipeline", file.path],
            environment: [
                "HTTP_PORT": "0", "HTTP_HOST": "127.0.0.1", "LOG_LEVEL": "warning",
                "STREAMFIRST_STATE_DIR": dir.appendingPathComponent("state").path,
            ])
        defer { try? Data(worker.child.standardError.utf8).write(to: dir.appendingPathComponent("\(executable).log")) }
        let expected = Int64(records)
        let sample: StageSample
        if kind == "sqlite" || kind == "postgres" {
            let port = try await worker.httpPort()
            sample = try await measureUntilDone(worker, expected: expected) { try await sinkRows(port: port) }
        } else {
            let partitions = self.partitions
            sample = try await measureUntilDone(worker, expected: expected) {
                // Dead letters count as done, so a broken schema ends the run instead of stalling it.
                try await topicCount(admin, output, partitions: partitions) + topicCount(admin, dead, partitions: 1)
            }
            let deadLettered = try await topicCount(admin, dead, partitions: 1)
            if deadLettered > 0 { print("warning: \(kind) dead-lettered \(deadLettered) records (see \(dir.path))") }
        }
        if let port = try? await worker.httpPort(), let r = try? await HTTPGet.get(host: "127.0.0.1", port: port, path: "/stats"),
            let stats = try? JSONDecoder().decode(StageStats.self, from: Data(r.body))
        {
            // The stage's own view: handling a batch (including waiting for its deliveries), per record.
            print("  \(kind) worker: batch time per record p50 \(stats.processingMicros.p50) µs, p99 \(stats.processingMicros.p99) µs")
        }
        await worker.stop()
        return sample
    }
}
