import CRdKafka

/// Owner of an `rd_kafka_topic_partition_list_t`, destroyed with the owner.
final class RDKafkaTopicPartitionList {
    let list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>

    init(capacity: Int = 8) {
        list = rd_kafka_topic_partition_list_new(Int32(max(capacity, 1)))
    }

    convenience init(_ offsets: [KafkaTopicPartitionOffset]) {
        self.init(capacity: offsets.count)
        for o in offsets {
            add(topic: o.topic, partition: o.partition, offset: o.offset)
        }
    }

    convenience init(_ partitions: [KafkaTopicPartition]) {
        self.init(capacity: partitions.count)
        for p in partitions {
            add(topic: p.topic, partition: p.partition, offset: KafkaOffset.invalid)
        }
    }

    deinit {
        rd_kafka_topic_partition_list_destroy(list)
    }

    func add(topic: String, partition: Int32, offset: Int64) {
        if let element = rd_kafka_topic_partition_list_add(list, topic, partition) {
            element.pointee.offset = offset
        }
    }

    /// Copies the list out (it may be borrowed from librdkafka: this does not take ownership).
    static func read(_ list: UnsafePointer<rd_kafka_topic_partition_list_t>) -> [KafkaTopicPartitionOffset] {
        var result: [KafkaTopicPartitionOffset] = []
        let count = Int(list.pointee.cnt)
        result.reserveCapacity(count)
        guard let elems = list.pointee.elems else { return result }
        for i in 0..<count {
            let e = elems[i]
            let topic = e.topic.map { String(cString: $0) } ?? ""
            let error = e.err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(e.err)
            result.append(KafkaTopicPartitionOffset(topic: topic, partition: e.partition, offset: e.offset, error: error))
        }
        return result
    }

    var elements: [KafkaTopicPartitionOffset] { RDKafkaTopicPartitionList.read(list) }
}
