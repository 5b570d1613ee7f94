import EmbeddedBroker
import Testing

@Suite("Control commands and topic specs")
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
}
