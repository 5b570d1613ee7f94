import Connectors
import EmbeddedBroker
import Foundation
import Kafka
import NIOConcurrencyHelpers
import Pipeline
import PipelineModel
import PipelineTools
import SQLiteNIO
import StreamCore

/// `streamfirst chaos`: a pipeline under load on a three-broker embedded cluster while workers are
/// SIGKILLed and restarted and the brokers misbehave; then the invariants are checked against the
/// exact set of records the generator produced.
///
/// Requirements (checked at start): the ingest source is a `generator` with a `count`, and the
/// persist sink is `sqlite` with a column taken `from: $id` — so every generated id can be looked
/// for in the table and the dead-letter topic. A stateful (window) process stage is checked against
/// the broker-free engine instead (see `StatefulChaos.swift`): its sink needs the window key,
/// `window_start` and the `count()` aggregate as columns.
package struct ChaosRun: Sendable {
    package struct Options: Sendable {
        package var pipelineFile: String
        package var workDirectory: String
        package var records: Int
        package var rate: Int
        /// Mean pause between faults; each pause is drawn from 0.5×…1.5× this.
        package var interval: Duration
        package var seed: UInt64
        package var brokerFaults: Bool
        /// Partitions of the pipeline's data topics (`IOT_PARTITIONS`; the dead-letter and side topics
        /// get a quarter, at least 3: `IOT_SIDE_PARTITIONS`); nil keeps the file's counts. The embedded
        /// broker keeps 5 MiB per partition, so the lag a stage may build up without losing records
        /// grows with the partition count.
        package var partitions: Int?
        /// The workers' `session.timeout.ms` (`KAFKA_SESSION_TIMEOUT_MS`; heartbeats at a tenth): a
        /// killed worker's partitions move after this long, and each group membership change on the
        /// embedded broker takes about this long, so it dominates recovery.
        package var sessionTimeoutMs: Int
        /// How long the pipeline may take to drain after the generator is done.
        package var drainTimeout: Duration
        package init(
            pipelineFile: String, workDirectory: String, records: Int = 8000, rate: Int = 400, interval: Duration = .seconds(2),
            seed: UInt64 = 1, brokerFaults: Bool = true, partitions: Int? = nil, sessionTimeoutMs: Int = 6000,
            drainTimeout: Duration = .seconds(240)
        ) {
            self.pipelineFile = pipelineFile
            self.workDirectory = workDirectory
            self.records = records
            self.rate = rate
            self.interval = interval
            self.seed = seed
            self.brokerFaults = brokerFaults
            self.partitions = partitions
            self.sessionTimeoutMs = sessionTimeoutMs
            self.drainTimeout = drainTimeout
        }

        /// The environment the demo pipelines read their count, rate, partitions and timeouts from.
        var environment: [String: String] {
            var env = [
                "IOT_COUNT": String(records), "IOT_RATE": String(rate),
                "KAFKA_SESSION_TIMEOUT_MS": String(sessionTimeoutMs), "KAFKA_HEARTBEAT_MS": String(max(100, sessionTimeoutMs / 10)),
            ]
            // Windows close by event time only: an idle timeout is wall-clock time, which faults stretch.
            env["WINDOW_IDLE_TIMEOUT"] = "0s"
            if let partitions {
                env["IOT_PARTITIONS"] = String(partitions)
                env["IOT_SIDE_PARTITIONS"] = String(max(3, partitions / 4))
            }
            return env
        }
    }

    package struct Report: Sendable {
        package var records = 0
        /// Partitions of the topic ingest writes.
        package var partitions = 0
        package var kills: [String] = []
        package var brokerFaults: [String] = []
        /// Time from a kill to the restarted worker's `/readyz`, per kill (ms).
        package var recoveryMs: [Int] = []
        package var rows = 0
        package var deadLettered = 0
        package var deadLettersWritten = 0
        package var lost: [String] = []
        package var duplicatedRows = 0
        package var inBoth: [String] = []
        package var unhealthy: [String] = []
        package var exits: [String: String] = [:]
        package var seconds = 0.0
        /// Partitions whose unread records the broker no longer had (librdkafka's "offset reset …
        /// requested offset not available"): on the embedded broker, its 5 MiB-per-partition retention.
        package var evictions: [String] = []
        /// A stateful process stage: `rows` counts the records that reached it, and its windows are
        /// compared with the broker-free engine's.
        package var stateful = false
        /// Windows the broker-free oracle emits.
        package var windows = 0
        /// Window results in the output topic (re-emitted identical ones included).
        package var windowResultsWritten = 0
        package var sinkRows = 0
        /// Window ids written with two different values (a record counted twice, or missed once).
        package var doubleCounted: [String] = []
        /// How the windows, the sink or the dead letters differ from the oracle's.
        package var windowMismatches: [String] = []
        /// Lost records per hop (the stage that had them in its input and passed nothing on; `ingest`:
        /// never written to its output), from the run's tap of every topic.
        package var lostAtHop: [String: Int] = [:]
        /// Where each lost record was seen, the watermarks and committed offsets of its partitions and
        /// the faults around it, read before the broker stopped (empty when nothing was lost).
        package var lossDiagnosis: [String] = []
        /// Lost records their hop's input partition no longer holds: evicted by the broker's retention.
        package var lostToRetention = 0
        /// Records the tap read from the pipeline's topics (every copy, dead letters included).
        package var tapped = 0
        /// Where the workers' logs are (every instance of a stage appends to its stage's file).
        package var logs = ""
        /// Peak resident memory and open descriptors per worker (all its instances) and of the broker.
        package var resources: [String] = []
        /// Records a worker's producer saw acknowledged only implicitly and sent again (each line:
        /// stage, count, ids; see `KafkaProducer.sendConfirmed`).
        // On the embedded broker each would otherwise have been lost: it does not check idempotent sequence
        // numbers. See docs/decisions/0005-resend-implicitly-acknowledged-records.md.
        package var implicitAcks: [String] = []
        package var implicitlyAcknowledged = 0
        /// Of those, records the tap found once in their topic: only the re-send wrote them.
        package var implicitAcksWrittenOnce = 0

        package var passed: Bool {
            lost.isEmpty && duplicatedRows == 0 && inBoth.isEmpty && unhealthy.isEmpty && rows + deadLettered == records
                && exits.values.allSatisfy { $0 == "exit code 0" } && doubleCounted.isEmpty && windowMismatches.isEmpty
        }

        package var text: String {
            let sorted = recoveryMs.sorted()
            let p50 = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
            let rowsLine =
                stateful
                ? "into the window stage  \(rows) distinct records" : "rows in the sink      \(rows) (duplicates: \(duplicatedRows))"
            let implicitAcksLine =
                implicitlyAcknowledged == 0
                ? "none"
                : "\(implicitlyAcknowledged) records acknowledged implicitly (without an offset) and sent again, "
                    + "\(implicitAcksWrittenOnce) of them found only once in their topic (the embedded broker had not written them: "
                    + "it does not check idempotent sequence numbers): \(implicitAcks.prefix(5).joined(separator: "; "))"
            let offsetResetsLine =
                evictions.isEmpty
                ? "none"
                : "\(evictions.count) — unread records were evicted by the broker (the embedded one keeps 5 MiB per partition): "
                    + "lower --rate or raise --partitions. First: \(evictions.first ?? "")"
            return """
                chaos: \(passed ? "PASSED" : "FAILED") in \(String(format: "%.1f", seconds)) s
                  records generated     \(records) (\(partitions) partitions)
                  worker kills          \(kills.count): \(kills.joined(separator: ", "))
                  recovery to ready     p50 \(p50) ms, max \(sorted.last ?? 0) ms
                  broker faults         \(brokerFaults.count): \(brokerFaults.joined(separator: ", "))
                  \(rowsLine)\(windowLines)
                  dead-lettered         \(deadLettered) distinct records (\(deadLettersWritten) dead letters written; \
                repeats come from redelivery)
                  lost                  \(lost.count)\(lost.isEmpty ? "" : ": " + lost.prefix(10).joined(separator: ", "))\(lossLines)
                  both row and dead letter \(inBoth.count)
                  reconciliation        \(rows) + \(deadLettered) = \(rows + deadLettered) of \(records)
                  unhealthy at the end  \(unhealthy.isEmpty ? "none" : unhealthy.joined(separator: ", "))
                  implicit acks         \(implicitAcksLine)
                  offset resets         \(offsetResetsLine)
                  worker exits          \(exits.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                  resources (peak)      \(resources.isEmpty ? "not sampled" : resources.joined(separator: "; "))
                  worker logs           \(logs)
                """
        }

        var lossLines: String {
            guard !lost.isEmpty else { return "" }
            let hops = lostAtHop.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            let retention =
                lostToRetention > 0 ? "; \(lostToRetention) of them evicted by the broker's retention before the hop read them" : ""
            return "\n  lost at hop           \(hops.isEmpty ? "unknown" : hops)\(retention) (tap read \(tapped) records)"
                + lossDiagnosis.map { "\n    " + $0 }.joined()
        }

        var windowLines: String {
            guard stateful else { return "" }
            let differences =
                windowMismatches.isEmpty ? "none: every window equals the broker-free engine's" : windowMismatches.joined(separator: "; ")
            return """

                  windows (oracle)      \(windows); in the output topic \(windowResultsWritten) results written, \
                \(doubleCounted.count) ids with two values
                  sink rows             \(sinkRows)
                  differences           \(differences)
                """
        }
    }

    package let options: Options
    package init(options: Options) { self.options = options }

    package func run(progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        let started = ContinuousClock.now
        // Check the requirements before starting anything.
        let probe = try PipelineSpec.load(file: options.pipelineFile, environment: ProcessInfo.processInfo.environment)
        let stateful = probe.stages[.process].map(StatefulProcessConfig.isStateful) ?? false
        let idColumn = stateful ? "" : try Self.idColumn(probe)
        if stateful { _ = try Self.windowFields(probe) }
        _ = try Self.generator(probe)

        // The demo pipelines read these; a pipeline that does not keeps its own count and rate.
        let local = try await LocalPipeline.launch(
            .init(pipelineFile: options.pipelineFile, workDirectory: options.workDirectory, environment: options.environment, brokers: 3))
        let (seed, count) = try Self.generator(local.spec)
        var report = Report()
        report.records = count
        report.stateful = stateful
        report.logs =
            URL(fileURLWithPath: local.logFile(.ingest)).deletingLastPathComponent().path
            + "/{\(local.stages.map(\.rawValue).joined(separator: ","))}.log (every instance appends; kept after the run; t+0 = "
            + Date().formatted(.iso8601) + ")"
        // Every data topic and the dead letters, read from outside the pipeline as the run goes on.
        let tap = RecordTap(topics: Self.tappedTopics(local.spec, stateful: stateful), seed: seed, count: count, started: started)
        let events = NIOLockedValueBox<[(atMs: Int64, what: String)]>([])
        func note(_ what: String, at: ContinuousClock.Instant = .now) {
            let d = at - started
            events.withLockedValue { $0.append((d.milliseconds, what)) }
        }
        let sampler = ResourceSampler()
        let sampling = Task { [local] in
            while !Task.isCancelled {
                for stage in local.stages { if let r = local.resources(stage) { sampler.add(stage.rawValue, r) } }
                if let pid = local.broker?.processIdentifier, let r = LocalPipeline.resources(pid: pid) { sampler.add("broker", r) }
                try? await Task.sleep(for: .seconds(2))
            }
        }
        defer { sampling.cancel() }
        do {
            report.partitions = try Self.ingestPartitions(local.spec)
            if let wanted = options.partitions, report.partitions != wanted {
                throw LocalRunError(
                    "chaos --partitions \(wanted): the topic ingest writes has \(report.partitions) partitions; "
                        + "let the pipeline's topics read them (partitions: ${IOT_PARTITIONS:-6})"
                )
            }
            try await tap.start(bootstrapServers: local.bootstrapServers)
            try await local.start(local.stages.filter { $0 != .ingest })
            try await local.start(.ingest)
            progress("pipeline running: \(count) generated records, 3 brokers, \(report.partitions) partitions")
            var dice = SplitMix64(seed: options.seed) // a seed replays the fault schedule
            let recoveries = NIOLockedValueBox<[Int]>([])
            var watchers: [Task<Void, Never>] = []
            let stages = local.stages
            // Faults go on while ingest generates, but not forever: a generator that never finishes
            // (its output refused for good, say) ends the run with an error instead of a hang.
            let generating = Duration.seconds(count / max(1, options.rate))
            let ingestBound = generating * 4 + .seconds(120)
            let ingestDeadline = ContinuousClock.now + ingestBound
            while local.process(.ingest)?.exited == nil {
                guard ContinuousClock.now < ingestDeadline else {
                    throw LocalRunError(
                        "chaos: ingest had not finished its \(count) records within \(ingestBound) (about \(generating) without "
                            + "faults); its log: \(local.logFile(.ingest))"
                    )
                }
                let base = Double(options.interval.components.seconds) + Double(options.interval.components.attoseconds) / 1e18
                let pause = base * (0.5 + Double(dice.below(1000)) / 1000)
                try await Task.sleep(for: .milliseconds(Int(pause * 1000))) // the schedule itself, not a synchronisation
                guard local.process(.ingest)?.exited == nil else { break }
                let action = options.brokerFaults ? dice.below(4) : 0
                if action <= 1 {
                    let stage = stages[dice.below(stages.count)]
                    let killedAt = ContinuousClock.now
                    _ = try await local.kill(stage)
                    note("killed \(stage.rawValue)")
                    try await local.start(stage, waitUntilReady: false)
                    report.kills.append(stage.rawValue)
                    progress("t+\(Self.seconds(since: started)) s killed \(stage.rawValue) (SIGKILL) and restarted it")
                    watchers.append(
                        Task { [local] in
                            if await Self.waitReady(local, stage) {
                                let d = ContinuousClock.now - killedAt
                                let ms = Int(d.milliseconds)
                                recoveries.withLockedValue { $0.append(ms) }
                            }
                        })
                } else {
                    guard let control = local.broker?.control else { continue }
                    let faultAt = Self.seconds(since: started)
                    let faultStart = ContinuousClock.now
                    let fault = try await Self.brokerFault(control, spec: local.spec, dice: &dice)
                    note(fault, at: faultStart)
                    report.brokerFaults.append(fault)
                    progress("t+\(faultAt) s broker fault: \(fault)")
                }
            }
            progress("ingest finished; waiting for the pipeline to drain")
            for w in watchers { await w.value }
            report.recoveryMs = recoveries.withLockedValue { $0 }
            try await local.waitUntilDrained(timeout: options.drainTimeout)
            for stage in local.stages {
                // A worker that finished (ingest at the end of its source) is checked by its exit code.
                if local.process(stage)?.exited != nil { continue }
                guard let port = local.port(stage) else { continue }
                let h = try? await HTTPGet.get(host: "127.0.0.1", port: port, path: "/healthz")
                if h?.status != 200 { report.unhealthy.append(stage.rawValue) }
            }
            let dead = try await local.readAll(local.spec.deadLetter.logical)
            // The window stage's input and output, read while the broker still runs.
            var windowTopics: (input: [KafkaMessage], output: [KafkaMessage]) = ([], [])
            if stateful, let common = local.spec.stages[.process], let i = common.input, let o = common.output {
                windowTopics = (try await local.readAll(i.logical), try await local.readAll(o.logical))
            }

            // The invariants, checked while the broker still runs so that lost records can be looked for.
            if stateful {
                try await Self.checkWindows(
                    local, seed: seed, count: count, dead: dead, input: windowTopics.input, output: windowTopics.output, report: &report)
            } else {
                // Invariants over exact ids.
                let sqlite = local.workerEnvironment["SQLITE_PATH"] ?? ""
                let ids = try await Self.column(idColumn, table: try Self.table(local.spec), path: sqlite)
                report.rows = ids.count
                report.duplicatedRows = ids.count - Set(ids).count
                let deadIDs = Set(dead.compactMap { $0.header(RecordHeader.id)?.value.map { String(decoding: $0, as: UTF8.self) } })
                report.deadLettered = deadIDs.count
                report.deadLettersWritten = dead.count
                let rowIDs = Set(ids)
                report.inBoth = Array(rowIDs.intersection(deadIDs)).sorted()
                for n in 0..<count {
                    let id = "gen:\(seed):\(n)"
                    if !rowIDs.contains(id) && !deadIDs.contains(id) { report.lost.append(id) }
                }
            }
            // The tap reads every topic to its end before anything is looked up in it.
            let tapDone = await tap.waitUntilRead(upTo: await Self.highWatermarks(local, topics: tap.topics), timeout: .seconds(60))
            if !report.lost.isEmpty {
                progress("\(report.lost.count) records lost: locating them in every topic before the broker stops")
                if !tapDone {
                    report.lossDiagnosis.append("the tap had not read every topic to its end within 60 s: sightings may be missing")
                }
                let evidence = await Self.diagnose(
                    local, lost: report.lost, seed: seed, count: count, tap: tap, stateful: stateful, events: events.withLockedValue { $0 })
                report.lostAtHop = evidence.hops
                report.lostToRetention = evidence.evicted
                report.lossDiagnosis += evidence.lines
            }
            // Retention evictions show up in the workers' logs as librdkafka offset resets.
            for stage in local.stages {
                let log = (try? String(contentsOfFile: local.logFile(stage), encoding: .utf8)) ?? ""
                for line in log.split(separator: "\n") where line.contains("offset reset (at offset") {
                    report.evictions.append("\(stage.rawValue): " + String(line.drop { $0 != "[" }.prefix(160)))
                }
                for line in log.split(separator: "\n") where line.contains("implicitly acknowledged records") {
                    let count = Self.field("count", in: line).flatMap { Int($0) } ?? 0
                    let places = Self.field("partitions", in: line) ?? "?"
                    let ids = (Self.field("ids", in: line) ?? "").split(separator: ",").map(String.init)
                    // Written once: only the re-send wrote it, so without it the record would be lost.
                    let topics = Set(places.split(separator: ",").map { String($0.prefix { $0 != "[" }) })
                    let once = ids.filter { id in
                        guard let n = Int(id.dropFirst("gen:\(seed):".count)), id.hasPrefix("gen:\(seed):") else { return false }
                        return topics.contains { tap.copies(n, in: $0) == 1 }
                    }
                    report.implicitlyAcknowledged += count
                    report.implicitAcksWrittenOnce += once.count
                    report.implicitAcks.append(
                        "\(stage.rawValue) \(count) in \(places): \(ids.joined(separator: ","))"
                            + "\(once.isEmpty ? "" : ", written only by the re-send: \(once.joined(separator: ","))")"
                    )
                }
            }
            report.tapped = tap.recordsRead
            await tap.stop()

            let ingestExit = local.process(.ingest)?.exited
            let exits = await local.stop()
            for (stage, status) in exits { report.exits[stage.rawValue] = "\(status)" }
            if let ingestExit { report.exits["ingest"] = "\(ingestExit)" }

        } catch {
            await tap.stop()
            _ = await local.stop()
            throw error
        }
        report.resources = sampler.summary()
        report.seconds = Double((ContinuousClock.now - started).components.seconds)
        return report
    }

    /// The topics the tap reads: the pipeline's chain in order, then its other topics (routes, dead
    /// letters); never the metrics topic.
    static func tappedTopics(_ spec: PipelineSpec, stateful: Bool) -> [(name: String, partitions: Int)] {
        var names: [String] = []
        for link in chain(spec, stateful: stateful) {
            for t in [link.input, link.output].compactMap({ $0 }) where !names.contains(t) { names.append(t) }
        }
        let metrics = spec.metrics?.topic.name
        for t in spec.topics.values.sorted(by: { $0.name < $1.name }) where !names.contains(t.name) && t.name != metrics {
            names.append(t.name)
        }
        let counts = Dictionary(spec.topics.values.map { ($0.name, $0.partitions) }, uniquingKeysWith: { a, _ in a })
        return names.map { ($0, counts[$0] ?? 1) }
    }

    static func seconds(since start: ContinuousClock.Instant) -> String {
        let d = ContinuousClock.now - start
        return String(format: "%.1f", Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }

    /// The value of `key=value` in a worker's log line (text or JSON format).
    static func field(_ key: String, in line: Substring) -> String? {
        for (open, close) in [("\"\(key)\":\"", "\""), ("\(key)=", " ")] {
            guard let r = line.range(of: open) else { continue }
            let rest = line[r.upperBound...]
            return String(rest.prefix { !close.contains($0) && $0 != "\n" })
        }
        return nil
    }

    /// The high watermark of every partition of these topics.
    static func highWatermarks(_ local: LocalPipeline, topics: [String]) async -> [KafkaTopicPartition: Int64] {
        guard let admin = try? local.admin() else { return [:] }
        var out: [KafkaTopicPartition: Int64] = [:]
        for t in topics {
            for p in 0..<(local.spec.topics.values.first { $0.name == t }?.partitions ?? 0) {
                if let w = try? await admin.watermarks(topic: t, partition: Int32(p)) {
                    out[KafkaTopicPartition(topic: t, partition: Int32(p))] = w.high
                }
            }
        }
        await admin.shutdown()
        return out
    }

    static func waitReady(_ local: LocalPipeline, _ stage: PipelineSpec.StageName) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            if let port = local.port(stage), let r = try? await HTTPGet.get(host: "127.0.0.1", port: port, path: "/readyz"), r.status == 200
            {
                return true
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// One broker fault, undone after a short while (a fault that never heals is not a test of recovery).
    static func brokerFault(_ control: EmbeddedBrokerControl, spec: PipelineSpec, dice: inout SplitMix64) async throws -> String {
        switch dice.below(4) {
        case 0:
            let id = 1 + dice.below(3)
            try await control.brokerDown(id)
            try await Task.sleep(for: .seconds(2))
            try await control.brokerUp(id)
            return "broker \(id) down 2 s"
        case 1:
            let id = 1 + dice.below(3)
            try await control.setRTT(broker: id, milliseconds: 300)
            try await Task.sleep(for: .seconds(2))
            try await control.setRTT(broker: id, milliseconds: 0)
            return "broker \(id) RTT 300 ms for 2 s"
        case 2:
            try await control.pushRequestErrors(
                api: "Produce", errors: ["NOT_LEADER_FOR_PARTITION", "REQUEST_TIMED_OUT", "NOT_ENOUGH_REPLICAS"])
            return "3 Produce request errors"
        default:
            let topics = spec.topics.values.sorted { $0.name < $1.name }
            let topic = topics[dice.below(topics.count)]
            let partition = dice.below(topic.partitions)
            let broker = 1 + dice.below(3)
            try await control.setLeader(topic: topic.name, partition: partition, broker: broker)
            return "leader of \(topic.name)[\(partition)] → broker \(broker)"
        }
    }

    static func ingestPartitions(_ spec: PipelineSpec) throws -> Int {
        let output = try spec.stage(.ingest).mapping().required("output").string()
        guard let topic = spec.topics[output] else { throw LocalRunError("ingest writes to \(output), which is not in topics:") }
        return topic.partitions
    }

    static func idColumn(_ spec: PipelineSpec) throws -> String {
        let mapping = try sinkMapping(spec)
        guard let column = mapping.columns.first(where: { $0.origin == .meta("id") }) else {
            throw LocalRunError("chaos needs a sink column taken from $id (e.g. record_id: { type: text, from: $id }) to find every record")
        }
        return column.name
    }

    static func table(_ spec: PipelineSpec) throws -> String { try sinkMapping(spec).table }

    static func sinkMapping(_ spec: PipelineSpec) throws -> TableMapping {
        let m = try spec.stage(.persist).mapping()
        let sink = try m.required("sink").mapping()
        guard try sink.required("type").string() == "sqlite" else { throw LocalRunError("chaos needs a persist sink of type sqlite") }
        sink.markUsed(["type", "path"])
        return try TableMapping(sink)
    }

    /// The generator's seed and count (its ids are `gen:<seed>:<n>`, n < count).
    static func generator(_ spec: PipelineSpec) throws -> (seed: UInt64, count: Int) {
        let m = try spec.stage(.ingest).mapping()
        let source = try m.required("source").mapping()
        guard try source.required("type").string() == "generator" else {
            throw LocalRunError("chaos needs an ingest source of type generator")
        }
        let count = try source.int("count", default: 0, in: 0...Int.max)
        guard count > 0 else { throw LocalRunError("chaos needs a generator with a count (the records it must find again)") }
        return (UInt64(try source.int("seed", default: 1, in: 0...Int.max)), count)
    }

    static func column(_ name: String, table: String, path: String) async throws -> [String] {
        let connection = try await SQLiteConnection.open(storage: .file(path: path))
        let out = NIOLockedValueBox<[String]>([]) // sqlite-nio calls back on its own thread
        try await connection.query("SELECT \(name) FROM \(table)", []) { row in
            if let v = row.columns.first?.data.string { out.withLockedValue { $0.append(v) } }
        }
        try await connection.close()
        return out.withLockedValue { $0 }
    }
}

/// Peak resident memory and open descriptors per process name (a stage's instances share one), sampled
/// every two seconds during a chaos run: a leak shows as a peak far above the others'.
final class ResourceSampler: Sendable {
    private let peaks = NIOLockedValueBox<[String: (rssKiB: Int, fds: Int, samples: Int)]>([:])

    func add(_ name: String, _ r: (rssKiB: Int, fds: Int)) {
        peaks.withLockedValue { p in
            let old = p[name] ?? (0, 0, 0)
            p[name] = (max(old.rssKiB, r.rssKiB), max(old.fds, r.fds), old.samples + 1)
        }
    }

    func summary() -> [String] {
        peaks.withLockedValue { p in
            p.sorted { $0.key < $1.key }.map { "\($0.key) RSS \($0.value.rssKiB / 1024) MiB, fds \($0.value.fds)" }
        }
    }
}
