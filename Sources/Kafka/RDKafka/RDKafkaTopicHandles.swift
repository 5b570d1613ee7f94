import CRdKafka
import NIOConcurrencyHelpers
import Synchronization

/// Owner of a client's `rd_kafka_topic_t` handles, created on first use and destroyed together
/// before `rd_kafka_destroy`. After ``destroyAll()`` no handle is handed out any more.
///
/// **Call ``handle(_:on:)`` only inside the client's gate** (``RDKafkaClient/withHandle(_:)``, or the
/// producer's send path), and ``destroyAll()`` only after the gate has closed and emptied: that is
/// what lets the last-used lookup below read without a lock.
///
/// The handle used last is published as an immutable `Entry` through an atomic pointer: a producer
/// sending to one topic loads it and compares the name (usually the same string storage, so a
/// pointer comparison) without a lock or a hash per record. Entries are created once per topic and
/// kept in `entries` until ``destroyAll()``, so a published pointer always points at a live entry.
/// A miss (another topic, or the first record) takes the lock.
final class RDKafkaTopicHandles: @unchecked Sendable {
    // `@unchecked`: `entries` and `closed` are only touched with `lock` held; `last` is an atomic
    // whose pointee lives as long as `entries` holds it (see above).
    private final class Entry {
        let name: String
        let rkt: OpaquePointer
        init(name: String, rkt: OpaquePointer) {
            self.name = name
            self.rkt = rkt
        }
    }
    private let lock = NIOLock()
    private var entries: [String: Entry] = [:]
    private var closed = false
    private let last = Atomic<UnsafeMutableRawPointer?>(nil)
    private let closedError: KafkaError

    init(closedError: KafkaError) {
        self.closedError = closedError
    }

    /// The handle for `name` on `rk`, created if needed. Inside the client's gate only.
    @inline(__always)
    func handle(_ name: String, on rk: OpaquePointer) throws -> OpaquePointer {
        if let pointer = last.load(ordering: .acquiring) {
            let hit = Unmanaged<Entry>.fromOpaque(pointer)._withUnsafeGuaranteedRef { $0.name == name ? $0.rkt : nil }
            if let hit { return hit }
        }
        return try handleSlowly(name, on: rk)
    }

    private func handleSlowly(_ name: String, on rk: OpaquePointer) throws -> OpaquePointer {
        try lock.withLock {
            guard !closed else { throw closedError }
            let entry: Entry
            if let known = entries[name] {
                entry = known
            } else {
                guard let rkt = rd_kafka_topic_new(rk, name, nil) else {
                    throw KafkaError(rd_kafka_last_error(), message: "cannot create a handle for topic '\(name)'")
                }
                entry = Entry(name: name, rkt: rkt)
                entries[name] = entry
            }
            last.store(Unmanaged.passUnretained(entry).toOpaque(), ordering: .releasing)
            return entry.rkt
        }
    }

    /// Destroys every handle and refuses new ones. Idempotent. Only once the client's gate is
    /// closed and empty (no call can be looking a handle up).
    func destroyAll() {
        let all = lock.withLock { () -> [Entry] in
            closed = true
            last.store(nil, ordering: .releasing)
            defer { entries = [:] }
            return Array(entries.values)
        }
        for entry in all { rd_kafka_topic_destroy(entry.rkt) }
    }
}
