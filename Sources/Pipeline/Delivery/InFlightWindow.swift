import Kafka

/// The offsets of the batches a stage has handed to the producer and not yet seen acknowledged,
/// released strictly in consumption order.
///
/// A batch is *opened* when it is handed to the producer and *acknowledged* when every output and
/// dead letter of it is acknowledged by the broker. Acknowledgements may arrive in any order (the
/// batches go to different partitions); ``acknowledge(_:)`` releases the next offsets of the
/// leading run of acknowledged batches only — a partition's offset never moves past a record whose
/// outputs, or those of any earlier batch, are still in flight. Pure bookkeeping: no Kafka calls,
/// so the rule is tested without a broker (`InFlightWindowTests`).
struct InFlightWindow: Sendable {
    struct Entry: Sendable {
        let id: UInt64
        /// Per partition, the offset after the batch's last record of it.
        let next: [KafkaTopicPartition: Int64]
        /// Producer messages (outputs + dead letters) of the batch and their payload bytes.
        let messages: Int
        let bytes: Int
        var acknowledged = false
    }

    private(set) var entries: [Entry] = []
    private var nextID: UInt64 = 0
    /// Messages and payload bytes of every open batch: what the producer holds for this stage.
    private(set) var messages = 0
    private(set) var bytes = 0

    var count: Int { entries.count }
    var isEmpty: Bool { entries.isEmpty }
    /// The oldest open batch.
    var head: UInt64? { entries.first?.id }

    /// Opens a batch of `records`, whose outputs are `messages` producer messages of `bytes` bytes.
    mutating func open(_ records: [KafkaMessage], messages: Int, bytes: Int) -> UInt64 {
        open(next: records.nextOffsets, messages: messages, bytes: bytes)
    }

    mutating func open(next: [KafkaTopicPartition: Int64], messages: Int, bytes: Int) -> UInt64 {
        let id = nextID
        nextID += 1
        entries.append(Entry(id: id, next: next, messages: messages, bytes: bytes))
        self.messages += messages
        self.bytes += bytes
        return id
    }

    /// Marks batch `id` acknowledged and returns the offsets that may be stored now: those of every
    /// acknowledged batch at the head of the window (merged, the highest per partition), which
    /// leave the window. Empty while an earlier batch is still in flight. Unknown ids are ignored.
    mutating func acknowledge(_ id: UInt64) -> [KafkaTopicPartitionOffset] {
        guard let i = entries.firstIndex(where: { $0.id == id }) else { return [] }
        entries[i].acknowledged = true
        var release: [KafkaTopicPartition: Int64] = [:]
        var n = 0
        while n < entries.count, entries[n].acknowledged {
            for (tp, o) in entries[n].next { release[tp] = max(release[tp] ?? 0, o) }
            messages -= entries[n].messages
            bytes -= entries[n].bytes
            n += 1
        }
        entries.removeFirst(n)
        return release.sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }
            .map { KafkaTopicPartitionOffset($0.key, offset: $0.value) }
    }
}
