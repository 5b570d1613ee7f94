import Foundation
import Kafka
import Logging
import StreamCore

/// `streamfirst redrive`: sends dead letters back to the topic they were refused from, after a fix
/// (a new schema, a corrected enrichment table, a repaired database).
///
/// - A dead letter goes back to `__connect.errors.topic` (ingest's dead letters, which have no
///   Kafka origin, go to ingest's output topic) with its original key, value and headers; the
///   error headers are removed and lineage added: `sf.redrive.of` (`topic/partition/offset` of the
///   dead letter), `sf.redrive.time`, `sf.redrive.count` (how often this record was redriven).
/// - **Once per dead letter**: every redriven dead letter is recorded in a ledger topic
///   (`<dead-letter topic>.redrive-ledger`, key = its coordinates) after the broker acknowledged the
///   re-published record; a later redrive skips what the ledger holds. A crash between the
///   acknowledgement and the ledger write can re-send that batch once more; the record keeps its
///   `sf.id`, so the persist worker's upsert absorbs it and the sink still holds it once.
/// - Filters (stage, error class, time range) select what to send; the rest stays for later.
///   A record redriven `maxCount` times is not sent again (a poison record cannot loop forever).
public struct Redrive: Sendable {
    public struct Filter: Sendable {
        public var stages: Set<String> = []
        public var errorClasses: Set<String> = []
        public var sinceMs: Int64?
        public var untilMs: Int64?
        public init(stages: Set<String> = [], errorClasses: Set<String> = [], sinceMs: Int64? = nil, untilMs: Int64? = nil) {
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
    public struct Report: Sendable, Equatable {
        /// Dead letters read.
        public var read = 0
        /// Re-published, by "stage ErrorClass → topic".
        public var redriven: [String: Int] = [:]
        /// Skipped because the ledger says they were redriven before.
        public var alreadyRedriven = 0
        /// Not matching the filters.
        public var filteredOut = 0
        /// Redriven `maxCount` times already.
        public var exhausted = 0
        public var redrivenTotal: Int { redriven.values.reduce(0, +) }
    }

    public static let ofHeader = "sf.redrive.of"
    public static let timeHeader = "sf.redrive.time"
    public static let countHeader = "sf.redrive.count"

    public let spec: PipelineSpec
    public let filter: Filter
    public let dryRun: Bool
    public let maxCount: Int
    let logger: Logger

    public init(spec: PipelineSpec, filter: Filter = Filter(), dryRun: Bool = false, maxCount: Int = 5, logger: Logger) {
        self.spec = spec
        self.filter = filter
        self.dryRun = dryRun
        self.maxCount = maxCount
        self.logger = logger
    }

    public var ledgerTopic: String { spec.redriveLedger.name }

    /// Reads the dead-letter topic to its current end and re-publishes what the filters select.
    public func run() async throws -> Report {
        let kafka = spec.kafka
        let letters = try await TopicReader.readToEnd(topic: spec.deadLetter.name, kafka: kafka)
        let done = try await ledger(kafka: kafka)
        var report = Report()
        var batch: [(KafkaProducerMessage, String, String)] = []  // message, coordinates, summary key
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
            if done.contains(coordinates) {
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
        for (_, _, summary) in batch { report.redriven[summary, default: 0] += 1 }
        if dryRun || batch.isEmpty { return report }

        var config = KafkaProducerConfiguration(kafka: kafka)
        config.properties.merge(spec.producerProperties) { $1 }
        let producer = try KafkaProducer(configuration: config, logger: logger)
        do {
            // In slices: each slice is acknowledged before its ledger entries are written.
            for start in stride(from: 0, to: batch.count, by: 500) {
                let slice = batch[start..<min(start + 500, batch.count)]
                let reports = await producer.send(slice.map(\.0))
                if let failed = reports.first(where: { $0.error != nil }), let error = failed.error {
                    throw PipelineError.delivery("redrive to \(failed.topic): \(error)")
                }
                let entries = slice.map { KafkaProducerMessage(topic: ledgerTopic, key: Array($0.1.utf8), value: Array("redriven".utf8)) }
                let ledgerReports = await producer.send(entries)
                if let failed = ledgerReports.first(where: { $0.error != nil }), let error = failed.error {
                    throw PipelineError.delivery("redrive ledger \(ledgerTopic): \(error)")
                }
            }
        } catch {
            await producer.shutdown()
            throw error
        }
        await producer.shutdown()
        return report
    }

    /// Where a dead letter goes back to: its original topic, or ingest's output for ingest's own.
    func target(of letter: KafkaMessage, stage: String) -> String? {
        if let original = letter.headerString(DeadLetterHeader.topic), !original.isEmpty { return original }
        if stage == "ingest" { return spec.stages[.ingest]?.output?.name }
        return nil
    }

    /// The coordinates already redriven (an absent ledger topic is an empty ledger: the first write
    /// creates it where the cluster auto-creates topics; `streamfirst topics create --pipeline` and
    /// `streamfirst run` create it compacted on real clusters).
    func ledger(kafka: KafkaConfiguration) async throws -> Set<String> {
        let admin = try KafkaAdmin(configuration: kafka)
        let exists = (try? await admin.listTopics().contains(ledgerTopic)) ?? false
        await admin.shutdown()
        guard exists else { return [] }
        let entries = try await TopicReader.readToEnd(topic: ledgerTopic, kafka: kafka)
        return Set(entries.compactMap { $0.key.map { String(decoding: $0, as: UTF8.self) } })
    }
}
