import Kafka
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// How to start an ``EmbeddedBrokerServer``.
public struct EmbeddedBrokerConfiguration: Sendable, Hashable {
    /// Number of mock brokers (ids 1...brokers).
    public var brokers: Int
    /// A fixed bootstrap port served by a forwarder to a broker's listener (0: a forwarder on a port
    /// the OS chooses), or nil for no forwarder: clients use the brokers' own OS-chosen ports.
    public var bootstrapPort: Int?
    /// The control channel's port; 0 lets the operating system choose.
    public var controlPort: Int
    /// The address the control channel and the forwarder listen on.
    public var host: String
    /// Topics created before the server reports ready.
    public var topics: [TopicSpec]

    public init(
        brokers: Int = 1, bootstrapPort: Int? = nil, controlPort: Int = 0, host: String = "127.0.0.1",
        topics: [TopicSpec] = []
    ) {
        self.brokers = brokers
        self.bootstrapPort = bootstrapPort
        self.controlPort = controlPort
        self.host = host
        self.topics = topics
    }
}

/// The embedded broker: a librdkafka mock cluster (``KafkaMockCluster``) plus a line-based TCP
/// control channel for creating topics and injecting faults from other processes.
///
/// Mock-cluster calls run one at a time, in arrival order, off the event loops.
// They can block briefly, so they run on a one-thread `NIOThreadPool`; the one thread also keeps them in
// arrival order.
public final class EmbeddedBrokerServer: Sendable {
    /// The `bootstrap.servers` clients should use: the forwarder's fixed port if one was asked for,
    /// otherwise the brokers' own listeners.
    public let bootstrapServers: String
    /// The brokers' own listeners (`127.0.0.1:port,...`, broker 1 first), which metadata advertises.
    public let clusterBootstrapServers: String
    /// The number of brokers (ids 1...brokerCount).
    public let brokerCount: Int
    /// The control channel's host.
    public let controlHost: String
    /// The control channel's port.
    public let controlPort: Int
    /// `host:port` of the control channel.
    public var controlAddress: String { "\(controlHost):\(controlPort)" }

    private let core: BrokerCore
    private let controlChannel: Channel
    private let forwarder: BootstrapForwarder?

    private init(core: BrokerCore, controlChannel: Channel, forwarder: BootstrapForwarder?, host: String) {
        self.core = core
        self.controlChannel = controlChannel
        self.forwarder = forwarder
        self.brokerCount = core.brokerCount
        self.clusterBootstrapServers = core.cluster.bootstrapServers
        self.bootstrapServers = core.bootstrapServers
        self.controlHost = host
        self.controlPort = controlChannel.localAddress?.port ?? 0
    }

    /// Starts the mock cluster, creates the configured topics, then opens the forwarder (if a
    /// bootstrap port is configured) and the control channel.
    public static func start(
        _ configuration: EmbeddedBrokerConfiguration,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> EmbeddedBrokerServer {
        guard (1...64).contains(configuration.brokers) else {
            throw EmbeddedBrokerError.invalidArgument("--brokers must be between 1 and 64, got \(configuration.brokers)")
        }
        for (port, option) in [(configuration.bootstrapPort ?? 0, "--port"), (configuration.controlPort, "--control-port")] {
            guard (0...65535).contains(port) else {
                throw EmbeddedBrokerError.invalidArgument("\(option) must be between 0 and 65535, got \(port)")
            }
        }
        var seen: Set<String> = []
        for topic in configuration.topics where !seen.insert(topic.name).inserted {
            throw EmbeddedBrokerError.invalidArgument("topic '\(topic.name)' is declared more than once")
        }

        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let core: BrokerCore
        do {
            let cluster = try await pool.runIfActive { try KafkaMockCluster(brokers: configuration.brokers) }
            core = BrokerCore(cluster: cluster, pool: pool)
            for topic in configuration.topics {
                let reply = await core.run(.createTopic(topic))
                guard reply.isOK else {
                    throw EmbeddedBrokerError.invalidArgument("cannot create topic \(topic): \(reply.line)")
                }
            }
        } catch {
            try? await pool.shutdownGracefully()
            throw error
        }

        var forwarder: BootstrapForwarder?
        do {
            if let port = configuration.bootstrapPort {
                forwarder = try await BootstrapForwarder.start(host: configuration.host, port: port, group: group) {
                    core.forwardTarget()
                }
                core.setBootstrapServers("\(configuration.host):\(forwarder?.port ?? port)")
            }
            let control = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder()))
                        try channel.pipeline.syncOperations.addHandler(ControlHandler(core: core))
                    }
                }
                .bind(host: configuration.host, port: configuration.controlPort)
                .get()
            return EmbeddedBrokerServer(core: core, controlChannel: control, forwarder: forwarder, host: configuration.host)
        } catch {
            await forwarder?.close()
            await core.destroy()
            throw EmbeddedBrokerError.invalidArgument("cannot listen on \(configuration.host): \(error)")
        }
    }

    /// Topics created through this server (configuration and `create-topic`), in creation order.
    /// Topics the mock auto-creates on metadata requests are not listed.
    public var topics: [TopicSpec] { core.topics }

    /// Runs one control command line, as the control channel does, and returns the reply.
    public func execute(_ line: String) async -> ControlReply {
        let reply = await core.execute(line)
        if reply.requestsShutdown { core.requestShutdown() }
        return reply
    }

    /// Asks the server to stop: ``waitUntilShutdownRequested()`` returns. Safe from any thread
    /// (signal handlers, the `shutdown` command).
    public func requestShutdown() {
        core.requestShutdown()
    }

    /// Returns once ``requestShutdown()`` was called or a client sent `shutdown`.
    public func waitUntilShutdownRequested() async {
        await core.waitForShutdownRequest()
    }

    /// Closes the control channel and the forwarder, then destroys the mock cluster. Idempotent.
    /// Control and forwarded connections still open are closed when the process exits.
    public func shutdown() async {
        core.requestShutdown()
        try? await controlChannel.close()
        await forwarder?.close()
        await core.destroy()
    }
}

/// The state shared by the server and its control connections.
final class BrokerCore: Sendable {
    private struct State {
        var topics: [TopicSpec] = []
        var downBrokers: Set<Int32> = []
        var bootstrapServers: String
        var shutdownRequested = false
        var destroyed = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    let cluster: KafkaMockCluster
    let brokerCount: Int
    private let pool: NIOThreadPool
    private let state: NIOLockedValueBox<State>
    /// Broker listeners by id - 1, parsed from the mock's bootstrap list (which is in id order).
    private let brokerAddresses: [(host: String, port: Int)]

    init(cluster: KafkaMockCluster, pool: NIOThreadPool) {
        self.cluster = cluster
        self.brokerCount = cluster.brokerCount
        self.pool = pool
        self.state = NIOLockedValueBox(State(bootstrapServers: cluster.bootstrapServers))
        self.brokerAddresses = cluster.bootstrapServers.split(separator: ",").map { entry in
            let host = entry.split(separator: ":").dropLast().joined(separator: ":")
            return (host, Int(entry.split(separator: ":").last ?? "") ?? 0)
        }
    }

    var topics: [TopicSpec] { state.withLockedValue { $0.topics } }
    var bootstrapServers: String { state.withLockedValue { $0.bootstrapServers } }

    func setBootstrapServers(_ value: String) {
        state.withLockedValue { $0.bootstrapServers = value }
    }

    /// The listener of the first broker not taken down through the control channel (broker 1 if all are).
    func forwardTarget() -> (host: String, port: Int) {
        let down = state.withLockedValue { $0.downBrokers }
        let index = (0..<brokerAddresses.count).first { !down.contains(Int32($0 + 1)) } ?? 0
        return brokerAddresses[index]
    }

    func requestShutdown() {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            s.shutdownRequested = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func waitForShutdownRequest() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLockedValue { s -> Bool in
                if s.shutdownRequested { return true }
                s.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func destroy() async {
        let first = state.withLockedValue { s -> Bool in
            defer { s.destroyed = true }
            return !s.destroyed
        }
        guard first else { return }
        let cluster = self.cluster
        _ = try? await pool.runIfActive { cluster.shutdown() }
        cluster.shutdown() // no-op if the pool ran it
        try? await pool.shutdownGracefully()
    }

    /// Parses and runs one control line.
    func execute(_ line: String) async -> ControlReply {
        let command: ControlCommand
        do {
            command = try ControlCommand.parse(line)
        } catch {
            return .error("\(error)")
        }
        return await run(command)
    }

    func run(_ command: ControlCommand) async -> ControlReply {
        func checkBroker(_ id: Int32) throws(EmbeddedBrokerError) {
            guard id >= 1, id <= brokerCount else {
                throw .invalidArgument("unknown broker \(id): brokers are 1...\(brokerCount)")
            }
        }
        let cluster = self.cluster
        do {
            switch command {
            case .createTopic(let spec):
                try await mock {
                    try cluster.createTopic(spec.name, partitions: spec.partitions, replicationFactor: spec.replicationFactor)
                }
                state.withLockedValue { $0.topics.append(spec) }
                return .ok("created \(spec)")
            case .brokerDown(let id):
                try checkBroker(id)
                try await mock { try cluster.setBrokerDown(id) }
                state.withLockedValue { _ = $0.downBrokers.insert(id) }
                return .ok("broker \(id) down")
            case .brokerUp(let id):
                try checkBroker(id)
                try await mock { try cluster.setBrokerUp(id) }
                state.withLockedValue { _ = $0.downBrokers.remove(id) }
                return .ok("broker \(id) up")
            case .roundTripTime(let id, let ms):
                try checkBroker(id)
                guard ms <= Int(Int32.max) else { throw EmbeddedBrokerError.invalidArgument("round-trip time \(ms) ms is too large") }
                try await mock { try cluster.setRoundTripTime(id, milliseconds: ms) }
                return .ok("broker \(id) rtt \(ms) ms")
            case .requestErrors(let api, let errors):
                try await mock { try cluster.pushRequestErrors(apiKey: api, errors: errors) }
                return .ok("api \(api): \(errors.map { KafkaError.name(ofCode: $0) }.joined(separator: ","))")
            case .clearRequestErrors(let api):
                try await mock { try cluster.clearRequestErrors(apiKey: api) }
                return .ok("api \(api) cleared")
            case .topicError(let topic, let error):
                try await mock { try cluster.setTopicError(topic, errorCode: error) }
                return .ok("topic \(topic) error \(KafkaError.name(ofCode: error))")
            case .leader(let topic, let partition, let broker):
                if broker != -1 { try checkBroker(broker) }
                try await mock { try cluster.setPartitionLeader(topic: topic, partition: partition, brokerID: broker) }
                return .ok("\(topic)[\(partition)] leader \(broker)")
            case .coordinator(let kind, let key, let broker):
                try checkBroker(broker)
                try await mock { try cluster.setCoordinator(keyType: kind, key: key, brokerID: broker) }
                return .ok("\(kind) \(key) coordinator \(broker)")
            case .info:
                let (topics, down, bootstrap) = state.withLockedValue { ($0.topics, $0.downBrokers, $0.bootstrapServers) }
                return .ok(
                    "bootstrap=\(bootstrap) brokers=\(brokerCount) topics=\(topics.map(\.description).joined(separator: ","))"
                        + " down=\(down.sorted().map(String.init).joined(separator: ","))")
            case .ping:
                return .ok("pong")
            case .help:
                return .ok(ControlCommand.names.compactMap { ControlCommand.syntax[$0] }.joined(separator: " | "))
            case .shutdown:
                var reply = ControlReply.ok("shutting down")
                reply.requestsShutdown = true
                return reply
            }
        } catch let error as KafkaError {
            return .error("\(error.codeName): \(error.message)")
        } catch {
            return .error("\(error)")
        }
    }

    /// Runs a mock-cluster call on the pool thread.
    private func mock(_ body: @escaping @Sendable () throws -> Void) async throws {
        do {
            try await pool.runIfActive(body)
        } catch is NIOThreadPoolError.ThreadPoolInactive {
            throw EmbeddedBrokerError.invalidArgument("the broker is shutting down")
        }
    }
}
