import Config
import Foundation
import Pipeline
import PipelineModel
import PipelineTools
import Testing

/// The inline `tests:` of pipeline files: the shipped ones pass (CI runs them through this test),
/// and a wrong expectation fails with a readable reason.
@Suite struct PipelineTestRunnerTests {
    static let pipelines = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("pipelines")

    static var shipped: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: pipelines.path)) ?? []).filter { $0.hasSuffix(".yaml") }.sorted()
    }

    @Test(arguments: shipped) func theShippedPipelineTestsPass(file: String) throws {
        let spec = try PipelineSpec.load(file: Self.pipelines.appendingPathComponent(file).path, environment: [:])
        for result in try PipelineTestRunner(spec: spec).run() {
            #expect(result.passed, "\(file):\(result.line ?? 0) \(result.name):\n\(result.failures.joined(separator: "\n"))")
        }
    }

    @Test func theDemoPipelinesCarryTests() throws {
        for file in ["iot-sensors.yaml", "orders.yaml"] {
            let spec = try PipelineSpec.load(file: Self.pipelines.appendingPathComponent(file).path, environment: [:])
            #expect(try PipelineTestRunner(spec: spec).run().count >= 1, "\(file)")
        }
    }

    static func run(_ tests: String) throws -> [PipelineTestRunner.Result] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-inline-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("schemas"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try #"{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}"#
            .write(to: dir.appendingPathComponent("schemas/s.json"), atomically: true, encoding: .utf8)
        let yaml = """
            name: t
            topics:
              raw: { name: t.raw }
              valid: { name: t.valid }
              out: { name: t.out }
              big: { name: t.big }
              dead: { name: t.dead }
            dead_letter: dead
            validate: { input: raw, output: valid, schema: s }
            process:
              input: valid
              output: out
              steps:
                - filter: "n != 0"
                - set: { double: "n * 2" }
                - route: [ { when: "n > 10", to: big } ]
            tests:
            \(tests)
            """
        let file = dir.appendingPathComponent("p.yaml").path
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        return try PipelineTestRunner(spec: PipelineSpec.load(file: file, environment: [:])).run()
    }

    @Test func passingAndFailingExpectations() throws {
        let results = try Self.run(
            """
              - name: routes and computes
                input: [ { n: 1 }, { n: 0 }, { n: 20 }, { raw: "x" }, { value: { n: "a" }, key: k } ]
                expect:
                  out: [ { n: 1, double: 2 } ]
                  big: [ { double: 40 } ]
                  dead_letter: [ { stage: validate, reason: MalformedJSON }, { reason: SchemaViolation, message_contains: "/n" } ]
              - name: wrong value
                input: [ { n: 1 } ]
                expect: { out: [ { double: 3 } ] }
              - name: wrong count and a surprise dead letter
                input: [ { n: 1 }, { m: 1 } ]
                expect: { out: [] }
            """)
        #expect(results.map(\.passed) == [true, false, false], "\(results.map(\.failures))")
        #expect(results[1].failures == [#"out[0]: /double is 2, expected 3 in {"double":2,"n":1}"#])
        #expect(results[2].failures.contains { $0.hasPrefix("out: expected 0 record(s), got 1") })
        #expect(results[2].failures.contains { $0.hasPrefix("unexpected dead letters: validate SchemaViolation") })
    }

    @Test func anUnknownTopicInExpectIsAConfigError() {
        let error = #expect(throws: ConfigError.self) {
            _ = try Self.run(
                """
                  - name: typo
                    input: [ { n: 1 } ]
                    expect: { ouput: [] }
                """)
        }
        #expect(error?.description.contains("'ouput' is not a topic") == true, "\(error?.description ?? "")")
    }
}
