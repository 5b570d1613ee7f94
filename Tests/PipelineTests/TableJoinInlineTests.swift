import Config
import Foundation
import Pipeline
import PipelineModel
import PipelineTools
import Testing

/// The stream–table join (`enrich:` with `topic:`) as a pipeline file declares it: the process
/// stage's checks, and inline `tests:` that give the table's records.
@Suite struct TableJoinInlineTests {
    static func spec(
        steps: String, tests: String = "", topics: String = "sensors: { name: t.sensors, partitions: 2 }"
    )
        throws -> PipelineSpec
    {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-tablejoin-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let yaml = """
            name: t
            topics:
              valid: { name: t.valid }
              out: { name: t.out }
              dead: { name: t.dead }
              \(topics)
            dead_letter: dead
            process:
              input: valid
              output: out
              steps:
            \(steps)
            tests:
            \(tests)
            """
        let file = dir.appendingPathComponent("p.yaml").path
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        return try PipelineSpec.load(file: file, environment: [:])
    }

    static let joinSteps = """
            - enrich: { topic: sensors, match: sensor_id, fields: [site], missing: dead-letter }
            - enrich: { topic: sensors, match: backup_id, into: backup }
        """

    @Test func inlineTestsFillTheTableWithRecordsInOrder() throws {
        let spec = try Self.spec(
            steps: Self.joinSteps,
            tests: """
                  - name: latest row per key, tombstones delete
                    tables:
                      sensors:
                        - { key: s1, value: { site: north, floor: 1 } }
                        - { key: s2, value: { site: south } }
                        - { key: s1, value: { site: east, floor: 3 } }
                        - { key: s2, value: null }
                    input: [ { sensor_id: s1, backup_id: s1 }, { sensor_id: s2 } ]
                    expect:
                      out: [ { sensor_id: s1, site: east, backup: { site: east, floor: 3 } } ]
                      dead_letter: [ { stage: process, reason: EnrichmentMissing, message_contains: "key \\"s2\\" in topic sensors" } ]
                  - name: each test starts from its own (here empty) tables
                    input: [ { sensor_id: s1 } ]
                    expect:
                      dead_letter: [ { reason: EnrichmentMissing } ]
                  - name: a wrong expectation fails
                    tables: { sensors: [ { key: s1, value: { site: north } } ] }
                    input: [ { sensor_id: s1 } ]
                    expect: { out: [ { site: south } ] }
                """)
        let results = try PipelineTestRunner(spec: spec).run()
        #expect(results.map(\.passed) == [true, true, false], "\(results.map(\.failures))")
        #expect(results[2].failures.first?.contains("/site is \"north\", expected \"south\"") == true, "\(results[2].failures)")
    }

    @Test func aTestNamingAnotherTopicAsATableIsAConfigError() throws {
        let spec = try Self.spec(
            steps: Self.joinSteps,
            tests: """
                  - tables: { out: [ { key: a, value: { x: 1 } } ] }
                    input: [ { sensor_id: s1 } ]
                    expect: { out: [] }
                """)
        let error = #expect(throws: ConfigError.self) { try PipelineTestRunner(spec: spec).run() }
        #expect(
            error?.description.contains("'out' is not a table topic of an enrich step (table topics: sensors)") == true,
            "\(error?.description ?? "")")
    }

    @Test func theProcessStageHasOneLiveTablePerTableTopic() throws {
        let spec = try Self.spec(steps: Self.joinSteps)
        let common = try #require(spec.stages[.process])
        let handler = try ProcessHandler.make(spec: spec, common: common)
        #expect(handler.liveTables.map(\.topic) == ["t.sensors"])
        #expect(handler.liveTables.first?.maxRows == 1_000_000)
        #expect(handler.liveTables.first?.count == 0, "nothing is read before start")
    }

    @Test func anUndeclaredTableTopicIsAConfigErrorNamingTheLine() throws {
        let spec = try Self.spec(steps: "    - enrich: { topic: nosuch, match: id }")
        let common = try #require(spec.stages[.process])
        let error = #expect(throws: ConfigError.self) { try ProcessHandler.make(spec: spec, common: common) }
        let text = error?.description ?? ""
        #expect(text.contains("p.yaml:12:"), "\(text)")
        #expect(text.contains("enrich reads the table topic 'nosuch', which is not declared under topics:"), "\(text)")
    }

    @Test func stepsSharingATableMustAgreeOnItsBound() throws {
        let spec = try Self.spec(
            steps: """
                    - enrich: { topic: sensors, match: a, max_rows: 10 }
                    - enrich: { topic: sensors, match: b }
                """)
        let common = try #require(spec.stages[.process])
        let error = #expect(throws: ConfigError.self) { try ProcessHandler.make(spec: spec, common: common) }
        #expect(error?.description.contains("max_rows 1000000 differs from 10") == true, "\(error?.description ?? "")")
    }
}
