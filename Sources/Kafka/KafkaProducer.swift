import CRdKafka
import Foundation
import Logging
import NIOConcurrencyHelpers
import Synchronization

/// A Kafka producer.
///
/// - ``send(_:)-(KafkaProducerMessage)`` awaits the broker's acknowledgement and returns where the record landed.
/// - ``send(_:)-([KafkaProducerMessage])`` sends a batch and awaits one report per record (one suspension per batch).
/// - ``sendBatch(_:)`` sends a batch and awaits one outcome for it (the count and the failures by index).
/// - ``enqueue(_:)`` is fire-and-forget: it returns once librdkafka queued the record; delivery
///   reports arrive in batches at the `deliveryReports` handler given at construction, and are counted
///   in ``deliveryCounts``.
///
/// **Full local queue**: when `queue.buffering.max.messages`/`kbytes` is reached, every send
/// suspends until delivery reports have freed space, then retries. Nothing spins and no thread of
/// the cooperative pool blocks. ``tryEnqueue(_:)`` throws `_QUEUE_FULL` instead.
///
/// **Threads**: one dedicated event thread per producer serves librdkafka's events: delivery
/// reports, statistics and errors are handled on it. Flush, transactions and destroy run on NIO's
/// blocking thread pool.
///
/// **When reports are served**: at once whenever someone waits for one (an awaited ``send(_:)-(KafkaProducerMessage)``,
/// a sender waiting for queue space, ``flush(timeout:)``, a transaction commit or abort) or nothing is
/// outstanding. While only fire-and-forget records are in flight and nobody waits, the event thread
/// serves every 5 ms instead of on every produce response, so the `deliveryReports` handler and
/// ``deliveryCounts`` can lag by up to that much. Delivered records nobody waits for (no handler, no
/// awaited record among them) are freed by the next send or, if no send comes within about 5 ms, or a
/// flush or transaction commit waits, by the event thread. Until then they still count in ``outstanding``.
///
/// **Fatal errors** (for example an idempotence sequence desynchronisation): the producer fails
/// loudly: every queued record is purged and its send completes with the fatal error, further sends
/// throw it (``KafkaError/isFatal``), and the owner must create a new producer. It never hangs.
///
/// **Shutdown**: call ``shutdown(timeout:)``: it flushes, stops the event thread, destroys topic
/// handles and then the `rd_kafka_t`.
// The event thread serves librdkafka's main queue with `rd_kafka_queue_poll`; delivery reports arrive
// as `RD_KAFKA_EVENT_DR` events, each carrying the reports of a whole produce response. Error-free
// events nobody waits for are counted without reading their messages, and are destroyed by the next
// send, on the thread that allocated the records, as a C loop serving its own reports does. See
// docs/decisions/0004-delivery-report-serving-and-freeing.md (and 0023, 0025 for the measurements).
public final class KafkaProducer: Sendable {
    let client: RDKafkaClient
    private let dispatcher: DeliveryDispatcher
    private let topics = RDKafkaTopicHandles(closedError: KafkaProducer.closedError)
    private let lifecycle = LifecycleFlag()
    private let pollThreadDone = ConditionLock(value: 0)
    private let logger: Logger
    /// The properties handed to librdkafka.
    public let properties: [String: String]

    /// running → stopping (shutdown flushes) → stopped (the event thread tears down). An atomic:
    /// it is read on every send.
    final class LifecycleFlag: Sendable {
        static let running: UInt8 = 0
        static let stopping: UInt8 = 1
        static let stopped: UInt8 = 2
        private let value = Atomic<UInt8>(LifecycleFlag.running)
        var isRunning: Bool { value.load(ordering: .acquiring) == LifecycleFlag.running }
        var isStopped: Bool { value.load(ordering: .acquiring) == LifecycleFlag.stopped }
        func stop() { value.store(LifecycleFlag.stopped, ordering: .releasing) }
        /// running → stopping; false if it was not running.
        func beginStopping() -> Bool {
            value.compareExchange(expected: LifecycleFlag.running, desired: LifecycleFlag.stopping, ordering: .acquiringAndReleasing)
                .exchanged
        }
    }

    /// Creates a producer. Throws a configuration error naming the key if a property is unknown or invalid.
    ///
    /// - Parameters:
    ///   - deliveryReports: receives the reports of ``enqueue(_:)`` records, in batches, on the producer's event thread.
    ///   - statistics: receives librdkafka statistics every `statistics.interval.ms`.
    ///   - errors: receives client-level errors (broker down, fatal errors).
    public convenience init(
        configuration: KafkaProducerConfiguration,
        logger: Logger = Logger(label: "streamfirst.kafka.producer"),
        deliveryReports: (@Sendable ([KafkaDeliveryReport]) -> Void)? = nil,
        statistics: (@Sendable (KafkaStatistics) -> Void)? = nil,
        errors: (@Sendable (KafkaError) -> Void)? = nil
    ) throws {
        try self.init(
            configuration: configuration, logger: logger, deliveryReports: deliveryReports, statistics: statistics,
            errors: errors, reportCoalescing: KafkaProducer.reportCoalescing, onCoalescingSleep: nil,
            deferredDestroyBound: KafkaProducer.reportCoalescing)
    }

    /// Tests set a long `reportCoalescing` and watch the event thread fall asleep (`onCoalescingSleep`)
    /// to check that everyone who waits for a report wakes it, and a long `deferredDestroyBound` to
    /// check that counted reports left for the sender are freed by whoever needs them freed.
    init(
        configuration: KafkaProducerConfiguration,
        logger: Logger,
        deliveryReports: (@Sendable ([KafkaDeliveryReport]) -> Void)?,
        statistics: (@Sendable (KafkaStatistics) -> Void)?,
        errors: (@Sendable (KafkaError) -> Void)?,
        reportCoalescing: Duration,
        onCoalescingSleep: (@Sendable () -> Void)?,
        deferredDestroyBound: Duration
    ) throws {
        let dispatcher = DeliveryDispatcher(
            handler: deliveryReports, logger: logger, coalescing: reportCoalescing, onCoalescingSleep: onCoalescingSleep,
            deferredDestroyBound: deferredDestroyBound)
        let context = RDKafkaContext(
            logger: logger,
            onStatistics: statistics,
            onError: { error in
                if error.isFatal { dispatcher.markFatal(error) }
                errors?(error)
            },
            delivery: dispatcher
        )
        self.properties = configuration.librdkafkaProperties()
        self.client = try RDKafkaClient(
            kind: .producer, properties: properties, context: context, closedError: KafkaProducer.closedError)
        self.dispatcher = dispatcher
        self.logger = logger
        startEventThread()
    }

    private func startEventThread() {
        let client = self.client
        let dispatcher = self.dispatcher
        let lifecycle = self.lifecycle
        let topics = self.topics
        let done = self.pollThreadDone
        startNamedThread("sf-producer") {
            // The main queue, where delivery reports arrive as RD_KAFKA_EVENT_DR events (many reports
            // per event), and errors and statistics as events too. Owned by this thread; destroyed
            // before the topic handles and the rd_kafka_t.
            let queue = rd_kafka_queue_get_main(client.rk)
            let reports = UnsafeMutablePointer<UnsafePointer<rd_kafka_message_t>?>.allocate(capacity: EventServer.arraySize)
            defer { reports.deallocate() }
            let server = EventServer(client: client, dispatcher: dispatcher, queue: queue, reports: reports)
            /// One pass over the queue, then the handler and space waiters get what it served.
            func servePass(timeoutMs: Int32) {
                dispatcher.destroyDeferred()
                server.serve(timeoutMs: timeoutMs, mayDefer: false)
                dispatcher.endOfPoll()
            }
            while !lifecycle.isStopped {
                // Counted reports left for the sending task (see DeliveryDispatcher.deferDestroy) are
                // destroyed here once somebody waits for them all, or when no send took them in time.
                let mayDefer = dispatcher.mayDeferDestroy
                if !mayDefer || dispatcher.deferredAreStale { dispatcher.destroyDeferred() }
                // Prompt: block on the queue, so the first event wakes this thread. When only
                // fire-and-forget records are outstanding and nobody waits, coalesce instead: serve what
                // is there, then sleep until woken or `reportCoalescing` has passed (see DeliveryDispatcher).
                let prompt = dispatcher.wantsPromptReports || rd_kafka_outq_len(client.rk) == 0
                let drained = server.serve(timeoutMs: prompt ? 100 : 0, mayDefer: mayDefer)
                if dispatcher.takeFatalPurgeRequest() {
                    // Fail everything still queued so that no send waits forever.
                    rd_kafka_purge(client.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING)
                }
                dispatcher.endOfPoll()
                if !prompt && drained { dispatcher.sleepUntilWoken() }
            }
            // Stopped (by shutdown or deinit). First close the client's gate: calls from other threads
            // are refused from now on, and the ones already inside (a send, or a flush or transaction
            // commit racing the shutdown) finish before anything is destroyed; reports are served
            // meanwhile, since a flush inside waits for them. Then serve the last reports and tear down
            // in order: the queue, topic handles, then the rd_kafka_t, then the context.
            // Counted reports left for a send are freed first (servePass below serves without leaving
            // any), so that the queue length checked below counts only records not yet delivered.
            dispatcher.destroyDeferred()
            client.gate.close()
            while !client.gate.waitUntilEmpty(timeoutSeconds: 0.005) { servePass(timeoutMs: 0) }
            // What is still queued or in flight (a producer dropped without shutdown, or a send that got
            // in while shutdown flushed) fails now with a purge report, so that it is counted and no
            // awaited send waits for a report that would never come. The blocking purge waits for the
            // broker threads; their reports are served here, bounded.
            if rd_kafka_outq_len(client.rk) > 0 {
                rd_kafka_purge(client.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
                let deadline = ContinuousClock.now + .seconds(5)
                while rd_kafka_outq_len(client.rk) > 0 && ContinuousClock.now < deadline { servePass(timeoutMs: 10) }
            }
            servePass(timeoutMs: 0)
            if let queue { rd_kafka_queue_destroy(queue) }
            topics.destroyAll()
            client.destroy()
            dispatcher.close()
            done.lock()
            done.unlock(withValue: 1)
        }
    }

    deinit {
        // Dropped without shutdown(): stop the event thread, which destroys the handles. Nothing is flushed.
        lifecycle.stop()
    }

    // MARK: - Sending

    /// Sends one record and waits for the broker's acknowledgement.
    ///
    /// Suspends while the local queue is full. Throws the delivery error (for example
    /// `_MSG_TIMED_OUT` after `message.timeout.ms`), a fatal error, or an error if the producer is shut down.
    @discardableResult
    public func send(_ message: KafkaProducerMessage) async throws -> KafkaDeliveryReport {
        let report = await send([message])[0]
        if let error = report.error { throw error }
        return report
    }

    /// Sends records and waits until every one is acknowledged or failed.
    ///
    /// Returns one report per record, in the order given; a record that failed (or could not be
    /// queued) carries its ``KafkaDeliveryReport/error``. Records to the same partition keep their order.
    public func send(_ messages: [KafkaProducerMessage]) async -> [KafkaDeliveryReport] {
        if messages.isEmpty { return [] }
        let completion = ProduceCompletion(count: messages.count, collectsReports: true, dispatcher: dispatcher)
        await enqueueAll(messages, completion: completion)
        return await completion.reports()
    }

    /// Sends records and waits until every one is acknowledged or failed, with one completion for
    /// the whole batch: what comes back is the count and the few records that failed (by index),
    /// not a report per record. What a stage uses for each handled batch.
    ///
    /// Queues the records in order, synchronously, while the local queue has space (so a caller
    /// that starts it with `Task.immediate` has every record queued before its first suspension
    /// unless the queue fills); suspends only while the queue is full. Records to the same
    /// partition keep their order.
    public func sendBatch(_ messages: [KafkaProducerMessage]) async -> KafkaBatchDelivery {
        if messages.isEmpty { return KafkaBatchDelivery(count: 0) }
        let completion = ProduceCompletion(count: messages.count, collectsReports: false, dispatcher: dispatcher)
        await enqueueAll(messages, completion: completion)
        return await completion.delivery()
    }

    /// Queues every record of an awaited batch, each with its slot of `completion` as opaque;
    /// a record that cannot be queued completes its slot with the error at once.
    private func enqueueAll(_ messages: [KafkaProducerMessage], completion: ProduceCompletion) async {
        var i = 0
        while i < messages.count {
            let generation = dispatcher.generation
            let (next, error) = produceRun(messages, from: i, completion: completion)
            i = next
            guard let error else { break }
            if error.code == KafkaError.queueFullCode {
                do {
                    try await dispatcher.waitForSpace(after: generation)
                } catch {
                    // Closed or fatal while waiting: nothing more can be queued.
                    let e = error as? KafkaError ?? KafkaError.client("SEND", "\(error)")
                    while i < messages.count {
                        completion.fail(index: i, topic: messages[i].topic, partition: messages[i].partition, error: e)
                        i += 1
                    }
                }
            } else {
                completion.fail(index: i, topic: messages[i].topic, partition: messages[i].partition, error: error)
                i += 1
            }
        }
    }

    /// Queues `messages[start...]` inside one pass through the client's gate, until the end or the
    /// first error; returns where it stopped and the error.
    private func produceRun(
        _ messages: [KafkaProducerMessage], from start: Int, completion: ProduceCompletion
    ) -> (next: Int, error: KafkaError?) {
        if dispatcher.hasFatalError, let fatal = dispatcher.fatalError { return (start, fatal) }
        guard lifecycle.isRunning, client.gate.enter() else { return (start, Self.closedError) }
        defer { client.gate.leave() }
        dispatcher.destroyDeferredIfAny()
        var i = start
        while i < messages.count {
            if let error = produceInGate(messages[i], opaque: completion.opaque(i)) { return (i, error) }
            i += 1
        }
        return (i, nil)
    }

    /// Queues a record without waiting for its acknowledgement (fire-and-forget).
    ///
    /// Suspends only while the local queue is full. Its delivery report goes to the
    /// `deliveryReports` handler and is counted in ``deliveryCounts``; ``flush(timeout:)`` waits for all.
    ///
    /// While the queue has space, a loop of `enqueue` calls never suspends: like any synchronous loop
    /// it keeps its thread of the cooperative pool. Several such loops at once can hold every thread
    /// of the pool, so that other tasks wait; call `await Task.yield()` every few hundred records
    /// where other tasks must run meanwhile.
    @inlinable
    public func enqueue(_ message: KafkaProducerMessage) async throws {
        // Inlined into the caller: the common case (space in the queue) is one synchronous call,
        // with no async frame or executor check per record. Only a full queue takes the async path.
        if try _enqueueUnlessFull(message, opaque: nil) { return }
        try await enqueueRetryingWhenFull(message, opaque: nil)
    }

    /// Queues a record if there is space: true when queued, false when the local queue is full;
    /// throws any other error. The synchronous half of ``enqueue(_:)``.
    @usableFromInline
    func _enqueueUnlessFull(_ message: KafkaProducerMessage, opaque: UnsafeMutableRawPointer?) throws -> Bool {
        guard let error = produce(message, opaque: opaque) else { return true }
        guard error.code == KafkaError.queueFullCode else { throw error }
        return false
    }

    /// Queues a record without waiting; throws `_QUEUE_FULL` (retriable) instead of suspending when the queue is full.
    public func tryEnqueue(_ message: KafkaProducerMessage) throws {
        if let error = produce(message, opaque: nil) { throw error }
    }

    @usableFromInline
    func enqueueRetryingWhenFull(_ message: KafkaProducerMessage, opaque: UnsafeMutableRawPointer?) async throws {
        while true {
            let generation = dispatcher.generation
            guard let error = produce(message, opaque: opaque) else { return }
            guard error.code == KafkaError.queueFullCode else { throw error }
            try await dispatcher.waitForSpace(after: generation)
        }
    }

    /// Creates the topic handles up front, so the first record of each topic does not wait for metadata.
    // librdkafka 2.0.2 delays the first record of a topic without a handle; see
    // docs/decisions/0017-librdkafka-2.0.2-workarounds.md.
    public func prepare(topics names: [String]) throws {
        for name in names { _ = try topicHandle(name) }
    }

    /// Creates the handle if needed. Only for ``prepare(topics:)``: the send path looks handles up
    /// inside the gate it already holds.
    private func topicHandle(_ name: String) throws -> OpaquePointer {
        guard lifecycle.isRunning else { throw Self.closedError }
        let topics = self.topics
        return try client.withHandle { try topics.handle(name, on: $0) }
    }

    static let closedError = KafkaError.client("CLOSED", "the producer has been shut down")

    /// How long delivery reports of fire-and-forget records may wait while nobody waits for them
    /// (no awaited send, no sender waiting for queue space, no flush or transaction commit).
    static let reportCoalescing: Duration = .milliseconds(5)

    /// One synchronous attempt to queue a record. Never suspends; returns the error, if any.
    ///
    /// Runs inside the client's gate: a shutdown racing this send (its event thread destroys the
    /// topic handles and the `rd_kafka_t`) waits until the call has returned, and a send that comes
    /// after the gate closed gets the closed error.
    private func produce(_ message: KafkaProducerMessage, opaque: UnsafeMutableRawPointer?) -> KafkaError? {
        if dispatcher.hasFatalError, let fatal = dispatcher.fatalError { return fatal }
        guard lifecycle.isRunning, client.gate.enter() else { return Self.closedError }
        defer { client.gate.leave() }
        dispatcher.destroyDeferredIfAny()
        return produceInGate(message, opaque: opaque)
    }

    /// Queues one record; the caller is inside the client's gate.
    @inline(__always)
    private func produceInGate(_ message: KafkaProducerMessage, opaque: UnsafeMutableRawPointer?) -> KafkaError? {
        let rkt: OpaquePointer
        do { rkt = try topics.handle(message.topic, on: client.rk) } catch { return error as? KafkaError }
        let partition = message.partition ?? RD_KAFKA_PARTITION_UA
        if let forwarded = message.forwarded {
            let handled = forwarded.input.withConsumedMessage { m, batch, index in
                produceForwarded(
                    forwarded, from: m, batch: batch, index: index, message: message, rkt: rkt, partition: partition, opaque: opaque)
            }
            if let handled { return handled.error }
            // An input built in Swift (not consumed): its parts as an owned record.
            let owned = KafkaProducerMessage(
                topic: message.topic, partition: message.partition, key: message.key, value: message.value, headers: message.headers,
                timestamp: message.timestamp)
            return produceWithHeaders(owned, rkt: rkt, partition: partition, opaque: opaque)
        }
        if message.headers.isEmpty && message.timestamp == nil {
            let rc = withOptionalBytes(message.value) { value, valueLength in
                withOptionalBytes(message.key) { key, keyLength in
                    rd_kafka_produce(
                        rkt, partition, RD_KAFKA_MSG_F_COPY, UnsafeMutableRawPointer(mutating: value), valueLength,
                        key, keyLength, opaque)
                }
            }
            if rc == 0 { return nil }
            return producerError(rd_kafka_last_error(), message: message)
        }
        return produceWithHeaders(message, rkt: rkt, partition: partition, opaque: opaque)
    }

    /// A forwarded record: key and value straight from the consumed `rd_kafka_message_t`, headers
    /// copied in C from the input's (`rd_kafka_headers_copy`) and edited there. Wrapped in a
    /// struct so the caller can tell "not consumed" (nil) from "no error".
    private struct ProduceResult { var error: KafkaError? }

    private func produceForwarded(
        _ f: KafkaProducerMessage.Forwarded, from m: UnsafeMutablePointer<rd_kafka_message_t>, batch: RDKafkaRecordBatch, index: Int,
        message: KafkaProducerMessage, rkt: OpaquePointer, partition: Int32, opaque: UnsafeMutableRawPointer?
    ) -> ProduceResult {
        let headers = batch.copyHeaders(index) ?? rd_kafka_headers_new(f.adding.count + 1)
        // Names go through `withCString`: passing a String where C wants `const char *` makes a
        // heap array per call; `withCString` lends the string's own bytes (or a stack copy).
        for key in f.removing { _ = key.withCString { rd_kafka_header_remove(headers, $0) } }
        for h in f.adding { _ = h.key.withCString { rd_kafka_header_remove(headers, $0) } }
        if let inline = f.inline { _ = inline.key.withCString { rd_kafka_header_remove(headers, $0) } }
        for h in f.adding {
            _ = withOptionalBytes(h.value) { v, n in h.key.withCString { rd_kafka_header_add(headers, $0, -1, v, n) } }
        }
        if let inline = f.inline {
            _ = inline.withUnsafeBytes { v in inline.key.withCString { rd_kafka_header_add(headers, $0, -1, v.baseAddress, v.count) } }
        }
        let error = produceva(
            rkt: rkt, partition: partition, value: UnsafeRawPointer(m.pointee.payload), valueLength: m.pointee.len,
            key: UnsafeRawPointer(m.pointee.key), keyLength: m.pointee.key_len, timestamp: message.timestamp, headers: headers,
            opaque: opaque)
        guard let error else { return ProduceResult(error: nil) } // librdkafka now owns the headers.
        if let headers { rd_kafka_headers_destroy(headers) }
        let code = rd_kafka_error_code(error)
        rd_kafka_error_destroy(error)
        return ProduceResult(error: producerError(code, message: message))
    }

    private func produceWithHeaders(
        _ message: KafkaProducerMessage, rkt: OpaquePointer, partition: Int32, opaque: UnsafeMutableRawPointer?
    ) -> KafkaError? {
        var headers: OpaquePointer?
        let list = message.headers
        if !list.isEmpty {
            headers = rd_kafka_headers_new(list.count)
            for h in list {
                _ = withOptionalBytes(h.value) { v, n in
                    h.key.withCString { rd_kafka_header_add(headers, $0, -1, v, n) }
                }
            }
        }
        let error: OpaquePointer? = withOptionalBytes(message.value) { value, valueLength in
            withOptionalBytes(message.key) { key, keyLength in
                produceva(
                    rkt: rkt, partition: partition, value: value, valueLength: valueLength, key: key, keyLength: keyLength,
                    timestamp: message.timestamp, headers: headers, opaque: opaque)
            }
        }
        guard let error else { return nil } // librdkafka now owns the headers.
        if let headers { rd_kafka_headers_destroy(headers) }
        let code = rd_kafka_error_code(error)
        rd_kafka_error_destroy(error)
        return producerError(code, message: message)
    }

    /// `rd_kafka_produceva` with the record's parts (copied by librdkafka: `RD_KAFKA_MSG_F_COPY`); the
    /// argument array lives on the stack. On success librdkafka owns `headers`.
    @inline(__always)
    private func produceva(
        rkt: OpaquePointer, partition: Int32, value: UnsafeRawPointer?, valueLength: Int, key: UnsafeRawPointer?, keyLength: Int,
        timestamp: Int64?, headers: OpaquePointer?, opaque: UnsafeMutableRawPointer?
    ) -> OpaquePointer? {
        withUnsafeTemporaryAllocation(of: rd_kafka_vu_t.self, capacity: 8) { vus in
            var n = 0
            func add(_ type: rd_kafka_vtype_t, _ set: (inout rd_kafka_vu_t) -> Void) {
                vus[n] = rd_kafka_vu_t()
                vus[n].vtype = type
                set(&vus[n])
                n += 1
            }
            add(RD_KAFKA_VTYPE_RKT) { $0.u.rkt = rkt }
            add(RD_KAFKA_VTYPE_PARTITION) { $0.u.i32 = partition }
            add(RD_KAFKA_VTYPE_MSGFLAGS) { $0.u.i = RD_KAFKA_MSG_F_COPY }
            add(RD_KAFKA_VTYPE_VALUE) {
                $0.u.mem.ptr = UnsafeMutableRawPointer(mutating: value)
                $0.u.mem.size = valueLength
            }
            add(RD_KAFKA_VTYPE_KEY) {
                $0.u.mem.ptr = UnsafeMutableRawPointer(mutating: key)
                $0.u.mem.size = keyLength
            }
            add(RD_KAFKA_VTYPE_OPAQUE) { $0.u.ptr = opaque }
            if let timestamp { add(RD_KAFKA_VTYPE_TIMESTAMP) { $0.u.i64 = timestamp } }
            if let headers { add(RD_KAFKA_VTYPE_HEADERS) { $0.u.headers = headers } }
            return rd_kafka_produceva(client.rk, UnsafePointer(vus.baseAddress), n)
        }
    }

    private func producerError(_ code: rd_kafka_resp_err_t, message: KafkaProducerMessage) -> KafkaError {
        if code == RD_KAFKA_RESP_ERR__FATAL, let fatal = client.pendingFatalError() {
            dispatcher.markFatal(fatal)
            return fatal
        }
        var error = KafkaError(code)
        if code == RD_KAFKA_RESP_ERR__QUEUE_FULL {
            error.message = "the local producer queue is full (queue.buffering.max.messages / kbytes)"
            error.isRetriable = true
        } else {
            error.message = "cannot produce to \(message.topic): \(error.message)"
        }
        return error
    }

    // MARK: - Flush, counters, shutdown

    /// Waits until every queued record is acknowledged or failed.
    /// Throws `_TIMED_OUT` (with the number still outstanding) if the timeout passes first.
    public func flush(timeout: Duration = .seconds(30)) async throws {
        guard !lifecycle.isStopped else { throw Self.closedError }
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        let dispatcher = self.dispatcher
        let (result, left) = try await runBlocking {
            try client.withHandle { rk in
                let r = dispatcher.promptly { rd_kafka_flush(rk, ms) }
                // Reports served inside the flush reach the handler before flush returns.
                dispatcher.endOfPoll()
                return (r, rd_kafka_outq_len(rk))
            }
        }
        if result != RD_KAFKA_RESP_ERR_NO_ERROR {
            var e = KafkaError(result)
            e.message = "flush timed out with \(left) records outstanding"
            throw e
        }
    }

    /// Records queued locally or in flight (`rd_kafka_outq_len`), and delivered records not yet freed
    /// (freed by the next send, or by the event thread after about 5 ms).
    public var outstanding: Int { (try? client.withHandle { Int(rd_kafka_outq_len($0)) }) ?? 0 }

    /// How many fire-and-forget records were delivered and failed so far, and the last failure.
    public var deliveryCounts: (delivered: Int, failed: Int, lastError: KafkaError?) { dispatcher.counts }

    /// The fatal error this producer is in, if any.
    public var fatalError: KafkaError? { dispatcher.fatalError }

    /// Flushes (up to `timeout`), stops the event thread, which waits for calls in progress on other
    /// threads, purges what they still queued, then destroys the topic handles and the client. Sends
    /// and other calls made meanwhile or later throw a `CLOSED` error. Idempotent: a second call waits
    /// for the first to finish. A producer dropped without shutdown stops the same way but flushes nothing.
    public func shutdown(timeout: Duration = .seconds(10)) async {
        guard lifecycle.beginStopping() else {
            await waitForEventThread()
            return
        }
        do {
            try await flush(timeout: timeout)
        } catch {
            // The event thread's teardown purges what is left and serves those reports.
            logger.warning("producer shutdown: \(error); purging what is left")
        }
        lifecycle.stop()
        await waitForEventThread()
    }

    private func waitForEventThread() async {
        let done = pollThreadDone
        _ = try? await runBlocking {
            done.lock(whenValue: 1)
            done.unlock()
        }
    }

    // MARK: - Transactions

    /// `rd_kafka_init_transactions`: registers `transactional.id` with the cluster and fences older instances.
    public func initTransactions(timeout: Duration = .seconds(30)) async throws {
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        let error = try await runBlocking { try client.withHandle { UncheckedSendable(rd_kafka_init_transactions($0, ms)) } }
        try KafkaError.check(error.value, "init transactions")
    }

    /// Starts a transaction.
    public func beginTransaction() throws {
        try client.withHandle { try KafkaError.check(rd_kafka_begin_transaction($0), "begin transaction") }
    }

    /// Adds the consumer's input offsets to the current transaction (they commit with it).
    public func sendOffsetsToTransaction(
        _ offsets: [KafkaTopicPartitionOffset], consumer: KafkaConsumer, timeout: Duration = .seconds(30)
    ) async throws {
        guard let metadata = try consumer.client.withHandle({ rd_kafka_consumer_group_metadata($0) }) else {
            throw KafkaError.client("STATE", "the consumer has no group metadata (is group.id set?)")
        }
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        let md = UncheckedSendable(metadata)
        let error = try await runBlocking { () -> UncheckedSendable<OpaquePointer?> in
            defer { rd_kafka_consumer_group_metadata_destroy(md.value) }
            return try client.withHandle { rk in
                let list = RDKafkaTopicPartitionList(offsets)
                return UncheckedSendable(rd_kafka_send_offsets_to_transaction(rk, list.list, md.value, ms))
            }
        }
        try KafkaError.check(error.value, "send offsets to transaction")
    }

    /// Commits the current transaction (flushing its records first).
    public func commitTransaction(timeout: Duration = .seconds(30)) async throws {
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        let dispatcher = self.dispatcher
        let error = try await runBlocking {
            try client.withHandle { rk in dispatcher.promptly { UncheckedSendable(rd_kafka_commit_transaction(rk, ms)) } }
        }
        try KafkaError.check(error.value, "commit transaction")
    }

    /// Aborts the current transaction; its records fail with `_PURGE_QUEUE` / are marked aborted.
    public func abortTransaction(timeout: Duration = .seconds(30)) async throws {
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        let dispatcher = self.dispatcher
        let error = try await runBlocking {
            try client.withHandle { rk in dispatcher.promptly { UncheckedSendable(rd_kafka_abort_transaction(rk, ms)) } }
        }
        try KafkaError.check(error.value, "abort transaction")
    }

    /// Test hook: raises a fatal error in the client the way librdkafka would (`rd_kafka_test_fatal_error`).
    func triggerFatalErrorForTesting(_ reason: String) {
        _ = try? client.withHandle { rd_kafka_test_fatal_error($0, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, reason) }
    }
}

/// Serves the producer's main queue on its event thread: `rd_kafka_queue_poll`, then the events
/// already there without waiting (up to a bound), so that one wake-up serves every event queued meanwhile.
private struct EventServer {
    static let arraySize = 1024
    static let eventsPerPass = 64
    let client: RDKafkaClient
    let dispatcher: DeliveryDispatcher
    let queue: OpaquePointer?
    let reports: UnsafeMutablePointer<UnsafePointer<rd_kafka_message_t>?>

    /// Returns true when the queue was found empty, false when the pass stopped at its bound.
    /// `mayDefer`: a DR event counted in bulk is left for the sending task to destroy
    /// (``DeliveryDispatcher/deferDestroy(_:)``) instead of being destroyed here.
    @discardableResult
    func serve(timeoutMs: Int32, mayDefer: Bool) -> Bool {
        guard let queue else {
            rd_kafka_poll(client.rk, timeoutMs)
            return true
        }
        var wait = timeoutMs
        for _ in 0..<Self.eventsPerPass {
            guard let event = rd_kafka_queue_poll(queue, wait) else { return true }
            wait = 0
            if handle(event) && mayDefer {
                dispatcher.deferDestroy(event)
            } else {
                rd_kafka_event_destroy(event) // frees the reported messages
            }
        }
        return false
    }

    /// Returns true for a DR event counted in bulk (none of its messages was read).
    private func handle(_ event: OpaquePointer) -> Bool {
        switch rd_kafka_event_type(event) {
        case RD_KAFKA_EVENT_DR:
            // In librdkafka 2.0.2 every report of one DR event carries the event's error: a DR event is
            // made from one queue of messages with one error (rd_kafka_dr_msgq), and a message's own
            // error is only ever set to it. So an error-free event whose reports nobody waits for, and
            // that no handler wants to see, is counted without reading its messages: reading each one
            // is a cache miss, and the free in rd_kafka_event_destroy pays a second one.
            if dispatcher.countsInBulk && rd_kafka_event_error(event) == RD_KAFKA_RESP_ERR_NO_ERROR {
                dispatcher.delivered(rd_kafka_event_message_count(event))
                return true
            }
            while true {
                let n = rd_kafka_event_message_array(event, reports, Self.arraySize)
                if n == 0 { break }
                dispatcher.handle(UnsafeBufferPointer(start: reports, count: n))
            }
        case RD_KAFKA_EVENT_ERROR:
            client.context.handleError(
                rk: client.rk, code: rd_kafka_event_error(event).rawValue, reason: rd_kafka_event_error_string(event))
        case RD_KAFKA_EVENT_STATS:
            if let json = rd_kafka_event_stats(event) {
                client.context.handleStatistics(UnsafeRawPointer(json), length: strlen(json))
            }
        default:
            break
        }
        return false
    }
}

/// Calls `body` with a pointer and length for optional bytes: NULL/0 for nil; a valid (non-NULL)
/// pointer for an empty array, so that an empty value stays distinct from a null one.
@inline(__always)
func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafeRawPointer?, Int) -> R) -> R {
    guard let bytes else { return body(nil, 0) }
    if bytes.isEmpty {
        return withUnsafePointer(to: emptyByte) { body(UnsafeRawPointer($0), 0) }
    }
    return bytes.withUnsafeBytes { body($0.baseAddress, $0.count) }
}

private let emptyByte: UInt8 = 0

// MARK: - Delivery reports

/// Receives delivery reports on the producer's event thread and wakes senders waiting for queue space.
final class DeliveryDispatcher: Sendable {
    private struct State {
        var pending: [KafkaDeliveryReport] = []
        var lastError: KafkaError?
        var fatal: KafkaError?
        var fatalPurgeRequested = false
        var closed = false
        var spaceWaiters: [CheckedContinuation<Void, Error>] = []
    }
    private let state = NIOLockedValueBox(State())
    // Per-record counters and flags are atomics: the send path and the delivery callback touch them
    // for every record, from different threads.
    private let generationCounter = Atomic<Int>(0)
    private let reportsSinceLastPoll = Atomic<Int>(0)
    private let deliveredCount = Atomic<Int>(0)
    private let failedCount = Atomic<Int>(0)
    /// Records of ``KafkaProducer/send(_:)`` queued and not yet reported. While it is zero (and there
    /// is no handler), an error-free DR event only needs counting. Incremented before the record is
    /// queued, decremented when its report has been handled, both on the awaited path only.
    private let awaitedInFlight = Atomic<Int>(0)
    /// Flushes and transaction commits/aborts in progress: they wait for every report.
    private let promptCallers = Atomic<Int>(0)
    private let spaceWaiterCount = Atomic<Int>(0)
    /// 1 when the event thread has been asked to stop coalescing and serve.
    private let wakeup = ConditionLock(value: 0)
    private let fatalFlag = Atomic<Bool>(false)
    private let handlerLock = NIOLock()
    private let handler: (@Sendable ([KafkaDeliveryReport]) -> Void)?
    private let logger: Logger

    private let coalescingSeconds: Double
    private let onCoalescingSleep: (@Sendable () -> Void)?
    /// How long a deferred DR event may wait for a send before the event thread destroys it.
    private let deferredDestroyBound: Duration

    init(
        handler: (@Sendable ([KafkaDeliveryReport]) -> Void)?, logger: Logger, coalescing: Duration,
        onCoalescingSleep: (@Sendable () -> Void)?, deferredDestroyBound: Duration
    ) {
        self.handler = handler
        self.logger = logger
        self.coalescingSeconds = Double(coalescing.components.seconds) + Double(coalescing.components.attoseconds) / 1e18
        self.onCoalescingSleep = onCoalescingSleep
        self.deferredDestroyBound = deferredDestroyBound
    }

    var generation: Int { generationCounter.load(ordering: .acquiring) }

    /// True when an error-free DR event can be counted without reading its reports: no handler, and
    /// no awaited record queued. A record is counted in `awaitedInFlight` before librdkafka has it, so
    /// an event that carries it cannot be read while the count is zero.
    var countsInBulk: Bool { handler == nil && awaitedInFlight.load(ordering: .acquiring) == 0 }

    /// `count` awaited records are about to be queued.
    func awaitedQueued(_ count: Int) {
        if awaitedInFlight.wrappingAdd(count, ordering: .releasing).oldValue == 0 { wakeEventThread() }
    }
    /// `count` awaited records are reported (or failed to queue) and handled.
    func awaitedDone(_ count: Int) { awaitedInFlight.wrappingSubtract(count, ordering: .releasing) }

    /// Someone waits for a report: an awaited send, a sender waiting for queue space, a flush or a
    /// transaction commit/abort. The event thread then blocks on the queue instead of coalescing.
    /// Whoever starts waiting wakes the thread first (``wakeEventThread()``), so nobody waits for the
    /// coalescing interval.
    // Why coalesce at all: a fire-and-forget sender at full speed would otherwise wake the event thread
    // for every produce response, each wake-up preempting librdkafka's broker thread. See
    // docs/decisions/0004-delivery-report-serving-and-freeing.md.
    var wantsPromptReports: Bool {
        awaitedInFlight.load(ordering: .acquiring) > 0 || promptCallers.load(ordering: .acquiring) > 0
            || spaceWaiterCount.load(ordering: .acquiring) > 0
    }

    /// Ends the event thread's coalescing sleep now (or makes the next one return at once).
    func wakeEventThread() {
        wakeup.lock()
        wakeup.unlock(withValue: 1)
    }

    /// On the event thread: sleeps until ``wakeEventThread()`` or the coalescing interval has passed.
    func sleepUntilWoken() {
        onCoalescingSleep?()
        if wakeup.lock(whenValue: 1, timeoutSeconds: coalescingSeconds) {
            wakeup.unlock(withValue: 0)
        }
    }

    /// Runs a blocking call that waits for reports (flush, commit/abort transaction) with the event
    /// thread serving promptly.
    func promptly<T>(_ body: () -> T) -> T {
        promptCallers.wrappingAdd(1, ordering: .releasing)
        wakeEventThread()
        defer { promptCallers.wrappingSubtract(1, ordering: .releasing) }
        return body()
    }

    /// DR events counted in bulk whose destroy is left to the sending task (as bit patterns), and
    /// when the oldest of them was left (nil when there is none).
    ///
    /// Destroying a DR event frees its records and subtracts them from librdkafka's count of queued
    /// messages (which is what a full queue waits on). While only fire-and-forget records are in
    /// flight and nobody but a sender waiting for space waits, the event thread counts a DR event,
    /// then hands it to the next send, which destroys it inside the client's gate before it queues its
    /// record. What no send took within one coalescing interval, or when a flush, transaction commit
    /// or awaited send starts waiting, the event thread destroys.
    // Why the sender frees: the records were allocated by the sending task; freed on the event thread,
    // they would go back to the other thread's malloc arena (taking its lock, and leaving the sender's
    // malloc cache empty), and both threads would contend on librdkafka's count lock. A C loop that
    // serves its own reports has neither cost. See docs/decisions/0025-counted-reports-freed-by-the-sender.md.
    private let deferred = NIOLockedValueBox<(events: [UInt], since: ContinuousClock.Instant?)>(([], nil))
    private let hasDeferred = Atomic<Bool>(false)

    /// True while the event thread may leave counted DR events to the sending task: reports are
    /// counted in bulk and nobody waits for all of them (a flush or transaction commit/abort).
    var mayDeferDestroy: Bool { countsInBulk && promptCallers.load(ordering: .acquiring) == 0 }

    /// On the event thread: leaves a counted DR event for the sending task to destroy.
    func deferDestroy(_ event: OpaquePointer) {
        deferred.withLockedValue { d in
            if d.since == nil { d.since = .now }
            d.events.append(UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(event))))
        }
        hasDeferred.store(true, ordering: .releasing)
    }

    /// True when deferred events have waited longer than their bound (one coalescing interval).
    var deferredAreStale: Bool {
        guard hasDeferred.load(ordering: .acquiring) else { return false }
        guard let since = deferred.withLockedValue({ $0.since }) else { return false }
        return ContinuousClock.now - since >= deferredDestroyBound
    }

    /// On the send path, inside the client's gate: destroys the deferred events, if any (one load otherwise).
    @inline(__always)
    func destroyDeferredIfAny() {
        if hasDeferred.load(ordering: .relaxed) { destroyDeferred() }
    }

    /// Destroys every deferred event: on the send path (inside the gate) or on the event thread.
    func destroyDeferred() {
        guard hasDeferred.load(ordering: .acquiring) else { return }
        var taken: [UInt] = []
        deferred.withLockedValue { d in
            hasDeferred.store(false, ordering: .relaxed)
            swap(&taken, &d.events)
            d.since = nil
        }
        for bits in taken {
            if let event = OpaquePointer(bitPattern: bits) { rd_kafka_event_destroy(event) }
        }
    }

    /// `count` fire-and-forget records delivered (an error-free DR event, counted in bulk).
    func delivered(_ count: Int) {
        deliveredCount.add(count, ordering: .relaxed)
        reportsSinceLastPoll.add(count, ordering: .relaxed)
    }
    var hasFatalError: Bool { fatalFlag.load(ordering: .acquiring) }
    var fatalError: KafkaError? { hasFatalError ? state.withLockedValue { $0.fatal } : nil }
    var counts: (delivered: Int, failed: Int, lastError: KafkaError?) {
        (deliveredCount.load(ordering: .acquiring), failedCount.load(ordering: .acquiring), state.withLockedValue { $0.lastError })
    }

    /// Called on the event thread with the reports of one RD_KAFKA_EVENT_DR event (or part of it).
    func handle(_ messages: UnsafeBufferPointer<UnsafePointer<rd_kafka_message_t>?>) {
        var delivered = 0
        var handled = 0
        for case let message? in messages {
            let m = message.pointee
            // The common case, counted in bulk: a fire-and-forget record delivered, nobody to tell.
            if m._private == nil && m.err == RD_KAFKA_RESP_ERR_NO_ERROR && handler == nil {
                delivered += 1
                handled += 1
                continue
            }
            handle(message)
        }
        if delivered > 0 { deliveredCount.add(delivered, ordering: .relaxed) }
        if handled > 0 { reportsSinceLastPoll.add(handled, ordering: .relaxed) }
    }

    /// One delivery report.
    func handle(_ message: UnsafePointer<rd_kafka_message_t>) {
        let m = message.pointee
        let error: KafkaError? = m.err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : deliveryError(m.err)
        if let opaque = m._private {
            ProduceCompletion.complete(opaque: opaque, message: message, error: error)
            reportsSinceLastPoll.add(1, ordering: .relaxed)
            return
        }
        reportsSinceLastPoll.add(1, ordering: .relaxed)
        if error == nil {
            deliveredCount.add(1, ordering: .relaxed)
        } else {
            failedCount.add(1, ordering: .relaxed)
        }
        let built: KafkaDeliveryReport? =
            handler == nil ? nil : report(message, topic: m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? "", error: error)
        if error != nil || built != nil {
            state.withLockedValue { s in
                if let error { s.lastError = error }
                if let built { s.pending.append(built) }
            }
        }
        if let error, handler == nil {
            logger.warning("delivery failed for a fire-and-forget record: \(error)")
        }
    }

    private func deliveryError(_ err: rd_kafka_resp_err_t) -> KafkaError {
        if let fatal = fatalError,
            err == RD_KAFKA_RESP_ERR__FATAL || err == RD_KAFKA_RESP_ERR__PURGE_QUEUE
                || err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT
        {
            return fatal
        }
        return KafkaError(err)
    }

    func report(_ message: UnsafePointer<rd_kafka_message_t>, topic: String, error: KafkaError?) -> KafkaDeliveryReport {
        let timestamp = KafkaTimestamp(of: message)
        return KafkaDeliveryReport(
            topic: topic, partition: message.pointee.partition,
            offset: error == nil ? message.pointee.offset : KafkaOffset.invalid, timestamp: timestamp, error: error)
    }

    /// Called after each pass over the event queue and after a flush: hands fire-and-forget reports to the
    /// handler (one call at a time, in order, under `handlerLock`) and wakes space waiters.
    func endOfPoll() {
        handlerLock.withLock { endOfPollLocked() }
    }

    private func endOfPollLocked() {
        guard reportsSinceLastPoll.exchange(0, ordering: .acquiringAndReleasing) > 0 || hasFatalError else { return }
        let (batch, waiters) = state.withLockedValue { s -> ([KafkaDeliveryReport], [CheckedContinuation<Void, Error>]) in
            generationCounter.add(1, ordering: .releasing)
            let b = s.pending
            s.pending = []
            let w = s.spaceWaiters
            s.spaceWaiters = []
            spaceWaiterCount.store(0, ordering: .releasing)
            return (b, w)
        }
        if !batch.isEmpty { handler?(batch) }
        for w in waiters { w.resume() }
    }

    func waitForSpace(after generation: Int) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            let immediate = state.withLockedValue { s -> Result<Void, Error>? in
                if let fatal = s.fatal { return .failure(fatal) }
                if s.closed { return .failure(KafkaProducer.closedError) }
                if generationCounter.load(ordering: .acquiring) != generation { return .success(()) }
                s.spaceWaiters.append(c)
                spaceWaiterCount.store(s.spaceWaiters.count, ordering: .releasing)
                return nil
            }
            if let immediate { c.resume(with: immediate) } else { wakeEventThread() }
        }
    }

    func markFatal(_ error: KafkaError) {
        state.withLockedValue { s in
            if s.fatal == nil {
                s.fatal = error
                s.fatalPurgeRequested = true
            }
            fatalFlag.store(true, ordering: .releasing)
        }
        logger.critical("producer is in a fatal state and must be recreated: \(error)")
    }

    func takeFatalPurgeRequest() -> Bool {
        state.withLockedValue { s in
            defer { s.fatalPurgeRequested = false }
            return s.fatalPurgeRequested
        }
    }

    func close() {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Void, Error>] in
            s.closed = true
            spaceWaiterCount.store(0, ordering: .releasing)
            defer { s.spaceWaiters = [] }
            return s.spaceWaiters
        }
        for w in waiters { w.resume(throwing: KafkaProducer.closedError) }
    }
}
