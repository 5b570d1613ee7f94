import Config
import Connectors
import EmbeddedBroker
import Foundation
import Kafka
import Logging
import NIOConcurrencyHelpers
import Pipeline
import PipelineModel
import PipelineTools
import StreamCore

/// A whole pipeline on one machine: the embedded broker (or an existing cluster) and one process per
/// worker executable, each with its HTTP endpoints on a free port. `streamfirst run`, `streamfirst demo`
/// and the end-to-end tests drive pipelines through this.
///
/// Workers get their settings the way a container would: `--pipeline FILE` plus the environment
/// (`KAFKA_BROKERS`, `STREAMFIRST_STATE_DIR`, `SQLITE_PATH`, `HTTP_PORT=0`, …).
package final class LocalPipeline: Sendable {
    package struct Options: Sendable {
        package var pipelineFile: String
        /// Holds the state directory, the SQLite file and the worker logs.
        package var workDirectory: String
        /// Extra environment for the workers (and for reading the pipeline file here).
        package var environment: [String: String]
        /// Use this cluster instead of starting the embedded broker.
        package var bootstrapServers: String?
        package var logLevel: String
        /// Brokers of the embedded cluster (more than one lets chaos runs take one down or move leaders).
        package var brokers: Int

        package init(
            pipelineFile: String, workDirectory: String, environment: [String: String] = [:],
            bootstrapServers: String? = nil, logLevel: String = "info", brokers: Int = 1
        ) {
            self.pipelineFile = pipelineFile
            self.workDirectory = workDirectory
            self.environment = environment
            self.bootstrapServers = bootstrapServers
            self.logLevel = logLevel
            self.brokers = brokers
        }
    }

    struct Running: Sendable {
        var process: ChildProcess
        var port: Int
    }

    package let options: Options
    package let broker: EmbeddedBrokerProcess?
    package let bootstrapServers: String
    package let spec: PipelineSpec
    /// The environment every worker gets.
    package let workerEnvironment: [String: String]
    private let workers = NIOLockedValueBox<[PipelineSpec.StageName: Running]>([:])
    private let dashboardWorker = NIOLockedValueBox<Running?>(nil)

    private init(options: Options, broker: EmbeddedBrokerProcess?, bootstrap: String, spec: PipelineSpec, env: [String: String]) {
        self.options = options
        self.broker = broker
        self.bootstrapServers = bootstrap
        self.spec = spec
        self.workerEnvironment = env
    }

    /// Starts the embedded broker with the pipeline's topics (unless `bootstrapServers` is given) and
    /// reads the pipeline file. Workers are started with ``start(_:)``.
    package static func launch(_ options: Options) async throws -> LocalPipeline {
        let work = URL(fileURLWithPath: options.workDirectory)
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        var env = options.environment
        env["STREAMFIRST_STATE_DIR"] = env["STREAMFIRST_STATE_DIR"] ?? work.appendingPathComponent("state").path
        env["SQLITE_PATH"] = env["SQLITE_PATH"] ?? work.appendingPathComponent("pipeline.sqlite").path
        env["LOG_LEVEL"] = env["LOG_LEVEL"] ?? options.logLevel
        env["HTTP_PORT"] = "0"
        env["HTTP_HOST"] = "127.0.0.1"
        // Check the file before starting anything.
        var readEnv = ProcessInfo.processInfo.environment.merging(env) { $1 }
        if let b = options.bootstrapServers { readEnv["KAFKA_BROKERS"] = b }
        _ = try PipelineSpec.load(file: options.pipelineFile, environment: readEnv)

        var broker: EmbeddedBrokerProcess?
        let bootstrap: String
        if let b = options.bootstrapServers {
            bootstrap = b
            // A real cluster: create the declared topics that do not exist yet.
            let spec = try PipelineSpec.load(file: options.pipelineFile, environment: readEnv)
            _ = try await spec.createMissingTopics(using: KafkaConfiguration(bootstrapServers: b, clientID: "streamfirst-run"))
        } else {
            let b = try await EmbeddedBrokerProcess.launch(
                arguments: ["--pipeline", options.pipelineFile, "--brokers", String(options.brokers)], environment: env)
            broker = b
            bootstrap = b.bootstrapServers
        }
        env["KAFKA_BROKERS"] = bootstrap
        readEnv["KAFKA_BROKERS"] = bootstrap
        let spec = try PipelineSpec.load(file: options.pipelineFile, environment: readEnv)
        return LocalPipeline(options: options, broker: broker, bootstrap: bootstrap, spec: spec, env: env)
    }

    /// The stages the pipeline file has, in pipeline order.
    package var stages: [PipelineSpec.StageName] {
        PipelineSpec.StageName.allCases.filter { spec.stages[$0] != nil }
    }

    /// Where a stage's log (its stderr) goes.
    package func logFile(_ stage: PipelineSpec.StageName) -> String {
        URL(fileURLWithPath: options.workDirectory).appendingPathComponent("logs/\(stage.rawValue).log").path
    }

    /// Starts a stage's worker process and waits until its HTTP endpoint is up.
    ///
    /// With `waitUntilReady` (the default) it also waits for `/readyz`: a consuming stage is ready
    /// once its group has assigned it partitions, so records produced afterwards flow at once.
    package func start(
        _ stage: PipelineSpec.StageName, extraEnvironment: [String: String] = [:], waitUntilReady: Bool = true
    )
        async throws
    {
        let (process, p) = try await launch(
            stage.rawValue, what: "the \(stage.rawValue) worker", logFile: logFile(stage), extraEnvironment: extraEnvironment)
        workers.withLockedValue { $0[stage] = Running(process: process, port: p) }
        if waitUntilReady { try await self.waitUntilReady(stage, process: process, port: p) }
    }

    /// Starts an executable of the pipeline (a worker, the dashboard) on the pipeline file and waits
    /// for the `http_port=N` line it prints once its endpoints are bound — or for its end, whichever
    /// comes first. `what` names it in errors ("the validate worker").
    func launch(
        _ name: String, what: String, logFile: String, extraEnvironment: [String: String], timeout: Duration = .seconds(60)
    ) async throws -> (ChildProcess, Int) {
        let executable = try ChildProcess.locate(name)
        let port = PortLine()
        let process = try ChildProcess(
            executable: executable, arguments: ["--pipeline", options.pipelineFile],
            environment: workerEnvironment.merging(extraEnvironment) { $1 }, logFile: logFile,
            onLine: { line in
                if let r = line.range(of: "http_port="), let p = Int(line[r.upperBound...]) { port.set(p) }
            })
        // The port line, the process's end or the timeout — whichever comes first.
        let exitWatch = Task {
            let s = await process.wait()
            port.finish(.exited(s))
        }
        defer { exitWatch.cancel() }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(timeout.milliseconds))) { port.finish(.timedOut) }
        switch await port.wait() {
        case .port(let p):
            return (process, p)
        case .exited(let status):
            throw LocalRunError("\(what) exited before serving HTTP (\(status)):\n\(process.standardError)")
        case .timedOut:
            process.signal(SIGKILL)
            throw LocalRunError(
                "\(what) (pid \(process.processIdentifier)) printed no http_port line within \(timeout); killed it. Its stderr:\n"
                    + "\(process.standardError.suffix(3000))"
            )
        }
    }

    /// Polls `/readyz` until it answers 200, for at most a minute.
    ///
    /// Ingest is the one stage that ends by itself: a bounded source (a small file) can be read,
    /// produced, flushed and the worker gone with exit code 0 before the first poll. That is success,
    /// not a failed start; any other exit before `/readyz` answers is an error.
    // Polled because the worker exposes no push channel.
    func waitUntilReady(_ stage: PipelineSpec.StageName, process: ChildProcess, port: Int) async throws {
        try await waitUntilReady(
            what: "the \(stage.rawValue) worker", process: process, port: port, finishingIsReady: stage == .ingest)
    }

    func waitUntilReady(what: String, process: ChildProcess, port: Int, finishingIsReady: Bool = false) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let status = process.exited {
                if finishingIsReady && !status.signaled && status.code == 0 { return }
                throw LocalRunError("\(what) exited (\(status)) before it was ready:\n\(process.standardError)")
            }
            if let r = try? await HTTPGet.get(host: "127.0.0.1", port: port, path: "/readyz"), r.status == 200 { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw LocalRunError("\(what) was not ready within a minute")
    }

    /// Starts several stages at once and waits until every one is ready (consumer groups form in
    /// parallel instead of one after the other).
    package func start(_ stages: [PipelineSpec.StageName]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for stage in stages {
                group.addTask { try await self.start(stage) }
            }
            try await group.waitForAll()
        }
    }

    /// The running process of a stage.
    package func process(_ stage: PipelineSpec.StageName) -> ChildProcess? {
        workers.withLockedValue { $0[stage]?.process }
    }

    /// SIGKILLs a stage's worker (no shutdown at all) and waits, at most `timeout`, for it to die
    /// and its output to end. Throws, naming what never came, if that takes longer: a SIGKILLed
    /// process always dies, so that would mean another process holds its pipes.
    @discardableResult
    package func kill(_ stage: PipelineSpec.StageName, timeout: Duration = .seconds(30)) async throws -> ChildProcess.ExitStatus? {
        guard let p = process(stage) else { return nil }
        p.signal(SIGKILL)
        if let status = await p.wait(timeout: timeout) { return status }
        throw LocalRunError(
            "the \(stage.rawValue) worker (pid \(p.processIdentifier)) was SIGKILLed, but \(timeout) later this process still waits "
                + "for \(p.pending.joined(separator: " and "))"
        )
    }

    /// SIGTERM: the graceful shutdown path. Returns the exit status and whether it took longer than `timeout`.
    package func terminate(
        _ stage: PipelineSpec.StageName, timeout: Duration = .seconds(30)
    ) async -> (status: ChildProcess.ExitStatus, timedOut: Bool)? {
        guard let p = process(stage) else { return nil }
        return await p.terminate(timeout: timeout)
    }

    /// The `/stats` document of a running stage, or nil if it does not answer.
    package func stats(_ stage: PipelineSpec.StageName) async -> StageStats? {
        guard let port = workers.withLockedValue({ $0[stage]?.port }),
            let response = try? await HTTPGet.get(
                host: "127.0.0.1", port: port, path: "/stats",
                headers: workerEnvironment["HTTP_TOKEN"].map { ["Authorization": "Bearer \($0)"] } ?? [:]),
            response.status == 200
        else { return nil }
        return try? JSONDecoder().decode(StageStats.self, from: Data(response.body))
    }

    /// Resident memory (KiB) and open file descriptors of a running worker, from /proc (Linux).
    package func resources(_ stage: PipelineSpec.StageName) -> (rssKiB: Int, fds: Int)? {
        guard let process = process(stage), process.exited == nil else { return nil }
        return Self.resources(pid: process.processIdentifier)
    }

    /// Resident memory (KiB) and open file descriptors of a process, from /proc (Linux).
    package static func resources(pid: Int32) -> (rssKiB: Int, fds: Int)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return nil }
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        return (kib, fds)
    }

    /// The HTTP port of a running stage.
    package func port(_ stage: PipelineSpec.StageName) -> Int? { workers.withLockedValue { $0[stage]?.port } }

    // MARK: - Kafka-side views

    func admin() throws -> KafkaAdmin {
        try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: bootstrapServers, clientID: "streamfirst-run"))
    }

    /// Records in each declared topic (sum of high watermarks), by logical name.
    package func topicCounts() async throws -> [String: Int64] {
        let admin = try admin()
        defer { Task { await admin.shutdown() } }
        var out: [String: Int64] = [:]
        for (logical, topic) in spec.topics {
            var sum: Int64 = 0
            for p in 0..<topic.partitions {
                let w = try await admin.watermarks(topic: topic.name, partition: Int32(p))
                sum += w.high
            }
            out[logical] = sum
        }
        return out
    }

    /// Records each consuming stage's group has not committed yet, by stage.
    package func groupLags() async throws -> [PipelineSpec.StageName: Int64] {
        let admin = try admin()
        defer { Task { await admin.shutdown() } }
        var out: [PipelineSpec.StageName: Int64] = [:]
        for stage in stages {
            guard let common = spec.stages[stage], let input = common.input else { continue }
            let lags = try await admin.groupLag(group: common.group, topics: [input.name])
            out[stage] = lags.reduce(0) { $0 + $1.lag }
        }
        return out
    }

    /// Waits until every consuming stage's group has committed everything in its input topic and the
    /// topics' record counts (the metrics topic aside) stayed so for two checks in a row, 500 ms apart.
    /// `onTick` gets the lags of every check. Does not wait for ingest's end: wait for that first.
    /// Throws a ``LocalRunError`` with the lags when `timeout` passes.
    package func waitUntilDrained(
        timeout: Duration, onTick: @Sendable ([PipelineSpec.StageName: Int64]) async -> Void = { _ in }
    )
        async throws
    {
        let deadline = ContinuousClock.now + timeout
        var zeroRounds = 0
        var last: [String: Int64] = [:]
        while ContinuousClock.now < deadline {
            let lags = (try? await groupLags()) ?? [:]
            await onTick(lags)
            var counts = (try? await topicCounts()) ?? [:]
            // Workers publish metrics snapshots all the time: that topic never stands still.
            if let metrics = spec.metrics?.topic.logical { counts[metrics] = nil }
            if !lags.isEmpty, lags.values.allSatisfy({ $0 == 0 }), counts == last {
                zeroRounds += 1
                if zeroRounds >= 2 { return }
            } else {
                zeroRounds = 0
            }
            last = counts
            try await Task.sleep(for: .milliseconds(500))
        }
        throw LocalRunError("the pipeline did not drain within \(timeout); lags: \((try? await groupLags()) ?? [:])")
    }

    /// Every record in a topic (logical name), read from the beginning to the current end.
    package func readAll(_ logical: String) async throws -> [KafkaMessage] {
        guard let topic = spec.topics[logical] else { throw LocalRunError("no topic \(logical)") }
        return try await TopicReader.readToEnd(
            topic: topic.name, kafka: KafkaConfiguration(bootstrapServers: bootstrapServers, clientID: "streamfirst-run-reader"))
    }

    /// Opens the persist stage's sink (read-only use: counting rows) with the workers' settings.
    package func sinkRowCount() async throws -> Int {
        let common = try spec.stage(.persist)
        let m = try common.mapping()
        let sinkNode = try m.required("sink")
        let sink = try SinkFactory.make(
            try sinkNode.mapping(), baseDirectory: spec.baseDirectory,
            kafka: KafkaProducerConfiguration(kafka: spec.kafka), logger: Logger(label: "streamfirst.run"))
        try await sink.open()
        let n = try await sink.count()
        await sink.close()
        return n
    }

    /// Stops every worker (SIGTERM, graceful) in pipeline order, then the dashboard, then the broker.
    /// Returns each worker's exit status.
    package func stop(timeout: Duration = .seconds(30)) async -> [PipelineSpec.StageName: ChildProcess.ExitStatus] {
        var out: [PipelineSpec.StageName: ChildProcess.ExitStatus] = [:]
        for stage in stages {
            if let r = await terminate(stage, timeout: timeout) { out[stage] = r.status }
        }
        _ = await stopDashboard(timeout: timeout)
        if let broker { _ = try? await broker.terminate() }
        return out
    }

    // MARK: - Dashboard

    /// Whether the pipeline file has a `dashboard:` section.
    package var hasDashboard: Bool { spec.dashboard != nil }

    /// Where the dashboard's log (its stderr) goes.
    package var dashboardLogFile: String {
        URL(fileURLWithPath: options.workDirectory).appendingPathComponent("logs/dashboard.log").path
    }

    /// Starts the `dashboard` executable (on a free port) and waits until it is ready (its consumer
    /// is assigned). Returns its port.
    @discardableResult
    package func startDashboard(extraEnvironment: [String: String] = [:]) async throws -> Int {
        let (process, p) = try await launch(
            "dashboard", what: "the dashboard", logFile: dashboardLogFile, extraEnvironment: extraEnvironment)
        dashboardWorker.withLockedValue { $0 = Running(process: process, port: p) }
        try await waitUntilReady(what: "the dashboard", process: process, port: p)
        return p
    }

    /// The dashboard's port while it runs.
    package var dashboardPort: Int? { dashboardWorker.withLockedValue { $0?.port } }

    /// The dashboard's process while it runs.
    package var dashboardProcess: ChildProcess? { dashboardWorker.withLockedValue { $0?.process } }

    /// SIGTERM to the dashboard; its exit status (nil if it was not started).
    package func stopDashboard(timeout: Duration = .seconds(30)) async -> ChildProcess.ExitStatus? {
        guard let p = dashboardProcess else { return nil }
        return await p.terminate(timeout: timeout).status
    }
}

/// An error of the local runner.
package struct LocalRunError: Error, CustomStringConvertible, Sendable {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// The `http_port=` line of a starting worker, its exit, or the end of the wait for them.
final class PortLine: Sendable {
    enum Outcome: Sendable {
        case port(Int)
        case exited(ChildProcess.ExitStatus)
        case timedOut
    }

    private let state = NIOLockedValueBox<(Outcome?, [CheckedContinuation<Outcome, Never>])>((nil, []))

    func set(_ port: Int) { finish(.port(port)) }

    /// The first outcome wins; later ones are ignored.
    func finish(_ r: Outcome) {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Outcome, Never>] in
            guard s.0 == nil else { return [] }
            s.0 = r
            defer { s.1 = [] }
            return s.1
        }
        for w in waiters { w.resume(returning: r) }
    }

    func wait() async -> Outcome {
        await withCheckedContinuation { c in
            let now = state.withLockedValue { s -> Outcome? in
                if let r = s.0 { return r }
                s.1.append(c)
                return nil
            }
            if let now { c.resume(returning: now) }
        }
    }
}
