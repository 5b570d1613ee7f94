import CRdKafka
import NIOConcurrencyHelpers
import Synchronization

/// The owner of the `rd_kafka_message_t`s of one poll pass: the records a ``KafkaMessage`` borrows.
///
/// The consumer's polling thread fills a batch (``append(_:topic:)``) before anything else sees it;
/// afterwards it is read-only, except header parsing (`rd_kafka_message_headers` caches what it
/// parsed inside librdkafka's message), which runs under `headerLock`. `deinit` destroys every
/// message of the batch, on whichever thread releases the last ``KafkaMessage`` of it.
///
/// **Destroy order**: messages must be destroyed before their `rd_kafka_t`. A batch therefore holds
/// its ``RDKafkaClient`` and is counted in ``Live``: the consumer's polling thread destroys the client
/// at close only when no batch is alive; otherwise `rd_kafka_destroy` runs when the last reference to
/// the client goes (``RDKafkaClient``'s `deinit`, on a thread of its own), which is after the last batch.
final class RDKafkaRecordBatch: @unchecked Sendable {
    // `@unchecked`: `messages`, `topicOf` and `topics` are written only by the polling thread before the
    // batch is shared and read-only afterwards; librdkafka's messages are read-only except for header
    // parsing, which is serialised by `headerLock`.
    private(set) var messages: [UnsafeMutablePointer<rd_kafka_message_t>] = []
    private var topicOf: [UInt16] = []
    private var topics: [String] = []
    private let headerLock = NIOLock()
    private let client: RDKafkaClient
    private let live: Live

    /// How many batches of one consumer are alive.
    final class Live: Sendable {
        let count = Atomic<Int>(0)
    }

    init(client: RDKafkaClient, live: Live, capacity: Int) {
        self.client = client
        self.live = live
        messages.reserveCapacity(capacity)
        topicOf.reserveCapacity(capacity)
        live.count.add(1, ordering: .relaxed)
    }

    var count: Int { messages.count }

    /// Takes ownership of `message` (a record without error); returns its index.
    func append(_ message: UnsafeMutablePointer<rd_kafka_message_t>, topic: String) -> Int {
        let t: Int
        if let last = topics.indices.last, topics[last] == topic {
            t = last
        } else if let i = topics.firstIndex(of: topic) {
            t = i
        } else {
            topics.append(topic)
            t = topics.count - 1
        }
        messages.append(message)
        topicOf.append(UInt16(truncatingIfNeeded: t))
        return messages.count - 1
    }

    @inline(__always)
    func topic(_ index: Int) -> String { topics[Int(topicOf[index])] }

    @inline(__always)
    func message(_ index: Int) -> UnsafeMutablePointer<rd_kafka_message_t> { messages[index] }

    /// Calls `body` with the record's header list as librdkafka parsed it, under the header lock;
    /// nil when the record has no headers. Every header accessor goes through here.
    private func withParsedHeaders<R>(_ index: Int, _ body: (OpaquePointer) throws -> R) rethrows -> R? {
        let message = messages[index]
        headerLock.lock()
        defer { headerLock.unlock() }
        var hdrs: OpaquePointer?
        guard rd_kafka_message_headers(message, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs else { return nil }
        return try body(hdrs)
    }

    /// The first header named `key` in `hdrs`: whether there is one, and its value in place (nil for
    /// a null value).
    private static func lookup(_ hdrs: OpaquePointer, _ key: String) -> (found: Bool, value: UnsafeRawBufferPointer?) {
        var value: UnsafeRawPointer?
        var size = 0
        // `withCString`, not the implicit String → `const char *` conversion, which allocates per call.
        let err = key.withCString { rd_kafka_header_get(hdrs, 0, $0, &value, &size) }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { return (false, nil) }
        return (true, value.map { UnsafeRawBufferPointer(start: $0, count: size) })
    }

    /// The record's headers, copied.
    func headers(_ index: Int) -> [KafkaHeader] {
        withParsedHeaders(index) { hdrs in
            let count = rd_kafka_header_cnt(hdrs)
            var headers: [KafkaHeader] = []
            headers.reserveCapacity(count)
            var name: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            for i in 0..<count where rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                headers.append(
                    KafkaHeader(
                        key: name.map { String(cString: $0) } ?? "",
                        value: value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }))
            }
            return headers
        } ?? []
    }

    /// The first header named `key` of the record, its value copied; nil if there is none.
    /// Looks the name up in librdkafka's parsed headers without copying the others.
    func header(_ index: Int, key: String) -> KafkaHeader? {
        withParsedHeaders(index) { hdrs -> KafkaHeader? in
            let (found, value) = Self.lookup(hdrs, key)
            return found ? KafkaHeader(key: key, value: value.map { Array($0) }) : nil
        } ?? nil
    }

    /// Calls `body` with the value of the record's first header named `key`, in place, under the
    /// header lock; nil when there is none or its value is null.
    func withHeaderValue<R>(_ index: Int, key: String, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        try withParsedHeaders(index) { hdrs -> R? in
            guard let value = Self.lookup(hdrs, key).value else { return nil }
            return try body(value)
        } ?? nil
    }

    /// True when the record has a header named `key`.
    func hasHeader(_ index: Int, key: String) -> Bool {
        withParsedHeaders(index) { Self.lookup($0, key).found } ?? false
    }

    /// A copy of the record's headers in librdkafka (`rd_kafka_headers_copy`), for a produced
    /// record that forwards them; nil when it has none. The caller owns the copy.
    func copyHeaders(_ index: Int) -> OpaquePointer? {
        withParsedHeaders(index) { rd_kafka_headers_copy($0) } ?? nil
    }

    deinit {
        for m in messages { rd_kafka_message_destroy(m) }
        live.count.subtract(1, ordering: .releasing)
    }
}
