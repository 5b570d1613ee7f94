import EmbeddedBroker
import Foundation
import Testing

@testable import Kafka

@Suite("Batch send and forwarded records against the embedded broker", .serialized, .timeLimit(.minutes(2)))
struct BatchSendTests {
    @Test("sendBatch: one completion for the batch; delivered records in order, the refused ones by index")
    func batchOutcome() async throws {
        let topic = uniqueName("batch")
        let broker = try await launchBroker(topics: [topic: 1])
        var config = producerConfig(broker.bootstrapServers)
        // A record over the limit is refused when it is queued (MSG_SIZE_TOO_LARGE), the rest go through.
        config.properties["message.max.bytes"] = "2000"
        let producer = try KafkaProducer(configuration: config)
        let big = [UInt8](repeating: 120, count: 4000)
        let messages = (0..<50).map { i in
            KafkaProducerMessage(topic: topic, partition: 0, key: bytes("k\(i)"), value: i == 7 || i == 31 ? big : bytes("v\(i)"))
        }
        let delivery = await producer.sendBatch(messages)
        #expect(delivery.count == 50)
        #expect(delivery.failures.map(\.index) == [7, 31], "\(delivery.failures)")
        #expect(delivery.failures.allSatisfy { $0.topic == topic && $0.error.codeName == "MSG_SIZE_TOO_LARGE" }, "\(delivery.failures)")
        #expect(delivery.withoutOffset.isEmpty)
        #expect(await producer.sendBatch([]).count == 0)
        await producer.shutdown()

        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        try await consumer.assign([KafkaTopicPartition(topic: topic, partition: 0)], startingAt: .beginning)
        let got = try await collect(consumer, count: 48)
        await consumer.close()
        let expected = (0..<50).filter { $0 != 7 && $0 != 31 }.map { "v\($0)" }
        #expect(got.map { text($0.value) ?? "" } == expected)
        _ = try await broker.terminate()
    }

    @Test("sendBatch on a shut-down producer fails every record, and never hangs")
    func batchAfterShutdown() async throws {
        let broker = try await launchBroker(topics: ["t": 1])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        await producer.shutdown()
        let delivery = await producer.sendBatch((0..<3).map { KafkaProducerMessage(topic: "t", value: bytes("\($0)")) })
        #expect(delivery.failures.map(\.index) == [0, 1, 2])
        #expect(delivery.failures.allSatisfy { $0.error.codeName == "CLOSED" }, "\(delivery.failures)")
        _ = try await broker.terminate()
    }

    @Test("a forwarded record carries the input's key, value and headers, with the header edits applied")
    func forwardedRecords() async throws {
        let input = uniqueName("fwd-in")
        let output = uniqueName("fwd-out")
        let broker = try await launchBroker(topics: [input: 1, output: 1])
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        var sent: [KafkaProducerMessage] = []
        for i in 0..<20 {
            sent.append(
                KafkaProducerMessage(
                    topic: input, partition: 0, key: i == 3 ? nil : bytes("key-\(i)"),
                    value: i == 5 ? nil : (i == 6 ? [] : bytes("value-\(i)")),
                    headers: i == 9
                        ? []
                        : [
                            KafkaHeader(key: "sf.id", value: "id-\(i)"), KafkaHeader(key: "traceparent", value: "old-\(i)"),
                            KafkaHeader(key: "tracestate", value: "st"), KafkaHeader(key: "nil", value: nil),
                            KafkaHeader(key: "traceparent", value: "old-dup-\(i)"),
                        ]))
        }
        #expect(await producer.sendBatch(sent).succeeded)

        let consumer = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        try await consumer.assign([KafkaTopicPartition(topic: input, partition: 0)], startingAt: .beginning)
        let consumed = try await collect(consumer, count: 20)
        let added = KafkaHeader(key: "traceparent", value: "new")
        // Odd records get their new traceparent as an inline header (no Swift heap array), after an
        // ordinary added header.
        var forwarded = consumed.enumerated().map { i, m in
            i % 2 == 0
                ? KafkaProducerMessage(forwarding: m, to: output, removingHeaders: ["tracestate"], addingHeaders: [added])
                : KafkaProducerMessage(
                    forwarding: m, to: output, removingHeaders: ["tracestate"], addingHeaders: [KafkaHeader(key: "x", value: "1")],
                    inlineHeader: KafkaInlineHeader(key: "traceparent", value: bytes("inline-\(i)")))
        }
        // The same edits on an input built in Swift (not consumed) take the owned path.
        let owned = KafkaMessage(
            topic: input, partition: 0, offset: 99, key: bytes("own"), value: bytes("owned"),
            headers: [KafkaHeader(key: "traceparent", value: "x"), KafkaHeader(key: "a", value: "b")])
        forwarded.append(KafkaProducerMessage(forwarding: owned, to: output, removingHeaders: ["tracestate"], addingHeaders: [added]))
        #expect(forwarded.allSatisfy { $0.isForwarded })
        // What the record reads as in Swift is what the broker gets.
        #expect(forwarded[0].header("traceparent") == added && forwarded[0].header("tracestate") == nil)
        #expect(forwarded[0].header("sf.id")?.value == bytes("id-0"))
        let delivery = await producer.sendBatch(forwarded)
        #expect(delivery.succeeded, "\(delivery.failures)")
        await consumer.close()

        let reader = try KafkaConsumer(configuration: consumerConfig(broker.bootstrapServers, group: nil))
        try await reader.assign([KafkaTopicPartition(topic: output, partition: 0)], startingAt: .beginning)
        let got = try await collect(reader, count: 21)
        await reader.close()
        await producer.shutdown()
        #expect(got.count == 21)
        for (i, m) in got.enumerated() {
            let want = forwarded[i]
            #expect(m.key == want.key, "record \(i)")
            #expect(m.value == want.value, "record \(i)")
            #expect(m.headers == want.headers, "record \(i): \(m.headers)")
        }
        #expect(got[3].key == nil && got[5].value == nil && got[6].value == [])
        #expect(got[0].headers.map(\.key) == ["sf.id", "nil", "traceparent"])
        #expect(got[1].headers.map(\.key) == ["sf.id", "nil", "x", "traceparent"])
        #expect(got[1].header("traceparent")?.value == bytes("inline-1"), "the inline header replaces both old traceparents")
        #expect(forwarded[1].header("traceparent")?.value == bytes("inline-1"))
        #expect(
            got[9].headers == [KafkaHeader(key: "x", value: "1"), KafkaHeader(key: "traceparent", value: "inline-9")], "no input headers")
        #expect(got[20].headers == [KafkaHeader(key: "a", value: "b"), added])
        _ = try await broker.terminate()
    }

    @Test("an inline header holds up to 64 bytes in place and compares by content")
    func inlineHeaders() {
        let full = [UInt8](repeating: 0x61, count: KafkaInlineHeader.capacity)
        let h = KafkaInlineHeader(key: "traceparent", value: full)
        #expect(h?.value == full && h?.count == 64 && h?.header == KafkaHeader(key: "traceparent", value: full))
        #expect(KafkaInlineHeader(key: "k", value: full + [0x62]) == nil, "longer than the capacity")
        #expect(KafkaInlineHeader(key: "k", value: [])?.value == [])
        #expect(KafkaInlineHeader(key: "k", value: bytes("ab")) == KafkaInlineHeader(key: "k", value: bytes("ab")))
        #expect(KafkaInlineHeader(key: "k", value: bytes("ab")) != KafkaInlineHeader(key: "k", value: bytes("ac")))
        #expect(KafkaInlineHeader(key: "k", value: bytes("ab")) != KafkaInlineHeader(key: "j", value: bytes("ab")))
        let written = KafkaInlineHeader(key: "k") { buffer in
            buffer.storeBytes(of: 0x7A, toByteOffset: 0, as: UInt8.self)
            return 1_000 // clamped to the buffer
        }
        #expect(written.count == 64 && written.value.first == 0x7A)
    }
}
