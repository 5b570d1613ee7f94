import Foundation
import Kafka
import Pipeline
import PipelineModel
import StreamCore
import Testing
import Validation

/// The `sf.id`s of one input's outputs, in the process handler and in a stateful process stage's
/// routed records alike: the input's id for the first output to a topic, `<id>#n` for further ones,
/// and the derived id for an input that came without one. Two outputs to one topic must never share
/// an id: a sink upserting by id would keep only one of them.
@Suite struct OutputIDsTests {
    static func spec(process: String) throws -> PipelineSpec {
        try PipelineSpec.parse(
            yaml: """
                name: t
                topics:
                  raw: { name: raw }
                  out: { name: out }
                  alerts: { name: alerts }
                  changelog: { name: changelog }
                  dead: { name: dead }
                dead_letter: dead
                process:
                  input: raw
                  output: out
                \(process)
                """, file: "/tmp/t.yaml", environment: [:])
    }

    /// Two rules that both copy a hot reading to `alerts`, then the record goes on.
    static let steps = """
          steps:
            - route:
                rules:
                  - { when: "t > 30", to: alerts, copy: true }
                  - { when: "t > 40", to: alerts, copy: true }
        """

    static func message(withID: Bool) -> KafkaMessage {
        KafkaMessage(
            topic: "raw", partition: 2, offset: 17, key: Array("s1".utf8), value: Array(#"{"s":"s1","t":45,"ts":1000}"#.utf8),
            headers: withID ? [KafkaHeader(key: RecordHeader.id, value: "r-9")] : [])
    }

    static func ids(_ outcome: StageOutcome, topic: String) -> [String] {
        guard case .forward(let outputs) = outcome else { return [] }
        return outputs.filter { $0.topic == topic }.map { o in
            let values = o.headers.filter { $0.key == RecordHeader.id }.map { String(decoding: $0.value ?? [], as: UTF8.self) }
            return values.count == 1 ? values[0] : "\(values.count) sf.id headers"
        }
    }

    @Test(arguments: [true, false])
    func processHandler(inputHasID: Bool) throws {
        let spec = try Self.spec(process: Self.steps)
        let handler = try ProcessHandler.make(spec: spec, common: try spec.stage(.process))
        let outcome = handler.outcome(for: Self.message(withID: inputHasID))
        let id = inputHasID ? "r-9" : "raw:2:17"
        #expect(Self.ids(outcome, topic: "alerts") == [id, "\(id)#1"])
        #expect(Self.ids(outcome, topic: "out") == [id])
    }

    @Test(arguments: [true, false])
    func statefulStageRoutedRecords(inputHasID: Bool) throws {
        let spec = try Self.spec(
            process: Self.steps + """

                  window: { type: tumbling, size: 1m, time: ts, key: s, aggregate: { n: count() } }
                  state: { changelog: changelog }
                """)
        let config = try StatefulProcessConfig.make(spec: spec, common: try spec.stage(.process))
        let handler = StatefulTestHandler(config: config)
        let outcome = handler.outcome(for: Self.message(withID: inputHasID))
        let id = inputHasID ? "r-9" : "raw:2:17"
        #expect(Self.ids(outcome, topic: "alerts") == [id, "\(id)#1"])
    }
}

/// Every consuming stage refuses a tombstone and bytes that are not JSON with the same reason (one
/// decoding path, `KafkaMessage.decodeJSON`): what a dead letter says must not depend on the stage,
/// nor on whether it ran in a worker or in the inline tests.
@Suite struct UndecodableRecordTests {
    static func handlers() throws -> [(String, any StageHandler)] {
        let spec = try OutputIDsTests.spec(process: OutputIDsTests.steps)
        let stateful = try OutputIDsTests.spec(
            process: """
                  window: { type: tumbling, size: 1m, time: ts, key: s, aggregate: { n: count() } }
                  state: { changelog: changelog }
                """)
        let passThrough = try OutputIDsTests.spec(process: "  steps: []")
        return [
            ("process", try ProcessHandler.make(spec: spec, common: try spec.stage(.process))),
            ("process steps: []", try ProcessHandler.make(spec: passThrough, common: try passThrough.stage(.process))),
            (
                "stateful (inline tests)",
                StatefulTestHandler(config: try StatefulProcessConfig.make(spec: stateful, common: try stateful.stage(.process)))
            ),
            ("validate", ValidateHandler(schema: try JSONSchema(["type": "object"]), schemaName: "s", output: "out")),
        ]
    }

    @Test func tombstonesAndMalformedBytesGetOneReason() throws {
        let expected = try #require(
            { () -> DeadLetterReason? in
                do throws(JSONParseError) {
                    _ = try JSONValue.parse(Array(#"{"s":"#.utf8))
                    return nil
                } catch {
                    return .malformedJSON(error)
                }
            }())
        for (name, handler) in try Self.handlers() {
            let tombstone = KafkaMessage(topic: "raw", partition: 0, offset: 1, key: nil, value: nil, headers: [])
            let malformed = KafkaMessage(topic: "raw", partition: 0, offset: 2, key: nil, value: Array(#"{"s":"#.utf8), headers: [])
            guard case .deadLetter(let t) = handler.outcome(for: tombstone), case .deadLetter(let m) = handler.outcome(for: malformed)
            else {
                Issue.record("\(name): not dead-lettered")
                continue
            }
            #expect(t == .tombstone, "\(name)")
            #expect(m == expected, "\(name): \(m.message)")
        }
    }
}
