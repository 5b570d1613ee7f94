/// Connection settings shared by producers, consumers and the admin client.
///
/// Typed properties cover the common keys; ``properties`` passes any other librdkafka property
/// through unchanged (see librdkafka's CONFIGURATION.md) and wins over a typed value for the
/// same key. Unknown keys and invalid values fail when a client is constructed, with an error
/// naming the key (``KafkaError/configurationKey``).
public struct KafkaConfiguration: Sendable, Hashable {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    public var bootstrapServers: String
    /// `client.id`.
    public var clientID: String?
    /// Transport security and authentication.
    public var security: KafkaSecurity
    /// `statistics.interval.ms`: how often librdkafka emits its statistics JSON; nil disables statistics.
    public var statisticsInterval: Duration?
    /// `debug`: librdkafka debug contexts (`broker,topic,msg`, `all`, …); logs at debug level.
    public var debugContexts: String?
    /// Any librdkafka property, passed through as is. Overrides typed properties.
    public var properties: [String: String]

    public init(
        bootstrapServers: String,
        clientID: String? = nil,
        security: KafkaSecurity = .plaintext,
        statisticsInterval: Duration? = nil,
        debugContexts: String? = nil,
        properties: [String: String] = [:]
    ) {
        self.bootstrapServers = bootstrapServers
        self.clientID = clientID
        self.security = security
        self.statisticsInterval = statisticsInterval
        self.debugContexts = debugContexts
        self.properties = properties
    }

    /// The librdkafka properties these settings stand for.
    public func librdkafkaProperties() -> [String: String] {
        var p: [String: String] = ["bootstrap.servers": bootstrapServers]
        if let clientID { p["client.id"] = clientID }
        if let statisticsInterval { p["statistics.interval.ms"] = String(statisticsInterval.milliseconds) }
        if let debugContexts { p["debug"] = debugContexts }
        security.apply(to: &p)
        return p
    }
}

/// How a client connects: plaintext, TLS, SASL (PLAIN / SCRAM) with or without TLS.
public enum KafkaSecurity: Sendable, Hashable {
    /// `security.protocol=plaintext`.
    case plaintext
    /// `security.protocol=ssl`.
    case tls(KafkaTLS)
    /// `security.protocol=sasl_plaintext` (tls nil) or `sasl_ssl`.
    case sasl(KafkaSASL, tls: KafkaTLS?)

    func apply(to p: inout [String: String]) {
        switch self {
        case .plaintext:
            p["security.protocol"] = "plaintext"
        case .tls(let tls):
            p["security.protocol"] = "ssl"
            tls.apply(to: &p)
        case .sasl(let sasl, let tls):
            p["security.protocol"] = tls == nil ? "sasl_plaintext" : "sasl_ssl"
            p["sasl.mechanisms"] = sasl.mechanism.rawValue
            p["sasl.username"] = sasl.username
            p["sasl.password"] = sasl.password
            tls?.apply(to: &p)
        }
    }
}

/// TLS settings (`ssl.*`). Paths are PEM files.
public struct KafkaTLS: Sendable, Hashable {
    /// `ssl.ca.location`: CA certificate(s) to verify the broker; nil uses the system store.
    public var caLocation: String?
    /// `ssl.certificate.location`: client certificate for mutual TLS.
    public var certificateLocation: String?
    /// `ssl.key.location`: client private key for mutual TLS.
    public var keyLocation: String?
    /// `ssl.key.password`.
    public var keyPassword: String?
    /// Verify the broker's host name against its certificate (`ssl.endpoint.identification.algorithm=https`).
    public var verifyHostname: Bool

    public init(
        caLocation: String? = nil,
        certificateLocation: String? = nil,
        keyLocation: String? = nil,
        keyPassword: String? = nil,
        verifyHostname: Bool = true
    ) {
        self.caLocation = caLocation
        self.certificateLocation = certificateLocation
        self.keyLocation = keyLocation
        self.keyPassword = keyPassword
        self.verifyHostname = verifyHostname
    }

    func apply(to p: inout [String: String]) {
        if let caLocation { p["ssl.ca.location"] = caLocation }
        if let certificateLocation { p["ssl.certificate.location"] = certificateLocation }
        if let keyLocation { p["ssl.key.location"] = keyLocation }
        if let keyPassword { p["ssl.key.password"] = keyPassword }
        p["ssl.endpoint.identification.algorithm"] = verifyHostname ? "https" : "none"
    }
}

/// SASL credentials.
public struct KafkaSASL: Sendable, Hashable {
    /// `sasl.mechanisms`.
    public enum Mechanism: String, Sendable, Hashable {
        case plain = "PLAIN"
        case scramSHA256 = "SCRAM-SHA-256"
        case scramSHA512 = "SCRAM-SHA-512"
    }
    public var mechanism: Mechanism
    public var username: String
    public var password: String

    public init(mechanism: Mechanism, username: String, password: String) {
        self.mechanism = mechanism
        self.username = username
        self.password = password
    }
}

/// Producer settings.
public struct KafkaProducerConfiguration: Sendable, Hashable {
    /// `acks`: how many replicas must acknowledge a write.
    public enum Acks: String, Sendable, Hashable {
        case none = "0"
        case leader = "1"
        case all = "all"
    }
    /// `compression.codec`.
    public enum Compression: String, Sendable, Hashable {
        case none, gzip, snappy, lz4, zstd
    }

    public var kafka: KafkaConfiguration
    /// `enable.idempotence`: no duplicates or reordering from retries. On by default.
    public var idempotence: Bool = true
    /// `acks`; `all` is required (and set) when idempotence is on.
    public var acks: Acks = .all
    /// `linger.ms`: how long to wait to fill a batch.
    public var linger: Duration = .milliseconds(5)
    /// `batch.size` in bytes.
    public var batchSize: Int?
    /// `compression.codec`.
    public var compression: Compression = .none
    /// `message.timeout.ms`: a message not delivered within this fails with `_MSG_TIMED_OUT`.
    public var messageTimeout: Duration = .seconds(300)
    /// `queue.buffering.max.messages`: local queue size; a full queue makes sends wait for space.
    public var queueMaxMessages: Int = 100_000
    /// `queue.buffering.max.kbytes`.
    public var queueMaxKilobytes: Int = 1_048_576
    /// `transactional.id`: makes this a transactional producer (see ``KafkaProducer/initTransactions(timeout:)``).
    public var transactionalID: String?
    /// `transaction.timeout.ms`.
    public var transactionTimeout: Duration?
    /// `partitioner`; librdkafka's default `consistent_random` hashes keys with CRC32.
    /// Use `murmur2_random` to place keys like the Java client.
    public var partitioner: String?
    /// Any librdkafka property; overrides everything above.
    public var properties: [String: String] = [:]

    public init(kafka: KafkaConfiguration) {
        self.kafka = kafka
    }

    /// The exact properties handed to librdkafka.
    public func librdkafkaProperties() -> [String: String] {
        var p = kafka.librdkafkaProperties()
        p["enable.idempotence"] = idempotence ? "true" : "false"
        p["acks"] = idempotence ? Acks.all.rawValue : acks.rawValue
        p["linger.ms"] = String(linger.milliseconds)
        if let batchSize { p["batch.size"] = String(batchSize) }
        p["compression.codec"] = compression.rawValue
        var messageTimeoutMs = messageTimeout.milliseconds
        if transactionalID != nil {
            // librdkafka requires message.timeout.ms <= transaction.timeout.ms (default 60 s).
            messageTimeoutMs = min(messageTimeoutMs, (transactionTimeout ?? .seconds(60)).milliseconds)
        }
        p["message.timeout.ms"] = String(messageTimeoutMs)
        p["queue.buffering.max.messages"] = String(queueMaxMessages)
        p["queue.buffering.max.kbytes"] = String(queueMaxKilobytes)
        if let transactionalID { p["transactional.id"] = transactionalID }
        if let transactionTimeout { p["transaction.timeout.ms"] = String(transactionTimeout.milliseconds) }
        if let partitioner { p["partitioner"] = partitioner }
        for (k, v) in kafka.properties { p[k] = v }
        for (k, v) in properties { p[k] = v }
        return p
    }
}

/// Consumer settings.
public struct KafkaConsumerConfiguration: Sendable, Hashable {
    /// `auto.offset.reset`: where to start when the group has no committed offset.
    public enum OffsetReset: String, Sendable, Hashable {
        case earliest, latest, error
    }
    /// `partition.assignment.strategy`. ``KafkaConsumerConfiguration/assignor`` defaults to the eager `range`.
    public enum Assignor: String, Sendable, Hashable {
        case range
        case roundRobin = "roundrobin"
        /// Not safe with the linked librdkafka: it can lose assignments and duplicate records on rebalance.
        // A librdkafka 2.0.2 bug; see docs/decisions/0017-librdkafka-2.0.2-workarounds.md.
        case cooperativeSticky = "cooperative-sticky"
    }
    /// `isolation.level`.
    public enum Isolation: String, Sendable, Hashable {
        case readCommitted = "read_committed"
        case readUncommitted = "read_uncommitted"
    }

    public var kafka: KafkaConfiguration
    /// `group.id`; nil for a consumer that only uses manual assignment
    /// (``KafkaConsumer/assign(_:startingAt:)``). Such a consumer gets a private group id
    /// (`streamfirst-assign-<random suffix>`) with auto-commit off.
    // librdkafka 2.0.2 refuses `assign` without a group id; see docs/decisions/0017-librdkafka-2.0.2-workarounds.md.
    public var groupID: String?
    /// `group.instance.id` for static membership.
    public var groupInstanceID: String?
    /// `auto.offset.reset`.
    public var autoOffsetReset: OffsetReset = .earliest
    /// `session.timeout.ms`: how long until a silent member is removed from the group.
    public var sessionTimeout: Duration = .seconds(45)
    /// `heartbeat.interval.ms`.
    public var heartbeatInterval: Duration = .seconds(3)
    /// `max.poll.interval.ms`.
    public var maxPollInterval: Duration = .seconds(300)
    /// `partition.assignment.strategy`.
    public var assignor: Assignor = .range
    /// `enable.auto.commit`: commit *stored* offsets in the background every ``autoCommitInterval``.
    public var autoCommit: Bool = true
    /// `auto.commit.interval.ms`.
    public var autoCommitInterval: Duration = .seconds(5)
    /// `enable.auto.offset.store`. Off by default: an offset is committed only after the
    /// application stored it (``KafkaConsumer/storeOffset(for:)``), so a crash re-delivers
    /// what was not processed (at-least-once) instead of losing it.
    public var autoOffsetStore: Bool = false
    /// `fetch.wait.max.ms`: how long a fetch waits for data. Lower it for latency.
    public var fetchWaitMax: Duration = .milliseconds(500)
    /// `isolation.level`.
    public var isolation: Isolation = .readCommitted
    /// `enable.partition.eof`: emit ``KafkaConsumerEvent/partitionEOF(_:)`` at the end of each partition.
    public var partitionEOF: Bool = false
    /// Any librdkafka property; overrides everything above.
    public var properties: [String: String] = [:]

    /// Suffix of the private group id of an assign-only consumer.
    var assignOnlyGroupSuffix = String(UInt64.random(in: 1...UInt64.max), radix: 36)

    public init(kafka: KafkaConfiguration, groupID: String?) {
        self.kafka = kafka
        self.groupID = groupID
    }

    /// The exact properties handed to librdkafka.
    public func librdkafkaProperties() -> [String: String] {
        var p = kafka.librdkafkaProperties()
        if let groupID {
            p["group.id"] = groupID
        } else {
            p["group.id"] = "streamfirst-assign-\(assignOnlyGroupSuffix)"
            p["enable.auto.commit"] = "false"
        }
        if let groupInstanceID { p["group.instance.id"] = groupInstanceID }
        p["auto.offset.reset"] = autoOffsetReset.rawValue
        p["session.timeout.ms"] = String(sessionTimeout.milliseconds)
        p["heartbeat.interval.ms"] = String(heartbeatInterval.milliseconds)
        p["max.poll.interval.ms"] = String(maxPollInterval.milliseconds)
        p["partition.assignment.strategy"] = assignor.rawValue
        if groupID != nil { p["enable.auto.commit"] = autoCommit ? "true" : "false" }
        p["auto.commit.interval.ms"] = String(autoCommitInterval.milliseconds)
        p["enable.auto.offset.store"] = autoOffsetStore ? "true" : "false"
        p["fetch.wait.max.ms"] = String(fetchWaitMax.milliseconds)
        p["isolation.level"] = isolation.rawValue
        p["enable.partition.eof"] = partitionEOF ? "true" : "false"
        for (k, v) in kafka.properties { p[k] = v }
        for (k, v) in properties { p[k] = v }
        return p
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    package var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
