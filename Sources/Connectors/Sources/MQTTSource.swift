import Config
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import StreamCore

/// `type: mqtt` — subscribes to topics on an MQTT broker (IoT devices publishing readings).
///
/// At-least-once from QoS 1 publishes: the source connects with a persistent session (MQTT 5: clean
/// start off and a session expiry; 3.1.1: clean session off) under a stable `client_id`, and sends
/// the PUBACK of a message only after ingest's `emit` returned, i.e. after Kafka acknowledged the
/// record built from it (PUBACKs go in the order the messages came). A crash before that leaves the
/// message unacknowledged in the broker's session, which sends it again (DUP) on the next connect;
/// messages published while ingest is down wait in the session's queue. The broker session plays the
/// part of a checkpoint, so this source writes none.
///
/// MQTT messages have no id that survives redelivery, so `sf.id` is random unless `id_field` names a
/// payload field: after a crash a redelivered message is a second Kafka record with a new id (sinks
/// that upsert by a key made of payload fields still store it once). The record key is the MQTT
/// topic unless ingest's `key:` picks a field; every record carries the topic in the `mqtt.topic`
/// header (and `mqtt.dup: true` when the broker marked it as a redelivery).
///
/// With `tls: true` the connection uses TLS (swift-nio-ssl) and verifies the broker's certificate
/// against `ca_file` or the system's roots.
// The client is hand-written on SwiftNIO: see MQTTPacket.swift for why, and
// docs/decisions/0011-mqtt-source-acks-after-kafka.md.
public struct MQTTSource: RecordSource {
    public static let spec = ConnectorSpec(
        type: "mqtt",
        summary:
            "Subscribes to MQTT topics (QoS 0/1, MQTT 5 or 3.1.1) with a persistent session; "
            + "a QoS 1 message is acknowledged to the broker only after Kafka acknowledged its record (at-least-once across "
            + "restarts). Key: the MQTT topic unless ingest's `key:` is set; header `mqtt.topic`. Ids are random (duplicates after "
            + "a crash get new ids) unless `id_field` is set. Optional TLS.",
        fields: [
            .init("host", "string", default: "127.0.0.1", "the broker's host name or address"),
            .init("port", "integer", default: "1883", "the broker's port"),
            .init("topics", "list", "topic filters (`+` and `#` wildcards), each a string (QoS 1) or `{ filter: …, qos: 0 | 1 }`"),
            .init(
                "client_id", "string",
                "stable client identifier: the broker keeps the session (subscriptions, unacknowledged and queued messages) under it; "
                    + "one ingest worker per id"
            ),
            .init("protocol", "5 | 3.1.1", default: "5", "MQTT protocol version"),
            .init("username", "string", default: "none", "user name for the broker"),
            .init("password", "string", default: "none", "password (never logged); use ${file:/run/secrets/…} or ${VAR}"),
            .init(
                "keepalive", "duration", default: "30s",
                "PINGREQ interval bound; a broker silent for 1.5× this is treated as gone and the source reconnects"),
            .init(
                "session_expiry", "duration", default: "7d",
                "MQTT 5: how long the broker keeps the session while ingest is away (3.1.1 brokers keep it until a clean connect)"),
            .init(
                "max_in_flight", "integer", default: "1000",
                "MQTT 5 receive maximum: unacknowledged QoS 1 messages the broker may send at once (also the largest batch handed to "
                    + "Kafka); 3.1.1 brokers use their own limit (mosquitto: max_inflight_messages)"
            ),
            .init(
                "max_buffered", "integer", default: "10000",
                "received messages not yet in Kafka above which the socket is not read until half are delivered (bounds memory for QoS "
                    + "0 floods while Kafka is slow)"
            ),
            .init(
                "max_packet_bytes", "integer", default: "1048576",
                "larger messages are dead-lettered (SourceRejected) without being buffered, and acknowledged"),
            .init(
                "id_field", "string", default: "none",
                "a top-level payload field whose value gives a deterministic record id `mqtt:<value>` (redeliveries keep their id)"),
            .init("tls", "boolean", default: "false", "connect with TLS (usually port 8883); the broker's certificate is verified"),
            .init("ca_file", "string", default: "system roots", "PEM file of the CA(s) that signed the broker's certificate (with `tls`)"),
            .init(
                "tls_server_name", "string", default: "host",
                "the name the broker's certificate must carry, sent as SNI (with `tls`; for a host given as an address)"),
            .init(
                "connect_timeout", "duration", default: "10s",
                "how long the first connection may take, retries included, before ingest fails naming host/port"),
            .init("reconnect_max_delay", "duration", default: "10s", "after a lost connection, retries back off from 100ms up to this"),
        ])

    public let host: String
    public let port: Int
    public let subscriptions: [MQTTSubscription]
    public let options: MQTTConnectOptions
    public let maxPacketBytes: Int
    public let idField: String?
    public let connectTimeoutMs: Int64
    public let reconnectMaxDelayMs: Int64
    /// Received messages not yet in Kafka above which the socket is not read (see ``Inbox``).
    public var maxBufferedMessages = 10_000
    /// Set for `tls: true`.
    public let tls: NIOSSLContext?
    public let tlsServerName: String?
    let logger: Logger

    public var name: String { "mqtt:\(host):\(port)" }

    public init(
        host: String, port: Int, subscriptions: [MQTTSubscription], options: MQTTConnectOptions, maxPacketBytes: Int = 1 << 20,
        idField: String? = nil, connectTimeoutMs: Int64 = 10_000, reconnectMaxDelayMs: Int64 = 10_000, tls: NIOSSLContext? = nil,
        tlsServerName: String? = nil, logger: Logger
    ) {
        self.tls = tls
        self.tlsServerName = tlsServerName
        self.host = host
        self.port = port
        self.subscriptions = subscriptions
        self.options = options
        self.maxPacketBytes = maxPacketBytes
        self.idField = idField
        self.connectTimeoutMs = connectTimeoutMs
        self.reconnectMaxDelayMs = reconnectMaxDelayMs
        self.logger = logger
    }

    init(_ m: ConfigMapping, logger: Logger) throws(ConfigError) {
        let topicsNode = try m.required("topics", hint: "a list of topic filters, e.g. [\"sensors/+/reading\"]")
        var subscriptions: [MQTTSubscription] = []
        for node in try topicsNode.sequence() {
            let sub: MQTTSubscription
            if let text = try? node.string() {
                sub = MQTTSubscription(filter: text, qos: 1)
            } else {
                let t = try node.mapping()
                sub = MQTTSubscription(filter: try t.required("filter").string(), qos: UInt8(try t.int("qos", default: 1, in: 0...1)))
                try t.finish()
            }
            if let problem = Self.filterProblem(sub.filter) { throw node.error("topic filter '\(sub.filter)': \(problem)") }
            subscriptions.append(sub)
        }
        if subscriptions.isEmpty { throw topicsNode.error("needs at least one topic filter") }
        let clientNode = try m.required(
            "client_id", hint: "a stable id, e.g. streamfirst-ingest-<pipeline>: the broker keeps the session under it")
        let clientID = try clientNode.string()
        if clientID.isEmpty || clientID.utf8.count > 65535 { throw clientNode.error("client_id must be 1…65535 bytes") }
        let version = MQTTVersion(rawValue: try m.choice("protocol", ["5", "3.1.1"], default: "5")) ?? .v5
        let keepalive = try m.duration("keepalive", defaultMilliseconds: 30_000)
        guard (1000...65_535_000).contains(keepalive) else {
            throw m.optional("keepalive")?.error("keepalive must be between 1s and 65535s") ?? topicsNode.error("keepalive")
        }
        let expiry = try m.duration("session_expiry", defaultMilliseconds: 7 * 86_400_000)
        let username = try m.string("username").flatMap { $0.isEmpty ? nil : $0 }
        let password = try m.string("password").flatMap { $0.isEmpty ? nil : $0 }
        if password != nil && username == nil && version == .v311 {
            throw m.optional("password")?.error("MQTT 3.1.1 needs a username with a password") ?? topicsNode.error("password")
        }
        let options = MQTTConnectOptions(
            version: version, clientID: clientID, cleanStart: false, keepAliveSeconds: UInt16(keepalive / 1000), username: username,
            password: password, sessionExpirySeconds: UInt32(min(max(expiry / 1000, 1), Int64(UInt32.max - 1))),
            receiveMaximum: UInt16(try m.int("max_in_flight", default: 1000, in: 1...65535)))
        var tls: NIOSSLContext?
        var serverName: String?
        let host = try m.string("host", default: "127.0.0.1")
        if try m.bool("tls", default: false) {
            var configuration = TLSConfiguration.makeClientConfiguration()
            if let caNode = m.optional("ca_file") {
                let path = try caNode.string()
                do {
                    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path))
                } catch {
                    throw caNode.error("cannot read the CA certificates in '\(path)': \(error)")
                }
            }
            do {
                tls = try NIOSSLContext(configuration: configuration)
            } catch {
                throw m.optional("tls")?.error("TLS setup failed: \(error)") ?? topicsNode.error("TLS setup failed: \(error)")
            }
            serverName = try m.string("tls_server_name") ?? host
            // SNI cannot carry an address: an address is checked against the certificate's IP entries.
            if let name = serverName, name.contains(":") || name.allSatisfy({ $0.isNumber || $0 == "." }) { serverName = nil }
        } else {
            for key in ["ca_file", "tls_server_name"] {
                if let node = m.optional(key) { throw node.error("\(key) needs `tls: true`") }
            }
        }
        self.init(
            host: host, port: try m.int("port", default: 1883, in: 1...65535),
            subscriptions: subscriptions, options: options,
            maxPacketBytes: try m.int("max_packet_bytes", default: 1 << 20, in: 64...(256 << 20)),
            idField: try m.string("id_field").flatMap { $0.isEmpty ? nil : $0 },
            connectTimeoutMs: try m.duration("connect_timeout", defaultMilliseconds: 10_000),
            reconnectMaxDelayMs: try m.duration("reconnect_max_delay", defaultMilliseconds: 10_000), tls: tls, tlsServerName: serverName,
            logger: logger)
        maxBufferedMessages = try m.int("max_buffered", default: 10_000, in: 2...10_000_000)
    }

    /// Why a topic filter is invalid (MQTT's rules for `+` and `#`), or nil.
    static func filterProblem(_ filter: String) -> String? {
        if filter.isEmpty { return "empty" }
        let levels = filter.split(separator: "/", omittingEmptySubsequences: false)
        for (i, level) in levels.enumerated() {
            if level.contains("#") && (level != "#" || i != levels.count - 1) { return "`#` must be a whole last level" }
            if level.contains("+") && level != "+" { return "`+` must be a whole level" }
        }
        return nil
    }

    // MARK: Running

    public func run(resumingFrom checkpoint: String?, emitter: any RecordEmitter) async throws {
        var connectedOnce = false
        var delayMs: Int64 = 100
        let firstDeadline = ContinuousClock.now + .milliseconds(connectTimeoutMs)
        while !Task.isCancelled {
            let connected = NIOLockedValueBox(false)
            do {
                if try await session(emitter: emitter, connected: connected, reconnecting: connectedOnce) == .shutdown { return }
            } catch let error as MQTTSourceError where error.isFatal {
                throw error
            } catch is CancellationError {
                return
            } catch {
                if connected.withLockedValue({ $0 }) {
                    connectedOnce = true
                    delayMs = 100
                }
                if !connectedOnce && ContinuousClock.now >= firstDeadline {
                    throw MQTTSourceError.unreachable(
                        "cannot connect to the MQTT broker at \(host):\(port) within connect_timeout \(connectTimeoutMs)ms — check "
                            + "ingest.source.host / port\(tls == nil ? "" : " / ca_file / tls_server_name") (\(error))"
                    )
                }
                logger.warning(
                    connectedOnce ? "MQTT connection lost; reconnecting" : "MQTT connection failed; retrying",
                    metadata: ["source": "\(name)", "error": "\(error)", "retry_in_ms": "\(delayMs)"])
            }
            // A stopping ingest says so on an empty emit: no reconnecting then.
            do {
                try await emitter.emit([])
            } catch {
                if case .shuttingDown = error { return }
            }
            try await Task.sleep(for: .milliseconds(delayMs))
            delayMs = min(delayMs * 2, max(reconnectMaxDelayMs, 100))
        }
    }

    enum SessionEnd { case shutdown }

    /// One connection: CONNECT, SUBSCRIBE, then messages → Kafka → PUBACK until something fails.
    /// Three tasks: the reader (packets from the broker), the keep-alive timer, the batcher.
    func session(emitter: any RecordEmitter, connected: NIOLockedValueBox<Bool>, reconnecting: Bool) async throws -> SessionEnd {
        let connection = try await MQTTConnection.open(
            host: host, port: port, version: options.version, maxPacketSize: maxPacketBytes,
            connectTimeout: .milliseconds(max(connectTimeoutMs, 100)), tls: tls, serverName: tlsServerName)
        let inbox = Inbox(highWater: maxBufferedMessages)
        let liveness = NIOLockedValueBox(ContinuousClock.now)
        let result: Result<SessionEnd, any Error> = await withTaskGroup(of: Result<SessionEnd, any Error>?.self) { group in
            group.addTask {
                await readPackets(connection, inbox: inbox, liveness: liveness, connected: connected, reconnecting: reconnecting)
            }
            group.addTask { await keepAlive(connection, inbox: inbox, liveness: liveness, connected: connected) }
            group.addTask { await deliverBatches(connection, inbox: inbox, emitter: emitter) }
            var outcome: Result<SessionEnd, any Error> = .failure(CancellationError())
            if let first = await group.next(), let r = first { outcome = r }
            group.cancelAll()
            inbox.close()
            return outcome
        }
        if case .success(.shutdown) = result {
            try? await connection.send(MQTTCodec.disconnect())
        }
        await connection.close()
        return try result.get()
    }

    /// Sends CONNECT, checks the CONNACK, subscribes, then queues every message for the batcher.
    func readPackets(
        _ connection: MQTTConnection, inbox: Inbox, liveness: NIOLockedValueBox<ContinuousClock.Instant>,
        connected: NIOLockedValueBox<Bool>,
        reconnecting: Bool
    ) async -> Result<SessionEnd, any Error>? {
        do {
            do {
                try await connection.send(MQTTCodec.connect(options))
            } catch {
                // A channel closed by a failure (a TLS handshake) has the cause on its packet stream.
                for try await _ in connection.packets {}
                throw error
            }
            var first = true
            for try await packet in connection.packets {
                liveness.withLockedValue { $0 = .now }
                if first {
                    first = false
                    try await handshake(packet, connection: connection, reconnecting: reconnecting)
                    connected.withLockedValue { $0 = true }
                    continue
                }
                switch packet {
                case .publish(let p):
                    if p.qos > 1 { throw MQTTSourceError.transient("QoS \(p.qos) PUBLISH although QoS 1 at most was subscribed") }
                    if inbox.push(.message(p)) { try await pauseReading(connection) }
                case .oversizedPublish(let topic, let qos, let id, let bytes):
                    if inbox.push(.oversized(topic: topic, qos: qos, packetID: id, bytes: bytes)) { try await pauseReading(connection) }
                case .suback(_, let codes):
                    for (i, c) in codes.enumerated() {
                        let filter = i < subscriptions.count ? subscriptions[i].filter : "#\(i)"
                        if c >= 0x80 {
                            throw MQTTSourceError.refused(
                                "the MQTT broker refused the subscription to '\(filter)' (reason code \(c)) — check "
                                    + "ingest.source.topics and the broker's ACL"
                            )
                        }
                        if i < subscriptions.count && c < subscriptions[i].qos {
                            logger.warning(
                                "the broker granted a lower QoS: messages on this filter are at-most-once",
                                metadata: ["source": "\(name)", "filter": "\(filter)", "granted_qos": "\(c)"])
                        }
                    }
                case .pingresp, .puback, .unsuback:
                    break
                case .disconnect(let code, let reason):
                    throw MQTTSourceError.transient("the broker disconnected (reason code \(code)\(reason.map { ": \($0)" } ?? ""))")
                case .connack:
                    throw MQTTSourceError.transient("a second CONNACK")
                }
            }
            throw MQTTSourceError.transient(
                first ? "the broker closed the connection before its CONNACK" : "the broker closed the connection")
        } catch {
            return Task.isCancelled ? nil : .failure(error)
        }
    }

    func handshake(_ packet: MQTTPacket, connection: MQTTConnection, reconnecting: Bool) async throws {
        guard case .connack(let sessionPresent, let code, let reason) = packet else {
            throw MQTTSourceError.transient("the broker's first packet is not a CONNACK: \(packet)")
        }
        if code != 0 {
            let (text, authentication, retriable) = MQTTCodec.connackText(code, version: options.version)
            let detail = text + (reason.map { " (\($0))" } ?? "")
            if authentication {
                throw MQTTSourceError.refused(
                    "the MQTT broker at \(host):\(port) refused the connection: \(detail) — check ingest.source.username / password")
            }
            if retriable { throw MQTTSourceError.transient("the MQTT broker refused the connection: \(detail)") }
            throw MQTTSourceError.refused(
                "the MQTT broker at \(host):\(port) refused the connection: \(detail) — check ingest.source.client_id / protocol")
        }
        logger.info(
            "MQTT connected", metadata: ["source": "\(name)", "client_id": "\(options.clientID)", "session_present": "\(sessionPresent)"])
        if !sessionPresent && reconnecting {
            logger.warning(
                """
                the broker kept no session for this client: messages published while disconnected are lost if it did not queue them \
                (session expired, or a broker restart without persistence)
                """,
                metadata: ["source": "\(name)", "client_id": "\(options.clientID)"])
        }
        // Subscribing again to a kept session is harmless and picks up changed filters.
        try await connection.send(MQTTCodec.subscribe(packetID: 1, subscriptions, version: options.version))
    }

    /// Fails the session when the CONNACK does not come within connect_timeout or the broker goes
    /// silent for 1.5 × keepalive; sends PINGREQ every half keepalive. Wakes the batcher every 200 ms
    /// so it notices a shutdown while no messages come.
    func keepAlive(
        _ connection: MQTTConnection, inbox: Inbox, liveness: NIOLockedValueBox<ContinuousClock.Instant>, connected: NIOLockedValueBox<Bool>
    )
        async -> Result<SessionEnd, any Error>?
    {
        let interval = Duration.seconds(Int(options.keepAliveSeconds))
        let connectDeadline = ContinuousClock.now + .milliseconds(max(connectTimeoutMs, 100))
        var lastPing = ContinuousClock.now
        do {
            while true {
                try await Task.sleep(for: .milliseconds(200))
                inbox.wake()
                guard connected.withLockedValue({ $0 }) else {
                    if ContinuousClock.now > connectDeadline {
                        throw MQTTSourceError.transient("no CONNACK within connect_timeout \(connectTimeoutMs)ms")
                    }
                    continue
                }
                // While reads are paused the broker's PINGRESPs wait unread: silence proves nothing.
                if inbox.isPaused { liveness.withLockedValue { $0 = .now } }
                if ContinuousClock.now - liveness.withLockedValue({ $0 }) > interval * 3 / 2 {
                    throw MQTTSourceError.transient("no packet from the broker for 1.5 × keepalive")
                }
                if ContinuousClock.now - lastPing >= interval / 2 {
                    lastPing = .now
                    try await connection.send(MQTTCodec.pingreq())
                }
            }
        } catch {
            return Task.isCancelled ? nil : .failure(error)
        }
    }

    func pauseReading(_ connection: MQTTConnection) async throws {
        try await connection.channel.setOption(ChannelOptions.autoRead, value: false).get()
        logger.info("MQTT reads paused: Kafka is behind", metadata: ["source": "\(name)"])
    }

    /// Hands what arrived to Kafka and acknowledges it to the broker once Kafka has it.
    func deliverBatches(_ connection: MQTTConnection, inbox: Inbox, emitter: any RecordEmitter) async -> Result<SessionEnd, any Error>? {
        do {
            while true {
                await inbox.waitForItems()
                try Task.checkCancellation()
                let batch = inbox.take(max: Int(options.receiveMaximum))
                if inbox.resumeIfDrained() {
                    try await connection.channel.setOption(ChannelOptions.autoRead, value: true).get()
                    logger.info("MQTT reads resumed", metadata: ["source": "\(name)"])
                }
                do {
                    // Returns once Kafka acknowledged every record; [] only checks for a shutdown.
                    try await emitter.emit(batch.map(record(for:)))
                } catch {
                    if case .shuttingDown = error { return .success(.shutdown) }
                    throw MQTTSourceError.transient("delivery to Kafka failed, messages left unacknowledged: \(error)")
                }
                var acks = ByteBuffer()
                for item in batch {
                    if let id = item.ackID { acks.writeImmutableBuffer(MQTTCodec.puback(packetID: id)) }
                }
                if acks.readableBytes > 0 { try await connection.send(acks) }
            }
        } catch {
            return Task.isCancelled ? nil : .failure(error)
        }
    }

    /// The record for one received message.
    func record(for item: Inbox.Item) -> SourceRecord {
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
        switch item {
        case .message(let p):
            var headers = [("mqtt.topic", p.topic)]
            if p.dup { headers.append(("mqtt.dup", "true")) }
            var id: String?
            if let idField, let value = try? JSONValue.parse(p.payload), case .object(let fields) = value {
                switch fields[idField] {
                case .string(let s)?: id = "mqtt:\(s)"
                case .integer(let i)?: id = "mqtt:\(i)"
                default: break
                }
            }
            return SourceRecord(bytes: p.payload, id: id, receivedAtMs: now, key: Array(p.topic.utf8), headers: headers)
        case .oversized(let topic, _, _, let bytes):
            return SourceRecord(
                bytes: [], receivedAtMs: now,
                rejection: "an MQTT message of \(bytes) bytes on '\(topic)' is over max_packet_bytes \(maxPacketBytes) (payload dropped)",
                key: Array(topic.utf8), headers: [("mqtt.topic", topic)])
        }
    }
}

/// Why the MQTT source stopped or reconnected.
public enum MQTTSourceError: Error, CustomStringConvertible, Sendable {
    /// Refused by the broker (credentials, client id, subscription): retrying cannot help.
    case refused(String)
    /// The first connection never came up within `connect_timeout`.
    case unreachable(String)
    /// A lost or broken connection: the source reconnects.
    case transient(String)

    var isFatal: Bool {
        if case .transient = self { return false }
        return true
    }

    public var description: String {
        switch self {
        case .refused(let s), .unreachable(let s), .transient(let s): return "mqtt: \(s)"
        }
    }
}

/// Messages received and not yet handed to Kafka; the batcher waits on it.
final class Inbox: Sendable {
    enum Item: Sendable {
        case message(MQTTPublish)
        case oversized(topic: String, qos: UInt8, packetID: UInt16?, bytes: Int)

        /// The packet id to acknowledge once delivered (QoS 1 only).
        var ackID: UInt16? {
            switch self {
            case .message(let p): return p.qos == 1 ? p.packetID : nil
            case .oversized(_, let qos, let id, _): return qos == 1 ? id : nil
            }
        }
    }

    /// Received but undelivered messages above which the source stops reading the socket (TCP
    /// backpressure to the broker), and below which it reads again. QoS 1 messages are bounded by
    /// the receive maximum already; this bounds QoS 0 ones (and 3.1.1 brokers' in-flight windows)
    /// while Kafka is slow or down.
    let highWater: Int
    let lowWater: Int

    init(highWater: Int = 10_000) {
        self.highWater = max(highWater, 2)
        self.lowWater = max(highWater, 2) / 2
    }

    private struct State {
        var paused = false
        var items: [Item] = []
        var waiter: CheckedContinuation<Void, Never>?
        var woken = false
        var closed = false
    }

    private let state = NIOLockedValueBox(State())

    /// Queues a message; true when the inbox just reached its high-water mark (pause reading).
    @discardableResult
    func push(_ item: Item) -> Bool {
        let (waiter, pause) = state.withLockedValue { s -> (CheckedContinuation<Void, Never>?, Bool) in
            s.items.append(item)
            let pause = !s.paused && s.items.count >= highWater
            if pause { s.paused = true }
            defer { s.waiter = nil }
            return (s.waiter, pause)
        }
        waiter?.resume()
        return pause
    }

    var isPaused: Bool { state.withLockedValue { $0.paused } }

    /// True once when a paused inbox drained below its low-water mark (resume reading).
    func resumeIfDrained() -> Bool {
        state.withLockedValue { s in
            guard s.paused && s.items.count < lowWater else { return false }
            s.paused = false
            return true
        }
    }

    /// Makes a waiting ``waitForItems()`` return even without items (periodic shutdown checks).
    func wake() {
        let waiter = state.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            s.woken = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    func close() {
        let waiter = state.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            s.closed = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// Returns when there are items, after a ``wake()``, or once closed / cancelled.
    func waitForItems() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLockedValue { s -> Bool in
                    if !s.items.isEmpty || s.closed || s.woken {
                        s.woken = false
                        return true
                    }
                    s.waiter = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            close()
        }
    }

    func take(max: Int) -> [Item] {
        state.withLockedValue { s in
            let n = min(max, s.items.count)
            let out = Array(s.items.prefix(n))
            s.items.removeFirst(n)
            return out
        }
    }
}
