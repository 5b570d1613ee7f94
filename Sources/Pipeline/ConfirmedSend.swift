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

    /// Sends records like ``send(_:)-([KafkaProducerMessage])`` and re-sends every record that was
    /// acknowledged without an offset (implicitly), logging a warning that names them, until the broker
    /// gives each one an offset: a report without an error then means the broker wrote the record.
    /// Records still acknowledged without an offset after 5 sends are reported failed (`UNCONFIRMED`,
    /// retriable), so a stage does not move its input offsets past them.
    ///
    /// On a real broker an implicit acknowledgement is true, so a re-send writes the record a second
    /// time: a duplicate with the same `sf.id`, which the pipeline absorbs (at-least-once between
    /// topics, the sink upserts by key). Only with `enable.idempotence=true` and `acks` other than 0;
    /// otherwise it is ``send(_:)-([KafkaProducerMessage])``.
    public func sendConfirmed(_ messages: [KafkaProducerMessage], logger: Logger) async -> [KafkaDeliveryReport] {
        var reports = await send(messages)
        // Without idempotence (or with acks=0) no implicit acknowledgement exists, and acks=0 reports carry no offsets.
        guard properties["enable.idempotence"] == "true", properties["acks"] != "0" else { return reports }
        var unconfirmed = reports.indices.filter { reports[$0].error == nil && reports[$0].offset < 0 }
        var attempt = 1
        while !unconfirmed.isEmpty {
            let ids = unconfirmed.prefix(20).map {
                messages[$0].header(RecordHeader.id)?.value.map { String(decoding: $0, as: UTF8.self) } ?? "?"
            }
            let places = Set(unconfirmed.map { "\(reports[$0].topic)[\(reports[$0].partition)]" }).sorted()
            guard attempt < Self.confirmationAttempts else {
                logger.error(
                    "records still acknowledged without an offset after \(attempt) sends; failing them",
                    metadata: [
                        "count": "\(unconfirmed.count)", "partitions": "\(places.joined(separator: ","))",
                        "ids": "\(ids.joined(separator: ","))",
                    ])
                for i in unconfirmed {
                    reports[i].error = KafkaError(
                        code: 0, codeName: "UNCONFIRMED", message: "the broker acknowledged the record only implicitly, \(attempt) times",
                        isRetriable: true)
                }
                break
            }
            logger.warning(
                "implicitly acknowledged records (a failed request, then a later one succeeded): sending them again",
                metadata: [
                    "count": "\(unconfirmed.count)", "partitions": "\(places.joined(separator: ","))",
                    "ids": "\(ids.joined(separator: ","))",
                ])
            let again = await send(unconfirmed.map { messages[$0] })
            for (k, i) in unconfirmed.enumerated() { reports[i] = again[k] }
            unconfirmed = unconfirmed.filter { reports[$0].error == nil && reports[$0].offset < 0 }
            attempt += 1
        }
        return reports
    }
}

extension KafkaProducerMessage {
    /// The first header with this key.
    func header(_ key: String) -> KafkaHeader? { headers.first { $0.key == key } }
}
