import CRdKafka
import NIOConcurrencyHelpers
import Synchronization

/// The completion of one awaited batch of records (``KafkaProducer/send(_:)-([KafkaProducerMessage])``
/// and ``KafkaProducer/sendBatch(_:)``): one object per batch, not per record.
///
/// Each record travels through librdkafka with a pointer to its slot as opaque; a slot holds the
/// completion (unretained) and the record's index. A delivery report of an error-free record with
/// an offset costs one atomic decrement; failures and records without an offset are listed under
/// the lock. The last report resumes the waiter.
///
/// **Lifetime**: the batch is retained once from creation until its last record is reported (or
/// failed to queue), so a report can never reach a freed completion; the slots are freed with it.
// Replaces a retained token object and a report per record: on the stage path those were two
// allocations, a lock and a topic String per record (issue "Stage runtime v2", item 3).
final class ProduceCompletion: @unchecked Sendable {
    // @unchecked: `slots` is written once in init, then only read (by the event thread); the rest
    // is an atomic or under `state`'s lock.
    struct Slot {
        var completion: Unmanaged<ProduceCompletion>
        var index: Int
    }

    private struct State {
        var failures: [KafkaBatchDelivery.Failure] = []
        var withoutOffset: [KafkaBatchDelivery.Unconfirmed] = []
        var reports: [KafkaDeliveryReport?] = []
        var finished = false
        var continuation: CheckedContinuation<Void, Never>?
    }

    let count: Int
    private let collectsReports: Bool
    private let slots: UnsafeMutablePointer<Slot>
    private let remaining: Synchronization.Atomic<Int>
    private let state: NIOLockedValueBox<State>
    private let dispatcher: DeliveryDispatcher

    /// A completion for `count` records; counts them as awaited in `dispatcher` until all are done.
    /// `collectsReports`: keep a full report per record (for ``reports()``).
    init(count: Int, collectsReports: Bool, dispatcher: DeliveryDispatcher) {
        self.count = count
        self.collectsReports = collectsReports
        self.slots = .allocate(capacity: count)
        self.remaining = Synchronization.Atomic(count)
        var s = State()
        if collectsReports { s.reports = Array(repeating: nil, count: count) }
        self.state = NIOLockedValueBox(s)
        self.dispatcher = dispatcher
        let me = Unmanaged.passRetained(self) // released by the last completed record
        for i in 0..<count { (slots + i).initialize(to: Slot(completion: me, index: i)) }
        dispatcher.awaitedQueued(count)
    }

    deinit {
        slots.deinitialize(count: count)
        slots.deallocate()
    }

    /// The opaque pointer that record `index` carries through librdkafka.
    @inline(__always)
    func opaque(_ index: Int) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(slots + index) }

    /// On the event thread: the delivery report of a record of some completion.
    static func complete(opaque: UnsafeMutableRawPointer, message: UnsafePointer<rd_kafka_message_t>, error: KafkaError?) {
        let slot = opaque.assumingMemoryBound(to: Slot.self).pointee
        let completion = slot.completion.takeUnretainedValue()
        completion.complete(index: slot.index, message: message, error: error)
    }

    private func complete(index: Int, message: UnsafePointer<rd_kafka_message_t>, error: KafkaError?) {
        let offset = message.pointee.offset
        if collectsReports || error != nil || offset < 0 {
            let topic = message.pointee.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
            state.withLockedValue { s in
                if let error {
                    s.failures.append(.init(index: index, topic: topic, error: error))
                } else if offset < 0 {
                    s.withoutOffset.append(.init(index: index, partition: message.pointee.partition))
                }
                if collectsReports {
                    s.reports[index] = KafkaDeliveryReport(
                        topic: topic, partition: message.pointee.partition, offset: error == nil ? offset : KafkaOffset.invalid,
                        timestamp: KafkaTimestamp(of: message), error: error)
                }
            }
        }
        countDown()
    }

    /// Record `index` could not be queued.
    func fail(index: Int, topic: String, partition: Int32?, error: KafkaError) {
        state.withLockedValue { s in
            s.failures.append(.init(index: index, topic: topic, error: error))
            if collectsReports {
                s.reports[index] = KafkaDeliveryReport(
                    topic: topic, partition: partition ?? -1, offset: KafkaOffset.invalid, timestamp: nil, error: error)
            }
        }
        countDown()
    }

    private func countDown() {
        guard remaining.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        let waiter = state.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            s.finished = true
            defer { s.continuation = nil }
            return s.continuation
        }
        dispatcher.awaitedDone(count)
        waiter?.resume()
        Unmanaged.passUnretained(self).release() // the retain taken in init
    }

    private func waitUntilFinished() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let finished = state.withLockedValue { s -> Bool in
                if s.finished { return true }
                s.continuation = c
                return false
            }
            if finished { c.resume() }
        }
    }

    /// Waits for every record; the batch's outcome (failures and records without offset by index).
    func delivery() async -> KafkaBatchDelivery {
        await waitUntilFinished()
        return state.withLockedValue { s in
            KafkaBatchDelivery(
                count: count, failures: s.failures.sorted { $0.index < $1.index },
                withoutOffset: s.withoutOffset.sorted { $0.index < $1.index })
        }
    }

    /// Waits for every record; a report per record, in order (needs `collectsReports`).
    func reports() async -> [KafkaDeliveryReport] {
        await waitUntilFinished()
        return state.withLockedValue { s in
            s.reports.enumerated().map { i, r in
                r
                    ?? KafkaDeliveryReport(
                        topic: "", partition: -1, offset: KafkaOffset.invalid, timestamp: nil,
                        error: KafkaError.client("SEND", "no report for record \(i)"))
            }
        }
    }
}
