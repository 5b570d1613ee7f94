import CRdKafka

/// A partition of a topic.
public struct KafkaTopicPartition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)[\(partition)]" }

    public static func < (a: Self, b: Self) -> Bool {
        a.topic == b.topic ? a.partition < b.partition : a.topic < b.topic
    }
}

/// Offsets, including librdkafka's logical ones.
public enum KafkaOffset {
    /// The first available offset (`RD_KAFKA_OFFSET_BEGINNING`).
    public static let beginning: Int64 = -2
    /// The end: the next offset to be written (`RD_KAFKA_OFFSET_END`).
    public static let end: Int64 = -1
    /// The group's committed offset (`RD_KAFKA_OFFSET_STORED`).
    public static let stored: Int64 = -1000
    /// No offset (`RD_KAFKA_OFFSET_INVALID`): e.g. nothing committed yet.
    public static let invalid: Int64 = -1001
}

/// A partition and an offset in it (a position, a committed offset, a seek target).
public struct KafkaTopicPartitionOffset: Sendable, Hashable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    /// An offset, or one of ``KafkaOffset``'s logical values.
    public var offset: Int64
    /// A per-partition error reported by the broker, if any.
    public var error: KafkaError?

    public init(topic: String, partition: Int32, offset: Int64, error: KafkaError? = nil) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.error = error
    }

    public init(_ tp: KafkaTopicPartition, offset: Int64) {
        self.init(topic: tp.topic, partition: tp.partition, offset: offset)
    }

    public var topicPartition: KafkaTopicPartition { KafkaTopicPartition(topic: topic, partition: partition) }

    public var description: String { "\(topic)[\(partition)]@\(offset)" }
}

/// A record header. Values may be null, as in Kafka.
public struct KafkaHeader: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]?

    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }

    public init(key: String, value: String) {
        self.key = key
        self.value = Array(value.utf8)
    }
}

/// A record's timestamp (milliseconds since the Unix epoch) and what it means.
public struct KafkaTimestamp: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// Set by the producer (`CreateTime`).
        case createTime
        /// Set by the broker when it appended the record (`LogAppendTime`).
        case logAppendTime
    }
    public var milliseconds: Int64
    public var kind: Kind

    public init(milliseconds: Int64, kind: Kind) {
        self.milliseconds = milliseconds
        self.kind = kind
    }
}

/// A record read by a consumer.
///
/// Keys and values are optional: a null value is a tombstone.
///
/// **Zero copy**: a record from ``KafkaConsumer`` borrows librdkafka's buffer (it keeps the
/// `rd_kafka_message_t`s of its poll batch alive until the last record of the batch is released).
/// ``value``, ``key`` and ``headers`` copy the bytes into Swift arrays each time they are read;
/// ``withUnsafeValueBytes(_:)``, ``withUnsafeKeyBytes(_:)``, ``valueCount`` and ``keyCount`` read
/// them in place. Setting any of ``topic``, ``key``, ``value``, ``headers`` or ``timestamp`` turns
/// the record into an owned copy. Records built with ``init(topic:partition:offset:key:value:headers:timestamp:)``
/// own their bytes. Equality and hashing compare contents, whichever the storage.
public struct KafkaMessage: Sendable, Hashable {
    public var partition: Int32
    public var offset: Int64
    private var storage: Storage

    private enum Storage: Sendable {
        case owned(Owned)
        case borrowed(RDKafkaRecordBatch, Int)
    }

    private struct Owned: Sendable {
        var topic: String
        var key: [UInt8]?
        var value: [UInt8]?
        var headers: [KafkaHeader]
        var timestamp: KafkaTimestamp?
    }

    public init(
        topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestamp: KafkaTimestamp? = nil
    ) {
        self.partition = partition
        self.offset = offset
        self.storage = .owned(Owned(topic: topic, key: key, value: value, headers: headers, timestamp: timestamp))
    }

    /// A record borrowing message `index` of `batch`.
    init(borrowing batch: RDKafkaRecordBatch, index: Int) {
        let m = batch.message(index)
        self.partition = m.pointee.partition
        self.offset = m.pointee.offset
        self.storage = .borrowed(batch, index)
    }

    private func owned() -> Owned {
        switch storage {
        case .owned(let o): return o
        case .borrowed(let batch, let index):
            let m = batch.message(index)
            return Owned(
                topic: batch.topic(index), key: Self.copy(m.pointee.key, m.pointee.key_len),
                value: Self.copy(m.pointee.payload, m.pointee.len), headers: batch.headers(index),
                timestamp: KafkaTimestamp(of: m))
        }
    }

    private mutating func modify(_ body: (inout Owned) -> Void) {
        var o = owned()
        storage = .owned(Owned(topic: "", key: nil, value: nil, headers: [])) // drop the reference before mutating
        body(&o)
        storage = .owned(o)
    }

    @inline(__always)
    private static func copy(_ p: UnsafeMutableRawPointer?, _ n: Int) -> [UInt8]? {
        p.map { Array(UnsafeRawBufferPointer(start: $0, count: n)) }
    }

    public var topic: String {
        get {
            switch storage {
            case .owned(let o): return o.topic
            case .borrowed(let batch, let index): return batch.topic(index)
            }
        }
        set { modify { $0.topic = newValue } }
    }

    /// The key, copied (nil for a null key).
    public var key: [UInt8]? {
        get {
            switch storage {
            case .owned(let o): return o.key
            case .borrowed(let batch, let index):
                let m = batch.message(index)
                return Self.copy(m.pointee.key, m.pointee.key_len)
            }
        }
        set { modify { $0.key = newValue } }
    }

    /// The value, copied (nil for a tombstone).
    public var value: [UInt8]? {
        get {
            switch storage {
            case .owned(let o): return o.value
            case .borrowed(let batch, let index):
                let m = batch.message(index)
                return Self.copy(m.pointee.payload, m.pointee.len)
            }
        }
        set { modify { $0.value = newValue } }
    }

    public var headers: [KafkaHeader] {
        get {
            switch storage {
            case .owned(let o): return o.headers
            case .borrowed(let batch, let index): return batch.headers(index)
            }
        }
        set { modify { $0.headers = newValue } }
    }

    public var timestamp: KafkaTimestamp? {
        get {
            switch storage {
            case .owned(let o): return o.timestamp
            case .borrowed(let batch, let index): return KafkaTimestamp(of: batch.message(index))
            }
        }
        set { modify { $0.timestamp = newValue } }
    }

    /// The value's length without copying it; nil for a tombstone.
    public var valueCount: Int? {
        switch storage {
        case .owned(let o): return o.value?.count
        case .borrowed(let batch, let index):
            let m = batch.message(index)
            return m.pointee.payload == nil ? nil : m.pointee.len
        }
    }

    /// The key's length without copying it; nil for a null key.
    public var keyCount: Int? {
        switch storage {
        case .owned(let o): return o.key?.count
        case .borrowed(let batch, let index):
            let m = batch.message(index)
            return m.pointee.key == nil ? nil : m.pointee.key_len
        }
    }

    /// Calls `body` with the value's bytes in place (valid only inside `body`); nil for a tombstone.
    public func withUnsafeValueBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        switch storage {
        case .owned(let o): return try o.value.map { try $0.withUnsafeBytes(body) }
        case .borrowed(let batch, let index):
            let m = batch.message(index)
            guard let p = m.pointee.payload else { return nil }
            return try withExtendedLifetime(batch) { try body(UnsafeRawBufferPointer(start: p, count: m.pointee.len)) }
        }
    }

    /// Calls `body` with the key's bytes in place (valid only inside `body`); nil for a null key.
    public func withUnsafeKeyBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        switch storage {
        case .owned(let o): return try o.key.map { try $0.withUnsafeBytes(body) }
        case .borrowed(let batch, let index):
            let m = batch.message(index)
            guard let p = m.pointee.key else { return nil }
            return try withExtendedLifetime(batch) { try body(UnsafeRawBufferPointer(start: p, count: m.pointee.key_len)) }
        }
    }

    public var topicPartition: KafkaTopicPartition { KafkaTopicPartition(topic: topic, partition: partition) }

    /// For the producer: calls `body` with the consumed `rd_kafka_message_t` this record borrows
    /// (valid only inside `body`); nil for a record that owns its bytes.
    func withConsumedMessage<R>(_ body: (UnsafeMutablePointer<rd_kafka_message_t>, RDKafkaRecordBatch, Int) -> R) -> R? {
        guard case .borrowed(let batch, let index) = storage else { return nil }
        return withExtendedLifetime(batch) { body(batch.message(index), batch, index) }
    }

    /// Calls `body` with the value of the first header named `key`, in place (valid only inside
    /// `body`); nil when there is no such header or its value is null.
    public func withUnsafeHeaderValue<R>(_ key: String, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        switch storage {
        case .owned(let o):
            guard let value = o.headers.first(where: { $0.key == key })?.value else { return nil }
            return try value.withUnsafeBytes(body)
        case .borrowed(let batch, let index):
            return try withExtendedLifetime(batch) { try batch.withHeaderValue(index, key: key, body) }
        }
    }

    /// True when the record has a header with this key (nothing is copied).
    public func hasHeader(_ key: String) -> Bool {
        switch storage {
        case .owned(let o): return o.headers.contains { $0.key == key }
        case .borrowed(let batch, let index): return batch.hasHeader(index, key: key)
        }
    }

    /// The first header with this key (its value may be nil), or nil if there is none.
    public func header(_ key: String) -> KafkaHeader? {
        switch storage {
        case .owned(let o): return o.headers.first { $0.key == key }
        case .borrowed(let batch, let index): return batch.header(index, key: key)
        }
    }

    public static func == (a: KafkaMessage, b: KafkaMessage) -> Bool {
        a.partition == b.partition && a.offset == b.offset && a.topic == b.topic && a.key == b.key && a.value == b.value
            && a.headers == b.headers && a.timestamp == b.timestamp
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(topic)
        hasher.combine(partition)
        hasher.combine(offset)
        hasher.combine(key)
        hasher.combine(value)
        hasher.combine(headers)
        hasher.combine(timestamp)
    }
}

extension Sequence<KafkaMessage> {
    /// Per partition, the offset after the highest record of this sequence: what to store or commit
    /// once every one of them is handled.
    public var nextOffsets: [KafkaTopicPartition: Int64] {
        var next: [KafkaTopicPartition: Int64] = [:]
        // A polled batch holds long runs of one partition: the dictionary is touched once per run.
        var run: (topic: String, partition: Int32, next: Int64)?
        for m in self {
            if let r = run, r.partition == m.partition, r.topic == m.topic {
                run = (r.topic, r.partition, Swift.max(r.next, m.offset + 1))
                continue
            }
            if let r = run {
                let tp = KafkaTopicPartition(topic: r.topic, partition: r.partition)
                next[tp] = Swift.max(next[tp] ?? 0, r.next)
            }
            run = (m.topic, m.partition, m.offset + 1)
        }
        if let r = run {
            let tp = KafkaTopicPartition(topic: r.topic, partition: r.partition)
            next[tp] = Swift.max(next[tp] ?? 0, r.next)
        }
        return next
    }
}

/// Where a produced record landed, or why it did not.
public struct KafkaDeliveryReport: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    /// The record's offset; ``KafkaOffset/invalid`` when delivery failed.
    public var offset: Int64
    public var timestamp: KafkaTimestamp?
    /// Why delivery failed; nil when the record was written.
    public var error: KafkaError?

    public init(topic: String, partition: Int32, offset: Int64, timestamp: KafkaTimestamp?, error: KafkaError?) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.error = error
    }
}

/// librdkafka's statistics (`statistics.interval.ms`), as the JSON it emits, with a few fields
/// read out for metrics. See librdkafka's STATISTICS.md for the document.
public struct KafkaStatistics: Sendable {
    /// The whole statistics JSON document.
    public var json: String
    /// `msg_cnt`: messages in the producer queues.
    public var queuedMessages: Int64?
    /// `tx` / `rx`: requests sent / responses received to all brokers.
    public var transmittedRequests: Int64?
    public var receivedResponses: Int64?
    /// Sum over assigned partitions of `consumer_lag` (only consumers; -1 entries skipped).
    public var consumerLag: Int64?
}
