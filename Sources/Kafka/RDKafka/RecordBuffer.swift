import NIOConcurrencyHelpers

/// Records fetched from librdkafka but not yet handed to the application.
// A concrete (non-generic) type on purpose: it sits on the per-record path of the consumer's
// `AsyncSequence`, where a generic lock box costs a runtime metadata lookup per record.
final class RecordBuffer: @unchecked Sendable {
    // `@unchecked`: `records` and `next` are only touched with `lock` held.
    private let lock = NIOLock()
    private var records: [KafkaMessage] = []
    private var next = 0

    /// The next record, if any.
    @inline(__always)
    func take() -> KafkaMessage? {
        lock.lock()
        defer { lock.unlock() }
        guard next < records.count else { return nil }
        let m = records[next]
        next += 1
        if next == records.count {
            records = []
            next = 0
        }
        return m
    }

    /// Up to `max` records.
    func take(max: Int) -> [KafkaMessage] {
        lock.withLock {
            let n = Swift.min(max, records.count - next)
            guard n > 0 else { return [] }
            let out = Array(records[next..<next + n])
            next += n
            if next == records.count {
                records = []
                next = 0
            }
            return out
        }
    }

    /// Appends a batch (taking its storage over when the buffer is empty).
    func append(_ batch: [KafkaMessage]) {
        lock.withLock {
            if next == records.count {
                records = batch
                next = 0
            } else {
                records.append(contentsOf: batch)
            }
        }
    }

    /// Removes the buffered records of these partitions; returns the first removed offset per partition.
    @discardableResult
    func remove(partitions: Set<KafkaTopicPartition>) -> [KafkaTopicPartition: Int64] {
        lock.withLock {
            var first: [KafkaTopicPartition: Int64] = [:]
            var kept: [KafkaMessage] = []
            kept.reserveCapacity(records.count - next)
            for m in records[next...] {
                let tp = m.topicPartition
                if partitions.contains(tp) {
                    if first[tp] == nil { first[tp] = m.offset }
                } else {
                    kept.append(m)
                }
            }
            records = kept
            next = 0
            return first
        }
    }

    /// Drops every buffered record.
    func removeAll() {
        lock.withLock {
            records = []
            next = 0
        }
    }

    /// The first buffered offset per partition.
    func firstOffsets() -> [KafkaTopicPartition: Int64] {
        lock.withLock {
            var first: [KafkaTopicPartition: Int64] = [:]
            for m in records[next...] where first[m.topicPartition] == nil { first[m.topicPartition] = m.offset }
            return first
        }
    }
}
