import CRdKafka
import NIOConcurrencyHelpers

/// librdkafka's mock cluster (`rdkafka_mock.h`): a Kafka-protocol broker written by the
/// librdkafka authors, listening on loopback ports chosen by the operating system.
///
/// This type is the only owner of the mock cluster and of the `rd_kafka_t` handle it needs
/// for bookkeeping. Destroy order: `rd_kafka_mock_cluster_destroy`, then `rd_kafka_destroy`.
/// It is meant to run in its own process (`streamfirst broker`); clients reach it over TCP.
///
/// Limits of librdkafka 2.0.2's mock cluster (see the README): at most 5 MiB or 100,000
/// batches per partition are retained (older batches are evicted silently), transactions are
/// accepted but write no markers, CreateTopics is not implemented (use ``createTopic(_:partitions:replicationFactor:)``),
/// and offsetsForTimes answers "end" for every real timestamp.
public final class KafkaMockCluster: Sendable {
    private struct Handles: @unchecked Sendable {
        var rk: OpaquePointer
        var cluster: OpaquePointer
    }
    private let handles: NIOLockedValueBox<Handles?>
    /// The `bootstrap.servers` string of the cluster's brokers (`127.0.0.1:port,...`).
    public let bootstrapServers: String
    /// The number of brokers; their ids are 1...brokerCount.
    public let brokerCount: Int

    /// Starts a mock cluster with `brokers` brokers on loopback.
    public init(brokers: Int) throws {
        guard brokers >= 1 else {
            throw KafkaError.configuration(key: "brokers", "the mock cluster needs at least 1 broker, got \(brokers)")
        }
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError.client("ALLOC", "rd_kafka_conf_new returned NULL")
        }
        // The bookkeeping handle never talks to a broker of its own; keep it quiet.
        _ = rd_kafka_conf_set(conf, "log_level", "3", nil, 0)
        var errstr = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errstr, errstr.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError.client("CREATE", "rd_kafka_new failed: \(stringFromCBuffer(errstr))")
        }
        guard let cluster = rd_kafka_mock_cluster_new(rk, Int32(brokers)) else {
            rd_kafka_destroy(rk)
            throw KafkaError.client("MOCK", "rd_kafka_mock_cluster_new failed")
        }
        self.bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(cluster))
        self.brokerCount = brokers
        self.handles = NIOLockedValueBox(Handles(rk: rk, cluster: cluster))
    }

    deinit {
        shutdown()
    }

    /// Destroys the cluster, then its handle. Idempotent.
    public func shutdown() {
        let h = handles.withLockedValue { value -> Handles? in
            defer { value = nil }
            return value
        }
        if let h {
            rd_kafka_mock_cluster_destroy(h.cluster)
            rd_kafka_destroy(h.rk)
        }
    }

    private func withCluster<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        try handles.withLockedValue { value in
            guard let h = value else {
                throw KafkaError.client("DESTROYED", "the mock cluster has been shut down")
            }
            return try body(h.cluster)
        }
    }

    /// Creates a topic (the mock has no CreateTopics API). Creating an existing topic is an error
    /// from the mock (`TOPIC_ALREADY_EXISTS`).
    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int = 1) throws {
        guard partitions >= 1 else {
            throw KafkaError.configuration(key: "partitions", "a topic needs at least 1 partition, got \(partitions)")
        }
        guard replicationFactor >= 1, replicationFactor <= brokerCount else {
            throw KafkaError.configuration(
                key: "replication_factor",
                "replication factor \(replicationFactor) must be between 1 and the broker count \(brokerCount)")
        }
        try withCluster { c in
            try KafkaError.check(
                rd_kafka_mock_topic_create(c, name, Int32(partitions), Int32(replicationFactor)),
                "create topic \(name)")
        }
    }

    /// Takes a broker down: its connections are closed and it refuses new ones.
    public func setBrokerDown(_ brokerID: Int32) throws {
        try withCluster { c in try KafkaError.check(rd_kafka_mock_broker_set_down(c, brokerID), "broker \(brokerID) down") }
    }

    /// Brings a broker back up.
    public func setBrokerUp(_ brokerID: Int32) throws {
        try withCluster { c in try KafkaError.check(rd_kafka_mock_broker_set_up(c, brokerID), "broker \(brokerID) up") }
    }

    /// Sets a broker's round-trip time (added latency per request) in milliseconds; 0 clears it.
    public func setRoundTripTime(_ brokerID: Int32, milliseconds: Int) throws {
        try withCluster { c in
            try KafkaError.check(rd_kafka_mock_broker_set_rtt(c, brokerID, Int32(milliseconds)), "broker \(brokerID) rtt")
        }
    }

    /// Makes the next `errors.count` requests of API `apiKey` (cluster-wide) fail with these error codes, in order.
    public func pushRequestErrors(apiKey: Int16, errors: [Int32]) throws {
        try withCluster { c in
            var codes = errors.map { rd_kafka_resp_err_t(rawValue: $0) }
            codes.withUnsafeMutableBufferPointer { buf in
                rd_kafka_mock_push_request_errors_array(c, apiKey, buf.count, buf.baseAddress)
            }
        }
    }

    /// Drops any queued request errors for API `apiKey`.
    public func clearRequestErrors(apiKey: Int16) throws {
        try withCluster { c in rd_kafka_mock_clear_request_errors(c, apiKey) }
    }

    /// Makes every request for `topic` fail with `errorCode` until it is set back to 0.
    public func setTopicError(_ topic: String, errorCode: Int32) throws {
        try withCluster { c in rd_kafka_mock_topic_set_error(c, topic, rd_kafka_resp_err_t(rawValue: errorCode)) }
    }

    /// Moves the leadership of a partition to another broker (-1: no leader).
    public func setPartitionLeader(topic: String, partition: Int32, brokerID: Int32) throws {
        try withCluster { c in
            try KafkaError.check(
                rd_kafka_mock_partition_set_leader(c, topic, partition, brokerID),
                "leader of \(topic)[\(partition)]")
        }
    }

    /// Makes `brokerID` the coordinator for a group (`keyType` "group") or a transactional id ("transaction").
    public func setCoordinator(keyType: String, key: String, brokerID: Int32) throws {
        try withCluster { c in
            try KafkaError.check(rd_kafka_mock_coordinator_set(c, keyType, key, brokerID), "coordinator for \(key)")
        }
    }
}

extension KafkaError {
    /// The librdkafka error code whose name is `name` (for example `NOT_LEADER_FOR_PARTITION` or `_TRANSPORT`;
    /// a leading `RD_KAFKA_RESP_ERR_` is accepted), or nil.
    public static func code(named name: String) -> Int32? {
        var descs: UnsafePointer<rd_kafka_err_desc>?
        var count = 0
        rd_kafka_get_err_descs(&descs, &count)
        guard let descs else { return nil }
        var wanted = name.uppercased()
        if wanted.hasPrefix("RD_KAFKA_RESP_ERR_") { wanted.removeFirst("RD_KAFKA_RESP_ERR_".count) }
        for i in 0..<count {
            guard let n = descs[i].name else { continue }
            if String(cString: n) == wanted { return descs[i].code.rawValue }
        }
        return Int32(wanted)
    }

    /// The symbolic name of a librdkafka error code.
    public static func name(ofCode code: Int32) -> String {
        String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: code)))
    }
}

/// Kafka protocol API keys by name, for request-error injection.
public enum KafkaAPIKey {
    /// API keys of the Kafka protocol requests librdkafka issues.
    public static let byName: [String: Int16] = [
        "Produce": 0, "Fetch": 1, "ListOffsets": 2, "Metadata": 3, "OffsetCommit": 8, "OffsetFetch": 9,
        "FindCoordinator": 10, "JoinGroup": 11, "Heartbeat": 12, "LeaveGroup": 13, "SyncGroup": 14,
        "DescribeGroups": 15, "ListGroups": 16, "SaslHandshake": 17, "ApiVersions": 18, "CreateTopics": 19,
        "DeleteTopics": 20, "InitProducerId": 22, "AddPartitionsToTxn": 24, "AddOffsetsToTxn": 25,
        "EndTxn": 26, "TxnOffsetCommit": 28, "SaslAuthenticate": 36,
    ]

    /// The API key for a name (case-insensitive) or a number.
    public static func key(named name: String) -> Int16? {
        if let n = Int16(name) { return n }
        return byName.first { $0.key.lowercased() == name.lowercased() }?.value
    }
}
