import Foundation
import Kafka
import Pipeline
import PipelineModel
import Processing
import StreamCore
import Testing

/// The push-style handler API: what a handler emits goes straight into the batch, a dead letter
/// withdraws the record's outputs (and only its own), and a forwarded input carries the stage's span.
@Suite struct StageEmitterTests {
    static func message(_ value: String, offset: Int64 = 0, headers: [KafkaHeader] = []) -> KafkaMessage {
        KafkaMessage(topic: "in", partition: 0, offset: offset, key: Array("k".utf8), value: Array(value.utf8), headers: headers)
    }

    static func traced(_ handler: any StageHandler) -> TracedHandler {
        TracedHandler(
            handler: handler, deadLetters: DeadLetterWriter(pipeline: "p", stage: "process", topic: "dead"),
            tracer: RecordTracer(stage: "process", pipeline: "p", topic: "in", group: "p.process", tracer: PropagatingTracer()))
    }

    static func text(_ message: KafkaProducerMessage) -> String { String(decoding: message.value ?? [], as: UTF8.self) }

    /// Emits `a` and `b`, then dead-letters records whose value is `"bad"`; forwards `"fwd"` as it is.
    struct EmitThenRefuse: StageHandler {
        func handle(_ message: KafkaMessage, into emitter: inout StageEmitter) {
            let value = String(decoding: message.value ?? [], as: UTF8.self)
            if value == "\"fwd\"" { return emitter.forwardInput(to: "out", addingHeaders: [KafkaHeader(key: "x", value: "1")]) }
            emitter.emit(topic: "out", key: nil, value: Array("a".utf8), headers: [])
            emitter.emit(topic: "out", key: nil, value: Array("b".utf8), headers: [])
            guard value == "\"bad\"" else { return }
            emitter.deadLetter(DeadLetterReason(component: "test", errorClass: "First", message: "refused"))
            emitter.emit(topic: "out", key: nil, value: Array("after".utf8), headers: [])
            emitter.deadLetter(DeadLetterReason(component: "test", errorClass: "Second", message: "ignored"))
        }
    }

    @Test func aDeadLetterWithdrawsOnlyItsOwnRecordsOutputs() {
        let traced = Self.traced(EmitThenRefuse())
        var batch: [KafkaProducerMessage] = []
        guard case .forwarded(2) = traced.handle(Self.message("\"ok\""), nowMs: 0, into: &batch) else {
            Issue.record("the first record should give two outputs")
            return
        }
        guard case .deadLettered(let reason) = traced.handle(Self.message("\"bad\"", offset: 1), nowMs: 0, into: &batch) else {
            Issue.record("the second record should be dead-lettered")
            return
        }
        #expect(reason.errorClass == "First", "the first reason given is kept")
        #expect(batch.map(\.topic) == ["out", "out", "dead"])
        #expect(batch.map(Self.text) == ["a", "b", "\"bad\""], "the earlier record's outputs stay; the refused one's are withdrawn")
        #expect(batch[2].header(DeadLetterHeader.exceptionClass)?.value == Array("First".utf8))
    }

    @Test func theValueFormSaysTheSame() {
        let handler = EmitThenRefuse()
        guard case .forward(let outputs) = handler.outcome(for: Self.message("\"ok\"")) else {
            Issue.record("expected outputs")
            return
        }
        #expect(outputs.map { String(decoding: $0.value, as: UTF8.self) } == ["a", "b"])
        guard case .deadLetter(let reason) = handler.outcome(for: Self.message("\"bad\"")) else {
            Issue.record("expected a dead letter")
            return
        }
        #expect(reason.errorClass == "First")
    }

    /// A forwarded input keeps its bytes and headers, gets the header edits, and its trace context
    /// is replaced by the stage's span (one `traceparent`, never two).
    @Test func aForwardedInputCarriesTheStagesSpan() throws {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        let input = Self.message(
            "\"fwd\"", headers: [KafkaHeader(key: "sf.id", value: "r-1"), KafkaHeader(key: RecordHeader.traceParent, value: parent)])
        var batch: [KafkaProducerMessage] = []
        guard case .forwarded(1) = Self.traced(EmitThenRefuse()).handle(input, nowMs: 0, into: &batch) else {
            Issue.record("expected the input forwarded")
            return
        }
        let out = try #require(batch.first)
        #expect(out.isForwarded && Self.text(out) == "\"fwd\"" && out.key == Array("k".utf8))
        #expect(out.header("sf.id")?.value == Array("r-1".utf8) && out.header("x")?.value == Array("1".utf8))
        let traceparents = out.headers.filter { $0.key == RecordHeader.traceParent }.map { String(decoding: $0.value ?? [], as: UTF8.self) }
        #expect(traceparents.count == 1)
        #expect(traceparents.first?.hasPrefix("00-0af7651916cd43dd8448eb211c80319c-") == true, "same trace")
        #expect(traceparents.first != parent, "a new span of that trace")
    }

    /// A route to an undeclared topic after an output already emitted: the record is refused whole.
    @Test func aBadRouteRefusesTheWholeRecord() throws {
        let spec = try PipelineSpec.parse(
            yaml: """
                name: t
                topics: { raw: { name: raw }, out: { name: out }, dead: { name: dead } }
                dead_letter: dead
                process: { input: raw, output: out }
                """, file: "/tmp/t.yaml", environment: [:])
        struct TwoOutputs: RecordProcessor {
            func process(_ value: JSONValue, context: RecordContext) throws(ProcessingError) -> [ProcessorOutput] {
                [ProcessorOutput(value: value), ProcessorOutput(value: value, route: "nowhere")]
            }
        }
        let handler = try ProcessHandler.make(spec: spec, common: try spec.stage(.process), custom: TwoOutputs())
        var batch: [KafkaProducerMessage] = []
        guard case .deadLettered(let reason) = Self.traced(handler).handle(Self.message("{\"a\":1}"), nowMs: 0, into: &batch) else {
            Issue.record("expected a dead letter")
            return
        }
        #expect(reason.errorClass == DeadLetterClass.unknownRoute)
        #expect(batch.map(\.topic) == ["dead"], "no output of the refused record is produced")
    }
}
