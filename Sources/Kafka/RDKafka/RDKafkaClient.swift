import CRdKafka
import Foundation
import Logging
import NIOConcurrencyHelpers

/// What the C callbacks of one client reach through librdkafka's opaque pointer.
///
/// The client retains it (`Unmanaged.passRetained`) before `rd_kafka_new` and releases it only
/// after `rd_kafka_destroy` returned, so it outlives every callback.
final class RDKafkaContext: Sendable {
    let logger: Logger
    let onStatistics: (@Sendable (KafkaStatistics) -> Void)?
    let onError: (@Sendable (KafkaError) -> Void)?
    /// Producer only: receives delivery reports.
    let delivery: DeliveryDispatcher?
    /// Consumer only: performs (re)assignments.
    let rebalance: RebalanceHandler?

    init(
        logger: Logger,
        onStatistics: (@Sendable (KafkaStatistics) -> Void)?,
        onError: (@Sendable (KafkaError) -> Void)?,
        delivery: DeliveryDispatcher? = nil,
        rebalance: RebalanceHandler? = nil
    ) {
        self.logger = logger
        self.onStatistics = onStatistics
        self.onError = onError
        self.delivery = delivery
        self.rebalance = rebalance
    }

    static func from(_ opaque: UnsafeMutableRawPointer?) -> RDKafkaContext? {
        guard let opaque else { return nil }
        return Unmanaged<RDKafkaContext>.fromOpaque(opaque).takeUnretainedValue()
    }
}

/// The one owner of an `rd_kafka_t`.
///
/// **Who may use `rk`**: the owner's own thread (the producer's event thread, the consumer's
/// polling thread), which is also the thread that destroys it, uses ``rk`` directly. Every other
/// caller (application tasks, NIO's blocking pool) goes through ``withHandle(_:)`` or the ``gate``,
/// so that the handle is never destroyed under a call in progress and a call that comes after the
/// close throws ``closedError`` instead of using a freed pointer.
///
/// Destroy order (see docs/ARCHITECTURE.md): the owner closes the gate and waits for the calls
/// inside to return (``closeGate()``), releases what hangs off the handle (topic handles, queues,
/// messages; for a consumer, `rd_kafka_consumer_close` comes before the gate closes), then calls
/// ``destroy()``, which runs `rd_kafka_destroy` and finally releases the context.
/// If the owner never called ``destroy()``, `deinit` hands the handle to a background thread
/// to destroy it there: `rd_kafka_destroy` blocks, and a deinit may run on the cooperative pool.
final class RDKafkaClient: @unchecked Sendable {
    // `@unchecked`: `rk` is immutable and librdkafka's handle is thread-safe; its lifetime is guarded
    // by `gate`; `destruction` is locked.
    let rk: OpaquePointer
    let context: RDKafkaContext
    /// Calls from outside the owner's thread enter it; see ``withHandle(_:)``.
    let gate = HandleGate()
    /// What a call after the close throws.
    let closedError: KafkaError
    private let contextPointer: UnsafeMutableRawPointer
    /// Whether ``destroy()`` has begun (it runs once) and whether `rd_kafka_destroy` has returned.
    private let destruction = NIOLockedValueBox((begun: false, done: false))

    enum Kind {
        case producer, consumer
    }

    init(
        kind: Kind, properties: [String: String], context: RDKafkaContext,
        closedError: KafkaError = KafkaError.client("CLOSED", "the client has been shut down")
    ) throws {
        self.closedError = closedError
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError.client("ALLOC", "rd_kafka_conf_new returned NULL")
        }
        do {
            try RDKafkaClient.apply(properties, to: conf)
        } catch {
            rd_kafka_conf_destroy(conf)
            throw error
        }
        rd_kafka_conf_set_log_cb(conf, rdkafkaLogCallback)
        rd_kafka_conf_set_error_cb(conf, rdkafkaErrorCallback)
        rd_kafka_conf_set_stats_cb(conf, rdkafkaStatsCallback)
        if context.delivery != nil {
            // Delivery reports as events (RD_KAFKA_EVENT_DR): one event carries the reports of a whole
            // produce response, which the producer's event thread reads with rd_kafka_event_message_array.
            rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR)
        }
        if context.rebalance != nil {
            rd_kafka_conf_set_rebalance_cb(conf, rdkafkaRebalanceCallback)
        }
        let opaque = Unmanaged.passRetained(context).toOpaque()
        rd_kafka_conf_set_opaque(conf, opaque)

        var errstr = [CChar](repeating: 0, count: 512)
        let type = kind == .producer ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER
        guard let rk = rd_kafka_new(type, conf, &errstr, errstr.count) else {
            // rd_kafka_new frees the conf only on success.
            rd_kafka_conf_destroy(conf)
            Unmanaged<RDKafkaContext>.fromOpaque(opaque).release()
            let message = stringFromCBuffer(errstr)
            throw KafkaError.configuration(key: RDKafkaClient.quotedKey(in: message), message)
        }
        self.rk = rk
        self.context = context
        self.contextPointer = opaque
    }

    /// Applies properties in a stable order; the first unknown key or invalid value throws an error naming it.
    static func apply(_ properties: [String: String], to conf: OpaquePointer) throws {
        var errstr = [CChar](repeating: 0, count: 512)
        for key in properties.keys.sorted() {
            guard let value = properties[key] else { continue }
            let result = rd_kafka_conf_set(conf, key, value, &errstr, errstr.count)
            switch result {
            case RD_KAFKA_CONF_OK:
                continue
            case RD_KAFKA_CONF_UNKNOWN:
                throw KafkaError.configuration(
                    key: key,
                    "unknown configuration property '\(key)': check its spelling against librdkafka's CONFIGURATION.md")
            default:
                let shown = isSecret(key) ? "<redacted>" : "'\(value)'"
                throw KafkaError.configuration(
                    key: key, "invalid value \(shown) for '\(key)': \(stringFromCBuffer(errstr))")
            }
        }
    }

    static func isSecret(_ key: String) -> Bool {
        key.contains("password") || key.contains("secret") || key.contains("key.pem")
    }

    /// librdkafka quotes the property a consistency error is about in backticks: `acks` must be...
    static func quotedKey(in message: String) -> String? {
        guard let start = message.firstIndex(of: "`") else { return nil }
        let rest = message[message.index(after: start)...]
        guard let end = rest.firstIndex(of: "`") else { return nil }
        let key = String(rest[..<end])
        return key.isEmpty ? nil : key
    }

    /// Runs `body` with the handle; throws ``closedError`` once the gate is closed (the client is
    /// being or has been destroyed). The destroy waits until `body` has returned.
    @inline(__always)
    func withHandle<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        guard gate.enter() else { throw closedError }
        defer { gate.leave() }
        return try body(rk)
    }

    /// Refuses new calls through the gate and waits until the calls inside have returned. Idempotent.
    /// Blocks: call it on the owner's thread or the blocking pool, never on the cooperative pool.
    func closeGate() {
        gate.close()
        _ = gate.waitUntilEmpty()
    }

    /// Closes the gate (waiting for calls inside), then `rd_kafka_destroy` (blocking), then releases
    /// the context. Idempotent. Call it off the cooperative pool.
    func destroy() {
        let already = destruction.withLockedValue { d -> Bool in
            defer { d.begun = true }
            return d.begun
        }
        if already { return }
        closeGate()
        rd_kafka_destroy(rk)
        destruction.withLockedValue { $0.done = true }
        Unmanaged<RDKafkaContext>.fromOpaque(contextPointer).release()
    }

    /// True once `rd_kafka_destroy` has returned.
    var isDestroyed: Bool { destruction.withLockedValue { $0.done } }

    deinit {
        let already = destruction.withLockedValue { $0.begun }
        if !already {
            let handle = UncheckedHandle(rk: rk, context: contextPointer)
            Thread.detachNewThread {
                rd_kafka_destroy(handle.rk)
                Unmanaged<RDKafkaContext>.fromOpaque(handle.context).release()
            }
        }
    }

    private struct UncheckedHandle: @unchecked Sendable {
        let rk: OpaquePointer
        let context: UnsafeMutableRawPointer
    }

    /// The fatal error the instance is in, if any (`rd_kafka_fatal_error`).
    func pendingFatalError() -> KafkaError? {
        var errstr = [CChar](repeating: 0, count: 512)
        let err = rd_kafka_fatal_error(rk, &errstr, errstr.count)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        var e = KafkaError(err, message: stringFromCBuffer(errstr))
        e.isFatal = true
        e.isRetriable = false
        return e
    }
}

// MARK: - C callbacks (no captures: they find their context through the opaque pointer)

private let rdkafkaLogCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void = {
    rk, level, facility, buffer in
    guard let rk, let context = RDKafkaContext.from(rd_kafka_opaque(rk)) else { return }
    let logLevel: Logger.Level
    switch level {
    case ...2: logLevel = .critical
    case 3: logLevel = .error
    case 4: logLevel = .warning
    case 5: logLevel = .notice
    case 6: logLevel = .info
    default: logLevel = .debug
    }
    let fac = facility.map { String(cString: $0) } ?? ""
    let text = buffer.map { String(cString: $0) } ?? ""
    context.logger.log(level: logLevel, "\(text)", metadata: ["rdkafka.facility": "\(fac)"], source: "librdkafka")
}

private let rdkafkaErrorCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Void = {
    rk, code, reason, opaque in
    guard let context = RDKafkaContext.from(opaque) else { return }
    context.handleError(rk: rk, code: code, reason: reason)
}

private let rdkafkaStatsCallback: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?, Int, UnsafeMutableRawPointer?) -> Int32 = {
    _, json, length, opaque in
    guard let context = RDKafkaContext.from(opaque), let json else { return 0 }
    context.handleStatistics(UnsafeRawPointer(json), length: length)
    return 0 // librdkafka frees the JSON.
}

extension RDKafkaContext {
    /// An error reported by librdkafka (error callback or RD_KAFKA_EVENT_ERROR).
    func handleError(rk: OpaquePointer?, code: Int32, reason: UnsafePointer<CChar>?) {
        let err = rd_kafka_resp_err_t(rawValue: code)
        var error = KafkaError(err, message: reason.map { String(cString: $0) })
        if err == RD_KAFKA_RESP_ERR__FATAL, let rk {
            var errstr = [CChar](repeating: 0, count: 512)
            let original = rd_kafka_fatal_error(rk, &errstr, errstr.count)
            error = KafkaError(original, message: stringFromCBuffer(errstr))
            error.isFatal = true
            error.isRetriable = false
        }
        let level: Logger.Level = error.isFatal ? .critical : (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ? .error : .warning)
        logger.log(level: level, "librdkafka error: \(error)")
        onError?(error)
    }

    /// A statistics JSON document (stats callback or RD_KAFKA_EVENT_STATS).
    func handleStatistics(_ json: UnsafeRawPointer, length: Int) {
        guard let onStatistics else { return }
        let text = String(decoding: UnsafeRawBufferPointer(start: json, count: length), as: UTF8.self)
        onStatistics(KafkaStatistics(parsing: text))
    }
}

extension KafkaStatistics {
    init(parsing text: String) {
        self.json = text
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return }
        queuedMessages = (object["msg_cnt"] as? NSNumber)?.int64Value
        transmittedRequests = (object["tx"] as? NSNumber)?.int64Value
        receivedResponses = (object["rx"] as? NSNumber)?.int64Value
        if object["type"] as? String == "consumer", let topics = object["topics"] as? [String: Any] {
            var lag: Int64 = 0
            var any = false
            for case let topic as [String: Any] in topics.values {
                guard let partitions = topic["partitions"] as? [String: Any] else { continue }
                for case let p as [String: Any] in partitions.values {
                    if let l = (p["consumer_lag"] as? NSNumber)?.int64Value, l >= 0 {
                        lag += l
                        any = true
                    }
                }
            }
            consumerLag = any ? lag : nil
        }
    }
}

extension KafkaTimestamp {
    /// The timestamp librdkafka reports for a message (consumed or delivered), if it has one.
    init?(of message: UnsafePointer<rd_kafka_message_t>) {
        var type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let ts = rd_kafka_message_timestamp(message, &type)
        switch type {
        case RD_KAFKA_TIMESTAMP_CREATE_TIME: self.init(milliseconds: ts, kind: .createTime)
        case RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME: self.init(milliseconds: ts, kind: .logAppendTime)
        default: return nil
        }
    }
}

extension RDKafkaClient {
    /// Low and high watermarks of a partition, asked from the broker (blocking: call off the cooperative pool).
    func queryWatermarks(topic: String, partition: Int32, timeoutMs: Int32) throws -> (low: Int64, high: Int64) {
        try withHandle { try Kafka.queryWatermarks($0, topic: topic, partition: partition, timeoutMs: timeoutMs) }
    }

    /// Lag per partition from committed offsets, asking the broker for each partition's watermarks.
    func lags(of committed: [KafkaTopicPartitionOffset], timeoutMs: Int32) throws -> [KafkaPartitionLag] {
        try committed.map { c in
            let (low, high) = try queryWatermarks(topic: c.topic, partition: c.partition, timeoutMs: timeoutMs)
            return KafkaPartitionLag(topic: c.topic, partition: c.partition, committed: c.offset, low: low, high: high)
        }
    }
}

/// `rd_kafka_query_watermark_offsets` (blocking).
func queryWatermarks(_ rk: OpaquePointer, topic: String, partition: Int32, timeoutMs: Int32) throws -> (low: Int64, high: Int64) {
    var low: Int64 = 0
    var high: Int64 = 0
    try KafkaError.check(
        rd_kafka_query_watermark_offsets(rk, topic, partition, &low, &high, timeoutMs),
        "watermarks of \(topic)[\(partition)]")
    return (low, high)
}
