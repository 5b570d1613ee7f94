import CRdKafka
import Logging

/// A topic and its partitions as the cluster describes them.
public struct KafkaTopicDescription: Sendable, Hashable {
    public struct Partition: Sendable, Hashable {
        public var id: Int32
        public var leader: Int32
        public var replicas: [Int32]
        public var inSyncReplicas: [Int32]
        public var error: KafkaError?
    }
    public var name: String
    public var partitions: [Partition]
    public var error: KafkaError?
}

/// A broker of the cluster.
public struct KafkaBrokerDescription: Sendable, Hashable {
    public var id: Int32
    public var host: String
    public var port: Int32
}

/// A topic to create.
public struct KafkaNewTopic: Sendable, Hashable {
    public var name: String
    public var partitions: Int
    /// -1 uses the broker default.
    public var replicationFactor: Int
    /// Topic configs, e.g. `cleanup.policy=compact`, `retention.ms`.
    public var config: [String: String]

    public init(name: String, partitions: Int, replicationFactor: Int = -1, config: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.config = config
    }
}

/// A consumer group as listed by the cluster.
public struct KafkaGroupDescription: Sendable, Hashable {
    public var name: String
    public var state: String
    public var protocolType: String
    public var protocolName: String
    public var memberCount: Int
    public var coordinator: Int32
}

/// Cluster administration: topics, groups, offsets and lag.
///
/// Owns one `rd_kafka_t`; every call runs on NIO's blocking pool. On the embedded broker
/// (librdkafka's mock cluster) creating topics through the admin API is not implemented (it
/// times out): create them with `streamfirst broker --topic` or its control channel instead.
public final class KafkaAdmin: Sendable {
    let client: RDKafkaClient
    private let connection: [String: String]
    private let logger: Logger

    public init(configuration: KafkaConfiguration, logger: Logger = Logger(label: "streamfirst.kafka.admin")) throws {
        var p = configuration.librdkafkaProperties()
        for (k, v) in configuration.properties { p[k] = v }
        connection = p
        self.logger = logger
        client = try RDKafkaClient(
            kind: .producer, properties: p, context: RDKafkaContext(logger: logger, onStatistics: nil, onError: nil),
            closedError: KafkaError.client("CLOSED", "the admin client has been shut down"))
    }

    /// Destroys the client once the requests in progress have returned; later requests throw a
    /// `CLOSED` error. Idempotent.
    public func shutdown() async {
        let client = self.client
        _ = try? await runBlocking { client.destroy() }
    }

    // MARK: - Metadata

    /// The cluster's brokers and topics (internal topics such as `__consumer_offsets` included).
    public func metadata(
        timeout: Duration = .seconds(10)
    ) async throws -> (
        brokers: [KafkaBrokerDescription], topics: [KafkaTopicDescription]
    ) {
        try await fetchMetadata(topic: nil, timeout: timeout)
    }

    /// The names of all topics.
    public func listTopics(timeout: Duration = .seconds(10)) async throws -> [String] {
        try await metadata(timeout: timeout).topics.map(\.name).sorted()
    }

    /// One topic's partitions, leaders and replicas. Throws `UNKNOWN_TOPIC_OR_PART` if it does not exist.
    /// (Metadata requests for an unknown topic make brokers with auto-creation on, like the mock, create it.)
    public func describeTopic(_ name: String, timeout: Duration = .seconds(10)) async throws -> KafkaTopicDescription {
        let topics = try await fetchMetadata(topic: name, timeout: timeout).topics
        guard let t = topics.first(where: { $0.name == name }) else {
            throw KafkaError(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, message: "topic '\(name)' does not exist")
        }
        if let e = t.error { throw e }
        return t
    }

    private func fetchMetadata(
        topic: String?, timeout: Duration
    ) async throws -> (
        brokers: [KafkaBrokerDescription], topics: [KafkaTopicDescription]
    ) {
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        return try await runBlocking {
            var md: UnsafePointer<rd_kafka_metadata>?
            try client.withHandle { rk in
                var rkt: OpaquePointer?
                if let topic { rkt = rd_kafka_topic_new(rk, topic, nil) }
                defer { if let rkt { rd_kafka_topic_destroy(rkt) } }
                try KafkaError.check(rd_kafka_metadata(rk, rkt == nil ? 1 : 0, rkt, &md, ms), "metadata")
            }
            guard let md else { return ([], []) }
            defer { rd_kafka_metadata_destroy(md) }
            var brokers: [KafkaBrokerDescription] = []
            for i in 0..<Int(md.pointee.broker_cnt) {
                let b = md.pointee.brokers[i]
                brokers.append(KafkaBrokerDescription(id: b.id, host: b.host.map { String(cString: $0) } ?? "", port: b.port))
            }
            var topics: [KafkaTopicDescription] = []
            for i in 0..<Int(md.pointee.topic_cnt) {
                let t = md.pointee.topics[i]
                var partitions: [KafkaTopicDescription.Partition] = []
                for j in 0..<Int(t.partition_cnt) {
                    let p = t.partitions[j]
                    partitions.append(
                        .init(
                            id: p.id, leader: p.leader,
                            replicas: (0..<Int(p.replica_cnt)).map { p.replicas[$0] },
                            inSyncReplicas: (0..<Int(p.isr_cnt)).map { p.isrs[$0] },
                            error: p.err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(p.err)))
                }
                partitions.sort { $0.id < $1.id }
                topics.append(
                    KafkaTopicDescription(
                        name: t.topic.map { String(cString: $0) } ?? "", partitions: partitions,
                        error: t.err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(t.err)))
            }
            return (brokers, topics)
        }
    }

    /// Low and high watermarks of a partition.
    public func watermarks(
        topic: String, partition: Int32, timeout: Duration = .seconds(10)
    ) async throws -> (
        low: Int64, high: Int64
    ) {
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        return try await runBlocking { try client.queryWatermarks(topic: topic, partition: partition, timeoutMs: ms) }
    }

    // MARK: - Topics

    /// Creates topics (real clusters; the embedded broker creates them through its control channel).
    /// Throws the first per-topic error, e.g. `TOPIC_ALREADY_EXISTS`.
    public func createTopics(_ topics: [KafkaNewTopic], timeout: Duration = .seconds(30)) async throws {
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        try await runBlocking {
            var errstr = [CChar](repeating: 0, count: 512)
            var handles: [OpaquePointer?] = []
            defer { for h in handles { rd_kafka_NewTopic_destroy(h) } }
            for t in topics {
                guard let nt = rd_kafka_NewTopic_new(t.name, Int32(t.partitions), Int32(t.replicationFactor), &errstr, errstr.count)
                else {
                    throw KafkaError.configuration(key: "topics.\(t.name)", "invalid new topic '\(t.name)': \(stringFromCBuffer(errstr))")
                }
                handles.append(nt)
                for (k, v) in t.config.sorted(by: { $0.key < $1.key }) {
                    try KafkaError.check(rd_kafka_NewTopic_set_config(nt, k, v), "topic \(t.name) config \(k)")
                }
            }
            try AdminRequest.run(client: client, op: RD_KAFKA_ADMIN_OP_CREATETOPICS, timeoutMs: ms) { rk, options, queue in
                handles.withUnsafeMutableBufferPointer { rd_kafka_CreateTopics(rk, $0.baseAddress, $0.count, options, queue) }
            } results: { event in
                var count = 0
                let results = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &count)
                return AdminRequest.topicErrors(results, count)
            }
        }
    }

    /// Deletes topics (real clusters). Throws the first per-topic error.
    public func deleteTopics(_ names: [String], timeout: Duration = .seconds(30)) async throws {
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        try await runBlocking {
            var handles: [OpaquePointer?] = names.map { rd_kafka_DeleteTopic_new($0) }
            defer { for h in handles { rd_kafka_DeleteTopic_destroy(h) } }
            try AdminRequest.run(client: client, op: RD_KAFKA_ADMIN_OP_DELETETOPICS, timeoutMs: ms) { rk, options, queue in
                handles.withUnsafeMutableBufferPointer { rd_kafka_DeleteTopics(rk, $0.baseAddress, $0.count, options, queue) }
            } results: { event in
                var count = 0
                let results = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(event), &count)
                return AdminRequest.topicErrors(results, count)
            }
        }
    }

    // MARK: - Groups

    /// The consumer groups the cluster knows.
    public func listGroups(timeout: Duration = .seconds(10)) async throws -> [KafkaGroupDescription] {
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        return try await runBlocking {
            var list: UnsafePointer<rd_kafka_group_list>?
            try client.withHandle { try KafkaError.check(rd_kafka_list_groups($0, nil, &list, ms), "list groups") }
            guard let list else { return [] }
            defer { rd_kafka_group_list_destroy(list) }
            return (0..<Int(list.pointee.group_cnt)).map { i in
                let g = list.pointee.groups[i]
                return KafkaGroupDescription(
                    name: g.group.map { String(cString: $0) } ?? "",
                    state: g.state.map { String(cString: $0) } ?? "",
                    protocolType: g.protocol_type.map { String(cString: $0) } ?? "",
                    protocolName: g.protocol.map { String(cString: $0) } ?? "",
                    memberCount: Int(g.member_cnt),
                    coordinator: g.broker.id)
            }.sorted { $0.name < $1.name }
        }
    }

    /// A group's committed offsets in these topics' partitions (``KafkaOffset/invalid`` where none).
    /// Reads them without joining the group.
    public func groupOffsets(
        group: String, topics: [String], timeout: Duration = .seconds(10)
    ) async throws
        -> [KafkaTopicPartitionOffset]
    {
        var partitions: [KafkaTopicPartition] = []
        for t in topics {
            let d = try await describeTopic(t, timeout: timeout)
            partitions += d.partitions.map { KafkaTopicPartition(topic: t, partition: $0.id) }
        }
        var p = connection
        p["group.id"] = group
        p["enable.auto.commit"] = "false"
        let logger = self.logger
        let ms = Int32(clamping: timeout.milliseconds)
        let props = p
        let wanted = partitions
        return try await runBlocking {
            // A group-less read of committed offsets: a consumer handle that never subscribes.
            let reader = try RDKafkaClient(
                kind: .consumer, properties: props, context: RDKafkaContext(logger: logger, onStatistics: nil, onError: nil))
            defer { reader.destroy() }
            let list = RDKafkaTopicPartitionList(wanted)
            try KafkaError.check(rd_kafka_committed(reader.rk, list.list, ms), "committed offsets of group \(group)")
            return list.elements
        }
    }

    /// A group's lag per partition of these topics: committed offset against the high watermark.
    public func groupLag(group: String, topics: [String], timeout: Duration = .seconds(10)) async throws -> [KafkaPartitionLag] {
        let committed = try await groupOffsets(group: group, topics: topics, timeout: timeout)
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        return try await runBlocking { try client.lags(of: committed, timeoutMs: ms) }
    }
}

/// One admin request through a temporary queue: options, call, wait for the result event, errors.
/// The whole request runs inside the client's gate (see ``RDKafkaClient/withHandle(_:)``).
enum AdminRequest {
    static func run(
        client: RDKafkaClient, op: rd_kafka_admin_op_t, timeoutMs: Int32,
        call: (OpaquePointer, OpaquePointer?, OpaquePointer?) -> Void,
        results: (OpaquePointer) -> [KafkaError]
    ) throws {
        try client.withHandle { rk in try run(rk: rk, op: op, timeoutMs: timeoutMs, call: call, results: results) }
    }

    private static func run(
        rk: OpaquePointer, op: rd_kafka_admin_op_t, timeoutMs: Int32,
        call: (OpaquePointer, OpaquePointer?, OpaquePointer?) -> Void,
        results: (OpaquePointer) -> [KafkaError]
    ) throws {
        guard let options = rd_kafka_AdminOptions_new(rk, op) else {
            throw KafkaError.client("ADMIN", "cannot create admin options")
        }
        defer { rd_kafka_AdminOptions_destroy(options) }
        var errstr = [CChar](repeating: 0, count: 512)
        try KafkaError.check(
            rd_kafka_AdminOptions_set_operation_timeout(options, timeoutMs, &errstr, errstr.count), "admin operation timeout")
        try KafkaError.check(
            rd_kafka_AdminOptions_set_request_timeout(options, timeoutMs, &errstr, errstr.count), "admin request timeout")
        guard let queue = rd_kafka_queue_new(rk) else { throw KafkaError.client("ADMIN", "cannot create a queue") }
        defer { rd_kafka_queue_destroy(queue) }
        call(rk, options, queue)
        guard let event = rd_kafka_queue_poll(queue, timeoutMs + 1000) else {
            throw KafkaError(RD_KAFKA_RESP_ERR__TIMED_OUT, message: "the admin request got no answer in \(timeoutMs) ms")
        }
        defer { rd_kafka_event_destroy(event) }
        let err = rd_kafka_event_error(event)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(err, message: rd_kafka_event_error_string(event).map { String(cString: $0) })
        }
        if let first = results(event).first { throw first }
    }

    static func topicErrors(_ results: UnsafeMutablePointer<OpaquePointer?>?, _ count: Int) -> [KafkaError] {
        guard let results else { return [] }
        var errors: [KafkaError] = []
        for i in 0..<count {
            guard let r = results[i] else { continue }
            let err = rd_kafka_topic_result_error(r)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                let name = rd_kafka_topic_result_name(r).map { String(cString: $0) } ?? "?"
                let text = rd_kafka_topic_result_error_string(r).map { String(cString: $0) } ?? ""
                errors.append(KafkaError(err, message: "\(name): \(text)"))
            }
        }
        return errors
    }
}
