import Config
import Foundation
import Processing
import StreamCore
import Testing

@Suite struct StepProcessorTests {
    static let directory: String = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-steps-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try? "sensor_id,building,floor,note\nsensor-001,North,2,\"corner, by the window\"\nsensor-002,South,1,\n"
            .write(to: dir.appendingPathComponent("sensors.csv"), atomically: true, encoding: .utf8)
        try? #"[{"code":"DE","country":"Germany"},{"code":"FR","country":"France"}]"#
            .write(to: dir.appendingPathComponent("countries.json"), atomically: true, encoding: .utf8)
        return dir.path
    }()

    static func processor(_ yaml: String) throws -> StepProcessor {
        let node = try ConfigNode.parse(yaml: yaml, source: ConfigSource(file: "test.yaml", environment: [:]))
        return try StepProcessor(steps: node, baseDirectory: directory)
    }

    static func run(_ yaml: String, _ value: JSONValue) throws -> [ProcessorOutput] {
        try processor(yaml).process(value, context: .none)
    }

    @Test func setSeesEarlierAssignmentsAndCreatesNestedFields() throws {
        let out = try Self.run(
            """
            - set:
                f: "c * 9 / 5 + 32"
                hot: "f > 86"
                meta.unit: "\\"F\\""
            """, ["c": 35])
        #expect(out == [ProcessorOutput(value: ["c": 35, "f": 95, "hot": true, "meta": ["unit": "F"]])])
    }

    @Test func filterKeepsOnlyTrueRecordsAndNullIsFalse() throws {
        let p = try Self.processor("- filter: \"level >= 3\"")
        #expect(try p.process(["level": 3], context: .none).count == 1)
        #expect(try p.process(["level": 2], context: .none).isEmpty)
        #expect(try p.process(["other": 9], context: .none).isEmpty)
    }

    @Test func renameDropKeep() throws {
        let v: JSONValue = ["a": 1, "b": ["c": 2, "d": 3], "e": 4]
        #expect(try Self.run("- rename: { a: x, b.c: y }", v).first?.value == ["x": 1, "y": 2, "b": ["d": 3], "e": 4])
        #expect(try Self.run("- drop: [a, b.d]", v).first?.value == ["b": ["c": 2], "e": 4])
        #expect(try Self.run("- keep: [a, b.c, missing]", v).first?.value == ["a": 1, "b": ["c": 2]])
    }

    @Test func enrichFromCSVAddsColumnsWithInferredTypes() throws {
        let steps = """
            - enrich:
                table: sensors.csv
                match: sensor_id
                on: sensor_id
            """
        let out = try Self.run(steps, ["sensor_id": "sensor-001", "t": 20])
        #expect(out.first?.value == ["sensor_id": "sensor-001", "t": 20, "building": "North", "floor": 2, "note": "corner, by the window"])
    }

    @Test func enrichIntoAFieldFromJSONAndMissingPolicies() throws {
        let base = """
            - enrich:
                table: countries.json
                match: "upper(cc)"
                on: code
                fields: [country]
                into: geo
            """
        #expect(try Self.run(base, ["cc": "de"]).first?.value == ["cc": "de", "geo": ["country": "Germany"]])
        #expect(try Self.run(base, ["cc": "xx"]).first?.value == ["cc": "xx"], "missing: keep is the default")
        #expect(try Self.run(base + "\n    missing: filter", ["cc": "xx"]).isEmpty)
        let error = #expect(throws: ProcessingError.self) { try Self.run(base + "\n    missing: dead-letter", ["cc": "xx"]) }
        #expect(error?.errorClass == "EnrichmentMissing")
        #expect(error?.message.contains("\"XX\"") == true)
    }

    @Test func routeFirstMatchWinsCopyContinuesDefaultApplies() throws {
        let steps = """
            - route:
                rules:
                  - { when: "t > 30", to: alerts, copy: true }
                  - { when: "t < 0", to: frozen }
                  - { when: "t > 40", to: never-reached-when-copy-rule-matched-first }
                default: normal
            """
        let p = try Self.processor(steps)
        #expect(p.routes == ["alerts", "frozen", "never-reached-when-copy-rule-matched-first", "normal"])
        #expect(try p.process(["t": 35], context: .none).map(\.route) == ["alerts", "normal"])
        #expect(try p.process(["t": 45], context: .none).map(\.route) == ["alerts", "never-reached-when-copy-rule-matched-first"])
        #expect(try p.process(["t": -5], context: .none).map(\.route) == ["frozen"])
        #expect(try p.process(["t": 10], context: .none).map(\.route) == ["normal"])
    }

    @Test func routeDefaultDropAndTheStageOutputWhenNoDefault() throws {
        let drop = try Self.processor("- route: { rules: [ { when: \"keep\", to: kept } ], default: drop }")
        #expect(try drop.process(["keep": false], context: .none).isEmpty)
        let list = try Self.processor("- route: [ { when: \"keep\", to: kept } ]")
        #expect(try list.process(["keep": false], context: .none).map(\.route) == [nil], "nil means the stage's output topic")
    }

    @Test func aRuntimeErrorNamesTheStepAndAssignment() throws {
        let error = #expect(throws: ProcessingError.self) {
            try Self.run("- set:\n    ratio: \"a / b\"", ["a": 1, "b": 0])
        }
        #expect(error?.step == "steps[0].set.ratio")
        #expect(error?.errorClass == "ExpressionError")
        #expect(error?.message.contains("division by zero") == true)
    }

    @Test(arguments: [
        ("- frobnicate: x", "unknown step"),
        ("- filter: \"a >\"", "column"),
        ("- set: { x: \"nosuch(1)\" }", "unknown function"),
        ("- rename: { \"a +\": b }", "not a field path"),
        ("- enrich: { table: nope.csv, match: a, on: a }", "cannot load"),
        ("- enrich: { table: sensors.csv, match: a, on: sensor_id, fields: [colour] }", "no column 'colour'"),
        ("- enrich: { table: sensors.csv, match: a, on: sensor_id, missing: ignore }", "missing"),
        ("- route: [ { when: x } ]", "to"),
        ("- filter: a\n  set: { b: 1 }", "one key per list item"),
    ])
    func badStepsFailAtStartNamingTheLine(yaml: String, fragment: String) {
        let error = #expect(throws: ConfigError.self) { try Self.processor(yaml) }
        let text = error?.description ?? ""
        #expect(text.contains(fragment), "\(yaml) → \(text)")
        #expect(text.hasPrefix("test.yaml:"), "\(text)")
    }

    @Test func chainRunsProcessorsInOrderAndFansOut() throws {
        let split = try Self.processor("- route: [ { when: \"true\", to: a, copy: true } ]")
        let tag = try Self.processor("- set: { tagged: \"true\" }")
        let chain = ProcessorChain([split, tag])
        let out = try chain.process(["x": 1], context: .none)
        #expect(out.count == 2)
        #expect(out.allSatisfy { $0.value == ["x": 1, "tagged": true] })
        #expect(out.map(\.route) == ["a", nil])
    }
}

@Suite struct CSVTests {
    @Test func quotedFieldsEscapedQuotesLineBreaksAndCRLF() throws {
        let rows = try CSV.parse("a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\r\n\"multi\nline\",2\n")
        #expect(rows == [["a", "b"], ["x, y", "say \"hi\""], ["multi\nline", "2"]])
    }

    @Test func unterminatedQuoteIsAnError() {
        #expect(throws: CSV.Failure.self) { try CSV.parse("a\n\"open") }
    }

    @Test func inference() {
        #expect(CSV.infer("12") == 12)
        #expect(CSV.infer("1.5") == 1.5)
        #expect(CSV.infer("true") == true)
        #expect(CSV.infer("") == .null)
        #expect(CSV.infer("007x") == "007x")
    }
}
