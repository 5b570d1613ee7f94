import Config
import EmbeddedBroker
import Foundation
import Kafka
import LocalRun
import Logging
import Pipeline
import StreamCore
import Synchronization
import Testing

@testable import Connectors

/// The `mqtt` source against Debian's mosquitto: QoS 1 messages published with `mosquitto_pub` reach
/// the raw topic of the embedded broker through a real `ingest` process, and none is lost when that
/// process is SIGKILLed mid-stream while devices keep publishing.
@Suite(.serialized) struct MQTTIngestTests {
    static func pipelineFile(_ work: URL) throws -> String {
        let file = work.appendingPathComponent("mqtt.yaml").path
        try """
        name: mqtt-test
        kafka: { bootstrap: "${KAFKA_BROKERS:-127.0.0.1:9092}" }
        topics:
          raw: { name: "mqtt.raw", partitions: 3 }
          dead: { name: "mqtt.dead", partitions: 1 }
        dead_letter: dead
        ingest:
          output: raw
          source:
            type: mqtt
            port: ${MQTT_PORT}
            protocol: "${MQTT_PROTOCOL:-5}"
            client_id: streamfirst-test-ingest
            topics: ["sensors/+/reading", { filter: "control/#", qos: 0 }]
            max_in_flight: 100
            max_packet_bytes: 4096
            max_buffered: ${MQTT_MAX_BUFFERED:-10000}
            id_field: uid
        """.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    static func workDirectory() throws -> URL {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-mqtt-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        return work
    }

    static func string(_ m: KafkaMessage, _ header: String) -> String? {
        m.header(header)?.value.map { String(decoding: $0, as: UTF8.self) }
    }

    /// Publishes a warm-up message until one is in the raw topic: the ingest's session then exists
    /// and holds every later message, even those published while ingest is down.
    static func warmUp(_ broker: Mosquitto, _ local: LocalPipeline) async throws -> Int {
        let deadline = ContinuousClock.now + .seconds(60)
        var sent = 0
        while ContinuousClock.now < deadline {
            #expect(try await broker.publish(topic: "sensors/warmup/reading", message: #"{"warmup":\#(sent)}"#) == 0)
            sent += 1
            let until = ContinuousClock.now + .seconds(1)
            while ContinuousClock.now < until {
                if let n = try await local.topicCounts()["raw"], n > 0 { return sent }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        throw TestFailure("no warm-up message reached Kafka; ingest log:\n\(local.process(.ingest)?.standardError.suffix(3000) ?? "")")
    }

    /// Waits until `condition` holds for the raw topic's records (bounded; polled).
    static func waitForRaw(
        _ local: LocalPipeline, timeout: Duration = .seconds(90), _ what: String, until condition: ([KafkaMessage]) -> Bool
    )
        async throws -> [KafkaMessage]
    {
        let deadline = ContinuousClock.now + timeout
        var last: [KafkaMessage] = []
        while ContinuousClock.now < deadline {
            last = try await local.readAll("raw")
            if condition(last) { return last }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw TestFailure(
            "\(what) within \(timeout) (raw has \(last.count)); ingest log:\n\(local.process(.ingest)?.standardError.suffix(3000) ?? "")")
    }

    @Test(arguments: ["5", "3.1.1"])
    func qos1PublishesReachKafkaWithTopicHeaderAndKey(protocolVersion: String) async throws {
        let broker = try await Mosquitto.start()
        let work = try Self.workDirectory()
        let local = try await LocalPipeline.launch(
            .init(
                pipelineFile: try Self.pipelineFile(work), workDirectory: work.path,
                environment: ["MQTT_PORT": String(broker.port), "MQTT_PROTOCOL": protocolVersion]))
        do {
            try await local.start(.ingest)
            let warm = try await Self.warmUp(broker, local)
            #expect(try await broker.publish(topic: "sensors/dev-1/reading", message: #"{"device":"dev-1","t":21.5}"#) == 0)
            #expect(try await broker.publish(topic: "sensors/dev-2/reading", message: #"{"device":"dev-2","t":19,"uid":"u-2"}"#) == 0)
            let big = #"{"device":"dev-3","blob":""# + String(repeating: "x", count: 10_000) + #""}"#
            #expect(try await broker.publish(topic: "sensors/dev-3/reading", message: big) == 0)
            #expect(try await broker.publish(topic: "control/dev-2/x/y", message: #"{"cmd":"reboot"}"#, qos: 0) == 0)
            #expect(try await broker.publish(topic: "elsewhere/dev-3", message: #"{"not":"subscribed"}"#) == 0)
            #expect(try await broker.publish(topic: "sensors/dev-1/reading", message: "not json at all") == 0)
            let raw = try await Self.waitForRaw(local, "the three messages did not arrive") { records in
                records.contains { $0.key == Array("control/dev-2/x/y".utf8) } && records.count >= 3
                    && records.contains { $0.key == Array("sensors/dev-2/reading".utf8) }
            }
            var dead: [KafkaMessage] = []
            let deadline = ContinuousClock.now + .seconds(30)
            while dead.count < 2 && ContinuousClock.now < deadline {
                dead = try await local.readAll("dead")
                if dead.count < 2 { try await Task.sleep(for: .milliseconds(100)) }
            }
            let ingest = local.process(.ingest)?.standardError ?? ""
            let exits = await local.stop()
            await broker.stop()
            #expect(exits[.ingest] == .init(code: 0, signaled: false), "SIGTERM stops ingest cleanly: \(ingest.suffix(1500))")

            let devices = raw.filter { Self.string($0, "mqtt.topic")?.hasPrefix("sensors/dev-") == true }
            #expect(devices.count == 2, "\(raw.map { Self.string($0, "mqtt.topic") ?? "?" })")
            let dev1 = try #require(devices.first { $0.key == Array("sensors/dev-1/reading".utf8) })
            #expect(dev1.value == Array(#"{"device":"dev-1","t":21.5}"#.utf8))
            #expect(Self.string(dev1, "mqtt.topic") == "sensors/dev-1/reading")
            #expect(Self.string(dev1, RecordHeader.source) == "mqtt:127.0.0.1:\(broker.port)")
            #expect(Self.string(dev1, RecordHeader.id)?.isEmpty == false)
            #expect(raw.filter { Self.string($0, "mqtt.topic") == "sensors/warmup/reading" }.count <= warm)
            #expect(!raw.contains { $0.key == Array("elsewhere/dev-3".utf8) }, "not subscribed")
            let dev2 = try #require(devices.first { $0.key == Array("sensors/dev-2/reading".utf8) })
            #expect(Self.string(dev2, RecordHeader.id) == "mqtt:u-2", "id_field gives the id")
            #expect(dead.count == 2)
            let malformed = try #require(dead.first { Self.string($0, DeadLetterHeader.exceptionClass) == "MalformedJSON" })
            #expect(malformed.value == Array("not json at all".utf8), "the original bytes")
            let oversized = try #require(dead.first { Self.string($0, DeadLetterHeader.exceptionClass) == "SourceRejected" })
            #expect(Self.string(oversized, DeadLetterHeader.exceptionMessage)?.contains("sensors/dev-3/reading") == true)
            #expect(Self.string(oversized, DeadLetterHeader.exceptionMessage)?.contains("max_packet_bytes 4096") == true)
            #expect(ingest.contains("MQTT connected"), "\(ingest.suffix(2000))")
        } catch {
            Issue.record(
                """
                ingest log:\n\(local.process(.ingest)?.standardError.suffix(3000) ?? "")\nmosquitto:\n\
                \(broker.process.standardError.suffix(2000))
                """
            )
            _ = await local.stop()
            await broker.stop()
            throw error
        }
    }

    /// Devices publish N messages continuously; ingest is SIGKILLed mid-stream, stays down while
    /// publishing goes on, and is started again. Every one of the N payloads must be in Kafka;
    /// duplicates (messages delivered to Kafka whose PUBACK the kill prevented) are allowed and counted.
    @Test func noMessageIsLostWhenIngestIsKilledMidStream() async throws {
        let total = 4000
        let broker = try await Mosquitto.start()
        let work = try Self.workDirectory()
        let local = try await LocalPipeline.launch(
            .init(pipelineFile: try Self.pipelineFile(work), workDirectory: work.path, environment: ["MQTT_PORT": String(broker.port)]))
        let publisher = try broker.linePublisher(topic: "sensors/dev-7/reading", clientID: "test-device-7")
        let published = Counter()
        do {
            try await local.start(.ingest)
            _ = try await Self.warmUp(broker, local)
            // Kafka answers after 50 ms, so a batch is in flight (delivered or not, unacknowledged)
            // most of the time and the kill lands while one is.
            try await #require(local.broker?.control).setRTT(broker: 1, milliseconds: 50)
            // ~800 messages a second, in small bursts (the load, not a synchronisation).
            let feeding = Task {
                for n in 0..<total {
                    try publisher.writeToStandardInput(Data(#"{"device":"dev-7","n":\#(n)}"#.utf8 + [0x0A]))
                    published.set(n + 1)
                    if n % 20 == 19 { try await Task.sleep(for: .milliseconds(25)) }
                }
                try publisher.closeStandardInput()
            }
            // Kill once a quarter is in Kafka, keep it down while another sixth is published, restart.
            let quarter = ContinuousClock.now + .seconds(60)
            while (try await local.topicCounts()["raw"] ?? 0) < total / 4 && ContinuousClock.now < quarter {
                try await Task.sleep(for: .milliseconds(20))
            }
            let kill = try await local.kill(.ingest)
            let atKill = published.value
            let inKafkaAtKill = try await local.topicCounts()["raw"] ?? 0
            let resumeMark = min(total, atKill + total / 6)
            let deadline = ContinuousClock.now + .seconds(60)
            while published.value < resumeMark && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let atRestart = published.value
            try await local.start(.ingest)
            try await feeding.value
            let pubStatus = await finished(publisher, "mosquitto_pub")
            try await #require(local.broker?.control).setRTT(broker: 1, milliseconds: 0)
            #expect(pubStatus.code == 0, "mosquitto_pub: \(publisher.standardError)")

            let raw = try await Self.waitForRaw(local, "not every message arrived") { records in
                Set(records.compactMap(Self.sequenceNumber)).count >= total
            }
            let restartedLog = local.process(.ingest)?.standardError ?? ""
            _ = await local.stop()
            await broker.stop()

            let numbers = raw.compactMap(Self.sequenceNumber)
            let distinct = Set(numbers)
            let lost = (0..<total).filter { !distinct.contains($0) }
            let duplicates = numbers.count - distinct.count
            let markedDup = raw.filter { Self.string($0, "mqtt.dup") == "true" }.count
            print(
                "mqtt restart test: published \(total), received \(numbers.count) records, \(distinct.count) distinct, "
                    + "duplicates \(duplicates) (\(markedDup) marked DUP by the broker), lost \(lost.count); "
                    + "killed (\(kill.map { "\($0)" } ?? "?")) with \(atKill) published and \(inKafkaAtKill) records in Kafka, "
                    + "restarted with \(atRestart) published"
            )
            #expect(lost.isEmpty, "lost: \(lost.prefix(20))")
            #expect(atRestart > atKill, "messages were published while ingest was down")
            #expect(kill?.signaled == true)
            #expect(restartedLog.contains("session_present") && restartedLog.contains("true"), "the restarted ingest resumed its session")
            #expect(raw.allSatisfy { Self.string($0, "mqtt.topic") != nil })
        } catch {
            Issue.record(
                """
                ingest log:\n\(local.process(.ingest)?.standardError.suffix(3000) ?? "")\nmosquitto:\n\
                \(broker.process.standardError.suffix(2000))
                """
            )
            _ = await publisher.kill()
            _ = await local.stop()
            await broker.stop()
            throw error
        }
    }

    /// The acknowledgement waits for Kafka: with the Kafka broker down, ingest holds received
    /// messages undelivered (and so unacknowledged); SIGKILLed then, it loses them from memory, and the
    /// restarted ingest gets every one again from the MQTT broker, marked DUP. A source that acked on
    /// receipt would lose all of them here.
    @Test(arguments: ["5", "3.1.1"]) func messagesHeldWhileKafkaIsDownAreRedeliveredAfterAKill(protocolVersion: String) async throws {
        let held = 50
        let broker = try await Mosquitto.start(debugLog: true)
        let work = try Self.workDirectory()
        let local = try await LocalPipeline.launch(
            .init(
                pipelineFile: try Self.pipelineFile(work), workDirectory: work.path,
                environment: ["MQTT_PORT": String(broker.port), "MQTT_PROTOCOL": protocolVersion]))
        do {
            let kafka = try #require(local.broker?.control)
            try await local.start(.ingest)
            let warm = try await Self.warmUp(broker, local)
            let inBefore = await local.stats(.ingest)?.recordsIn ?? 0
            try await kafka.brokerDown(1)
            let publisher = try broker.linePublisher(topic: "sensors/dev-9/reading", clientID: "test-device-9")
            try publisher.writeToStandardInput(Data((0..<held).map { #"{"device":"dev-9","n":\#($0)}"# + "\n" }.joined().utf8))
            try publisher.closeStandardInput()
            #expect(await finished(publisher, "mosquitto_pub").code == 0, "mosquitto_pub: \(publisher.standardError)")
            // The MQTT broker sent ingest all of them (its log says so), and ingest is stuck handing the
            // first batch to the producer (counted in, not out); the rest wait in its inbox.
            func sent() -> Int {
                broker.process.standardError.split(separator: "\n")
                    .filter { $0.contains("Sending PUBLISH to streamfirst-test-ingest") && $0.contains("'sensors/dev-9/reading'") }.count
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                let inNow = await local.stats(.ingest)?.recordsIn ?? 0
                if sent() >= held && inNow > inBefore { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(sent() == held, "the MQTT broker sent them to ingest")
            let stats = await local.stats(.ingest)
            #expect((stats?.recordsIn ?? 0) > inBefore, "ingest is handing them to Kafka")
            #expect(try await local.kill(.ingest)?.signaled == true)
            try await kafka.brokerUp(1)
            try await local.start(.ingest)
            let raw = try await Self.waitForRaw(local, "the held messages were not redelivered") { records in
                Set(records.compactMap(Self.sequenceNumber)).count >= held
            }
            _ = await local.stop()
            await broker.stop()
            let redelivered = raw.filter { Self.sequenceNumber($0) != nil }
            print(
                "mqtt held-while-Kafka-down test (MQTT \(protocolVersion)): \(held) published, \(redelivered.count) in Kafka after the "
                    + "kill and restart, \(redelivered.filter { Self.string($0, "mqtt.dup") == "true" }.count) marked DUP, "
                    + "warm-up \(warm)"
            )
            #expect(Set(redelivered.compactMap(Self.sequenceNumber)) == Set(0..<held))
            #expect(redelivered.count == held, "the killed ingest delivered none of them")
            #expect(redelivered.allSatisfy { Self.string($0, "mqtt.dup") == "true" }, "each came again from the broker's session")
        } catch {
            Issue.record(
                """
                ingest log:\n\(local.process(.ingest)?.standardError.suffix(3000) ?? "")\nmosquitto:\n\
                \(broker.process.standardError.suffix(2000))
                """
            )
            _ = await local.stop()
            await broker.stop()
            throw error
        }
    }

    /// A QoS 0 flood while Kafka is down: ingest stops reading the socket at `max_buffered` instead of
    /// buffering without bound, reads again once Kafka is back, and (QoS 0 being at-most-once only
    /// across crashes) every message arrives.
    @Test func aFloodWhileKafkaIsDownPausesReadingInsteadOfBuffering() async throws {
        let flood = 3000
        let broker = try await Mosquitto.start()
        let work = try Self.workDirectory()
        let local = try await LocalPipeline.launch(
            .init(
                pipelineFile: try Self.pipelineFile(work), workDirectory: work.path,
                environment: ["MQTT_PORT": String(broker.port), "MQTT_MAX_BUFFERED": "200"]))
        do {
            let kafka = try #require(local.broker?.control)
            try await local.start(.ingest)
            _ = try await Self.warmUp(broker, local)
            try await kafka.brokerDown(1)
            let lines = (0..<flood).map { #"{"device":"dev-0","n":\#($0)}"# + "\n" }.joined()
            let pub = try ChildProcess(
                executable: try Mosquitto.binary("mosquitto_pub"),
                arguments: ["-h", "127.0.0.1", "-p", String(broker.port), "-q", "0", "-t", "control/flood", "-l"])
            try pub.writeToStandardInput(Data(lines.utf8))
            try pub.closeStandardInput()
            #expect(await finished(pub, "mosquitto_pub").code == 0)
            let log = { local.process(.ingest)?.standardError ?? "" }
            let deadline = ContinuousClock.now + .seconds(30)
            while !log().contains("MQTT reads paused") && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(log().contains("MQTT reads paused"), "ingest stopped reading at max_buffered")
            try await kafka.brokerUp(1)
            let raw = try await Self.waitForRaw(local, "the flood did not arrive after Kafka came back") { records in
                Set(records.compactMap(Self.sequenceNumber)).count >= flood
            }
            #expect(log().contains("MQTT reads resumed"))
            _ = await local.stop()
            await broker.stop()
            #expect(Set(raw.compactMap(Self.sequenceNumber)) == Set(0..<flood))
        } catch {
            Issue.record("ingest log:\n\(local.process(.ingest)?.standardError.suffix(3000) ?? "")")
            _ = await local.stop()
            await broker.stop()
            throw error
        }
    }

    static func sequenceNumber(_ m: KafkaMessage) -> Int? {
        guard let value = try? JSONValue.parse(m.value ?? []), case .object(let o) = value, case .integer(let n)? = o["n"] else {
            return nil
        }
        return Int(n)
    }

    // MARK: Failures name the setting

    @Test func wrongCredentialsAreRefusedNamingTheSettings() async throws {
        let broker = try await Mosquitto.start(users: ["device": "right-password"])
        defer { broker.stopNow() }
        func source(_ password: String) -> MQTTSource {
            MQTTSource(
                host: "127.0.0.1", port: broker.port, subscriptions: [MQTTSubscription(filter: "a/#", qos: 1)],
                options: MQTTConnectOptions(version: .v5, clientID: "auth-test", username: "device", password: password),
                connectTimeoutMs: 5000, logger: Logger(label: "test"))
        }
        let error = await #expect(throws: MQTTSourceError.self) {
            try await source("wrong").run(resumingFrom: nil, emitter: Collector())
        }
        let text = error?.description ?? ""
        #expect(text.contains("bad user name or password") || text.contains("not authorized"), "\(text)")
        #expect(text.contains("ingest.source.username / password"), "\(text)")
        #expect(!text.contains("wrong"), "the password is not in the message")

        // The right password connects and messages flow (then the source is stopped).
        let collector = Collector()
        let running = Task { try await source("right-password").run(resumingFrom: nil, emitter: collector) }
        let deadline = ContinuousClock.now + .seconds(30)
        while collector.count == 0 && ContinuousClock.now < deadline {
            _ = try await broker.publish(topic: "a/b", message: "{}", extra: ["-u", "device", "-P", "right-password"])
            try await Task.sleep(for: .milliseconds(200))
        }
        collector.shutDown()
        try await running.value
        #expect(collector.count > 0)
    }

    @Test func tlsVerifiesTheBrokerAgainstTheConfiguredCA() async throws {
        let broker = try await Mosquitto.start(tls: true)
        defer { broker.stopNow() }
        let tlsPort = try #require(broker.tlsPort)
        func source(_ extra: String) throws -> MQTTSource {
            let yaml = "type: mqtt\nport: \(tlsPort)\nclient_id: tls-test\ntopics: [\"t/#\"]\ntls: true\nconnect_timeout: 1500ms\n" + extra
            let m = try ConfigNode.parse(yaml: yaml, source: ConfigSource(file: "t.yaml", environment: [:])).mapping()
            return try #require(try SourceFactory.make(m, baseDirectory: "/", logger: Logger(label: "test")) as? MQTTSource)
        }
        // Trusted through ca_file (the certificate names localhost; the host is an address).
        let collector = Collector()
        let trusted = try source("ca_file: \(broker.caFile)\ntls_server_name: localhost")
        let running = Task { try await trusted.run(resumingFrom: nil, emitter: collector) }
        let deadline = ContinuousClock.now + .seconds(30)
        while collector.count == 0 && ContinuousClock.now < deadline {
            _ = try await broker.publish(topic: "t/1", message: #"{"over":"tls"}"#)
            try await Task.sleep(for: .milliseconds(200))
        }
        collector.shutDown()
        try await running.value
        #expect(collector.count > 0, "a message arrived over TLS")

        // Without the CA (system roots only) the handshake fails, and the error points at the TLS settings.
        let error = await #expect(throws: MQTTSourceError.self) {
            try await source("tls_server_name: localhost").run(resumingFrom: nil, emitter: Collector())
        }
        #expect(error?.description.contains("ca_file / tls_server_name") == true, "\(error?.description ?? "")")
        #expect(error?.description.contains("CERTIFICATE_VERIFY_FAILED") == true, "the cause is the unverified certificate")
        // A CA file that is not there is a config error naming the key.
        #expect(throws: ConfigError.self) { _ = try source("ca_file: /nonexistent/ca.pem") }
    }

    /// The MQTT broker is killed and started again (with persistence) while the source runs: the source
    /// reconnects on its own, resumes the kept session, and a message published while it was away arrives.
    @Test func theSourceReconnectsAfterTheBrokerRestarts() async throws {
        let persistence = FileManager.default.temporaryDirectory.appendingPathComponent("sf-mosquitto-db-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: persistence, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: persistence) }
        let first = try await Mosquitto.start(persistence: persistence)
        defer { first.stopNow() }
        let source = MQTTSource(
            host: "127.0.0.1", port: first.port, subscriptions: [MQTTSubscription(filter: "r/#", qos: 1)],
            options: MQTTConnectOptions(version: .v5, clientID: "restart-test"), reconnectMaxDelayMs: 400, logger: Logger(label: "test"))
        let collector = Collector()
        let running = Task { try await source.run(resumingFrom: nil, emitter: collector) }
        var deadline = ContinuousClock.now + .seconds(30)
        while collector.count == 0 && ContinuousClock.now < deadline {
            _ = try await first.publish(topic: "r/1", message: #"{"before":true}"#)
            try await Task.sleep(for: .milliseconds(200))
        }
        let before = collector.count
        #expect(before > 0)
        // SIGKILL: the broker dies without a goodbye; its sessions were saved on every change.
        #expect(await first.kill().signaled)
        let second = try await Mosquitto.start(port: first.port, persistence: persistence)
        defer { second.stopNow() }
        #expect(try await second.publish(topic: "r/2", message: #"{"after":"restart"}"#) == 0)
        deadline = ContinuousClock.now + .seconds(30)
        while !collector.payloads.contains(#"{"after":"restart"}"#) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        collector.shutDown()
        try await running.value
        #expect(collector.payloads.contains(#"{"after":"restart"}"#), "published while the source was reconnecting")
    }

    @Test func anUnreachableBrokerFailsNamingHostAndPort() async throws {
        let port = try Mosquitto.freePort()
        let source = MQTTSource(
            host: "127.0.0.1", port: port, subscriptions: [MQTTSubscription(filter: "a", qos: 1)],
            options: MQTTConnectOptions(version: .v5, clientID: "x"), connectTimeoutMs: 800, logger: Logger(label: "test"))
        let error = await #expect(throws: MQTTSourceError.self) {
            try await source.run(resumingFrom: nil, emitter: Collector())
        }
        let text = error?.description ?? ""
        #expect(
            text.contains("127.0.0.1:\(port)") && text.contains("ingest.source.host / port") && text.contains("connect_timeout"), "\(text)")
    }
}

/// Collects records like ingest would (delivered at once); ``shutDown()`` makes the next emit throw
/// `.shuttingDown`, as ingest does on SIGTERM.
final class Collector: RecordEmitter, Sendable {
    private let state = Mutex<(records: [SourceRecord], stopping: Bool)>(([], false))

    func emit(_ records: [SourceRecord]) async throws(EmitError) {
        let stopping = state.withLock { s in
            if !s.stopping { s.records += records }
            return s.stopping
        }
        if stopping { throw .shuttingDown }
    }

    func emitAndWait(_ records: [SourceRecord]) async throws(EmitError) { try await emit(records) }

    func shutDown() { state.withLock { $0.stopping = true } }
    var count: Int { state.withLock { $0.records.count } }
    var payloads: [String] { state.withLock { $0.records.map { String(decoding: $0.bytes, as: UTF8.self) } } }
}

final class Counter: Sendable {
    private let count = Mutex(0)
    func set(_ n: Int) { count.withLock { $0 = n } }
    var value: Int { count.withLock { $0 } }
}
