import ArgumentParser
import Foundation
import Kafka
import Logging
import Processing

struct TailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail",
        abstract: "Print the records of topics as they arrive (a consumer you can point at any topic).",
        discussion: """
            Records are printed with their coordinates, timestamp, key and headers, the value pretty-printed \
            when it is JSON (--format line: one line per record). Without --group, partitions are assigned \
            manually (all, or --partition) and nothing is committed. With --group, the consumer joins that \
            group; --commit sync commits each record's offset before printing it, so a killed tail never \
            skips or repeats a printed record. It follows the topics until interrupted, --max records, \
            --idle-exit seconds without a record, or, with --no-follow, the end the partitions had when \
            it reached them.
            With --json, records are JSON lines {topic, partition, offset, key, value, timestamp, headers} \
            and group events are lines {"event": "assigned"|"revoked", "partitions": [...]}.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Topics to read.") var topics: [String]
    @Option(help: "Consumer group to join (default: none, manual assignment of every partition).") var group: String?
    @Option(
        help:
            """
            Where to start: beginning, end, committed, offset:N (in every partition read), time:MILLIS or time:ISO-8601 (default: \
            committed with --group, else beginning).
            """
    )
    var from: String?
    @Option(name: .customLong("partition"), help: "Read only this partition (repeatable; without --group).") var partitions: [Int32] = []
    @Option(help: "Stop after this many records.") var max: Int?
    @Option(help: "Offsets: none, auto (background auto-commit of processed records) or sync (commit before printing).")
    var commit = "auto"
    @Option(help: "session.timeout.ms for --group.") var sessionTimeoutMs = 10_000
    @Option(help: "Stop after this many seconds without a record.") var idleExit: Double?
    @Flag(inversion: .prefixedNo, help: "Keep waiting for new records at the end of the partitions (--no-follow: stop there).")
    var follow = true
    @Option(help: "pretty (coordinates, headers, indented JSON) or line (one line per record).") var format = "pretty"
    @Flag(help: "Print JSON lines.") var json = false

    func validate() throws {
        guard ["none", "auto", "sync"].contains(commit) else {
            throw ValidationError("--commit '\(commit)': expected none, auto or sync")
        }
        if commit != "none" && group == nil && commit == "sync" {
            throw ValidationError("--commit sync needs --group: offsets are committed for a consumer group")
        }
        guard ["pretty", "line"].contains(format) else { throw ValidationError("--format '\(format)': expected pretty or line") }
        if !partitions.isEmpty && group != nil {
            throw ValidationError("--partition assigns partitions by hand: it cannot be combined with --group")
        }
    }

    func run() async throws {
        bootstrapCLILogging()
        var config = KafkaConsumerConfiguration(kafka: try connection.kafkaConfiguration(), groupID: group)
        config.autoCommit = commit == "auto" && group != nil
        config.sessionTimeout = .milliseconds(sessionTimeoutMs)
        config.heartbeatInterval = .milliseconds(Swift.max(100, sessionTimeoutMs / 6))
        config.fetchWaitMax = .milliseconds(50)
        config.partitionEOF = !follow
        let fromText = from ?? (group == nil ? "beginning" : "committed")

        // Every partition to read (manual assignment, offset:N, --partition).
        var selected: [KafkaTopicPartition] = []
        if group == nil || fromText.hasPrefix("offset:") {
            let admin = try KafkaAdmin(configuration: try connection.kafkaConfiguration())
            do {
                for t in topics {
                    let ids = try await admin.describeTopic(t).partitions.map(\.id)
                    for p in partitions where !ids.contains(p) {
                        throw ValidationError("--partition \(p): \(t) has partitions \(ids.map(String.init).joined(separator: ", "))")
                    }
                    selected += ids.filter { partitions.isEmpty || partitions.contains($0) }.map {
                        KafkaTopicPartition(topic: t, partition: $0)
                    }
                }
            } catch {
                await admin.shutdown()
                throw error
            }
            await admin.shutdown()
        }
        let position: KafkaStartPosition
        if fromText.hasPrefix("offset:") {
            guard let n = Int64(fromText.dropFirst("offset:".count)), n >= 0 else {
                throw ValidationError("--from '\(fromText)': expected offset:N with N ≥ 0")
            }
            position = .offsets(Dictionary(uniqueKeysWithValues: selected.map { ($0, n) }))
        } else {
            position = try parseStartPosition(fromText, topics: topics)
        }

        let consumer = try KafkaConsumer(configuration: config)
        let ends = PartitionSet()
        if group == nil { ends.expect(selected) }
        let eventsTask = Task { [json] in
            for await event in consumer.events {
                switch event {
                case .assigned(let p):
                    ends.expect(p.map(\.topicPartition))
                    let list = p.map { ["topic": $0.topic, "partition": Int($0.partition)] as [String: Any] }
                    if json {
                        emit(jsonString(["event": "assigned", "partitions": list]))
                    } else {
                        FileHandle.standardError.write(Data("assigned \(p.map(\.description))\n".utf8))
                    }
                case .revoked(let p):
                    let list = p.map { ["topic": $0.topic, "partition": Int($0.partition)] as [String: Any] }
                    if json {
                        emit(jsonString(["event": "revoked", "partitions": list]))
                    } else {
                        FileHandle.standardError.write(Data("revoked \(p.map(\.description))\n".utf8))
                    }
                case .partitionEOF(let at):
                    ends.reached(at.topicPartition)
                case .error(let e):
                    FileHandle.standardError.write(Data("error: \(e)\n".utf8))
                default:
                    break
                }
            }
        }
        if group != nil {
            try await consumer.subscribe(topics: topics, startingAt: position)
        } else {
            try await consumer.assign(selected, startingAt: position)
        }
        var count = 0
        loop: while true {
            let timeoutMs = idleExit.map { Int64($0 * 1000) } ?? (follow ? 1000 : 200)
            let batch = try await consumer.poll(maxMessages: 500, timeout: .milliseconds(timeoutMs))
            for m in batch {
                if group != nil && commit != "none" {
                    try consumer.storeOffset(for: m)
                    if commit == "sync" { try await consumer.commit() }
                }
                emit(json ? jsonLine(m) : format == "line" ? plainLine(m) : prettyRecord(m))
                count += 1
                if let max, count >= max { break loop }
            }
            if batch.isEmpty {
                if idleExit != nil { break }
                if !follow && ends.allReached { break }
            }
        }
        if group != nil && commit == "auto" { try? await consumer.commit() }
        await consumer.close()
        eventsTask.cancel()
    }

    func plainLine(_ m: KafkaMessage) -> String {
        let key = m.key.map { String(decoding: $0, as: UTF8.self) } ?? "∅"
        let value = m.value.map { String(decoding: $0, as: UTF8.self) } ?? "∅ (tombstone)"
        return "\(m.topic)[\(m.partition)]@\(m.offset) \(key): \(value)"
    }

    /// `topic[p]@offset  2026-01-01T00:00:00.000Z  key=…`, then each header, then the value
    /// (indented JSON when it parses, else the text as it is).
    func prettyRecord(_ m: KafkaMessage) -> String {
        let key = m.key.map { String(decoding: $0, as: UTF8.self) } ?? "∅"
        let time = m.timestamp.map { TimeFormat.format($0.milliseconds) } ?? "-"
        var out = "\(m.topic)[\(m.partition)]@\(m.offset)  \(time)  key=\(key)"
        for h in m.headers {
            out += "\n  \(h.key): \(h.value.map { String(decoding: $0, as: UTF8.self) } ?? "∅")"
        }
        guard let value = m.value else { return out + "\n  ∅ (tombstone)\n" }
        if let object = try? JSONSerialization.jsonObject(with: Data(value), options: [.fragmentsAllowed]),
            let pretty = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed])
        {
            let text = String(decoding: pretty, as: UTF8.self)
            return out + "\n" + text.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n")
                + "\n"
        }
        return out + "\n  " + String(decoding: value, as: UTF8.self) + "\n"
    }
}

/// The partitions a `--no-follow` tail reads and those whose end it reached.
final class PartitionSet: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var expected: Set<KafkaTopicPartition> = []
    private var atEnd: Set<KafkaTopicPartition> = []

    func expect(_ partitions: [KafkaTopicPartition]) { lock.withLock { expected = Set(partitions) } }
    func reached(_ partition: KafkaTopicPartition) { lock.withLock { _ = atEnd.insert(partition) } }
    var allReached: Bool { lock.withLock { !expected.isEmpty && expected.isSubset(of: atEnd) } }
}

func bootstrapCLILogging() {
    let level = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = level
        return h
    }
}

struct ProduceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce",
        abstract: "Produce one record per line of standard input (KEY<sep>VALUE with --key-separator).")

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Topic to write to.") var topic: String
    @Option(help: "Split each line into key and value at the first occurrence of this string.") var keySeparator: String?
    @Option(name: .customLong("header"), help: "A header KEY=VALUE added to every record (repeatable).") var headers: [String] = []

    func run() async throws {
        bootstrapCLILogging()
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(kafka: try connection.kafkaConfiguration()))
        try producer.prepare(topics: [topic])
        let hs = headers.map { h -> KafkaHeader in
            let parts = h.split(separator: "=", maxSplits: 1)
            return KafkaHeader(key: String(parts[0]), value: parts.count > 1 ? String(parts[1]) : "")
        }
        var sent = 0
        var pending: [KafkaProducerMessage] = []
        var failed = 0
        func drain() async {
            let reports = await producer.send(pending)
            failed += reports.filter { $0.error != nil }.count
            if let e = reports.first(where: { $0.error != nil })?.error {
                FileHandle.standardError.write(Data("delivery failed: \(e)\n".utf8))
            }
            sent += pending.count
            pending.removeAll(keepingCapacity: true)
        }
        while let line = readLine() {
            var key: String?
            var value = line
            if let sep = keySeparator, let r = line.range(of: sep) {
                key = String(line[..<r.lowerBound])
                value = String(line[r.upperBound...])
            }
            pending.append(KafkaProducerMessage(topic: topic, key: key, value: value, headers: hs))
            if pending.count >= 1000 { await drain() }
        }
        await drain()
        await producer.shutdown()
        FileHandle.standardError.write(Data("produced \(sent - failed) of \(sent) records to \(topic)\n".utf8))
        if failed > 0 { throw ExitCode(1) }
    }
}
