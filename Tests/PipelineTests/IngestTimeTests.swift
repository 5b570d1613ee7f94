import Kafka
import StreamCore
import Testing

@testable import Pipeline

/// `sf.ingest_time` is read in place for every record (end-to-end latency): it must read exactly
/// what `Int64(String)` reads.
@Suite struct IngestTimeTests {
    @Test func theInPlaceReadingAgreesWithInt64FromAString() {
        let inputs = [
            "", "-", "+", "0", "7", "0012", "1765000000000", "-5", "+7", "9223372036854775807", "9223372036854775808",
            "-9223372036854775808", "-9223372036854775809", "12a", " 12", "12 ", "1_000", "١٢", "--1", "+-1", "1e3",
        ]
        for text in inputs {
            let parsed = Array(text.utf8).withUnsafeBytes { KafkaMessage.decimalInt64($0) }
            #expect(parsed == Int64(text), "'\(text)'")
        }
    }

    @Test func aRecordsIngestTime() {
        func message(_ headers: [KafkaHeader]) -> KafkaMessage {
            KafkaMessage(topic: "t", partition: 0, offset: 0, key: nil, value: [], headers: headers)
        }
        #expect(message([KafkaHeader(key: RecordHeader.ingestTime, value: "1765000000123")]).ingestTimeMs == 1_765_000_000_123)
        #expect(message([]).ingestTimeMs == nil)
        #expect(message([KafkaHeader(key: RecordHeader.ingestTime, value: nil)]).ingestTimeMs == nil)
        #expect(message([KafkaHeader(key: RecordHeader.ingestTime, value: "soon")]).ingestTimeMs == nil)
    }
}
