import CRdKafka
import NIOConcurrencyHelpers

/// Owner of a client's `rd_kafka_topic_t` handles, created on first use and destroyed together
/// before `rd_kafka_destroy`. After ``destroyAll()`` no handle is handed out any more.
final class RDKafkaTopicHandles: @unchecked Sendable {
    // `@unchecked`: `handles` and `closed` are only touched with `lock` held.
    private let lock = NIOLock()
    private var handles: [String: OpaquePointer] = [:]
    /// The handle returned last: a producer sending to one topic compares the name (usually the
    /// same string storage, so a pointer comparison) instead of hashing it for every record.
    private var lastName: String?
    private var lastHandle: OpaquePointer?
    private var closed = false
    private let closedError: KafkaError

    init(closedError: KafkaError) {
        self.closedError = closedError
    }

    /// The handle for `name` on `rk`, created if needed.
    func handle(_ name: String, on rk: OpaquePointer) throws -> OpaquePointer {
        try lock.withLock {
            if let lastHandle, lastName == name { return lastHandle }
            if let rkt = handles[name] {
                lastName = name
                lastHandle = rkt
                return rkt
            }
            guard !closed else { throw closedError }
            guard let rkt = rd_kafka_topic_new(rk, name, nil) else {
                throw KafkaError(rd_kafka_last_error(), message: "cannot create a handle for topic '\(name)'")
            }
            handles[name] = rkt
            lastName = name
            lastHandle = rkt
            return rkt
        }
    }

    /// Destroys every handle and refuses new ones. Idempotent.
    func destroyAll() {
        let all = lock.withLock { () -> [OpaquePointer] in
            closed = true
            lastName = nil
            lastHandle = nil
            defer { handles = [:] }
            return Array(handles.values)
        }
        for rkt in all { rd_kafka_topic_destroy(rkt) }
    }
}
