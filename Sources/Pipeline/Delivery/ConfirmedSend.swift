import Kafka
import Logging
import StreamCore

// Sending records so that "delivered" means the broker wrote them.
//
// librdkafka's idempotent producer acknowledges a failed request's records *implicitly* when a later
// request for the same partition succeeds (`rd_kafka_dr_implicit_ack`). A broker that checks idempotent
// sequence numbers (every real Kafka broker) would have refused the later request had the earlier one
// not been written, so there the acknowledgement is true. The embedded broker (librdkafka's mock
// cluster) checks them only for producers with a `transactional.id`: the earlier records are reported
// delivered but are not in the topic, and a stage that then commits its input has lost them. Only a
// broker response gives records offsets, so such reports are recognisable: success without an offset.
// See docs/decisions/0005-resend-implicitly-acknowledged-records.md (and 0030, the chaos-run postmortem).
extension KafkaProducer {
    /// Attempts before giving up on records the broker keeps acknowledging without an offset; they
    /// are then reported as failed, so the stage does not move its input offsets past them.
    static let confirmationAttempts = 5

    /// Sends records like ``KafkaProducer/sendBatch(_:)`` and re-sends every record that was
    /// acknowledged without an offset (implicitly), logging a warning that names them, until the broker
    /// gives each one an offset: a batch without failures then means the broker wrote every record.
    /// Records still acknowledged without an offset after 5 sends are reported failed (`UNCONFIRMED`,
    /// retriable), so a stage does not move its input offsets past them.
    ///
    /// On a real broker an implicit acknowledgement is true, so a re-send writes the record a second
    /// time: a duplicate with the same `sf.id`, which the pipeline absorbs (at-least-once between
    /// topics, the sink upserts by key). Only with `enable.idempotence=true` and `acks` other than 0;
    /// otherwise it is ``KafkaProducer/sendBatch(_:)``.
    public func sendConfirmed(_ messages: [KafkaProducerMessage], logger: Logger) async -> KafkaBatchDelivery {
        var delivery = await sendBatch(messages)
        // Without idempotence (or with acks=0) no implicit acknowledgement exists, and acks=0 reports carry no offsets.
        guard properties["enable.idempotence"] == "true", properties["acks"] != "0" else {
            delivery.withoutOffset = []
            return delivery
        }
        var unconfirmed = delivery.withoutOffset.map(\.index)
        var partitions = Dictionary(uniqueKeysWithValues: delivery.withoutOffset.map { ($0.index, $0.partition) })
        delivery.withoutOffset = []
        var attempt = 1
        while !unconfirmed.isEmpty {
            let ids = unconfirmed.prefix(20).map {
                messages[$0].header(RecordHeader.id)?.value.map { String(decoding: $0, as: UTF8.self) } ?? "?"
            }
            let places = Set(unconfirmed.map { "\(messages[$0].topic)[\(partitions[$0] ?? -1)]" }).sorted()
            guard attempt < Self.confirmationAttempts else {
                logger.error(
                    "records still acknowledged without an offset after \(attempt) sends; failing them",
                    metadata: [
                        "count": "\(unconfirmed.count)", "partitions": "\(places.joined(separator: ","))",
                        "ids": "\(ids.joined(separator: ","))",
                    ])
                for i in unconfirmed {
                    delivery.failures.append(
                        .init(
                            index: i, topic: messages[i].topic,
                            error: KafkaError(
                                code: 0, codeName: "UNCONFIRMED",
                                message: "the broker acknowledged the record only implicitly, \(attempt) times", isRetriable: true)))
                }
                delivery.failures.sort { $0.index < $1.index }
                break
            }
            logger.warning(
                "implicitly acknowledged records (a failed request, then a later one succeeded): sending them again",
                metadata: [
                    "count": "\(unconfirmed.count)", "partitions": "\(places.joined(separator: ","))",
                    "ids": "\(ids.joined(separator: ","))",
                ])
            let again = await sendBatch(unconfirmed.map { messages[$0] })
            // Indices of `again` are positions in `unconfirmed`.
            for f in again.failures {
                delivery.failures.append(.init(index: unconfirmed[f.index], topic: f.topic, error: f.error))
            }
            delivery.failures.sort { $0.index < $1.index }
            for u in again.withoutOffset { partitions[unconfirmed[u.index]] = u.partition }
            unconfirmed = again.withoutOffset.map { unconfirmed[$0.index] }
            attempt += 1
        }
        return delivery
    }
}
