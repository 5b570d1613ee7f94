import Config
import Connectors
import Foundation
import Kafka
import Logging
import NIOConcurrencyHelpers
import PipelineModel
import Processing
import ServiceLifecycle
import StreamCore
import Synchronization

/// The ingest stage: reads a source, turns each record into a Kafka record with a key, an event
/// time and lineage headers, and produces it to the stage's output topic. Records that are not JSON
/// (or that the source already rejected) go to the dead-letter topic with their bytes untouched.
///
/// Settings (section `ingest:`): `source` (see docs/CONNECTORS.md), `key` (an expression,
/// usually a field name, giving the Kafka key; absent → no key), `event_time` (an expression giving
/// milliseconds since the epoch or an ISO-8601 string; absent or unusable → ingest time),
/// `state_dir` (where the source checkpoint is kept, default `${STREAMFIRST_STATE_DIR:-.streamfirst}`
/// relative to the working directory), `max_in_flight` (records queued in the producer before HTTP
/// answers 429, default 50000), `on_source_end` (`exit` | `wait`: what a finite source's end does).
public final class IngestStage: Service, ContextualStage, RecordEmitter, Sendable {
    let context: StageContext
    let source: any RecordSource
    let keyExpression: Processing.Expression?
    let eventTimeExpression: Processing.Expression?
    let checkpointFile: String
    let maxInFlight: Int
    let waitAtEnd: Bool
    let output: String
    private let producerBox = NIOLockedValueBox<KafkaProducer?>(nil)
    private let stopping = Synchronization.Atomic<Bool>(false)
    private let checkpointState = NIOLockedValueBox<CheckpointState>(CheckpointState())

    struct CheckpointState {
        var latest: String?
        var written: String?
        var lastWriteMs: Int64 = 0
    }

    public init(context: StageContext) throws(ConfigError) {
        let (spec, common, logger) = (context.spec, context.common, context.logger)
        self.context = context
        let m = try common.mapping()
        let sourceNode = try m.required("source", hint: "where records come from: stdin, file, tail, http, generator or mqtt")
        let sourceMapping = try sourceNode.mapping()
        self.source = try SourceFactory.make(sourceMapping, baseDirectory: spec.baseDirectory, logger: logger)
        func expression(_ key: String) throws(ConfigError) -> Processing.Expression? {
            guard let node = m.optional(key) else { return nil }
            let text = try node.string()
            do {
                return try Processing.Expression(text)
            } catch {
                throw node.error("\(error)")
            }
        }
        self.keyExpression = try expression("key")
        self.eventTimeExpression = try expression("event_time")
        let stateDir = try m.string("state_dir", default: spec.environment["STREAMFIRST_STATE_DIR"] ?? ".streamfirst")
        self.checkpointFile = URL(fileURLWithPath: stateDir).appendingPathComponent("\(spec.name).ingest.checkpoint.json").path
        self.maxInFlight = try m.int("max_in_flight", default: 50_000, in: 1...10_000_000)
        self.waitAtEnd = try m.choice("on_source_end", ["exit", "wait"], default: "exit") == "wait"
        try m.finish()
        guard let output = common.output else { throw sourceNode.error("ingest needs an output topic") }
        try common.refuseAvroOutput()
        self.output = output.name
    }

    public func run() async throws {
        var producerConfig = KafkaProducerConfiguration(kafka: spec.kafka)
        producerConfig.linger = .milliseconds(2)
        producerConfig.properties = common.producerProperties
        let producer = try KafkaProducer(configuration: producerConfig, logger: logger)
        try producer.prepare(topics: [output, spec.deadLetter.name])
        producerBox.withLockedValue { $0 = producer }
        let resume = readCheckpoint()
        if let resume { logger.info("resuming the source", metadata: ["source": "\(source.name)", "checkpoint": "\(resume)"]) }
        health.setReady(true)
        var failure: (any Error)?
        await withGracefulShutdownHandler {
            do {
                try await source.run(resumingFrom: resume, emitter: self)
                logger.info("source finished", metadata: ["source": "\(source.name)"])
                if waitAtEnd && !stopping.load(ordering: .relaxed) {
                    try await gracefulShutdown()
                }
            } catch is CancellationError {
            } catch {
                failure = error
            }
        } onGracefulShutdown: {
            self.stopping.store(true, ordering: .relaxed)
        }
        stopping.store(true, ordering: .relaxed)
        health.setReady(false)
        do {
            try await producer.flush(timeout: .seconds(10))
        } catch {
            logger.warning("flush on shutdown", metadata: ["error": "\(error)"])
        }
        writeCheckpoint(force: true)
        await producer.shutdown()
        if let failure { throw failure }
    }

    // MARK: RecordEmitter

    public func emit(_ records: [SourceRecord]) async throws(EmitError) {
        try await deliver(records, refuseWhenBusy: false)
    }

    public func emitAndWait(_ records: [SourceRecord]) async throws(EmitError) {
        try await deliver(records, refuseWhenBusy: true)
    }

    private func deliver(_ records: [SourceRecord], refuseWhenBusy: Bool) async throws(EmitError) {
        guard !stopping.load(ordering: .relaxed), let producer = producerBox.withLockedValue({ $0 }) else {
            throw .shuttingDown
        }
        if refuseWhenBusy && producer.outstanding >= maxInFlight { throw .backpressure }
        // An empty emit is a source's "still here, are we stopping?" (the MQTT source's idle tick): live.
        health.beat()
        if records.isEmpty { return }
        let now = currentTimeMs()
        var messages: [KafkaProducerMessage] = []
        messages.reserveCapacity(records.count)
        var dead: [DeadLetterClass] = []
        for record in records {
            let id = record.id ?? UUID().uuidString.lowercased()
            // The record's span: continues the trace the source received with it, else starts one.
            var parent: [KafkaHeader] = []
            if let p = record.traceParent {
                parent.append(KafkaHeader(key: RecordHeader.traceParent, value: p))
                if let s = record.traceState { parent.append(KafkaHeader(key: RecordHeader.traceState, value: s)) }
            }
            let span = tracer.startIngesting(id: id, source: source.name, parent: parent)
            func deadLetter(_ reason: DeadLetterReason) {
                var message = deadLetters.message(
                    forSourceBytes: record.bytes, id: id, source: source.name, reason: reason, receivedAtMs: record.receivedAtMs, nowMs: now
                )
                span.stamp(&message)
                messages.append(message)
                dead.append(reason.errorClass)
                span.end(.deadLetter, errorClass: reason.errorClass)
            }
            if let rejection = record.rejection {
                deadLetter(DeadLetterReason(component: "source:\(source.name)", errorClass: .sourceRejected, message: rejection))
                continue
            }
            let value: JSONValue
            do {
                value = try JSONValue.parse(record.bytes)
            } catch {
                deadLetter(.malformedJSON(error))
                continue
            }
            let context = RecordContext(id: id, key: nil, eventTimeMs: nil, topic: "", partition: -1, offset: -1)
            var key = keyExpression == nil ? record.key : nil
            if let keyExpression, let k = try? keyExpression.evaluate(value, context: context) {
                switch k {
                case .null: key = nil
                case .string(let s): key = Array(s.utf8)
                default: key = k.serialized()
                }
            }
            var eventTime = record.receivedAtMs
            if let eventTimeExpression, let t = try? eventTimeExpression.evaluate(value, context: context),
                let ms = EventTime.milliseconds(from: t)
            {
                eventTime = ms
            }
            let headers =
                [
                    KafkaHeader(key: RecordHeader.id, value: id),
                    KafkaHeader(key: RecordHeader.eventTime, value: String(eventTime)),
                    KafkaHeader(key: RecordHeader.ingestTime, value: String(record.receivedAtMs)),
                    KafkaHeader(key: RecordHeader.source, value: source.name),
                    KafkaHeader(key: RecordHeader.contentType, value: "application/json"),
                ] + record.headers.map { KafkaHeader(key: $0.0, value: $0.1) }
            var message = KafkaProducerMessage(topic: output, key: key, value: record.bytes, headers: headers, timestamp: eventTime)
            span.stamp(&message)
            messages.append(message)
            span.end(.forwarded)
        }
        metrics.recordIn(records.count)
        let started = ContinuousClock.now
        let delivery = await producer.sendConfirmed(messages, logger: logger)
        if let failed = delivery.failures.first {
            throw .deliveryFailed("\(failed.error)")
        }
        metrics.recordOut(records.count - dead.count)
        for c in dead { metrics.recordDeadLetter(errorClass: c) }
        metrics.recordProcessing(nanoseconds: (ContinuousClock.now - started).nanoseconds, records: records.count)
        if let checkpoint = records.last(where: { $0.checkpoint != nil })?.checkpoint {
            checkpointState.withLockedValue { $0.latest = checkpoint }
            writeCheckpoint(force: false)
        }
    }

    // MARK: Checkpoints

    private struct CheckpointDocument: Codable {
        var source: String
        var checkpoint: String
    }

    func readCheckpoint() -> String? {
        guard let data = FileManager.default.contents(atPath: checkpointFile) else { return nil }
        guard let doc = try? JSONDecoder().decode(CheckpointDocument.self, from: data) else {
            logger.warning("ignoring an unreadable checkpoint file", metadata: ["file": "\(checkpointFile)"])
            return nil
        }
        guard doc.source == source.name else {
            logger.warning(
                "the checkpoint belongs to another source; starting from the beginning",
                metadata: ["file": "\(checkpointFile)", "checkpoint.source": "\(doc.source)", "source": "\(source.name)"])
            return nil
        }
        return doc.checkpoint
    }

    /// Writes the latest delivered checkpoint (write to a temporary file, then rename: a crash leaves
    /// the old or the new one, never half of one). At most every 200 ms unless forced.
    func writeCheckpoint(force: Bool) {
        let now = currentTimeMs()
        let toWrite: String? = checkpointState.withLockedValue { state in
            guard let latest = state.latest, latest != state.written else { return nil }
            guard force || now - state.lastWriteMs >= 200 else { return nil }
            state.written = latest
            state.lastWriteMs = now
            return latest
        }
        guard let toWrite else { return }
        do {
            let url = URL(fileURLWithPath: checkpointFile)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            let data = try JSONEncoder().encode(CheckpointDocument(source: source.name, checkpoint: toWrite))
            let temp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
            try data.write(to: temp)
            guard rename(temp.path, url.path) == 0 else {
                throw PipelineError.setup("rename \(temp.path) → \(url.path): errno \(errno)")
            }
        } catch {
            logger.warning("could not write the source checkpoint", metadata: ["file": "\(checkpointFile)", "error": "\(error)"])
        }
    }
}

/// Event-time conversion: numbers are milliseconds since the epoch, strings ISO-8601.
enum EventTime {
    static func milliseconds(from value: JSONValue) -> Int64? {
        switch value {
        case .integer(let i): return i
        case .number(let d): return d.isFinite && abs(d) < 1e15 ? Int64(d) : nil
        case .string(let s): return parseISO8601(s)
        default: return nil
        }
    }

    static func parseISO8601(_ s: String) -> Int64? {
        if let d = try? Date(s, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) {
            return Int64((d.timeIntervalSince1970 * 1000).rounded())
        }
        if let d = try? Date(s, strategy: Date.ISO8601FormatStyle()) {
            return Int64((d.timeIntervalSince1970 * 1000).rounded())
        }
        return nil
    }
}
