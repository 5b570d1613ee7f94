import EmbeddedBroker
import Foundation
import Testing

/// Each test launches `streamfirst broker` as a separate process and checks it from outside.
@Suite("streamfirst broker as a process")
struct EmbeddedBrokerProcessTests {
    @Test("--topic creates topics with their partition counts and replication factors")
    func topicFlagsCreateTopics() async throws {
        let broker = try await EmbeddedBrokerProcess.launch(
            arguments: ["--brokers", "3", "--topic", "orders:3", "--topic", "payments:5:2"])
        let metadata = try await kcatMetadata(broker.bootstrapServers)
        #expect(metadata.brokers.count == 3)
        #expect(metadata.topics["orders"]?.partitions == 3)
        #expect(metadata.topics["payments"]?.partitions == 5)
        // librdkafka 2.0.2's mock ignores the requested replication factor: every partition gets
        // min(3, brokers) replicas. This pins that behaviour (documented in `broker --help`).
        #expect(metadata.topics["orders"]?.replicas == [3, 3, 3])
        #expect(metadata.topics["payments"]?.replicas == Array(repeating: 3, count: 5))

        let info = try await broker.control.info()
        #expect(info.brokers == 3)
        #expect(info.bootstrapServers == broker.bootstrapServers)
        #expect(
            info.topics == [TopicSpec(name: "orders", partitions: 3), TopicSpec(name: "payments", partitions: 5, replicationFactor: 2)])
        #expect(try await broker.terminate().code == 0)
    }

    @Test("create-topic on the control channel creates a topic that was not there")
    func controlChannelCreatesTopic() async throws {
        let broker = try await EmbeddedBrokerProcess.launch()
        let before = try await kcatMetadata(broker.bootstrapServers)
        #expect(before.topics["audit"] == nil)

        // 7 partitions: a topic the mock auto-created would have 4.
        try await broker.control.createTopic("audit", partitions: 7)
        let after = try await kcatMetadata(broker.bootstrapServers)
        #expect(after.topics["audit"]?.partitions == 7)

        await #expect(throws: EmbeddedBrokerError.self) {
            try await broker.control.createTopic("audit", partitions: 7)
        }
        let reply = try await broker.control.sendRaw("create-topic audit 7")
        #expect(reply.hasPrefix("error TOPIC_ALREADY_EXISTS"))
        #expect(try await broker.terminate().code == 0)
    }

    @Test("bad control commands get an error reply naming the problem, and the broker stays up")
    func badCommandsAreAnswered() async throws {
        let broker = try await EmbeddedBrokerProcess.launch(arguments: ["--topic", "t1:2"])
        let unknown = try await broker.control.sendRaw("frobnicate now")
        #expect(unknown.hasPrefix("error unknown command 'frobnicate'"))

        do {
            try await broker.control.send("create-topic x notanumber")
            Issue.record("a bad partition count was accepted")
        } catch let EmbeddedBrokerError.rejected(_, reason) {
            #expect(reason.contains("bad partition count 'notanumber'"))
            #expect(reason.contains("usage: create-topic NAME PARTITIONS [REPLICATION]"))
        }
        let badBroker = try await broker.control.sendRaw("broker-down 9")
        #expect(badBroker.hasPrefix("error unknown broker 9"))
        let badError = try await broker.control.sendRaw("request-errors Produce NOT_A_REAL_ERROR")
        #expect(badError.hasPrefix("error unknown error 'NOT_A_REAL_ERROR'"))
        let badAPI = try await broker.control.sendRaw("request-errors Nope NOT_LEADER_FOR_PARTITION")
        #expect(badAPI.hasPrefix("error unknown API 'Nope'"))
        let arity = try await broker.control.sendRaw("rtt 1")
        #expect(arity.hasPrefix("error rtt takes 2 arguments, got 1; usage: rtt ID MS"))

        // Still serving, on the control channel and on Kafka's protocol.
        try await broker.control.ping()
        #expect(!broker.hasExited)
        let metadata = try await kcatMetadata(broker.bootstrapServers)
        #expect(metadata.topics["t1"]?.partitions == 2)
        #expect(try await broker.terminate().code == 0)
    }

    @Test("fault-injection commands are accepted with names or numbers")
    func faultInjectionCommands() async throws {
        let broker = try await EmbeddedBrokerProcess.launch(arguments: ["--brokers", "2", "--topic", "f:2:2"])
        try await broker.control.pushRequestErrors(api: "Produce", errors: ["NOT_LEADER_FOR_PARTITION", "7"])
        try await broker.control.clearRequestErrors(api: "0")
        try await broker.control.setRTT(broker: 2, milliseconds: 5)
        try await broker.control.topicError("f", error: "NO_ERROR")
        try await broker.control.setLeader(topic: "f", partition: 1, broker: 2)
        try await broker.control.setCoordinator("group", key: "g1", broker: 2)
        try await broker.control.brokerDown(2)
        #expect(try await broker.control.info().downBrokers == [2])
        try await broker.control.brokerUp(2)
        #expect(try await broker.control.info().downBrokers == [])
        #expect(try await broker.terminate().code == 0)
    }

    @Test("--port serves a fixed bootstrap address through the forwarder")
    func fixedPortForwarder() async throws {
        let port = try freeLoopbackPort()
        let broker = try await EmbeddedBrokerProcess.launch(
            arguments: ["--brokers", "2", "--port", "\(port)", "--topic", "fwd:3"])
        #expect(broker.bootstrapServers == "127.0.0.1:\(port)")
        #expect(broker.clusterBootstrapServers != broker.bootstrapServers)

        let metadata = try await kcatMetadata("127.0.0.1:\(port)")
        #expect(metadata.originatingBroker.hasPrefix("127.0.0.1:\(port)"))
        #expect(metadata.topics["fwd"]?.partitions == 3)
        // Metadata advertises the brokers' own listeners, not the forwarder.
        #expect(Set(metadata.brokers.values) == Set(broker.clusterBootstrapServers.split(separator: ",").map(String.init)))

        // With broker 1 down, the forwarder relays to broker 2.
        try await broker.control.brokerDown(1)
        let viaSecond = try await kcatMetadata("127.0.0.1:\(port)")
        #expect(viaSecond.topics["fwd"]?.partitions == 3)
        #expect(try await broker.terminate().code == 0)
    }

    @Test("--pipeline creates the topics of a pipeline file, expanding ${VAR} and ${VAR:-default}")
    func pipelineFile() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID()).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try """
        version: 1
        sources:
          clicks: { topic: orders }
        topics:
          orders:
            name: ${STREAMFIRST_TEST_UNSET_ENV_7F3A:-dev}.orders
            partitions: 3
          payments:
            name: ${STREAMFIRST_TEST_PREFIX}-payments
            partitions: 6
            replication_factor: 2
        """.write(to: file, atomically: true, encoding: .utf8)
        let broker = try await EmbeddedBrokerProcess.launch(
            arguments: ["--brokers", "2", "--pipeline", file.path],
            environment: ["STREAMFIRST_TEST_PREFIX": "acme"])
        let metadata = try await kcatMetadata(broker.bootstrapServers)
        #expect(metadata.topics["dev.orders"]?.partitions == 3)
        #expect(metadata.topics["acme-payments"]?.partitions == 6)
        let info = try await broker.control.info()
        #expect(
            info.topics == [
                TopicSpec(name: "dev.orders", partitions: 3), TopicSpec(name: "acme-payments", partitions: 6, replicationFactor: 2),
            ])
        #expect(try await broker.terminate().code == 0)
    }

    @Test("a bad pipeline file stops the broker before ready, naming key and line")
    func badPipelineFile() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID()).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try """
        topics:
          orders:
            name: orders
            partitions: many
        """.write(to: file, atomically: true, encoding: .utf8)
        do {
            _ = try await EmbeddedBrokerProcess.launch(arguments: ["--pipeline", file.path])
            Issue.record("the broker started with a bad pipeline file")
        } catch let EmbeddedBrokerError.process(message) {
            #expect(message.contains("\(file.path):4: topics.orders.partitions: expected an integer, got 'many'"))
        }
    }

    @Test("SIGTERM stops the broker with exit code 0")
    func sigtermExitsZero() async throws {
        let broker = try await EmbeddedBrokerProcess.launch(arguments: ["--topic", "s:1"])
        try await broker.control.ping()
        let status = try await broker.terminate()
        #expect(status == EmbeddedBrokerProcess.ExitStatus(code: 0, signaled: false))
        #expect(broker.standardError.contains("stopped"))
    }

    @Test("the shutdown command replies, then the broker exits 0")
    func shutdownCommandExitsZero() async throws {
        let broker = try await EmbeddedBrokerProcess.launch()
        try await broker.control.shutdown()
        let status = try await broker.waitForExit()
        #expect(status == EmbeddedBrokerProcess.ExitStatus(code: 0, signaled: false))
    }

    @Test("--json prints one JSON object; --exit-on-stdin-eof stops it when stdin closes")
    func jsonReadyLine() async throws {
        let binary = try EmbeddedBrokerProcess.locateExecutable().path
        let result = try await runTool(binary, ["broker", "--json", "--topic", "j:2", "--exit-on-stdin-eof"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(object["ready"] as? Bool == true)
        #expect((object["bootstrap_servers"] as? String)?.hasPrefix("127.0.0.1:") == true)
        #expect((object["control"] as? String)?.hasPrefix("127.0.0.1:") == true)
        #expect(object["brokers"] as? Int == 1)
    }

    @Test("broker-ctl prints the reply and exits 1 on an error reply")
    func brokerCtl() async throws {
        let broker = try await EmbeddedBrokerProcess.launch()
        let binary = try EmbeddedBrokerProcess.locateExecutable().path
        let ok = try await runTool(binary, ["broker-ctl", "--control", broker.controlAddress, "create-topic", "c", "3"])
        #expect(ok.status == 0)
        #expect(ok.stdout == "ok created c:3:1\n")
        let bad = try await runTool(binary, ["broker-ctl", "--control", broker.controlAddress, "create-topic", "c"])
        #expect(bad.status == 1)
        #expect(bad.stdout.hasPrefix("error create-topic takes 2 to 3 arguments"))
        #expect(try await broker.control.info().topics == [TopicSpec(name: "c", partitions: 3)])
        #expect(try await broker.terminate().code == 0)
    }
}
