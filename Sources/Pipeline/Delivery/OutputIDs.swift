import Kafka
import StreamCore

/// The `sf.id`s of the records one input becomes (lineage, and the key a sink upserts by): the first
/// output to a topic carries the input's id, each further output to the same topic `<id>#<n>`
/// (n = 1, 2, …). Deterministic, so a redelivered input yields identical ids and the sink's upsert
/// absorbs it; distinct, so two outputs to one topic never overwrite each other downstream. An input
/// without an `sf.id` header (produced outside the pipeline) is given its derived id
/// (`<topic>:<partition>:<offset>`).
///
/// One value per input record; used by every stage that turns a record into outputs (process, and
/// the routed records of a stateful process stage).
struct OutputIDs {
    let id: String
    let inputHasID: Bool
    private var perTopic: [String: Int] = [:]

    init(id: String, inputHasID: Bool) {
        self.id = id
        self.inputHasID = inputHasID
    }

    /// For `message`, whose record context gave `id`.
    init(_ message: KafkaMessage, id: String) {
        self.init(id: id, inputHasID: message.header(RecordHeader.id) != nil)
    }

    /// The headers of the next output to `topic`: the input's, with the `sf.id` that output gets.
    mutating func headers(for topic: String, from input: [KafkaHeader]) -> [KafkaHeader] {
        let n = perTopic[topic, default: 0]
        perTopic[topic] = n + 1
        var headers = input
        if n > 0 {
            headers.removeAll { $0.key == RecordHeader.id }
            headers.append(KafkaHeader(key: RecordHeader.id, value: "\(id)#\(n)"))
        } else if !inputHasID {
            headers.append(KafkaHeader(key: RecordHeader.id, value: id))
        }
        return headers
    }
}
