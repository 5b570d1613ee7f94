import Foundation
import Kafka
import Pipeline
import PipelineModel
import StreamCore
import Testing

/// Hostile and broken records through the real validate and process handlers of the demo pipeline:
/// each is dead-lettered with a clear reason — never a crash, never silently passed on.
@Suite struct HostileInputTests {
    static let spec: PipelineSpec? = {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("pipelines/iot-sensors.yaml").path
        return try? PipelineSpec.load(file: file, environment: [:])
    }()

    static func validate(_ bytes: [UInt8]?) throws -> StageOutcome {
        let spec = try #require(Self.spec)
        let handler = try ValidateHandler.make(spec: spec, common: try spec.stage(.validate))
        return handler.outcome(for: message(bytes))
    }

    static func message(_ bytes: [UInt8]?) -> KafkaMessage {
        KafkaMessage(topic: "iot.readings.raw", partition: 0, offset: 0, key: nil, value: bytes, headers: [])
    }

    static func reason(_ outcome: StageOutcome) -> DeadLetterReason? {
        if case .deadLetter(let r) = outcome { return r }
        return nil
    }

    static let valid = #"{"sensor_id":"sensor-001","seq":1,"ts":"2026-01-01T00:00:00Z","temperature_c":20,"humidity_pct":50}"#

    static let hostile: [(String, [UInt8], String, String)] = [
        ("empty value", [UInt8](), "MalformedJSON", "end of input"),
        ("binary garbage", [0x00, 0xFF, 0xFE, 0x80, 0x01], "MalformedJSON", "invalid JSON at byte 0"),
        (
            "invalid UTF-8 in a string", Array(#"{"sensor_id":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8), "MalformedJSON",
            "not valid UTF-8"
        ),
        ("truncated", Array(valid.utf8.dropLast(5)), "MalformedJSON", "invalid JSON"),
        ("two documents", Array((valid + valid).utf8), "MalformedJSON", "invalid JSON"),
        (
            "nested 10 000 deep", Array((String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)).utf8),
            "MalformedJSON", "nesting deeper"
        ),
        (
            "a number beyond double range", Array(valid.replacingOccurrences(of: "\"seq\":1", with: "\"seq\":1e999").utf8),
            "MalformedJSON", "out of range"
        ),
        (
            "a duplicate key", Array(valid.replacingOccurrences(of: "\"seq\":1", with: "\"seq\":1,\"seq\":2").utf8), "MalformedJSON",
            "duplicate key 'seq'"
        ),
        (
            "a huge number", Array(valid.replacingOccurrences(of: "\"temperature_c\":20", with: "\"temperature_c\":1e300").utf8),
            "SchemaViolation", "/temperature_c"
        ),
        (
            "wrong types", Array(valid.replacingOccurrences(of: "\"temperature_c\":20", with: "\"temperature_c\":\"hot\"").utf8),
            "SchemaViolation", "/temperature_c"
        ),
        (
            "a missing field", Array(valid.replacingOccurrences(of: ",\"humidity_pct\":50", with: "").utf8), "SchemaViolation",
            "humidity_pct"
        ),
        ("JSON null", Array("null".utf8), "SchemaViolation", "expected object"),
        ("a lone surrogate escape", Array(#"{"sensor_id":"\ud800"}"#.utf8), "MalformedJSON", "invalid JSON"),
    ]

    @Test(arguments: hostile)
    func isDeadLetteredWithAReason(name: String, bytes: [UInt8], errorClass: String, fragment: String) throws {
        let r = try #require(Self.reason(try Self.validate(bytes)), "\(name) was not dead-lettered")
        #expect(r.errorClass.rawValue == errorClass, "\(name): \(r.errorClass) \(r.message)")
        #expect(r.message.contains(fragment) || (r.violations?.jsonString.contains(fragment) ?? false), "\(name): \(r.message)")
    }

    /// `process` with `steps: []` forwards without a tree (a scan, the parser only when the scan is
    /// unsure): what is not JSON is refused with the parser's own reason, JSON passes byte for byte.
    @Test(arguments: hostile + [("an escaped key", Array(#"{"\u0061":1,"b":1e308}"#.utf8), "", "")])
    func passThroughRefusesWhatIsNotJSONAndForwardsTheRest(name: String, bytes: [UInt8], errorClass: String, fragment: String) throws {
        let spec = try PipelineSpec.parse(
            yaml: """
                name: t
                topics: { raw: { name: raw }, out: { name: out }, dead: { name: dead } }
                dead_letter: dead
                process: { input: raw, output: out, steps: [] }
                """, file: "/tmp/t.yaml", environment: [:])
        let handler = try ProcessHandler.make(spec: spec, common: try spec.stage(.process))
        let input = KafkaMessage(topic: "raw", partition: 0, offset: 7, key: nil, value: bytes, headers: [])
        let outcome = handler.outcome(for: input)
        if errorClass == "MalformedJSON" {
            let r = try #require(Self.reason(outcome), "\(name) was not dead-lettered")
            #expect(r.errorClass.rawValue == errorClass && r.message.contains(fragment), "\(name): \(r.errorClass) \(r.message)")
        } else {
            let out = outcome.outputs(for: input)
            guard out.count == 1 else {
                Issue.record("\(name) was not forwarded: \(outcome)")
                return
            }
            #expect(out[0].value == bytes && out[0].topic == "out", "\(name): forwarded byte for byte")
            #expect(out[0].headers.contains { $0.key == RecordHeader.id }, "\(name): the record gets its sf.id")
        }
    }

    @Test func aTombstoneIsDeadLettered() throws {
        let r = try #require(Self.reason(try Self.validate(nil)))
        #expect(r.errorClass == "MalformedJSON" && r.message.contains("tombstone"))
    }

    @Test func aTenMegabyteRecordIsHandledAndRefusedByTheSchema() throws {
        let big = Self.valid.replacingOccurrences(
            of: "\"humidity_pct\":50", with: "\"humidity_pct\":50,\"blob\":\"" + String(repeating: "x", count: 10 << 20) + "\"")
        let r = try #require(Self.reason(try Self.validate(Array(big.utf8))))
        #expect(r.errorClass == "SchemaViolation")
        #expect(r.message.count < 2000, "the reason stays short: \(r.message.count) characters")
    }

    @Test func theValidRecordPasses() throws {
        let out = try Self.validate(Array(Self.valid.utf8)).outputs(for: Self.message(Array(Self.valid.utf8)))
        guard !out.isEmpty else {
            Issue.record("the valid reading was not forwarded")
            return
        }
        #expect(out.first?.value == Array(Self.valid.utf8), "forwarded byte for byte")
    }
}
