import Foundation
import Kafka
import Logging
import Pipeline
import PipelineModel
import StreamCore

/// `streamfirst redrive`: sends dead letters back to the topic they were refused from, after a fix
/// (a new schema, a corrected enrichment table, a repaired database).
///
/// - A dead letter goes back to `__connect.errors.topic` (ingest's dead letters, which have no
///   Kafka origin, go to ingest's output topic) with its original key, value and headers; the
///   error headers are removed and lineage added: `sf.redrive.of` (`topic/partition/offset` of the
///   dead letter), `sf.redrive.time`, `sf.redrive.count` (how often this record was redriven).
/// - **Once per dead letter**, through a ledger topic (`<dead-letter topic>.redrive-ledger`):
///   before a slice of records is sent, a `pending/<run>/<n>` entry lists their coordinates and
///   target topics; after the broker acknowledged them, one entry per dead letter (key = its
///   coordinates) is written and the pending entry is deleted (tombstone). A later run skips what
///   the ledger holds; if it finds a pending entry (a run that crashed mid-slice), it reads the
///   slice's target topics, finds the records that did arrive by their `sf.redrive.of` header,
///   records them as done, and sends only the others.
/// - Filters (stage, error class, time range) select what to send; the rest stays for later.
///   A record redriven `maxCount` times is not sent again (a poison record cannot loop forever).
package struct Redrive: Sendable {
    package struct Filter: Sendable {
        package var stages: Set<String> = []
        package var errorClasses: Set<String> = []
        package var sinceMs: Int64?
        package var untilMs: Int64?
        package init(stages: Set<String> = [], errorClasses: Set<String> = [], sinceMs: Int64? = nil, untilMs: Int64? = nil) {
            self.stages = stages
            self.errorClasses = errorClasses
            self.sinceMs = sinceMs
            self.untilMs = untilMs
        }

        func matches(stage: String, errorClass: String, timeMs: Int64?) -> Bool {
            if !stages.isEmpty && !stages.contains(stage) { return false }
            if !errorClasses.isEmpty && !errorClasses.contains(errorClass) { return false }
            if let sinceMs, (timeMs ?? .min) < sinceMs { return false }
            if let untilMs, (timeMs ?? .max) >= untilMs { return false }
            return true
        }
    }

    /// What a redrive did (or, with `dryRun`, would do).
    package struct Report: Sendable, Equatable {
        /// Dead letters read.
        package var read = 0
        /// Re-published, by "stage ErrorClass → topic".
        package var redriven: [String: Int] = [:]
        /// Skipped because the ledger says they were redriven before.
        package var alreadyRedriven = 0
        /// Not matching the filters.
        package var filteredOut = 0
        /// Redriven `maxCount` times already.
        package var exhausted = 0
        package var redrivenTotal: Int { redriven.values.reduce(0, +) }
    }

    package static let ofHeader = "sf.redrive.of"
    package static let timeHeader = "sf.redrive.time"
    package static let countHeader = "sf.redrive.count"

    package let spec: PipelineSpec
    package let filter: Filter
    package let dryRun: Bool
    package let maxCount: Int
    let logger: Logger
    /// Told how far reading the dead letters and sending them back got (`streamfirst redrive`'s progress bar).
    package var progress: ProgressHandler?

    package init(spec: PipelineSpec, filter: Filter = Filter(), dryRun: Bool = false, maxCount: Int = 5, logger: Logger) {
        self.spec = spec
        self.filter = filter
        self.dryRun = dryRun
        self.maxCount = maxCount
        self.logger = logger
    }

    package var ledgerTopic: String { spec.redriveLedger.name }

    /// Reads the dead-letter topic to its current end and re-publishes what the filters select.
    package func run() async throws -> Report {
        let kafka = spec.kafka
        var state = try await ledger(kafka: kafka)
        if !state.pending.isEmpty && !dryRun {
            state.done.formUnion(try await recover(state.pending, kafka: kafka))
        }
        let letters = try await TopicReader.readToEnd(topic: spec.deadLetter.name, kafka: kafka, progress: progress)
        var report = Report()
        var batch: [(message: KafkaProducerMessage, coordinates: String, summary: String)] = []
        for letter in letters {
            report.read += 1
            let coordinates = "\(letter.topic)/\(letter.partition)/\(letter.offset)"
            let stage = letter.headerString(DeadLetterHeader.stage) ?? "?"
            let errorClass = letter.headerString(DeadLetterHeader.exceptionClass) ?? "?"
            let time = letter.headerString(DeadLetterHeader.time).flatMap { Int64($0) }
            guard filter.matches(stage: stage, errorClass: errorClass, timeMs: time) else {
                report.filteredOut += 1
                continue
            }
            if state.done.contains(coordinates) {
                report.alreadyRedriven += 1
                continue
            }
            let count = (letter.headerString(Self.countHeader).flatMap { Int($0) } ?? 0) + 1
            if count > maxCount {
                report.exhausted += 1
                continue
            }
            guard let target = target(of: letter, stage: stage) else {
                logger.warning("no target topic for dead letter \(coordinates) (stage \(stage)); left in place")
                report.filteredOut += 1
                continue
            }
            var headers = letter.headers.filter {
                !$0.key.hasPrefix("__connect.errors.") && !$0.key.hasPrefix("sf.errors.") && !$0.key.hasPrefix("sf.redrive.")
            }
            headers.append(KafkaHeader(key: Self.ofHeader, value: coordinates))
            headers.append(KafkaHeader(key: Self.timeHeader, value: String(Int64(Date().timeIntervalSince1970 * 1000))))
            headers.append(KafkaHeader(key: Self.countHeader, value: String(count)))
            let message = KafkaProducerMessage(topic: target, key: letter.key, value: letter.value, headers: headers)
            batch.append((message, coordinates, "\(stage) \(errorClass) → \(target)"))
        }
        for item in batch { report.redriven[item.summary, default: 0] += 1 }
        if dryRun || batch.isEmpty { return report }

        let producer = try makeProducer()
        let run = UUID().uuidString.prefix(8)
        do {
            for (n, start) in stride(from: 0, to: batch.count, by: Self.sliceSize).enumerated() {
                let slice = batch[start..<min(start + Self.sliceSize, batch.count)]
                let pendingKey = "pending/\(run)/\(n)"
                let pending: JSONValue = [
                    "coordinates": .array(slice.map { .string($0.coordinates) }),
                    "targets": .array(Set(slice.map(\.message.topic)).sorted().map { .string($0) }),
                ]
                try await send(producer, [ledgerEntry(pendingKey, pending.serialized())])
                try await send(producer, slice.map(\.message))
                try await send(producer, slice.map { ledgerEntry($0.coordinates, Array("redriven".utf8)) } + [ledgerEntry(pendingKey, nil)])
                progress?("redriving", start + slice.count, batch.count)
            }
        } catch {
            await producer.shutdown()
            throw error
        }
        await producer.shutdown()
        return report
    }

    /// Records per slice between ledger writes.
    static let sliceSize = 500

    func makeProducer() throws -> KafkaProducer {
        var config = KafkaProducerConfiguration(kafka: spec.kafka)
        config.properties.merge(spec.producerProperties) { $1 }
        return try KafkaProducer(configuration: config, logger: logger)
    }

    func ledgerEntry(_ key: String, _ value: [UInt8]?) -> KafkaProducerMessage {
        KafkaProducerMessage(topic: ledgerTopic, key: Array(key.utf8), value: value)
    }

    func send(_ producer: KafkaProducer, _ messages: [KafkaProducerMessage]) async throws {
        let delivery = await producer.sendConfirmed(messages, logger: logger)
        if let failed = delivery.failures.first {
            throw PipelineError.delivery("redrive to \(failed.topic): \(failed.error)")
        }
    }

    /// A crashed run's pending slices: which of their records reached the target topics (found by
    /// `sf.redrive.of`). Those are recorded as done; the pending entries are deleted.
    func recover(_ pending: [String: (coordinates: Set<String>, targets: [String])], kafka: KafkaConfiguration) async throws -> Set<String>
    {
        var wanted = Set<String>()
        var targets = Set<String>()
        for (_, p) in pending {
            wanted.formUnion(p.coordinates)
            targets.formUnion(p.targets)
        }
        var arrived = Set<String>()
        for topic in targets.sorted() {
            for m in try await TopicReader.readToEnd(topic: topic, kafka: kafka) {
                if let of = m.headerString(Self.ofHeader), wanted.contains(of) { arrived.insert(of) }
            }
        }
        logger.notice("recovered \(pending.count) pending redrive slice(s): \(arrived.count) of \(wanted.count) records had arrived")
        let producer = try makeProducer()
        do {
            try await send(
                producer,
                arrived.sorted().map { ledgerEntry($0, Array("redriven".utf8)) } + pending.keys.sorted().map { ledgerEntry($0, nil) })
        } catch {
            await producer.shutdown()
            throw error
        }
        await producer.shutdown()
        return arrived
    }

    /// Where a dead letter goes back to: its original topic, or ingest's output for ingest's own.
    func target(of letter: KafkaMessage, stage: String) -> String? {
        if let original = letter.headerString(DeadLetterHeader.topic), !original.isEmpty { return original }
        if stage == "ingest" { return spec.stages[.ingest]?.output?.name }
        return nil
    }

    /// The ledger: coordinates already redriven, and pending slices of a run that did not finish.
    /// An absent ledger topic is an empty ledger (the first write creates it where the cluster
    /// auto-creates topics; `streamfirst topics create --pipeline` and `streamfirst run` create it
    /// compacted on real clusters).
    func ledger(
        kafka: KafkaConfiguration
    ) async throws -> (done: Set<String>, pending: [String: (coordinates: Set<String>, targets: [String])]) {
        let admin = try KafkaAdmin(configuration: kafka)
        let exists = (try? await admin.listTopics().contains(ledgerTopic)) ?? false
        await admin.shutdown()
        guard exists else { return ([], [:]) }
        var latest: [String: [UInt8]?] = [:]
        for entry in try await TopicReader.readToEnd(topic: ledgerTopic, kafka: kafka) {
            guard let key = entry.key.map({ String(decoding: $0, as: UTF8.self) }) else { continue }
            latest[key] = entry.value
        }
        var done = Set<String>()
        var pending: [String: (coordinates: Set<String>, targets: [String])] = [:]
        for (key, value) in latest {
            if key.hasPrefix("pending/") {
                guard let value, let doc = try? JSONValue.parse(value) else { continue } // tombstone: finished
                pending[key] = (
                    Set(doc["coordinates"]?.arrayValue?.compactMap(\.stringValue) ?? []),
                    doc["targets"]?.arrayValue?.compactMap(\.stringValue) ?? []
                )
            } else if value != nil {
                done.insert(key)
            }
        }
        return (done, pending)
    }
}
