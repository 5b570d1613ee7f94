import Connectors
import Foundation
import Kafka
import Logging
import NIOConcurrencyHelpers
import Pipeline
import PipelineModel
import SQLiteNIO
import StreamCore

/// Where every generated record went during a chaos run, seen from outside the pipeline: a
/// group-less consumer reads every data topic and the dead-letter topic from the beginning while
/// the run goes on, and remembers per topic where each generated id first appeared (partition,
/// offset) and when. It reads as the records are written, so records the embedded broker evicts
/// later (its 5 MiB-per-partition retention) are still accounted for; when records are lost, this
/// is what says which hop lost them (``ChaosRun/diagnose``).
final class RecordTap: Sendable {
    struct Sighting: Sendable, Hashable {
        var partition: Int32
        var offset: Int64
        /// Milliseconds since the run started.
        var atMs: Int64
    }

    private struct State {
        /// Per topic (index into `topics`), per generated n: first offset (-1: not seen), partition, time.
        var offsets: [[Int64]]
        var partitions: [[Int32]]
        var times: [[Int32]]
        /// Copies of each id seen per topic (saturating at 255).
        var copies: [[UInt8]]
        /// Next offset to read per partition (last read + 1).
        var next: [KafkaTopicPartition: Int64] = [:]
        var recordsRead = 0
        /// Offset resets and other trouble of the tap's own consumer.
        var problems: [String] = []
    }

    let topics: [String]
    let partitionCounts: [String: Int]
    private let topicIndex: [String: Int]
    private let prefix: [UInt8]
    private let count: Int
    private let started: ContinuousClock.Instant
    private let state: NIOLockedValueBox<State>
    private let task = NIOLockedValueBox<Task<Void, Never>?>(nil)

    /// `topics`: physical names with their partition counts. Ids are `gen:<seed>:<n>`, n < `count`.
    init(topics: [(name: String, partitions: Int)], seed: UInt64, count: Int, started: ContinuousClock.Instant) {
        self.topics = topics.map(\.name)
        self.partitionCounts = Dictionary(topics.map { ($0.name, $0.partitions) }, uniquingKeysWith: { a, _ in a })
        self.topicIndex = Dictionary(topics.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.prefix = Array("gen:\(seed):".utf8)
        self.count = count
        self.started = started
        self.state = NIOLockedValueBox(
            State(
                offsets: Array(repeating: Array(repeating: -1, count: count), count: topics.count),
                partitions: Array(repeating: Array(repeating: -1, count: count), count: topics.count),
                times: Array(repeating: Array(repeating: 0, count: count), count: topics.count),
                copies: Array(repeating: Array(repeating: 0, count: count), count: topics.count)))
    }

    /// Starts reading every partition of the topics from the beginning.
    func start(bootstrapServers: String) async throws {
        var config = KafkaConsumerConfiguration(
            kafka: KafkaConfiguration(bootstrapServers: bootstrapServers, clientID: "streamfirst-chaos-tap"), groupID: nil)
        config.fetchWaitMax = .milliseconds(100)
        // Its own librdkafka log lines stay out of the run's output; offset resets are kept as problems.
        let problems = ProblemLog()
        var logger = Logger(label: "streamfirst.chaos.tap") { _ in CapturingLogHandler(sink: problems) }
        logger.logLevel = .warning
        let consumer = try KafkaConsumer(configuration: config, logger: logger)
        var all: [KafkaTopicPartition] = []
        for t in topics {
            for p in 0..<(partitionCounts[t] ?? 0) { all.append(KafkaTopicPartition(topic: t, partition: Int32(p))) }
        }
        try await consumer.assign(all, startingAt: .beginning)
        let running = Task.detached { [self] in
            while !Task.isCancelled {
                guard let batch = try? await consumer.poll(maxMessages: 5000, timeout: .milliseconds(200)) else { break }
                if !batch.isEmpty { record(batch) }
                let trouble = problems.take()
                if !trouble.isEmpty { state.withLockedValue { $0.problems += trouble } }
            }
            await consumer.close()
        }
        task.withLockedValue { $0 = running }
    }

    func stop() async {
        let t = task.withLockedValue { t -> Task<Void, Never>? in
            defer { t = nil }
            return t
        }
        t?.cancel()
        await t?.value
    }

    private func record(_ batch: [KafkaMessage]) {
        let d = ContinuousClock.now - started
        let now = Int32(clamping: d.milliseconds)
        state.withLockedValue { s in
            for m in batch {
                guard let t = topicIndex[m.topic] else { continue }
                let tp = m.topicPartition
                s.next[tp] = max(s.next[tp] ?? 0, m.offset + 1)
                s.recordsRead += 1
                guard let id = m.header(RecordHeader.id)?.value, let n = index(of: id) else { continue }
                if s.copies[t][n] < 255 { s.copies[t][n] += 1 }
                guard s.offsets[t][n] < 0 else { continue }
                s.offsets[t][n] = m.offset
                s.partitions[t][n] = m.partition
                s.times[t][n] = now
            }
        }
    }

    /// n of `gen:<seed>:<n>`, if it is one of the generated ids.
    private func index(of id: [UInt8]) -> Int? {
        guard id.count > prefix.count, id.starts(with: prefix) else { return nil }
        var n = 0
        for b in id[prefix.count...] {
            guard b >= 0x30 && b <= 0x39 else { return nil }
            n = n * 10 + Int(b - 0x30)
            if n >= count { return nil }
        }
        return n
    }

    /// Where generated record `n` first appeared in `topic`, if the tap saw it there.
    func sighting(_ n: Int, in topic: String) -> Sighting? {
        guard let t = topicIndex[topic], n >= 0, n < count else { return nil }
        return state.withLockedValue { s in
            s.offsets[t][n] < 0 ? nil : Sighting(partition: s.partitions[t][n], offset: s.offsets[t][n], atMs: Int64(s.times[t][n]))
        }
    }

    /// How many copies of generated record `n` the tap read in `topic` (redelivery after a kill makes two).
    func copies(_ n: Int, in topic: String) -> Int {
        guard let t = topicIndex[topic], n >= 0, n < count else { return 0 }
        return state.withLockedValue { Int($0.copies[t][n]) }
    }

    var recordsRead: Int { state.withLockedValue { $0.recordsRead } }
    var problems: [String] { state.withLockedValue { $0.problems } }

    /// Waits until the tap has read every partition up to `ends` (high watermarks); false on timeout.
    func waitUntilRead(upTo ends: [KafkaTopicPartition: Int64], timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let behind = state.withLockedValue { s in ends.contains { tp, end in (s.next[tp] ?? 0) < end } }
            if !behind { return true }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return false
    }
}

/// Collects the tap consumer's warnings that matter (offset resets: records it could not read).
final class ProblemLog: Sendable {
    private let lines = NIOLockedValueBox<[String]>([])
    func add(_ line: String) { lines.withLockedValue { if $0.count < 100 { $0.append(line) } } }
    func take() -> [String] {
        lines.withLockedValue { l in
            defer { l = [] }
            return l
        }
    }
}

struct CapturingLogHandler: LogHandler {
    let sink: ProblemLog
    var logLevel: Logger.Level = .warning
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let text = event.message.description
        if text.contains("offset reset") || text.contains("out of range") { sink.add(String(text.prefix(200))) }
    }
}

/// What the run knows about one lost record, and the hop that lost it.
struct LostRecord: Sendable {
    var id: String
    var n: Int
    /// The stage that had it in its input (or, for ingest, should have written it) and passed nothing on.
    var hop: String
    /// The topic the hop read it from and where it was there.
    var input: (topic: String, sighting: RecordTap.Sighting)?
    /// Per topic of the pipeline, in order: where it was seen.
    var seen: [(topic: String, sighting: RecordTap.Sighting?)]
    /// The partition its key maps to.
    var partition: Int32
}

extension ChaosRun {
    /// The chain of a pipeline: ingest's output, then each consuming stage with its input and output
    /// topics (nil output: the stage ends the chain, e.g. persist into its sink).
    static func chain(_ spec: PipelineSpec, stateful: Bool) -> [(stage: PipelineSpec.StageName, input: String?, output: String?)] {
        var out: [(PipelineSpec.StageName, String?, String?)] = []
        for stage in PipelineSpec.StageName.allCases {
            guard let common = spec.stages[stage] else { continue }
            // A stateful window stage is where a chaos run stops following ids (its outputs are windows).
            let output = stateful && stage == .process ? nil : common.output?.name
            out.append((stage, common.input?.name, output))
            if output == nil && stage != .ingest { break }
        }
        return out
    }

    /// For each lost record: the topics it reached (from the tap) and the hop that lost it — the first
    /// stage that had it in its input topic and wrote it to neither its output nor the dead letters.
    static func locate(
        _ lost: [String], seed: UInt64, tap: RecordTap, chain: [(stage: PipelineSpec.StageName, input: String?, output: String?)],
        partitionOf: (Int) -> Int32
    ) -> [LostRecord] {
        let prefix = "gen:\(seed):"
        var out: [LostRecord] = []
        for id in lost {
            guard id.hasPrefix(prefix), let n = Int(id.dropFirst(prefix.count)) else { continue }
            var record = LostRecord(id: id, n: n, hop: "ingest", input: nil, seen: [], partition: partitionOf(n))
            var seen: [String: RecordTap.Sighting] = [:]
            for t in tap.topics {
                let s = tap.sighting(n, in: t)
                seen[t] = s
                record.seen.append((t, s))
            }
            // Walk the chain from ingest: the hop is the first stage whose input had it and whose output did not.
            for link in chain {
                if let input = link.input {
                    guard let s = seen[input] else { break }
                    record.hop = link.stage.rawValue
                    record.input = (input, s)
                } else {
                    record.hop = link.stage.rawValue
                }
                guard let output = link.output, seen[output] != nil else { break }
            }
            out.append(record)
        }
        return out
    }
}

/// The committed offsets and watermarks around lost records, read while the broker still runs.
struct LossEvidence: Sendable {
    var lines: [String] = []
    /// Lost records per hop.
    var hops: [String: Int] = [:]
    /// Lost records the hop's input partition no longer holds (below its low watermark): retention.
    var evicted = 0
}

extension ChaosRun {
    /// Explains lost records before the broker is stopped: for each, the topics it reached (topic,
    /// partition, offset, when), the hop that lost it; for each partition involved, its watermarks in
    /// every topic, the committed offsets of every consuming group and (persist) the sink's stored
    /// offsets; whether the hop's group committed past the record. Records are grouped by hop and
    /// partition so a lost batch reads as one stretch.
    static func diagnose(
        _ local: LocalPipeline, lost: [String], seed: UInt64, count: Int, tap: RecordTap, stateful: Bool,
        events: [(atMs: Int64, what: String)]
    ) async -> LossEvidence {
        var evidence = LossEvidence()
        let spec = local.spec
        let chain = chain(spec, stateful: stateful)
        let rawPartitions = (try? ingestPartitions(spec)) ?? 1
        let generator = try? generatorSource(spec)
        let records = locate(lost, seed: seed, tap: tap, chain: chain) { n in
            guard let generator else { return -1 }
            var key: [UInt8]?
            if case .object(let o) = try? JSONValue.parse(generator.record(Int64(n))), case .string(let s) = o["sensor_id"] {
                key = Array(s.utf8)
            }
            return KeyPartitioner.partition(key, of: rawPartitions)
        }
        for r in records { evidence.hops[r.hop, default: 0] += 1 }
        guard let admin = try? local.admin() else {
            evidence.lines.append("cannot reach the broker to read offsets")
            return evidence
        }
        defer { Task { await admin.shutdown() } }

        func t(_ ms: Int64) -> String { String(format: "t+%.1f s", Double(ms) / 1000) }
        func at(_ s: RecordTap.Sighting?) -> String { s.map { "[\($0.partition)]@\($0.offset) (\(t($0.atMs)))" } ?? "—" }

        // One group of lost records per hop and partition.
        let groups = Dictionary(grouping: records) { "\($0.hop) \($0.input?.sighting.partition ?? $0.partition)" }
        for key in groups.keys.sorted() {
            guard let group = groups[key]?.sorted(by: { $0.n < $1.n }), let first = group.first else { continue }
            let partition = first.input?.sighting.partition ?? first.partition
            let offsets = group.compactMap { $0.input?.sighting.offset }
            var head = "lost at hop \(first.hop): \(group.count) record(s)"
            if let input = first.input {
                head += " of \(input.topic)[\(partition)]"
                if let lo = offsets.min(), let hi = offsets.max() { head += " offsets \(lo)…\(hi)" }
                head += ", which it read from and wrote to neither its output nor the dead letters"
            } else {
                head += " (key partition \(partition)): never written to \(chain.first?.output ?? "its output")"
            }
            evidence.lines.append(head)
            for r in group.prefix(12) {
                evidence.lines.append("  \(r.id): " + r.seen.map { "\($0.topic)\(at($0.sighting))" }.joined(separator: " → "))
            }
            // Watermarks of this partition in every tapped topic, and every group's committed offset.
            var marks: [String] = []
            for name in tap.topics where Int(partition) < (tap.partitionCounts[name] ?? 0) {
                if let w = try? await admin.watermarks(topic: name, partition: partition) {
                    marks.append("\(name)[\(partition)] low \(w.low) high \(w.high)")
                }
            }
            evidence.lines.append("  watermarks: " + marks.joined(separator: "; "))
            // Below the input's low watermark and unread by the hop: the broker evicted them (retention).
            if let input = first.input, let w = try? await admin.watermarks(topic: input.topic, partition: partition) {
                let gone = offsets.filter { $0 < w.low }.count
                if gone > 0 {
                    evidence.evicted += gone
                    evidence.lines.append(
                        "  \(gone) of them are below \(input.topic)[\(partition)]'s low watermark \(w.low): "
                            + "evicted by the broker's retention before \(first.hop) read them (see offset resets)"
                    )
                }
            }
            var commits: [String] = []
            for link in chain {
                guard let input = link.input, let common = spec.stages[link.stage] else { continue }
                let committed = (try? await admin.groupOffsets(group: common.group, topics: [input]))?
                    .first { $0.partition == partition }?.offset
                var line = "\(link.stage.rawValue) (\(common.group)) \(input)[\(partition)] \(committed.map(String.init) ?? "?")"
                if link.stage.rawValue == first.hop, let committed, let lo = offsets.min() {
                    line +=
                        committed > lo ? " — past the lost offsets: the stage committed records it never passed on" : " — not past them"
                }
                commits.append(line)
            }
            evidence.lines.append("  committed: " + commits.joined(separator: "; "))
            if first.hop == PipelineSpec.StageName.persist.rawValue, let input = first.input,
                let stored = try? await sinkStoredOffsets(local, topic: input.topic)
            {
                let o = stored[partition]
                var line = "  sink's stored offset for \(input.topic)[\(partition)]: \(o.map(String.init) ?? "none")"
                if let o, let lo = offsets.min() { line += o > lo ? " — past the lost offsets" : " — not past them" }
                evidence.lines.append(line)
            }
            if first.hop == PipelineSpec.StageName.ingest.rawValue, let file = ingestCheckpointFile(local),
                let text = try? String(contentsOfFile: file, encoding: .utf8)
            {
                evidence.lines.append("  ingest checkpoint: \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            // What the run did around then (the record's first sighting).
            let when = group.compactMap { r in r.seen.compactMap(\.sighting?.atMs).min() }.min()
            if let when {
                let near = events.filter { abs($0.atMs - when) <= 20_000 }
                evidence.lines.append(
                    "  faults within 20 s of \(t(when)): "
                        + (near.isEmpty ? "none" : near.map { "\(t($0.atMs)) \($0.what)" }.joined(separator: ", ")))
            }
        }
        let problems = tap.problems
        if !problems.isEmpty {
            evidence.lines.append(
                "the tap itself could not read everything (its sightings are incomplete): \(problems.prefix(3).joined(separator: " | "))")
        }
        return evidence
    }

    static func generatorSource(_ spec: PipelineSpec) throws -> GeneratorSource? {
        let ingest = try spec.stage(.ingest).mapping()
        return try SourceFactory.make(
            try ingest.required("source").mapping(), baseDirectory: spec.baseDirectory, logger: Logger(label: "chaos"))
            as? GeneratorSource
    }

    static func ingestCheckpointFile(_ local: LocalPipeline) -> String? {
        guard let dir = local.workerEnvironment["STREAMFIRST_STATE_DIR"] else { return nil }
        return URL(fileURLWithPath: dir).appendingPathComponent("\(local.spec.name).ingest.checkpoint.json").path
    }

    /// The persist sink's stored next offsets (SQLite sinks keep them in `streamfirst_offsets`).
    static func sinkStoredOffsets(_ local: LocalPipeline, topic: String) async throws -> [Int32: Int64] {
        guard let path = local.workerEnvironment["SQLITE_PATH"], let group = local.spec.stages[.persist]?.group else { return [:] }
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        let connection = try await SQLiteConnection.open(storage: .file(path: path))
        let out = NIOLockedValueBox<[Int32: Int64]>([:])
        do {
            try await connection.query(
                "SELECT partition, next_offset FROM streamfirst_offsets WHERE consumer_group = ? AND topic = ?",
                [.text(group), .text(topic)]
            ) { row in
                if let p = row.column("partition")?.integer, let o = row.column("next_offset")?.integer {
                    out.withLockedValue { $0[Int32(p)] = Int64(o) }
                }
            }
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
        return out.withLockedValue { $0 }
    }
}
