import ArgumentParser
import Config
import Dashboard
import EmbeddedBroker
import Foundation
import Kafka
import LocalRun
import Logging
import Pipeline
import PipelineModel
import PipelineTools
import StreamCore

/// `streamfirst run FILE`: the whole pipeline on this machine, one process per worker.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract:
            "Run a pipeline locally: the embedded broker (or --bootstrap) and one process per worker, with live progress and a summary.",
        discussion: """
            Starts `streamfirst broker --pipeline FILE` (unless --bootstrap names a cluster), then the \
            validate, process and persist workers and finally ingest, each as its own process with its \
            HTTP endpoints on a free port. Prints each stage's counts every second until ingest's source \
            has ended and every stage has caught up, then stops the workers with SIGTERM (graceful \
            shutdown), prints a summary and exits 0 if the counts reconcile \
            (ingested = persisted + dead-lettered + filtered; with a stateful process stage, up to its input) \
            and every worker exited cleanly.
            Worker logs go to WORKDIR/logs/<stage>.log.
            """
    )

    @Argument(help: "The pipeline file.") var pipeline: String
    @OptionGroup var run: RunOptions

    func run() async throws {
        try await PipelineRunner(pipeline: pipeline, options: run, title: "streamfirst run").execute()
    }
}

/// `streamfirst demo`: `run pipelines/iot-sensors.yaml` with the demo's defaults.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract:
            "The main job: run pipelines/iot-sensors.yaml (generated IoT readings, some malformed or schema-invalid) through four "
            + "worker processes on the embedded broker.",
        discussion: "The same as `streamfirst run pipelines/iot-sensors.yaml`, starting from a fresh work directory."
    )

    @Option(help: "The demo pipeline file.") var pipeline = "pipelines/iot-sensors.yaml"
    @OptionGroup var run: RunOptions

    func run() async throws {
        var options = run
        if options.workDirectory == nil {
            options.workDirectory = ".streamfirst/demo"
            try? FileManager.default.removeItem(atPath: ".streamfirst/demo") // a fresh demo every time
        }
        try await PipelineRunner(pipeline: pipeline, options: options, title: "Streamfirst demo").execute()
    }
}

struct RunOptions: ParsableArguments {
    @Option(help: "Work directory: state, SQLite file, worker logs (default .streamfirst/run/<pipeline>).")
    var workDirectory: String?
    @Option(help: "Use this Kafka cluster instead of starting the embedded broker.")
    var bootstrap: String?
    @Option(help: "Give up if the pipeline has not drained after this many seconds.")
    var timeout = 300
    @Option(help: "Log level of the workers (their logs go to files).")
    var logLevel = "info"
    @Option(
        name: .customLong("set"),
        help: ArgumentHelp("Environment for the pipeline file and workers, e.g. --set IOT_COUNT=5000.", valueName: "VAR=VALUE"))
    var variables: [String] = []
    @Option(help: "Port of the dashboard (pipelines with a dashboard: section; default: its port, 9100; 0 = any free port).")
    var dashboardPort: Int?
    @Flag(help: "Do not start the dashboard even if the pipeline has a dashboard: section.")
    var noDashboard = false
}

/// Drives a `LocalPipeline` and prints what happens.
struct PipelineRunner {
    let pipeline: String
    let options: RunOptions
    let title: String

    func execute() async throws {
        bootstrapCLILogging()
        let started = ContinuousClock.now
        var env: [String: String] = [:]
        for v in options.variables {
            guard let eq = v.firstIndex(of: "="), eq != v.startIndex else {
                throw ValidationError("--set expects VAR=VALUE, got '\(v)'")
            }
            env[String(v[..<eq])] = String(v[v.index(after: eq)...])
        }
        let specName = (try? PipelineSpec.load(file: pipeline).name) ?? "pipeline"
        let work = options.workDirectory ?? ".streamfirst/run/\(specName)"
        if options.bootstrap == nil && options.workDirectory == nil {
            // A new embedded broker starts empty: source checkpoints and sink rows of an earlier run
            // would make this one resume at the end of its source and read nothing.
            try? FileManager.default.removeItem(atPath: work)
        }
        let local: LocalPipeline
        do {
            local = try await LocalPipeline.launch(
                .init(
                    pipelineFile: pipeline, workDirectory: work, environment: env, bootstrapServers: options.bootstrap,
                    logLevel: options.logLevel))
        } catch let error as ConfigError {
            throw ValidationError("\(error)")
        }
        say("\(title): pipeline \(local.spec.name) (\(pipeline))")
        if let broker = local.broker {
            say(
                "  broker   librdkafka \(KafkaClientInfo.librdkafkaVersion) mock cluster, "
                    + "own process (pid \(broker.processIdentifier)), \(broker.bootstrapServers)"
            )
        } else {
            say("  broker   \(local.bootstrapServers)")
        }
        // Consumers first, so that nothing waits for a group to form after ingest has started.
        let consumers = local.stages.filter { $0 != .ingest }
        try await local.start(consumers)
        // The dashboard (a `dashboard:` section) before ingest, so that it sees every record.
        if local.hasDashboard && !options.noDashboard { try await startDashboard(local) }
        if local.stages.contains(.ingest) { try await local.start(.ingest) }
        for stage in consumers + (local.stages.contains(.ingest) ? [.ingest] : []) {
            say(
                "  \(stage.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)) pid "
                    + "\(local.process(stage)?.processIdentifier ?? 0), http://127.0.0.1:\(local.port(stage) ?? 0)/metrics, "
                    + "log \(local.logFile(stage))"
            )
        }
        if let port = local.dashboardPort {
            say("  dashboard http://127.0.0.1:\(port)/ (live charts; log \(local.dashboardLogFile))")
        }

        // Live progress until ingest's source ends and every group has caught up.
        let samples = ResourceSamples()
        let progress = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                if Task.isCancelled { break }
                say(await progressLine(local, since: started))
                for stage in local.stages { if let r = local.resources(stage) { samples.add(stage, r) } }
            }
        }
        var ingestStatus: ChildProcess.ExitStatus?
        if let ingest = local.process(.ingest) {
            ingestStatus = await ingest.wait()
        }
        var stats: [PipelineSpec.StageName: StageStats] = [:]
        do {
            try await local.waitUntilDrained(timeout: .seconds(options.timeout))
        } catch {
            progress.cancel()
            _ = await local.stop()
            throw error
        }
        progress.cancel()
        for stage in local.stages where stage != .ingest {
            stats[stage] = await local.stats(stage)
        }
        // Ingest has exited: its counts are in its log's last line; re-read them from the topics instead.
        let counts = (try? await local.topicCounts()) ?? [:]
        let deadLetters = (try? await local.readAll(local.spec.deadLetter.logical)) ?? []
        let dashboardStatus = await local.stopDashboard()
        let exits = await local.stop()
        let rows = try? await local.sinkRowCount()
        summary(
            local: local, stats: stats, counts: counts, deadLetters: deadLetters, rows: rows,
            ingestStatus: ingestStatus, exits: exits, dashboard: dashboardStatus, elapsed: ContinuousClock.now - started)
        say(samples.summary(stages: local.stages))
    }

    /// Starts the dashboard on `--dashboard-port` (default: the file's `dashboard.port`); if that
    /// port is taken, on a free one.
    func startDashboard(_ local: LocalPipeline) async throws {
        var env: [String: String] = [:]
        if let p = options.dashboardPort {
            env["HTTP_PORT"] = String(p)
        } else if let p = try? DashboardConfig.make(spec: local.spec, checkFiles: false).port {
            env["HTTP_PORT"] = String(p)
        }
        do {
            try await local.startDashboard(extraEnvironment: env)
        } catch  where env["HTTP_PORT"] != "0" && options.dashboardPort == nil {
            say("  dashboard: port \(env["HTTP_PORT"] ?? "?") unavailable (\(String(describing: error).prefix(200))); using a free port")
            try await local.startDashboard()
        }
    }

    func progressLine(_ local: LocalPipeline, since: ContinuousClock.Instant) async -> String {
        let t = Int((ContinuousClock.now - since).components.seconds)
        var parts: [String] = []
        for stage in local.stages {
            guard let s = await local.stats(stage) else {
                parts.append("\(stage.rawValue) done")
                continue
            }
            var p = "\(stage.rawValue) \(s.recordsIn) in"
            if s.deadLettered > 0 { p += ", \(s.deadLettered) dead" }
            if s.filtered > 0 { p += ", \(s.filtered) filtered" }
            parts.append(p)
        }
        return "  t=\(String(t).leftPad(3))s  " + parts.joined(separator: " │ ")
    }

    func summary(
        local: LocalPipeline, stats: [PipelineSpec.StageName: StageStats], counts: [String: Int64], deadLetters: [KafkaMessage],
        rows: Int?, ingestStatus: ChildProcess.ExitStatus?, exits: [PipelineSpec.StageName: ChildProcess.ExitStatus],
        dashboard: ChildProcess.ExitStatus? = nil, elapsed: Duration
    ) {
        let spec = local.spec
        say("")
        say("Summary (\(String(format: "%.1f", Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)) s)")
        say(
            "  topics: "
                + spec.topics.values.sorted { $0.name < $1.name }.map { "\($0.name) \(counts[$0.logical] ?? 0)" }.joined(separator: ", "))

        // Dead letters by stage and class, distinct by record id.
        var byReason: [String: (ids: Set<String>, example: String)] = [:]
        for m in deadLetters {
            let stage = m.header(DeadLetterHeader.stage)?.value.map { String(decoding: $0, as: UTF8.self) } ?? "?"
            let cls = m.header(DeadLetterHeader.exceptionClass)?.value.map { String(decoding: $0, as: UTF8.self) } ?? "?"
            let msg = m.header(DeadLetterHeader.exceptionMessage)?.value.map { String(decoding: $0, as: UTF8.self) } ?? ""
            let id = m.header(RecordHeader.id)?.value.map { String(decoding: $0, as: UTF8.self) } ?? "\(m.partition):\(m.offset)"
            let k = "\(stage) \(cls)"
            var e = byReason[k] ?? ([], msg)
            e.ids.insert(id)
            byReason[k] = e
        }
        let deadTotal = byReason.values.reduce(0) { $0 + $1.ids.count }
        let ingested: Int
        if let raw = spec.stages[.ingest]?.output {
            ingested =
                Int(counts[raw.logical] ?? 0) + (byReason.filter { $0.key.hasPrefix("ingest ") }.values.reduce(0) { $0 + $1.ids.count })
        } else {
            ingested = 0
        }
        say("  stage      records in   out   dead-lettered   filtered")
        say(
            "  ingest     \(String(ingested).leftPad(10))   "
                + "\(String(counts[spec.stages[.ingest]?.output?.logical ?? ""] ?? 0).leftPad(5))   "
                + "\(String(byReason.filter { $0.key.hasPrefix("ingest ") }.values.reduce(0) { $0 + $1.ids.count }).leftPad(13))   "
                + "\("0".leftPad(8))"
        )
        for stage in [PipelineSpec.StageName.validate, .process, .persist] {
            guard let s = stats[stage] else { continue }
            say(
                "  \(stage.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0))  \(String(s.recordsIn).leftPad(10))   "
                    + "\(String(s.recordsOut).leftPad(5))   \(String(s.deadLettered).leftPad(13))   \(String(s.filtered).leftPad(8))"
            )
        }
        if !byReason.isEmpty {
            say("  dead letters (\(spec.deadLetter.name)), by stage and reason:")
            for (k, v) in byReason.sorted(by: { $0.key < $1.key }) {
                say(
                    "    \(k.padding(toLength: max(28, k.count), withPad: " ", startingAt: 0)) \(String(v.ids.count).leftPad(6))   "
                        + "e.g. \(v.example.prefix(110))"
                )
            }
        }
        let filtered = stats.values.reduce(0) { $0 + $1.filtered }
        if let rows {
            say("  rows in the sink: \(rows)")
        } else {
            say("  rows in the sink: (could not be read)")
        }
        let persisted = rows ?? -1
        let ok: Bool
        if let process = stats[.process], let state = process.state {
            // A stateful process stage turns records into window results: reconcile up to its input,
            // then report what it emitted and what it still holds.
            // Distinct dead letters of the stages before it (ingest has exited by now: its count
            // comes from the dead-letter topic, like the table above).
            let deadBefore = byReason.filter { $0.key.hasPrefix("ingest ") || $0.key.hasPrefix("validate ") }.values
                .reduce(0) { $0 + $1.ids.count }
            let filteredBefore = stats[.validate]?.filtered ?? 0
            ok = process.recordsIn + deadBefore + filteredBefore == ingested
            say(
                "  reconciliation: ingested \(ingested) = into the stateful process stage \(process.recordsIn) + dead-lettered before "
                    + "it \(deadBefore) + filtered \(filteredBefore)  \(ok ? "✓" : "✗ MISMATCH")"
            )
            say(
                "  state: \(process.recordsOut) results emitted, \(state.late) late records, \(state.evictions) evictions; "
                    + "\(state.entries) windows still open (\(state.bytes / 1024) KiB; they close when event time moves on or after "
                    + "idle_timeout)"
            )
        } else {
            ok = persisted + deadTotal + filtered == ingested
            say(
                "  reconciliation: ingested \(ingested) = persisted \(persisted) + dead-lettered \(deadTotal) + filtered \(filtered)  "
                    + "\(ok ? "✓" : "✗ MISMATCH")"
            )
        }
        if let e = stats[.persist]?.endToEndMicros, e.count > 0 {
            say("  end-to-end latency, ingest → persisted: p50 \(ms(e.p50)), p99 \(ms(e.p99)), max \(ms(e.max)) (n=\(e.count))")
        }
        var clean = ingestStatus.map { !$0.signaled && $0.code == 0 } ?? true
        var exitText: [String] = []
        if let ingestStatus { exitText.append("ingest \(ingestStatus) (source finished)") }
        for (stage, status) in exits.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where stage != .ingest {
            exitText.append("\(stage.rawValue) \(status)")
            if status.signaled || status.code != 0 { clean = false }
        }
        if let dashboard {
            exitText.append("dashboard \(dashboard)")
            if dashboard.signaled || dashboard.code != 0 { clean = false }
        }
        say("  workers: " + exitText.joined(separator: ", "))
        if !(ok && clean) {
            say("FAILED: see the logs in \(local.options.workDirectory)/logs")
            Foundation.exit(1)
        }
    }

    func ms(_ micros: UInt64) -> String { String(format: "%.1f ms", Double(micros) / 1000) }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

/// `streamfirst check FILE`: validates a pipeline file and every stage's settings without running anything.
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract:
            "Check a pipeline file: syntax, topics, every stage's settings, schemas, expressions, tables and connectors. Runs nothing.",
        discussion: "Exit code 0 when the file is valid; otherwise 2 with a message naming the file, line and key."
    )

    @Argument(help: "Pipeline files.") var files: [String]
    @Flag(help: "Print {ok, files: [{file, ok, pipeline, topics, stages} or {file, ok: false, error}]}.") var json = false

    func run() async throws {
        var failed = false
        var results: [[String: Any]] = []
        for file in files {
            do {
                let spec = try PipelineSpec.load(file: file)
                var stages: [String] = []
                for stage in PipelineSpec.StageName.allCases where spec.stages[stage] != nil {
                    _ = try BuiltStage.build(stage, spec: spec, logger: Logger(label: "streamfirst.check"))
                    stages.append(stage.rawValue)
                }
                if spec.dashboard != nil {
                    _ = try DashboardConfig.make(spec: spec)
                    stages.append("dashboard")
                }
                results.append(["file": file, "ok": true, "pipeline": spec.name, "topics": spec.topics.count, "stages": stages])
                if !json {
                    emit("\(file): ok — pipeline \(spec.name), \(spec.topics.count) topics, stages: \(stages.joined(separator: ", "))")
                }
            } catch {
                results.append(["file": file, "ok": false, "error": "\(error)"])
                if !json { FileHandle.standardError.write(Data("\(error)\n".utf8)) }
                failed = true
            }
        }
        if json { emit(jsonString(["ok": !failed, "files": results])) }
        if failed { throw ExitCode(2) }
    }
}

/// `streamfirst probe URL`: exit 0 if the URL answers 200, 1 if it answers otherwise or not at all
/// (container health checks).
// The slim runtime image has no curl.
struct ProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "GET an http:// URL (e.g. a worker's /healthz) and exit 0 on 200, 1 otherwise.")

    @Argument(help: "http://HOST:PORT/PATH (IPv4 or localhost).") var url: String
    @Option(help: "Timeout in milliseconds.") var timeout = 2000

    func run() async throws {
        guard let target = HTTPGet.parse(url: url) else { throw ValidationError("expected http://HOST:PORT/PATH, got \(url)") }
        do {
            let response = try await HTTPGet.get(host: target.host, port: target.port, path: target.path, timeoutMs: timeout)
            emit(
                "\(response.status) "
                    + "\(String(decoding: response.body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))"
            )
            if response.status != 200 { throw ExitCode(1) }
        } catch let error as HTTPGet.Failure {
            emit("unreachable: \(error)")
            throw ExitCode(1)
        }
    }
}

/// RSS and open descriptors of each worker, sampled once a second: the summary shows the first
/// sample after a warm-up, the last one and the peak, so a leak shows as growth between them.
final class ResourceSamples: @unchecked Sendable {
    // @unchecked: guarded by the lock.
    private let lock = NSLock()
    private var samples: [PipelineSpec.StageName: [(rssKiB: Int, fds: Int)]] = [:]

    func add(_ stage: PipelineSpec.StageName, _ r: (rssKiB: Int, fds: Int)) { lock.withLock { samples[stage, default: []].append(r) } }

    func summary(stages: [PipelineSpec.StageName]) -> String {
        lock.withLock {
            var parts: [String] = []
            for stage in stages {
                guard let all = samples[stage], let last = all.last else { continue }
                let first = all[min(all.count - 1, 3)] // after a few seconds of warm-up
                let peak = all.map(\.rssKiB).max() ?? last.rssKiB
                parts.append(
                    "\(stage.rawValue) RSS \(first.rssKiB / 1024)→\(last.rssKiB / 1024) MiB (peak \(peak / 1024)), "
                        + "fds \(first.fds)→\(last.fds)"
                )
            }
            return parts.isEmpty ? "" : "  resources (after warm-up → last sample): " + parts.joined(separator: "; ")
        }
    }
}
