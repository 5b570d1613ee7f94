import EmbeddedBroker
import Testing

@Suite("Control commands, topic specs and pipeline files")
struct ParsingTests {
    @Test func controlCommands() throws {
        #expect(try ControlCommand.parse("create-topic a 3") == .createTopic(TopicSpec(name: "a", partitions: 3)))
        #expect(try ControlCommand.parse("  rtt 2   50 ") == .roundTripTime(broker: 2, milliseconds: 50))
        #expect(try ControlCommand.parse("request-errors Fetch NOT_LEADER_FOR_PARTITION,7") == .requestErrors(apiKey: 1, errors: [6, 7]))
        #expect(try ControlCommand.parse("topic-error a NO_ERROR") == .topicError(topic: "a", error: 0))
        #expect(try ControlCommand.parse("leader a 0 -1") == .leader(topic: "a", partition: 0, broker: -1))
        #expect(try ControlCommand.parse("coordinator transaction tx 2") == .coordinator(kind: "transaction", key: "tx", broker: 2))
        #expect(throws: EmbeddedBrokerError.self) { try ControlCommand.parse("create-topic bad/name 3") }
        #expect(throws: EmbeddedBrokerError.self) { try ControlCommand.parse("create-topic a 0") }
        #expect(throws: EmbeddedBrokerError.self) { try ControlCommand.parse("info extra") }
    }

    @Test func topicSpecs() throws {
        #expect(try TopicSpec.parse("orders:6:3") == TopicSpec(name: "orders", partitions: 6, replicationFactor: 3))
        #expect(try TopicSpec.parse("orders:6") == TopicSpec(name: "orders", partitions: 6))
        #expect(throws: EmbeddedBrokerError.self) { try TopicSpec.parse("orders") }
        #expect(throws: EmbeddedBrokerError.self) { try TopicSpec.parse("orders:x") }
        #expect(throws: EmbeddedBrokerError.self) { try TopicSpec.parse(":3") }
    }

    @Test func interpolation() throws {
        let env = ["A": "x", "EMPTY": ""]
        #expect(try PipelineTopics.interpolate("${A}.t", environment: env) == "x.t")
        #expect(try PipelineTopics.interpolate("${B:-dflt}.t", environment: env) == "dflt.t")
        #expect(try PipelineTopics.interpolate("${EMPTY:-d}", environment: env) == "d")
        #expect(try PipelineTopics.interpolate("${A:-d}-${A}", environment: env) == "x-x")
        #expect(try PipelineTopics.interpolate("cost$5", environment: env) == "cost$5")
        #expect(try PipelineTopics.interpolate("a$${A}", environment: env) == "a${A}", "$$ is a literal $, as in the workers")
        #expect(throws: EmbeddedBrokerError.self) { try PipelineTopics.interpolate("${B}", environment: env) }
        #expect(throws: EmbeddedBrokerError.self) { try PipelineTopics.interpolate("${A", environment: env) }
    }

    /// `streamfirst chaos --partitions N` sets IOT_PARTITIONS; the broker must create that many.
    @Test func partitionCountsFromTheEnvironment() throws {
        let yaml = "topics:\n  a: { name: t, partitions: \"${P:-6}\", replication_factor: \"${RF:-1}\" }\n"
        #expect(
            try PipelineTopics.parse(yaml: yaml, environment: ["P": "64", "RF": "3"]) == [
                TopicSpec(name: "t", partitions: 64, replicationFactor: 3)
            ])
        #expect(try PipelineTopics.parse(yaml: yaml) == [TopicSpec(name: "t", partitions: 6)])
        #expect(throws: EmbeddedBrokerError.self) { try PipelineTopics.parse(yaml: yaml, environment: ["P": "many"]) }
        #expect(throws: EmbeddedBrokerError.self) { try PipelineTopics.parse(yaml: yaml, environment: ["P": "0"]) }
    }

    @Test func pipelineErrorsNameKeyAndLine() throws {
        func message(_ yaml: String) -> String {
            do {
                _ = try PipelineTopics.parse(yaml: yaml, file: "p.yaml")
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(message("topics:\n  a:\n    partitions: 2\n") == "p.yaml:3: topics.a: missing 'name' (the Kafka topic name)")
        #expect(
            message("topics:\n  a:\n    name: t\n    partitions: 0\n")
                == "p.yaml:4: topics.a.partitions: expected a positive integer, got '0'")
        #expect(
            message("topics:\n  a:\n    name: ${NOPE}\n    partitions: 1\n").hasPrefix(
                "p.yaml:3: topics.a.name: environment variable NOPE is not set"))
        #expect(message("topics: [a, b]\n").hasPrefix("p.yaml:1: topics: expected a mapping"))
        #expect(message("topics:\n  a: {name: t, partitions: 1\n").hasPrefix("p.yaml: invalid YAML"))
        #expect(
            message("topics:\n  a: {name: t, partitions: 1}\n  b: {name: t, partitions: 2}\n")
                .contains("topic 't' is already declared by topics.a"))
        #expect(try PipelineTopics.parse(yaml: "other: 1\n") == [])
    }
}
