import Config
import Foundation
import Pipeline
import PipelineModel
import Testing

@Suite struct PipelineSpecTests {
    static let minimal = """
        name: t
        kafka:
          bootstrap: ${KAFKA_BROKERS:-127.0.0.1:9092}
          consumer: { session.timeout.ms: "6000" }
        topics:
          in:   { name: t.in, partitions: 3 }
          out:  { name: t.out }
          dead: { name: t.dead }
        dead_letter: dead
        validate:
          input: in
          output: out
          batch_size: 100
          consumer: { fetch.wait.max.ms: "5" }
          schema: s
        """

    func parse(_ yaml: String, env: [String: String] = [:]) throws(ConfigError) -> PipelineSpec {
        try PipelineSpec.parse(yaml: yaml, file: "/p/t.yaml", environment: env)
    }

    func expectError(_ yaml: String, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try parse(yaml)
            Issue.record("expected an error containing \(expected)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.description.contains(expected), "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func parsesTopicsStagesAndMergesKafkaProperties() throws {
        let spec = try parse(Self.minimal)
        #expect(spec.name == "t")
        #expect(spec.topics["in"]?.partitions == 3)
        #expect(spec.topics["out"]?.partitions == 1)
        #expect(spec.deadLetter.name == "t.dead")
        #expect(spec.baseDirectory == "/p")
        let validate = try spec.stage(.validate)
        #expect(validate.input?.name == "t.in")
        #expect(validate.output?.name == "t.out")
        #expect(validate.group == "t.validate")
        #expect(validate.batchSize == 100)
        #expect(validate.httpPort == 9102)
        #expect(validate.consumerProperties == ["session.timeout.ms": "6000", "fetch.wait.max.ms": "5"])
        #expect(throws: ConfigError.self) { try spec.stage(.persist) }
    }

    @Test func concurrencyDefaultsToOneAndIsChecked() throws {
        #expect(try parse(Self.minimal).stage(.validate).concurrency == 1)
        let four = Self.minimal.replacingOccurrences(of: "batch_size: 100", with: "batch_size: 100\n  concurrency: 4")
        #expect(try parse(four).stage(.validate).concurrency == 4)
        expectError(
            Self.minimal.replacingOccurrences(of: "batch_size: 100", with: "batch_size: 100\n  concurrency: 0"),
            "validate.concurrency: 0 is out of range")
    }

    @Test func kafkaBrokersOverridesTheFile() throws {
        let spec = try parse(
            Self.minimal.replacingOccurrences(of: "${KAFKA_BROKERS:-127.0.0.1:9092}", with: "a:1"), env: ["KAFKA_BROKERS": "b:2"])
        #expect(spec.kafka.bootstrapServers == "b:2")
        #expect(try parse(Self.minimal).kafka.bootstrapServers == "127.0.0.1:9092")
    }

    @Test func unknownTopLevelKeyNamesItsLine() {
        expectError(Self.minimal + "\nvalidat:\n  input: in\n", "/p/t.yaml:16: validat: unknown key")
    }

    @Test func undeclaredTopicIsNamed() {
        expectError(
            Self.minimal.replacingOccurrences(of: "input: in", with: "input: nowhere"), "/p/t.yaml:11: validate.input: no topic 'nowhere'")
    }

    @Test func badValuesNameKeyAndLine() {
        expectError(
            Self.minimal.replacingOccurrences(of: "partitions: 3", with: "partitions: many"),
            "/p/t.yaml:6: topics.in.partitions: expected an integer")
        expectError(
            Self.minimal.replacingOccurrences(of: "batch_size: 100", with: "batch_size: 0"), "validate.batch_size: 0 is out of range")
        expectError(
            Self.minimal.replacingOccurrences(of: "name: t.out", with: "name: \"bad topic\""),
            "topics.out.name: 'bad topic' is not a valid Kafka topic name")
        expectError(Self.minimal.replacingOccurrences(of: "dead_letter: dead", with: ""), "dead_letter: missing required key")
        expectError("name: x\ntopics: {}\ndead_letter: ${UNSET_VAR}\n", "dead_letter: environment variable UNSET_VAR is not set")
    }

    @Test func stageKeysAreCheckedByTheStage() throws {
        // `schema_dir` (typo) is rejected when the validate stage reads its section.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-spec-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("schemas"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(#"{"type":"object"}"#.utf8).write(to: dir.appendingPathComponent("schemas/s.json"))
        let file = dir.appendingPathComponent("p.yaml").path
        try Data((Self.minimal + "\n  schema_dir: x\n").utf8).write(to: URL(fileURLWithPath: file))
        let spec = try PipelineSpec.load(file: file, environment: [:])
        do {
            _ = try ValidateHandler.make(spec: spec, common: try spec.stage(.validate))
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("p.yaml:16: validate.schema_dir: unknown key; did you mean 'schemas_dir'?"), "\(error)")
        }
    }

    @Test func theShippedPipelinesAreValid() throws {
        let pipelines = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("pipelines")
        let files = try FileManager.default.contentsOfDirectory(atPath: pipelines.path).filter { $0.hasSuffix(".yaml") }
        #expect(!files.isEmpty)
        for f in files {
            let spec = try PipelineSpec.load(file: pipelines.appendingPathComponent(f).path, environment: [:])
            for stage in PipelineSpec.StageName.allCases where spec.stages[stage] != nil {
                _ = try BuiltStage.build(stage, spec: spec, logger: .init(label: "test"))
            }
        }
    }

    @Test func aSubjectThatBreaksItsCompatibilityModeStopsTheValidateWorkerAtStart() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-compat-\(UUID().uuidString.prefix(8))")
        let subject = dir.appendingPathComponent("schemas/s")
        try FileManager.default.createDirectory(at: subject, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try #"{"properties":{"n":{"type":"number"}}}"#.write(
            to: subject.appendingPathComponent("v1.json"), atomically: true, encoding: .utf8)
        try #"{"properties":{"n":{"type":"integer"}}}"#.write(
            to: subject.appendingPathComponent("v2.json"), atomically: true, encoding: .utf8)
        let spec = try PipelineSpec.parse(yaml: Self.minimal, file: dir.appendingPathComponent("p.yaml").path, environment: [:])
        let error = #expect(throws: ConfigError.self) { try ValidateHandler.make(spec: spec, common: try spec.stage(.validate)) }
        let text = error?.description ?? ""
        #expect(text.contains("p.yaml:15"), "names the schema key's line: \(text)")
        #expect(text.contains("breaks its compatibility mode BACKWARD"))
        #expect(text.contains("v1 → v2") && text.contains("/properties/n: type number is no longer accepted"), "\(text)")
    }

    /// `streamfirst broker --pipeline` reads only `topics:`, with the workers' own topic parser.
    @Test func declaredTopicsReadOnlyTheTopicsSection() throws {
        func topics(_ yaml: String, _ env: [String: String] = [:]) throws(ConfigError) -> [String] {
            try PipelineSpec.declaredTopics(yaml: yaml, file: "p.yaml", environment: env).map {
                "\($0.name):\($0.partitions):\($0.replicationFactor)"
            }
        }
        let yaml = "sources: [x]\ntopics:\n  a: { name: \"${PREFIX:-dev}.t\", partitions: \"${P:-6}\", replication_factor: \"${RF:-1}\" }\n"
        #expect(try topics(yaml, ["PREFIX": "acme", "P": "64", "RF": "3"]) == ["acme.t:64:3"])
        #expect(try topics(yaml) == ["dev.t:6:1"])
        #expect(try topics("other: 1\n") == [])
        #expect(try topics("") == [])
        #expect(try topics("topics:\n") == [])
        func message(_ yaml: String, _ env: [String: String] = [:]) -> String {
            do {
                return "no error: \(try topics(yaml, env))"
            } catch {
                return error.description
            }
        }
        #expect(message(yaml, ["P": "many"]) == "p.yaml:3: topics.a.partitions: expected an integer, got 'many'")
        #expect(message(yaml, ["P": "0"]) == "p.yaml:3: topics.a.partitions: 0 is out of range: expected 1...10000")
        #expect(message("topics:\n  a:\n    partitions: 2\n").hasPrefix("p.yaml:3: topics.a.name: missing required key"))
        #expect(message("topics:\n  a:\n    name: ${NOPE}\n").contains("NOPE"))
        #expect(message("topics: [a, b]\n").hasPrefix("p.yaml:1: topics: "))
        #expect(message("topics:\n  a: {name: t, partitions: 1\n").hasPrefix("p.yaml"))
    }

    /// Two logical names for one Kafka topic would give it two sets of settings: refused, by the
    /// workers and by `streamfirst broker` alike.
    @Test func aKafkaTopicIsDeclaredOnce() {
        let yaml = Self.minimal.replacingOccurrences(of: "out:  { name: t.out }", with: "out:  { name: t.in }")
        expectError(yaml, "/p/t.yaml:7: topics.out.name: topic 't.in' is already declared by topics.in")
        #expect(throws: ConfigError.self) {
            try PipelineSpec.declaredTopics(yaml: "topics:\n  a: {name: t}\n  b: {name: t}\n", file: "p.yaml", environment: [:])
        }
    }

    /// `format: avro` needs a registry; stages read Avro but refuse to write it (not built yet),
    /// naming the key and the fix.
    @Test func avroTopicsAreCheckedAtStart() throws {
        let base = Self.minimal.replacingOccurrences(
            of: "in:   { name: t.in, partitions: 3 }", with: "in:   { name: t.in, partitions: 3, format: avro }")
        expectError(base, "topics.in has format: avro, which needs a schema_registry: section")
        let withRegistry = base + "\nschema_registry: { url: \"http://registry:8081\", username: key, password: secret }\n"
        let spec = try parse(withRegistry)
        #expect(spec.topics["in"]?.format == .avro && spec.topics["out"]?.format == .json)
        #expect(
            spec.schemaRegistry == PipelineSpec.SchemaRegistrySettings(url: "http://registry:8081", username: "key", password: "secret"))
        expectError(base + "\nschema_registry: { url: registry:8081 }\n", "is not an http:// or https:// URL")
        expectError(withRegistry.replacingOccurrences(of: "format: avro", with: "format: protobuf"), "format")
        // An Avro output topic is refused by the stage that would write it; a window cannot read Avro yet.
        func process(_ section: String, out: String = "json") throws -> PipelineSpec {
            try parse(
                """
                name: t
                schema_registry: { url: "http://registry:8081" }
                topics:
                  in: { name: t.in, format: avro }
                  out: { name: t.out, format: \(out) }
                  cl: { name: t.cl }
                  dead: { name: t.dead }
                dead_letter: dead
                process:
                  input: in
                  output: out
                \(section)
                """)
        }
        let avroOut = try process("  steps: []", out: "avro")
        #expect {
            _ = try ProcessHandler.make(spec: avroOut, common: try avroOut.stage(.process))
        } throws: { error in
            "\(error)".contains("has format: avro, which stages do not write yet")
        }
        let reading = try process("  steps: []")
        #expect(try ProcessHandler.make(spec: reading, common: try reading.stage(.process)).decoding.format == .avro)
        let window = try process(
            "  window: { type: tumbling, size: 1m, time: ts, key: s, aggregate: { n: count() } }\n  state: { changelog: cl }")
        #expect {
            _ = try StatefulProcessConfig.make(spec: window, common: try window.stage(.process))
        } throws: { error in
            "\(error)".contains("which a window or join stage does not read yet")
        }
    }
}
