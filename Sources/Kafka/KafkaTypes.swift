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
public struct KafkaMessage: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    public var timestamp: KafkaTimestamp?

    public init(
        topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestamp: KafkaTimestamp? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }

    public var topicPartition: KafkaTopicPartition { KafkaTopicPartition(topic: topic, partition: partition) }

    /// The first header with this key (its value may be nil), or nil if there is none.
    public func header(_ key: String) -> KafkaHeader? {
        headers.first { $0.key == key }
    }
}

/// A record to produce.
public struct KafkaProducerMessage: Sendable, Hashable {
    public var topic: String
    /// An explicit partition; nil lets the partitioner choose from the key.
    public var partition: Int32?
    public var key: [UInt8]?
    /// The value; nil produces a tombstone.
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// CreateTime in milliseconds since the epoch; nil means now.
    public var timestamp: Int64?

    public init(
        topic: String, partition: Int32? = nil, key: [UInt8]? = nil, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestamp: Int64? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }

    /// A message with UTF-8 key and value.
    public init(topic: String, key: String?, value: String?, headers: [KafkaHeader] = []) {
        self.init(topic: topic, key: key.map { Array($0.utf8) }, value: value.map { Array($0.utf8) }, headers: headers)
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
