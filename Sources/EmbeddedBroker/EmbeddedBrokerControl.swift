import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// An async client of the embedded broker's control channel.
///
/// Each command opens a short TCP connection, sends one line, reads the one-line reply and closes.
/// `ok ...` replies return their details; `error REASON` replies throw
/// ``EmbeddedBrokerError/rejected(command:reason:)`` with the broker's reason.
public struct EmbeddedBrokerControl: Sendable {
    public let host: String
    public let port: Int
    private let group: EventLoopGroup

    public init(host: String, port: Int, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.group = group
    }

    /// A client for `HOST:PORT`.
    public init(address: String, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws(EmbeddedBrokerError) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
            (1...65535).contains(port), colon != address.startIndex
        else {
            throw .invalidArgument("bad control address '\(address)': expected HOST:PORT, for example 127.0.0.1:9093")
        }
        self.init(host: String(address[..<colon]), port: port, group: group)
    }

    /// Sends one command line and returns the reply line as it came (`ok ...` or `error ...`).
    /// Throws ``EmbeddedBrokerError/connection(_:)`` if no reply comes within `timeout`.
    // Every command answers at once: a broker that does not is stuck, and a fault schedule must not wait
    // on it forever.
    public func sendRaw(_ command: String, timeout: Duration = .seconds(30)) async throws -> String {
        guard !command.contains("\n"), !command.contains("\r") else {
            throw EmbeddedBrokerError.invalidArgument("a control command is one line")
        }
        let channel: NIOAsyncChannel<String, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: group)
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder(maximumLength: 1 << 20)))
                        return try NIOAsyncChannel<String, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw EmbeddedBrokerError.connection("cannot connect to \(host):\(port): \(error)")
        }
        // Closing the channel at the deadline ends the read below.
        let timedOut = NIOLockedValueBox(false)
        let underlying = channel.channel
        let deadline = underlying.eventLoop.scheduleTask(in: .nanoseconds(Int64(clamping: timeout.milliseconds) * 1_000_000)) {
            timedOut.withLockedValue { $0 = true }
            underlying.close(promise: nil)
        }
        defer { deadline.cancel() }
        let (host, port) = (self.host, self.port)
        do {
            return try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: command + "\n"))
                var lines = inbound.makeAsyncIterator()
                guard let reply = try await lines.next() else {
                    throw EmbeddedBrokerError.connection("\(host):\(port) closed the connection without replying to '\(command)'")
                }
                return reply
            }
        } catch  where timedOut.withLockedValue({ $0 }) {
            throw EmbeddedBrokerError.connection("\(host):\(port) sent no reply to '\(command)' within \(timeout)")
        }
    }

    /// Sends one command; returns the details after `ok` (possibly empty), throws the reason of an `error` reply.
    @discardableResult
    public func send(_ command: String) async throws -> String {
        let reply = try await sendRaw(command)
        if reply == "ok" { return "" }
        if reply.hasPrefix("ok ") { return String(reply.dropFirst(3)) }
        if reply.hasPrefix("error ") {
            throw EmbeddedBrokerError.rejected(command: command, reason: String(reply.dropFirst(6)))
        }
        throw EmbeddedBrokerError.connection("unexpected reply to '\(command)': \(reply)")
    }

    // MARK: - Typed commands

    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int = 1) async throws {
        try await send("create-topic \(name) \(partitions) \(replicationFactor)")
    }

    public func brokerDown(_ id: Int) async throws {
        try await send("broker-down \(id)")
    }

    public func brokerUp(_ id: Int) async throws {
        try await send("broker-up \(id)")
    }

    /// Sets a broker's added round-trip time; 0 clears it.
    public func setRTT(broker id: Int, milliseconds: Int) async throws {
        try await send("rtt \(id) \(milliseconds)")
    }

    /// Makes the next requests of `api` (a name such as `Produce` or a number) fail with `errors`
    /// (librdkafka names such as `NOT_LEADER_FOR_PARTITION`, or numbers), in order.
    public func pushRequestErrors(api: String, errors: [String]) async throws {
        try await send("request-errors \(api) \(errors.joined(separator: ","))")
    }

    public func clearRequestErrors(api: String) async throws {
        try await send("clear-request-errors \(api)")
    }

    /// Makes requests for `topic` fail with `error`; `NO_ERROR` clears it.
    public func topicError(_ topic: String, error: String) async throws {
        try await send("topic-error \(topic) \(error)")
    }

    /// Moves a partition's leadership to `broker` (-1: no leader).
    public func setLeader(topic: String, partition: Int, broker: Int) async throws {
        try await send("leader \(topic) \(partition) \(broker)")
    }

    /// Makes `broker` the coordinator of a consumer group (`group`) or transactional id (`transaction`).
    public func setCoordinator(_ kind: String, key: String, broker: Int) async throws {
        try await send("coordinator \(kind) \(key) \(broker)")
    }

    public func ping() async throws {
        try await send("ping")
    }

    /// What the broker reports about itself.
    public struct Info: Sendable, Hashable {
        public var bootstrapServers: String
        public var brokers: Int
        /// Topics created through the broker (not those the mock auto-created).
        public var topics: [TopicSpec]
        /// Brokers taken down through the control channel.
        public var downBrokers: [Int]
    }

    public func info() async throws -> Info {
        let details = try await send("info")
        var fields: [String: String] = [:]
        for word in details.split(separator: " ") {
            guard let eq = word.firstIndex(of: "=") else { continue }
            fields[String(word[..<eq])] = String(word[word.index(after: eq)...])
        }
        guard let bootstrap = fields["bootstrap"], let brokers = fields["brokers"].flatMap({ Int($0) }) else {
            throw EmbeddedBrokerError.connection("malformed info reply: \(details)")
        }
        var topics: [TopicSpec] = []
        for entry in (fields["topics"] ?? "").split(separator: ",") {
            topics.append(try TopicSpec.parse(String(entry)))
        }
        let down = (fields["down"] ?? "").split(separator: ",").compactMap { Int($0) }
        return Info(bootstrapServers: bootstrap, brokers: brokers, topics: topics, downBrokers: down)
    }

    /// Asks the broker process to stop (it replies first, then destroys the cluster and exits 0).
    public func shutdown() async throws {
        try await send("shutdown")
    }
}
