import Config
import Foundation
import Processing
import StreamCore
import Testing

/// `enrich:` with `topic:` against an in-memory ``LookupTable`` (the process stage supplies a
/// Kafka-fed one; see Tests/PipelineTests/LiveTableTests.swift).
@Suite struct EnrichFromTopicTests {
    /// A table that says it refused rows.
    final class IncompleteTable: LookupTable {
        func row(forKey key: String) -> [String: JSONValue]? { key == "s1" ? ["site": "north"] : nil }
        var incompleteReason: String? { "max_rows reached" }
    }

    static func node(_ yaml: String) throws -> ConfigNode {
        try ConfigNode.parse(yaml: yaml, source: ConfigSource(file: "test.yaml", environment: [:]))
    }

    /// Compiles `yaml` with every table topic served by `table`; returns the requests made.
    static func processor(_ yaml: String, table: any LookupTable) throws -> (StepProcessor, [LookupTableRequest]) {
        var requests: [LookupTableRequest] = []
        let p = try StepProcessor(steps: try node(yaml), baseDirectory: "/nonexistent") { request throws(ConfigError) -> any LookupTable in
            requests.append(request)
            return table
        }
        return (p, requests)
    }

    @Test func addsTheRowOfTheMatchingKeyAndSeesUpdatesAndDeletes() throws {
        let table = InMemoryLookupTable(["s1": ["site": "north", "floor": 2]])
        let (p, requests) = try Self.processor("- enrich: { topic: sensors, match: sensor_id }", table: table)
        #expect(p.tableTopics == ["sensors"])
        #expect(requests.map(\.topic) == ["sensors"])
        #expect(requests.first?.maxRows == 1_000_000, "the default bound")
        #expect(
            try p.process(["sensor_id": "s1", "t": 20], context: .none)
                == [ProcessorOutput(value: ["sensor_id": "s1", "t": 20, "site": "north", "floor": 2])])
        #expect(try p.process(["sensor_id": "s9"], context: .none) == [ProcessorOutput(value: ["sensor_id": "s9"])], "missing: keep")

        // The row current when the record is processed is the one joined.
        table.set(["site": "south"], forKey: "s1")
        #expect(try p.process(["sensor_id": "s1"], context: .none).first?.value == ["sensor_id": "s1", "site": "south"])
        table.set(nil, forKey: "s1")
        #expect(try p.process(["sensor_id": "s1"], context: .none).first?.value == ["sensor_id": "s1"])
    }

    @Test func nonStringLookupValuesCompareAsTheirJSONTextAndNullNeverMatches() throws {
        let table = InMemoryLookupTable(["42": ["name": "answer"], "null": ["name": "not a key"]])
        let (p, _) = try Self.processor("- enrich: { topic: t, match: id, missing: filter }", table: table)
        #expect(try p.process(["id": 42], context: .none).first?.value == ["id": 42, "name": "answer"])
        #expect(try p.process(["id": .null], context: .none).isEmpty)
        #expect(try p.process(["other": 1], context: .none).isEmpty)
    }

    @Test func fieldsIntoAndDeadLetterWhenMissing() throws {
        let table = InMemoryLookupTable(["s1": ["site": "north", "floor": 2, "secret": "x"]])
        let (p, requests) = try Self.processor(
            """
            - enrich:
                topic: sensors
                match: "lower(sensor)"
                fields: [site, floor]
                into: meta.sensor
                missing: dead-letter
                max_rows: 10
            """, table: table)
        #expect(requests.first?.maxRows == 10)
        #expect(
            try p.process(["sensor": "S1", "meta": ["a": 1]], context: .none).first?.value
                == ["sensor": "S1", "meta": ["a": 1, "sensor": ["site": "north", "floor": 2]]])
        let error = #expect(throws: ProcessingError.self) { try p.process(["sensor": "S2"], context: .none) }
        #expect(error?.errorClass == "EnrichmentMissing")
        #expect(error?.step == "steps[0].enrich")
        #expect(error?.message.contains("\"s2\" in topic sensors") == true, "\(error?.message ?? "")")
    }

    @Test(arguments: ["keep", "filter", "dead-letter"])
    func anIncompleteTableDeadLettersMissesWhateverTheMissingPolicy(missing: String) throws {
        let (p, _) = try Self.processor("- enrich: { topic: sensors, match: id, missing: \(missing) }", table: IncompleteTable())
        #expect(try p.process(["id": "s1"], context: .none).first?.value == ["id": "s1", "site": "north"], "hits still join")
        let error = #expect(throws: ProcessingError.self) { try p.process(["id": "s2"], context: .none) }
        #expect(error?.errorClass == "EnrichmentTableIncomplete")
        #expect(error?.message.contains("max_rows reached") == true)
    }

    @Test func stepsOnTheSameTopicAskTheProviderPerStep() throws {
        let table = InMemoryLookupTable(["a": ["x": 1], "b": ["y": 2]])
        let (p, requests) = try Self.processor(
            """
            - enrich: { topic: t, match: k1 }
            - enrich: { topic: t, match: k2 }
            """, table: table)
        #expect(requests.count == 2)
        #expect(p.tableTopics == ["t"])
        #expect(try p.process(["k1": "a", "k2": "b"], context: .none).first?.value == ["k1": "a", "k2": "b", "x": 1, "y": 2])
    }

    @Test(arguments: [
        ("- enrich: { match: a }", "needs 'table'"),
        ("- enrich: { table: x.csv, topic: t, match: a, on: a }", "enrich.topic"),
        ("- enrich: { topic: t, match: a, on: a }", "compared with the topic's Kafka key"),
        ("- enrich: { topic: t, match: a, max_rows: 0 }", "max_rows"),
        ("- enrich: { table: x.csv, match: a, on: a, max_rows: 5 }", "max_rows"),
        ("- enrich: { topic: t }", "match"),
    ])
    func badTopicEnrichmentFailsAtStartNamingTheKey(yaml: String, fragment: String) {
        let error = #expect(throws: ConfigError.self) { try Self.processor(yaml, table: InMemoryLookupTable()) }
        let text = error?.description ?? ""
        #expect(text.contains(fragment), "\(yaml) → \(text)")
        #expect(text.hasPrefix("test.yaml:"), "\(text)")
    }

    @Test func withoutAProviderATopicTableIsRefused() throws {
        let error = #expect(throws: ConfigError.self) {
            try StepProcessor(steps: try Self.node("- enrich: { topic: t, match: a }"), baseDirectory: "/")
        }
        #expect(error?.description.contains("only available in a process stage") == true, "\(error?.description ?? "")")
    }
}
