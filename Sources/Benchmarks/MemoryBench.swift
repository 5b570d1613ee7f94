import ArgumentParser
import EmbeddedBroker
import Foundation
import LocalRun
import Logging
import Pipeline
import PipelineModel
import Synchronization

/// `streamfirst-bench memory`: resident memory of every worker idle and under load (pipelines/iot-sensors.yaml),
/// and of the stateful process worker with many keys against its memory budget (pipelines/iot-windows.yaml).
/// Runs the pipelines the way `streamfirst run` does (LocalPipeline) and reads /proc/<pid>/status.
struct MemoryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "RSS per worker idle and under load; the stateful process worker with many keys against its memory budget.",
        discussion: """
            Part 1 (pipelines/iot-sensors.yaml on the embedded broker): validate, process, persist and the dashboard \
            are started and sampled for --idle-seconds with no records (idle); ingest is first started at 1 record/s \
            (its idle figure), then restarted with --records as fast as the pipeline takes them, and every worker is \
            sampled every 200 ms until the pipeline drains (VmRSS peak; VmHWM at the end). \
            Part 2 (pipelines/iot-windows.yaml): --keys sensors, readings --interval-ms apart in event time, \
            memory_budget --budget-mib: the process worker's RSS idle and under load, its state bytes (/stats) against \
            the budget, and the windows the budget closed early.
            """
    )

    @Option(help: "Records of the loaded run (part 1).") var records = 100_000
    @Option(help: "Records of the stateful run (part 2).") var windowRecords = 150_000
    @Option(help: "Distinct keys (sensors) of the stateful run.") var keys = 20_000
    @Option(help: "Event-time spacing of the stateful run's readings (ms).") var intervalMs = 2
    @Option(help: "memory_budget of the stateful run (MiB).") var budgetMib = 8
    @Option(help: "Partitions of the main topics (keep records x ~250 B / partitions under 5 MiB).") var partitions = 12
    @Option(help: "Seconds the idle figure is sampled over.") var idleSeconds = 3
    @Option(help: "Which parts: stages, stateful or both.") var parts = "stages,stateful"
    @Option(help: "Directory for the runs' state, SQLite files and logs.") var workDirectory = "/tmp/streamfirst-bench-memory"

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(physicalMemoryMiB()) MiB; load: \(loadAverage())")
        let chosen = parts.split(separator: ",").map(String.init)
        if chosen.contains("stages") { try await stages() }
        if chosen.contains("stateful") { try await stateful() }
    }

    /// The pipelines/ directory next to the sources (the benchmark runs from the repository).
    func pipelineFile(_ name: String) throws -> String {
        let path = FileManager.default.currentDirectoryPath + "/pipelines/\(name)"
        guard FileManager.default.fileExists(atPath: path) else { throw ValidationError("run from the repository: \(path) not found") }
        return path
    }

    func stages() async throws {
        let work = workDirectory + "/stages-\(UUID().uuidString.prefix(8).lowercased())"
        let pipeline = try await LocalPipeline.launch(
            .init(
                pipelineFile: try pipelineFile("iot-sensors.yaml"), workDirectory: work,
                environment: ["IOT_PARTITIONS": String(partitions), "IOT_COUNT": "0", "IOT_RATE": "1", "DASHBOARD_PORT": "0"],
                logLevel: "warning"))
        print(
            "\npart 1: pipelines/iot-sensors.yaml, \(partitions) partitions, load = \(records) generator records as fast as the "
                + "pipeline takes them"
        )
        let consuming: [PipelineSpec.StageName] = [.validate, .process, .persist]
        try await pipeline.start(consuming)
        var pids: [String: Int32] = [:]
        for s in consuming { if let p = pipeline.process(s) { pids[s.rawValue] = p.processIdentifier } }
        if pipeline.hasDashboard, (try? await pipeline.startDashboard()) != nil, let d = pipeline.dashboardProcess {
            pids["dashboard"] = d.processIdentifier
        }
        try await pipeline.start(.ingest) // 1 record/s: idle
        if let p = pipeline.process(.ingest) { pids["ingest"] = p.processIdentifier }
        let idle = try await sampleIdle(pids)
        _ = await pipeline.terminate(.ingest)
        try await pipeline.start(.ingest, extraEnvironment: ["IOT_COUNT": String(records), "IOT_RATE": "0"], waitUntilReady: false)
        if let p = pipeline.process(.ingest) { pids["ingest"] = p.processIdentifier }
        let start = ContinuousClock.now
        let peaks = PeakSampler(pids)
        let sampling = Task { await peaks.run() }
        try await pipeline.waitUntilDrained(timeout: .seconds(600))
        let loadWall = (ContinuousClock.now - start).seconds
        sampling.cancel()
        _ = await sampling.value
        let hwm = pids.mapValues { memoryKiB($0).hwm }
        let rows = (try? await pipeline.sinkRowCount()) ?? -1
        print(
            "  load: \(records) records generated, \(rows) rows in SQLite, drained in \(String(format: "%.1f", loadWall)) s (load: "
                + "\(loadAverage()))"
        )
        print("  worker     idle RSS (median)  under load RSS (peak of 200 ms samples)  VmHWM at end  growth")
        for name in ["ingest", "validate", "process", "persist", "dashboard"] where pids[name] != nil {
            let i = idle[name] ?? 0
            let p = max(peaks.peak(name), i)
            print(
                "  \(name.padding(toLength: 9, withPad: " ", startingAt: 0))  "
                    + "\(mib(i).padding(toLength: 17, withPad: " ", startingAt: 0))  "
                    + "\(mib(p).padding(toLength: 39, withPad: " ", startingAt: 0))  "
                    + "\(mib(hwm[name] ?? 0).padding(toLength: 12, withPad: " ", startingAt: 0))  +\(mib(p - i))"
            )
        }
        print("  (ingest's idle figure is a separate ingest process generating 1 record/s; the loaded one is a fresh process)")
        _ = await pipeline.stop()
    }

    func stateful() async throws {
        let work = workDirectory + "/stateful-\(UUID().uuidString.prefix(8).lowercased())"
        let pipeline = try await LocalPipeline.launch(
            .init(
                pipelineFile: try pipelineFile("iot-windows.yaml"), workDirectory: work,
                environment: [
                    "IOT_PARTITIONS": String(partitions), "IOT_COUNT": String(windowRecords), "IOT_RATE": "0",
                    "IOT_SENSORS": String(keys), "IOT_INTERVAL": "\(intervalMs)ms", "STATE_MEMORY_BUDGET": "\(budgetMib)MiB",
                    "WINDOW_IDLE_TIMEOUT": "60s",
                ],
                logLevel: "warning"))
        print(
            "\npart 2: pipelines/iot-windows.yaml, \(keys) sensors (keys), \(windowRecords) readings \(intervalMs) ms apart in event time, "
                + "tumbling 1m windows with 5 aggregates (count, avg, max, p95 sketch, avg), memory_budget \(budgetMib) MiB, "
                + "\(partitions) partitions"
        )
        try await pipeline.start([.validate, .process, .persist])
        guard let process = pipeline.process(.process) else { throw ValidationError("no process worker") }
        let pid = process.processIdentifier
        let idle = try await sampleIdle(["process": pid])["process"] ?? 0
        try await pipeline.start(.ingest, waitUntilReady: false)
        let peaks = PeakSampler(["process": pid])
        let sampling = Task { await peaks.run() }
        let watchState = Task {
            var peakState = 0
            var peakEntries = 0
            while !Task.isCancelled {
                if let s = await pipeline.stats(.process)?.state {
                    peakState = max(peakState, s.bytes)
                    peakEntries = max(peakEntries, s.entries)
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
            return (peakState, peakEntries)
        }
        try await pipeline.waitUntilDrained(timeout: .seconds(600))
        sampling.cancel()
        watchState.cancel()
        _ = await sampling.value
        let (stateBytes, entries) = await watchState.value
        let final = await pipeline.stats(.process)
        let hwm = memoryKiB(pid).hwm
        let peak = max(peaks.peak("process"), idle)
        let budgetKiB = budgetMib << 10
        print(
            "  process worker: idle RSS \(mib(idle)); under load peak RSS \(mib(peak)), VmHWM \(mib(hwm)); "
                + "growth over idle +\(mib(peak - idle)) "
                + "against a budget of \(budgetMib) MiB (ratio growth/budget \(ratioText(Double(peak - idle) / Double(budgetKiB))))")
        print(
            "  state (its own estimate, /stats): peak \(stateBytes / 1024) KiB in \(entries) open windows "
                + "(\(ratioText(Double(stateBytes) / Double(budgetKiB << 10))) of the budget); windows closed early by the budget: "
                + "\(final?.state?.evictions ?? -1); "
                + "records in \(final?.recordsIn ?? -1), out \(final?.recordsOut ?? -1)")
        print(
            "  verdict: state \(stateBytes <= budgetKiB << 10 ? "within" : "OVER") the budget; "
                + "RSS growth \(peak - idle <= 2 * budgetKiB ? "within" : "above") 2x the budget (load: \(loadAverage()))"
        )
        _ = await pipeline.stop()
    }

    /// Median VmRSS of each process over `idleSeconds` (5 samples a second).
    func sampleIdle(_ pids: [String: Int32]) async throws -> [String: Int] {
        var all: [String: [Double]] = [:]
        for _ in 0..<(idleSeconds * 5) {
            for (name, pid) in pids { all[name, default: []].append(Double(memoryKiB(pid).rss)) }
            try await Task.sleep(for: .milliseconds(200))
        }
        return all.mapValues { Int(median($0)) }
    }
}

/// The peak VmRSS of some processes, sampled every 200 ms until cancelled.
final class PeakSampler: Sendable {
    let pids: [String: Int32]
    private let peaks = Mutex<[String: Int]>([:])
    init(_ pids: [String: Int32]) { self.pids = pids }

    func run() async {
        while !Task.isCancelled {
            for (name, pid) in pids {
                let rss = memoryKiB(pid).rss
                peaks.withLock { $0[name] = max($0[name] ?? 0, rss) }
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    func peak(_ name: String) -> Int { peaks.withLock { $0[name] ?? 0 } }
}

/// VmRSS and VmHWM (KiB) of a process from /proc/<pid>/status (Linux); 0 when gone.
func memoryKiB(_ pid: Int32) -> (rss: Int, hwm: Int) {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Int {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return 0 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
    }
    return (field("VmRSS:"), field("VmHWM:"))
}

func mib(_ kib: Int) -> String { String(format: "%.1f MiB", Double(kib) / 1024) }

func physicalMemoryMiB() -> Int { Int(ProcessInfo.processInfo.physicalMemory >> 20) }
