import Foundation
import Kafka
import Logging
import PipelineModel
import ServiceLifecycle
import StreamCore
import Synchronization

/// One record a handler wants produced.
public struct StageOutput: Sendable {
    public var topic: String
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [KafkaHeader]

    public init(topic: String, key: [UInt8]?, value: [UInt8], headers: [KafkaHeader]) {
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
    }
}

/// What a stage decided for one consumed record.
public enum StageOutcome: Sendable {
    /// Produce these records (to the stage's output or routed topics).
    case forward([StageOutput])
    /// Produce the input record itself to `to`: its key, value and headers byte for byte, passed
    /// from librdkafka's consumer buffer to its producer without a copy into Swift, with these
    /// header edits (headers named in `removingHeaders` or `addingHeaders` are left out, then
    /// `addingHeaders` is appended). What pass-through and unchanged valid records use.
    case forwardInput(to: String, removingHeaders: [String] = [], addingHeaders: [KafkaHeader] = [])
    /// Drop it on purpose (a filter said no); counted as filtered.
    case filtered
    /// It cannot be handled: the original goes to the dead-letter topic with this reason.
    case deadLetter(DeadLetterReason)
}

extension StageOutcome {
    /// The records this outcome produces for `input`, as owned values (what the broker-free test
    /// runner feeds on); empty when it produces nothing.
    public func outputs(for input: KafkaMessage) -> [StageOutput] {
        switch self {
        case .forward(let outputs):
            return outputs
        case .forwardInput(let topic, let removing, let adding):
            let m = KafkaProducerMessage(forwarding: input, to: topic, removingHeaders: removing, addingHeaders: adding)
            return [StageOutput(topic: topic, key: m.key, value: m.value ?? [], headers: m.headers)]
        case .filtered, .deadLetter:
            return []
        }
    }
}

/// The per-record logic of a consume → produce stage (validate, process, or your own): writes what
/// each consumed record becomes into a ``StageEmitter`` (push-style, as Kafka Streams'
/// `ProcessorContext.forward`). Called on the stage's task for every record in order per partition;
/// must be deterministic for the no-duplicate guarantee (the same input always yields the same
/// outputs), and must not block. A handler that decides by value returns a ``StageOutcome`` and
/// hands it to ``StageEmitter/apply(_:)``; ``outcome(for:)`` gives any handler's decision as a value.
///
/// A handler that holds resources of its own (e.g. the live tables of `enrich` steps reading a
/// topic) loads them in ``start(kafka:logger:)``, which the stage awaits before it subscribes, and
/// releases them in ``stop()``, which the stage calls after its consumer and producer are closed.
/// Both default to doing nothing.
public protocol StageHandler: Sendable {
    /// Writes what `message` becomes into `emitter`: outputs, nothing (filtered), or a dead letter.
    func handle(_ message: KafkaMessage, into emitter: inout StageEmitter)
    /// Prepares what ``handle(_:into:)`` needs before the first record (cancelled on graceful shutdown).
    func start(kafka: KafkaConfiguration, logger: Logger) async throws
    /// Fetches what ``handle(_:into:)`` will need for `batch` (e.g. the Avro schemas of ids not seen
    /// before), so that handling never waits; called before each batch. `health` is not ready while
    /// it waits on something that is down.
    func prepare(_ batch: [KafkaMessage], health: StageHealth) async throws
    /// Releases what ``start(kafka:logger:)`` acquired; also called when it failed. Idempotent.
    func stop() async
}

extension StageHandler {
    public func start(kafka: KafkaConfiguration, logger: Logger) async throws {}
    public func prepare(_ batch: [KafkaMessage], health: StageHealth) async throws {}
    public func stop() async {}
}

/// Readiness and liveness as the HTTP endpoints report them.
public final class StageHealth: Sendable {
    private let ready = Synchronization.Atomic<Bool>(false)
    private let lastBeatMs = Synchronization.Atomic<Int64>(0)
    /// A stage whose loop has not turned for this long is reported unhealthy (`/healthz` 503).
    public let stallLimitMs: Int64

    public init(stallLimitMs: Int64 = 60_000) {
        self.stallLimitMs = stallLimitMs
        beat()
    }

    public func setReady(_ value: Bool) { ready.store(value, ordering: .relaxed) }
    public var isReady: Bool { ready.load(ordering: .relaxed) }
    /// Called by the stage loop each time it turns.
    public func beat() { lastBeatMs.store(currentTimeMs(), ordering: .relaxed) }
    public var isLive: Bool { currentTimeMs() - lastBeatMs.load(ordering: .relaxed) < stallLimitMs }
}

/// The consume → handle → produce → commit loop shared by validate, process and custom stages.
///
/// Delivery guarantee (see docs/ARCHITECTURE.md, "No loss, no duplicates"): a batch's offsets are
/// stored and committed only after every output and dead letter of the batch is acknowledged by
/// the broker. A crash before that redelivers the batch; the handler is deterministic and outputs
/// carry the input's record id (`sf.id`), so the redelivered outputs are identical and the sink's
/// upsert by id absorbs them.
public final class ConsumeProduceStage: Service, ContextualStage, Sendable {
    let context: StageContext
    let handler: any StageHandler
    /// The handler with a span per record (see ``TracedHandler``).
    let traced: TracedHandler
    /// Extra topics the handler may produce to (routes), prepared at start.
    let extraTopics: [String]
    /// Runs the traced handler over each batch on up to `concurrency:` cores.
    let lanes: BatchLanes

    public init(context: StageContext, handler: any StageHandler, extraTopics: [String] = []) {
        self.context = context
        self.handler = handler
        self.traced = TracedHandler(handler: handler, deadLetters: context.deadLetters, tracer: context.tracer)
        self.extraTopics = extraTopics
        self.lanes = BatchLanes(traced: traced, concurrency: context.common.concurrency, logger: context.logger)
    }

    public func run() async throws {
        guard let input = common.input else { return }
        // The handler's resources (e.g. live tables) are loaded before subscribing, so the first
        // record already sees them, and released after the clients are closed.
        do {
            let (handler, kafka, logger, health) = (self.handler, spec.kafka, self.logger, self.health)
            // Loading may take longer than the liveness limit: alive (not ready) meanwhile.
            let beating = Task.detached {
                while !Task.isCancelled {
                    health.beat()
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            defer { beating.cancel() }
            try await cancelWhenGracefulShutdown { try await handler.start(kafka: kafka, logger: logger) }
        } catch {
            await handler.stop()
            if Task.isShuttingDownGracefully {
                logger.info("stopped while starting", metadata: ["error": "\(error)"])
                return
            }
            throw error
        }
        do {
            try await consume(input)
        } catch {
            await handler.stop()
            throw error
        }
        await handler.stop()
    }

    private func consume(_ input: PipelineSpec.Topic) async throws {
        let clients = try StageClients(spec: spec, common: common, logger: logger, rebalanceListener: nil)
        var outputTopics = [spec.deadLetter.name] + extraTopics
        if let out = common.output { outputTopics.append(out.name) }
        try clients.producer.prepare(topics: Array(Set(outputTopics)))
        try await clients.consumer.subscribe(topics: [input.name])
        let readiness = clients.startReadinessWatch(health: health, logger: logger)
        defer { readiness.cancel() }
        logger.info("consuming", metadata: ["topic": "\(input.name)", "group": "\(common.group)"])

        let window = DeliveryPipeline(
            clients: clients, limit: common.inFlightBatches, metrics: metrics, logger: logger)
        try await clients.runLoop(
            health: health, metrics: metrics, logger: logger,
            turn: { _ in
                let batch = try await clients.consumer.poll(maxMessages: common.batchSize, timeout: .milliseconds(100))
                try await window.harvest()
                if !batch.isEmpty { try await process(batch, window: window) }
            },
            finish: { try await window.drain() })
    }

    /// Handles one polled batch (on up to `concurrency` cores, see ``BatchLanes``) and hands its
    /// outputs and dead letters to the producer; `window` stores the batch's offsets once they, and
    /// those of every earlier batch, are acknowledged.
    func process(_ batch: [KafkaMessage], window: DeliveryPipeline) async throws {
        let started = ContinuousClock.now
        // Once per batch: the lag's position and the offsets the window stores.
        let next = batch.nextOffsets
        metrics.recordIn(batch.count, nextOffsets: next)
        try await handler.prepare(batch, health: health)
        let handled = await lanes.handle(batch, nowMs: currentTimeMs())
        try await window.send(
            handled.messages, next: next,
            summary: .init(
                started: started, records: batch.count, outputs: handled.outputs, filtered: handled.filtered,
                deadLetterClasses: handled.deadLetterClasses, ingestTimesMs: batch.compactMap(\.ingestTimeMs)))
    }
}

/// The batches of a consume → produce stage whose outputs are being delivered: a bounded window
/// (`in_flight_batches`) over ``InFlightWindow``, so that the stage polls and handles batch *n+1*
/// while batch *n* is still being acknowledged, and offsets are stored in consumption order. With
/// `in_flight_batches` batches open the stage waits for the oldest before it polls again, so 1 is
/// the stop-and-wait loop (wait for every acknowledgement of a batch before polling the next).
///
/// - A batch's offsets are stored only when every output and dead letter of it **and of every
///   earlier batch** is acknowledged (``InFlightWindow/acknowledge(_:)``).
/// - A failed delivery fails the stage (``harvest()`` / ``send(_:next:summary:)`` throw) and nothing
///   of that batch or any later one is stored; earlier, acknowledged batches may be.
/// - On a rebalance nothing special happens: offsets are only ever stored for acknowledged records;
///   storing them for a partition this member lost fails (logged) and the new owner redelivers.
/// - ``drain()`` (graceful shutdown) waits for every open batch and stores its offsets before the
///   final commit.
///
/// Output order: records to the same partition must reach the producer in consumption order across
/// batches. Each batch's `send` runs in a task started with `Task.immediate`, which queues every
/// message synchronously before its first suspension (the producer suspends only when its local
/// queue is full). The window never holds more messages or bytes than the producer's queue limits
/// (`queue.buffering.max.messages` / `kbytes`), so that suspension cannot happen while a later batch
/// is queued: a batch that would exceed them waits for the oldest batch first.
///
/// Used from the stage's one task only (not concurrently); the delivery tasks touch only their flag.
/// It reaches Kafka only through ``StageDeliveryClients``, so its bookkeeping is tested broker-free.
final class DeliveryPipeline: @unchecked Sendable {
    // @unchecked: `window` and `open` are only touched by the stage loop's task (its turns run one
    // after another); the delivery tasks only set their `Delivery.done` atomic and return a value.

    /// What the stage reports once a batch is acknowledged.
    struct Summary: Sendable {
        var started: ContinuousClock.Instant
        var records: Int
        var outputs: Int
        var filtered: Int
        var deadLetterClasses: [DeadLetterClass]
        var ingestTimesMs: [Int64]
    }

    /// The outcome of one batch's `send`.
    struct Outcome: Sendable {
        var failure: String?
        var acknowledged: ContinuousClock.Instant
        var acknowledgedMs: Int64
    }

    struct Delivery: Sendable {
        let id: UInt64
        let summary: Summary
        /// nil for a batch with nothing to produce (everything filtered).
        let task: Task<Outcome, Never>?
        let done: DoneFlag

        var isDone: Bool { task == nil || done.isSet }
    }

    let clients: any StageDeliveryClients
    let limit: Int
    let maxMessages: Int
    let maxBytes: Int
    let metrics: StageMetrics
    let logger: Logger
    private var window = InFlightWindow()
    private var open: [Delivery] = []

    init(clients: any StageDeliveryClients, limit: Int, metrics: StageMetrics, logger: Logger) {
        self.clients = clients
        self.limit = max(1, limit)
        let properties = clients.producerProperties
        // librdkafka's defaults (2.0.2) when the configuration does not set them.
        self.maxMessages = properties["queue.buffering.max.messages"].flatMap { Int($0) } ?? 100_000
        self.maxBytes = (properties["queue.buffering.max.kbytes"].flatMap { Int($0) } ?? 1_048_576) * 1024
        self.metrics = metrics
        self.logger = logger
    }

    var count: Int { window.count }

    /// Whether each open batch's delivery has finished, oldest first (tests).
    var openDone: [Bool] { open.map(\.isDone) }

    /// Queues a handled batch's messages and opens it in the window, to store `next` (the batch's
    /// next offsets) once acknowledged; first waits for the oldest batches while the window is full.
    /// Throws when a delivery failed.
    func send(_ messages: [KafkaProducerMessage], next: [KafkaTopicPartition: Int64], summary: Summary) async throws {
        let bytes = messages.reduce(0) { $0 + $1.byteCount }
        // The producer's queue must take the whole batch without suspending (see the type's notes).
        while !window.isEmpty && (window.messages + messages.count > maxMessages || window.bytes + bytes > maxBytes) {
            try await awaitOldest()
        }
        let id = window.open(next: next, messages: messages.count, bytes: bytes)
        if messages.isEmpty {
            open.append(Delivery(id: id, summary: summary, task: nil, done: DoneFlag()))
        } else {
            let done = DoneFlag()
            open.append(
                Delivery(
                    id: id, summary: summary, task: Self.start(messages, clients: clients, logger: logger, done: done), done: done
                ))
        }
        try await harvest()
        // At most `limit` batches await acknowledgement; with `limit` open, wait for the oldest
        // before polling again (1: stop-and-wait).
        while window.count >= limit {
            try await awaitOldest()
        }
    }

    /// Starts delivering `messages`; returns once all of them are queued in the producer.
    static func start(
        _ messages: [KafkaProducerMessage], clients: any StageDeliveryClients, logger: Logger, done flag: DoneFlag
    ) -> Task<Outcome, Never> {
        let body: @Sendable () async -> Outcome = {
            let delivery = await clients.deliver(messages, logger: logger)
            var failure: String?
            if let failed = delivery.failures.first {
                failure = "could not deliver to \(failed.topic): \(failed.error)"
            }
            let outcome = Outcome(failure: failure, acknowledged: .now, acknowledgedMs: currentTimeMs())
            flag.set()
            return outcome
        }
        let task: Task<Outcome, Never>
        if #available(macOS 26.0, *) {
            task = Task.immediate(operation: body)
        } else {
            task = Task(operation: body)
        }
        return task
    }

    /// Stores the offsets of every batch whose deliveries (and those of all earlier batches) are
    /// acknowledged, without waiting. Throws if any open batch's delivery failed.
    func harvest() async throws {
        var i = 0
        while i < open.count {
            if open[i].isDone {
                let d = open.remove(at: i)
                try await complete(d)
            } else {
                i += 1
            }
        }
    }

    /// Waits for the oldest open batch, then harvests.
    func awaitOldest() async throws {
        guard !open.isEmpty else { return }
        let d = open.removeFirst()
        try await complete(d)
        try await harvest()
    }

    /// Waits for every open batch (graceful shutdown, before the final commit). A cancelled stage
    /// (the shutdown deadline passed) stops waiting: what is not stored is redelivered.
    func drain() async throws {
        while !open.isEmpty && !Task.isCancelled {
            try await awaitOldest()
        }
    }

    private func complete(_ d: Delivery) async throws {
        let outcome = await d.task?.value
        if let failure = outcome?.failure {
            // Not storing this batch or any later one: they are redelivered after restart. Failing
            // the worker is louder (and safer) than retrying forever behind a broker that refuses records.
            throw PipelineError.delivery(failure)
        }
        let offsets = window.acknowledge(d.id)
        if !offsets.isEmpty {
            do {
                try clients.storeOffsets(offsets)
            } catch {
                // A partition revoked while the batch was in flight: its new owner redelivers it.
                logger.debug("could not store offsets", metadata: ["error": "\(error)"])
            }
        }
        let s = d.summary
        metrics.recordOut(s.outputs)
        metrics.recordFiltered(s.filtered)
        for c in s.deadLetterClasses { metrics.recordDeadLetter(errorClass: c) }
        let acknowledged = outcome?.acknowledged ?? .now
        metrics.recordProcessing(nanoseconds: (acknowledged - s.started).nanoseconds, records: s.records)
        metrics.recordEndToEnd(ingestTimesMs: s.ingestTimesMs, nowMs: outcome?.acknowledgedMs ?? currentTimeMs())
    }
}

/// Set once by a delivery task when its batch is acknowledged (or failed).
final class DoneFlag: Sendable {
    private let atomic = Synchronization.Atomic<Bool>(false)
    func set() { atomic.store(true, ordering: .releasing) }
    var isSet: Bool { atomic.load(ordering: .acquiring) }
}

/// A ``StageHandler`` with tracing: for each record it opens the record's span (child of its
/// `traceparent`), runs the handler, stamps the span's context on every output and dead letter,
/// and ends the span with the outcome. What the consume → produce loop runs per record (and what
/// `streamfirst-bench trace` measures).
public struct TracedHandler: Sendable {
    public let handler: any StageHandler
    public let deadLetters: DeadLetterWriter
    public let tracer: RecordTracer

    /// What became of one record.
    public enum Result: Sendable {
        case forwarded(Int)
        case filtered
        case deadLettered(DeadLetterReason)
    }

    public init(handler: any StageHandler, deadLetters: DeadLetterWriter, tracer: RecordTracer) {
        self.handler = handler
        self.deadLetters = deadLetters
        self.tracer = tracer
    }

    /// Handles `message`, appending what to produce to `messages`.
    public func handle(_ message: KafkaMessage, nowMs: Int64, into messages: inout [KafkaProducerMessage]) -> Result {
        let span = tracer.startConsuming(message)
        let start = messages.count
        // The emitter appends to the batch's own array: moved in and back out, never copied.
        var emitter = StageEmitter(input: message, span: span, appendingTo: &messages)
        handler.handle(message, into: &emitter)
        emitter.returnMessages(to: &messages)
        if let reason = emitter.deadLetterReason {
            var dead = deadLetters.message(for: message, reason: reason, nowMs: nowMs)
            span.stamp(&dead)
            messages.append(dead)
            span.end(.deadLetter, errorClass: reason.errorClass)
            return .deadLettered(reason)
        }
        let n = messages.count - start
        span.end(n == 0 ? .filtered : .forwarded)
        return n == 0 ? .filtered : .forwarded(n)
    }
}

/// Errors of the stage runtime.
public enum PipelineError: Error, CustomStringConvertible, Sendable {
    case delivery(String)
    case sink(String)
    case setup(String)

    public var description: String {
        switch self {
        case .delivery(let m): return "delivery failed: \(m)"
        case .sink(let m): return "sink failed: \(m)"
        case .setup(let m): return m
        }
    }
}

extension KafkaMessage {
    /// The `sf.ingest_time` header, milliseconds since the epoch.
    // Read in place for every record (the end-to-end latency metric): no header copy, no String.
    var ingestTimeMs: Int64? { withUnsafeHeaderValue(RecordHeader.ingestTime) { Self.decimalInt64($0) } ?? nil }

    /// ASCII decimal digits with an optional sign, as `Int64(String)` reads them; nil for anything
    /// else or on overflow.
    static func decimalInt64(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        var i = 0
        var negative = false
        if let first = bytes.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            negative = first == UInt8(ascii: "-")
            i = 1
        }
        guard i < bytes.count else { return nil }
        var value: Int64 = 0
        while i < bytes.count {
            let d = bytes[i] &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (v, o2) = negative ? m.subtractingReportingOverflow(Int64(d)) : m.addingReportingOverflow(Int64(d))
            guard !o1, !o2 else { return nil }
            value = v
            i += 1
        }
        return value
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}

/// What ``DeliveryPipeline`` needs of a stage's clients: deliver a batch (queued synchronously up to
/// its first suspension, see ``KafkaProducer/sendBatch(_:)``) and store offsets for the consumer to
/// commit. ``StageClients`` in a worker; a recording stand-in in broker-free tests.
protocol StageDeliveryClients: Sendable {
    /// The producer's librdkafka properties (the window keeps within its queue limits).
    var producerProperties: [String: String] { get }
    /// Sends the batch and waits for every acknowledgement.
    func deliver(_ messages: [KafkaProducerMessage], logger: Logger) async -> KafkaBatchDelivery
    /// Stores next offsets for the consumer's commit; throws for a partition no longer assigned.
    func storeOffsets(_ offsets: [KafkaTopicPartitionOffset]) throws
}

extension StageClients: StageDeliveryClients {
    var producerProperties: [String: String] { producer.properties }

    /// Re-sends what the broker acknowledged only implicitly (see ConfirmedSend.swift).
    func deliver(_ messages: [KafkaProducerMessage], logger: Logger) async -> KafkaBatchDelivery {
        await producer.sendConfirmed(messages, logger: logger)
    }

    func storeOffsets(_ offsets: [KafkaTopicPartitionOffset]) throws { try consumer.storeOffsets(offsets) }
}

/// The Kafka clients of one stage: a consumer in the stage's group and a producer.
/// Destroy order: the consumer is closed (final commit, leave the group) before the producer is
/// flushed and shut down; both are owned here and by nothing else.
final class StageClients: Sendable {
    let consumer: KafkaConsumer
    let producer: KafkaProducer
    let input: String

    init(
        spec: PipelineSpec, common: PipelineSpec.StageCommon, logger: Logger,
        rebalanceListener: KafkaRebalanceListener?
    ) throws {
        var consumerConfig = KafkaConsumerConfiguration(kafka: spec.kafka, groupID: common.group)
        consumerConfig.autoOffsetReset = .earliest
        consumerConfig.autoCommit = true // commits what we store; stored only after delivery
        consumerConfig.autoCommitInterval = .seconds(1)
        consumerConfig.autoOffsetStore = false
        consumerConfig.fetchWaitMax = .milliseconds(10)
        consumerConfig.isolation = .readCommitted
        consumerConfig.properties = common.consumerProperties
        if consumerConfig.properties["queued.min.messages"] == nil {
            // librdkafka 2.0.2 stalls fetching for 0.5–1 s whenever its prefetch queue passes this
            // threshold; a large value keeps a busy stage from hitting the cliff (see BENCHMARKS.md).
            consumerConfig.properties["queued.min.messages"] = "1000000"
        }
        var producerConfig = KafkaProducerConfiguration(kafka: spec.kafka)
        producerConfig.linger = .milliseconds(2)
        producerConfig.properties = common.producerProperties
        self.input = common.input?.name ?? ""
        self.consumer = try KafkaConsumer(
            configuration: consumerConfig, logger: logger, rebalanceListener: rebalanceListener)
        self.producer = try KafkaProducer(configuration: producerConfig, logger: logger)
    }

    /// Stores the next offsets of a handled batch and lets the consumer commit them (in the
    /// background; a lost commit only means redelivery, which ids make harmless).
    func storeAndCommit(_ batch: [KafkaMessage], logger: Logger) {
        let offsets = batch.nextOffsets.map { KafkaTopicPartitionOffset($0.key, offset: $0.value) }
        do {
            try consumer.storeOffsets(offsets)
        } catch {
            // A partition revoked while the batch was in flight: its new owner redelivers it.
            logger.debug("could not store offsets", metadata: ["error": "\(error)"])
        }
    }

    /// Marks the stage ready when the group has given this member its (possibly empty) assignment —
    /// from then on records are consumed as they arrive — and logs rebalances and consumer errors.
    func startReadinessWatch(health: StageHealth, logger: Logger) -> Task<Void, Never> {
        let events = consumer.events
        return Task.detached {
            for await event in events {
                switch event {
                case .assigned(let partitions):
                    health.setReady(true)
                    logger.info("partitions assigned", metadata: ["partitions": "\(partitions.map(\.description).joined(separator: ","))"])
                case .revoked(let partitions):
                    logger.info("partitions revoked", metadata: ["partitions": "\(partitions.map(\.description).joined(separator: ","))"])
                case .error(let error):
                    logger.warning("consumer error", metadata: ["error": "\(error)"])
                default:
                    break
                }
            }
        }
    }

    /// Reports consumer lag every two seconds until cancelled.
    func startLagReporter(metrics: StageMetrics) -> Task<Void, Never> {
        let consumer = self.consumer
        return Task.detached {
            while !Task.isCancelled {
                if let lags = try? await consumer.lag(timeout: .seconds(2)) { metrics.recordLag(lags) }
                try? await Task.sleep(for: .seconds(2))
            }
        }
    }

    /// The loop of every consuming stage: runs `turn` until a graceful shutdown (SIGTERM) or an
    /// error, beating `health` and reporting lag meanwhile; then runs `finish` (a stage with batches
    /// in flight waits for them there), marks the stage not ready, commits (unless it failed) and
    /// closes the clients. Rethrows the loop's error.
    func runLoop(
        health: StageHealth, metrics: StageMetrics, logger: Logger, turn: (StopFlag) async throws -> Void,
        finish: () async throws -> Void = {}
    ) async throws {
        let stopping = StopFlag()
        let lagTask = startLagReporter(metrics: metrics)
        var failure: (any Error)?
        await withGracefulShutdownHandler {
            do {
                while !stopping.isSet && !Task.isCancelled {
                    health.beat()
                    try await turn(stopping)
                }
                health.beat()
                try await finish()
            } catch {
                failure = error
            }
        } onGracefulShutdown: {
            stopping.set()
        }
        stopping.set()
        lagTask.cancel()
        health.setReady(false)
        await close(commit: failure == nil, logger: logger)
        if let failure { throw failure }
    }

    /// Final commit, leave the group, flush the producer.
    func close(commit: Bool, logger: Logger) async {
        if commit {
            do {
                try await consumer.commit()
            } catch {
                logger.debug("final commit", metadata: ["error": "\(error)"])
            }
        }
        await consumer.close()
        do {
            try await producer.flush(timeout: .seconds(10))
        } catch {
            logger.warning("flush on shutdown", metadata: ["error": "\(error)"])
        }
        await producer.shutdown()
    }
}

/// Set when a stage should stop (graceful shutdown); read by its loop and long waits.
final class StopFlag: Sendable {
    private let flag = Synchronization.Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}
