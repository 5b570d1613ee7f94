import Config
import Foundation
import Kafka

/// A pipeline file (`pipelines/<name>.yaml`) parsed and checked: topics, Kafka settings and one
/// section per stage. Stage-specific settings (the source, steps, sink) stay as configuration nodes
/// here and are checked when ``PipelineSpec/check()`` or the stage builds its components.
///
/// Every scalar may use `${VAR}` / `${VAR:-default}`; unknown keys and bad values fail with the
/// file, line and key path. See `docs/PIPELINES.md` for the format.
public struct PipelineSpec: Sendable {
    /// A stage of the pipeline, as named in the file and by the worker executables.
    public enum StageName: String, CaseIterable, Sendable {
        case ingest, validate, process, persist
    }

    /// A topic the pipeline declares: a logical name used in the file, the Kafka topic name.
    public struct Topic: Sendable, Hashable {
        public var logical: String
        public var name: String
        public var partitions: Int
        public var replicationFactor: Int
        /// Topic configuration to create it with (e.g. `cleanup.policy`).
        public var config: [String: String] = [:]
        /// How the records' values are written: JSON text, or Avro in the Confluent wire format
        /// (schema id from ``PipelineSpec/schemaRegistry``).
        public var format: RecordFormat = .json
    }

    /// How a topic's record values are written.
    public enum RecordFormat: String, Sendable, Hashable, CaseIterable {
        case json
        /// Avro binary in the Confluent wire format: magic byte 0, the schema's registry id, the data.
        case avro
    }

    /// The `schema_registry:` section: the Confluent-compatible registry that holds the schemas of
    /// topics with `format: avro`.
    public struct SchemaRegistrySettings: Sendable, Hashable {
        public var url: String
        public var username: String?
        public var password: String?

        public init(url: String, username: String? = nil, password: String? = nil) {
            self.url = url
            self.username = username
            self.password = password
        }
    }

    /// The ledger of `streamfirst redrive` (which dead letters were sent back): a compacted topic
    /// named after the dead-letter topic. Not declared in the file; created with the others.
    public var redriveLedger: Topic {
        Topic(
            logical: "redrive-ledger", name: deadLetter.name + ".redrive-ledger", partitions: 1,
            replicationFactor: deadLetter.replicationFactor, config: ["cleanup.policy": "compact"])
    }

    /// Every topic to create on a cluster: the declared ones and ``redriveLedger``.
    public var topicsToCreate: [Topic] { topics.values.sorted { $0.name < $1.name } + [redriveLedger] }

    /// Creates the ``topicsToCreate`` a cluster does not have yet (real clusters: the embedded
    /// broker has no CreateTopics). Returns the ones it created.
    public func createMissingTopics(using kafka: KafkaConfiguration) async throws -> [Topic] {
        let admin = try KafkaAdmin(configuration: kafka)
        do {
            let existing = Set(try await admin.listTopics())
            let missing = topicsToCreate.filter { !existing.contains($0.name) }
            if !missing.isEmpty {
                try await admin.createTopics(
                    missing.map {
                        KafkaNewTopic(name: $0.name, partitions: $0.partitions, replicationFactor: $0.replicationFactor, config: $0.config)
                    })
            }
            await admin.shutdown()
            return missing
        } catch {
            await admin.shutdown()
            throw error
        }
    }

    /// Settings every stage section shares.
    public struct StageCommon: Sendable {
        public var name: StageName
        /// Logical input topic (absent for ingest).
        public var input: Topic?
        /// Logical default output topic (absent for persist).
        public var output: Topic?
        /// Consumer group id: default `<pipeline>.<stage>`.
        public var group: String
        /// Records per poll / produce batch.
        public var batchSize: Int
        /// Longest wait for a batch to fill (persist; other stages hand over what they have).
        public var batchWaitMs: Int64
        /// Batches whose outputs may be awaiting acknowledgement at once (validate and stateless
        /// process; see ``InFlightWindow``). 1 is stop-and-wait.
        public var inFlightBatches: Int = 8
        /// Cores a batch is handled on (validate and stateless process; see ``BatchLanes``): the
        /// batch is split by partition into up to this many lanes. Default 1.
        // Not the CPU count: on the 2-core benchmark machine a pass-through worker with 2 lanes ran at
        // 0.80x the throughput of 1 lane for 1.19x the CPU (BENCHMARKS.md, scale); lanes pay off only
        // where the handler dominates a record's cost.
        public var concurrency: Int = 1
        /// Port of the health and metrics endpoint (0 = any free port).
        public var httpPort: Int
        /// librdkafka properties for this stage's consumer.
        public var consumerProperties: [String: String]
        /// librdkafka properties for this stage's producer.
        public var producerProperties: [String: String]
        /// Graceful-shutdown deadline: after it, in-flight work is abandoned (and redelivered on restart).
        public var shutdownTimeoutMs: Int64
        /// The whole section, for stage-specific keys.
        public var node: ConfigNode
    }

    public var name: String
    public var file: String
    /// The directory holding the pipeline file: relative paths in it resolve from here.
    public var baseDirectory: String
    public var kafka: KafkaConfiguration
    /// librdkafka properties for every stage's consumer (`kafka.consumer`); a stage's own `consumer:` wins.
    public var consumerProperties: [String: String]
    /// librdkafka properties for every stage's producer (`kafka.producer`); a stage's own `producer:` wins.
    public var producerProperties: [String: String]
    public var topics: [String: Topic]
    public var deadLetter: Topic
    public var stages: [StageName: StageCommon]
    public var environment: [String: String]
    /// The file's `tests:` section (run by `streamfirst test`, module PipelineTools).
    public var tests: ConfigNode?
    /// The `metrics:` section: every worker publishes a snapshot of its counters to a topic.
    public var metrics: MetricsSettings?
    /// The `schema_registry:` section (required when a topic has `format: avro`).
    public var schemaRegistry: SchemaRegistrySettings?
    /// The `dashboard:` section, read and checked by the `dashboard` worker (`Dashboard.DashboardConfig`).
    public var dashboard: ConfigNode?

    /// Where and how often workers publish their metrics snapshots (``MetricsPublisher``).
    public struct MetricsSettings: Sendable {
        /// The topic the snapshots go to (declared under `topics:`).
        public var topic: Topic
        /// Milliseconds between two snapshots of a worker.
        public var intervalMs: Int64
    }
    /// The file's `tracing:` section (OTLP export, sampling); see ``TracingSettings``.
    public var tracing = TracingSpec()

    /// The default health/metrics port of each stage, so four workers on one host do not collide.
    public static func defaultHTTPPort(_ stage: StageName) -> Int {
        switch stage {
        case .ingest: return 9101
        case .validate: return 9102
        case .process: return 9103
        case .persist: return 9104
        }
    }

    /// Reads a pipeline file. `KAFKA_BROKERS` in `environment`, when set, overrides `kafka.bootstrap`
    /// (so the same file runs against any cluster).
    public static func load(
        file: String, environment: [String: String] = ProcessInfo.processInfo.environment
    )
        throws(ConfigError) -> PipelineSpec
    {
        let root = try ConfigNode.load(file: file, environment: environment)
        return try parse(root: root, file: file, environment: environment)
    }

    /// Parses pipeline YAML text (`file` names it in errors and anchors relative paths).
    public static func parse(
        yaml: String, file: String, environment: [String: String]
    ) throws(ConfigError)
        -> PipelineSpec
    {
        let root = try ConfigNode.parse(yaml: yaml, source: ConfigSource(file: file, environment: environment))
        return try parse(root: root, file: file, environment: environment)
    }

    static func parse(
        root: ConfigNode, file: String, environment: [String: String]
    ) throws(ConfigError)
        -> PipelineSpec
    {
        let top = try root.mapping()
        let name = try top.required("name", hint: "a short name such as iot-sensors").string()
        try checkIdentifier(name, at: try top.required("name"))
        _ = top.optional("description")
        let testsNode = top.optional("tests") // inline pipeline tests: run by `streamfirst test`
        let dashboardNode = top.optional("dashboard") // read by the dashboard worker
        let tracing = try TracingSpec.parse(top.optional("tracing"), file: file)

        // Kafka connection.
        var kafka = KafkaConfiguration(bootstrapServers: "127.0.0.1:9092")
        var consumerProperties: [String: String] = [:]
        var producerProperties: [String: String] = [:]
        if let k = top.optional("kafka") {
            let m = try k.mapping()
            kafka.bootstrapServers = try m.string("bootstrap", default: kafka.bootstrapServers)
            kafka.clientID = try m.string("client_id")
            if let p = m.optional("properties") { kafka.properties = try p.stringMap() }
            if let c = m.optional("consumer") { consumerProperties = try c.stringMap() }
            if let p = m.optional("producer") { producerProperties = try p.stringMap() }
            try m.finish()
        }
        if let brokers = environment["KAFKA_BROKERS"], !brokers.isEmpty {
            kafka.bootstrapServers = brokers
        }

        let topicsNode = try top.required("topics", hint: "a mapping of logical name to { name, partitions }")
        let declared = try parseTopics(topicsNode)
        let topics = Dictionary(uniqueKeysWithValues: declared.map { ($0.logical, $0) })

        func topic(_ node: ConfigNode) throws(ConfigError) -> Topic {
            let logical = try node.string()
            guard let t = topics[logical] else {
                throw node.error("no topic '\(logical)' under topics: (declared: \(topics.keys.sorted().joined(separator: ", ")))")
            }
            return t
        }

        let dlqNode = try top.required("dead_letter", hint: "the logical topic that receives records a stage cannot handle")
        let deadLetter = try topic(dlqNode)

        var metrics: MetricsSettings?
        if let node = top.optional("metrics") {
            let m = try node.mapping()
            let t = try topic(try m.required("topic", hint: "the logical topic the workers publish their metrics snapshots to"))
            let interval = try m.duration("interval", defaultMilliseconds: 1000)
            guard (100...3_600_000).contains(interval) else {
                throw (m.optional("interval") ?? node).error("interval must be between 100ms and 1h, e.g. 1s")
            }
            try m.finish()
            metrics = MetricsSettings(topic: t, intervalMs: interval)
        }

        var schemaRegistry: SchemaRegistrySettings?
        if let node = top.optional("schema_registry") {
            let m = try node.mapping()
            let urlNode = try m.required("url", hint: "the registry's base URL, e.g. http://schema-registry:8081")
            let url = try urlNode.string()
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                throw urlNode.error("'\(url)' is not an http:// or https:// URL")
            }
            schemaRegistry = SchemaRegistrySettings(url: url, username: try m.string("username"), password: try m.string("password"))
            try m.finish()
        }
        if schemaRegistry == nil, let avro = topics.values.first(where: { $0.format == .avro }) {
            throw topicsNode.error(
                "topics.\(avro.logical) has format: avro, which needs a schema_registry: section (url: http://…) to find its schemas")
        }

        var stages: [StageName: StageCommon] = [:]
        for stage in StageName.allCases {
            guard let node = top.optional(stage.rawValue) else { continue }
            let m = try node.mapping()
            var common = StageCommon(
                name: stage, input: nil, output: nil, group: "\(name).\(stage.rawValue)",
                batchSize: 500, batchWaitMs: stage == .persist ? 20 : 0,
                httpPort: defaultHTTPPort(stage), consumerProperties: consumerProperties, producerProperties: producerProperties,
                shutdownTimeoutMs: 20_000, node: node)
            if stage != .ingest {
                common.input = try topic(try m.required("input", hint: "the logical topic this stage reads"))
            }
            if stage != .persist {
                common.output = try topic(try m.required("output", hint: "the logical topic this stage writes"))
            }
            common.group = try m.string("group", default: common.group)
            common.batchSize = try m.int("batch_size", default: common.batchSize, in: 1...100_000)
            common.batchWaitMs = try m.duration("batch_wait", defaultMilliseconds: common.batchWaitMs)
            if stage == .validate || stage == .process {
                common.inFlightBatches = try m.int("in_flight_batches", default: common.inFlightBatches, in: 1...1000)
                common.concurrency = try m.int("concurrency", default: common.concurrency, in: 1...256)
            }
            common.httpPort = try m.int("http_port", default: common.httpPort, in: 0...65535)
            common.shutdownTimeoutMs = try m.duration("shutdown_timeout", defaultMilliseconds: common.shutdownTimeoutMs)
            if let c = m.optional("consumer") { common.consumerProperties.merge(try c.stringMap()) { $1 } }
            if let p = m.optional("producer") { common.producerProperties.merge(try p.stringMap()) { $1 } }
            // Stage-specific keys are read (and unknown ones rejected) by the stage itself.
            stages[stage] = common
        }
        try top.finish()

        let base = URL(fileURLWithPath: file).deletingLastPathComponent().path
        var spec = PipelineSpec(
            name: name, file: file, baseDirectory: base, kafka: kafka, consumerProperties: consumerProperties,
            producerProperties: producerProperties, topics: topics, deadLetter: deadLetter,
            stages: stages, environment: environment, tests: testsNode, metrics: metrics, dashboard: dashboardNode)
        spec.tracing = tracing
        spec.schemaRegistry = schemaRegistry
        return spec
    }

    /// The `topics:` section of a pipeline file and nothing else: what `streamfirst broker --pipeline`
    /// creates. Other sections are not read, so a file that only declares topics is enough; the topics
    /// are parsed by the same code (and with the same errors) as in ``load(file:environment:)``.
    public static func declaredTopics(
        file: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> [Topic] {
        try declaredTopics(root: try ConfigNode.load(file: file, environment: environment))
    }

    /// ``declaredTopics(file:environment:)`` for YAML text (`file` names it in errors).
    public static func declaredTopics(yaml: String, file: String, environment: [String: String]) throws(ConfigError) -> [Topic] {
        try declaredTopics(root: try ConfigNode.parse(yaml: yaml, source: ConfigSource(file: file, environment: environment)))
    }

    private static func declaredTopics(root: ConfigNode) throws(ConfigError) -> [Topic] {
        // An empty document or one without `topics:` declares nothing; the other sections are ignored.
        guard !root.isNull, let node = try root.mapping().optional("topics"), !node.isNull else { return [] }
        return try parseTopics(node)
    }

    /// The `topics:` mapping (logical name → `{ name, partitions, replication_factor }`), in file
    /// order. Two logical names may not share one Kafka topic (its settings would be ambiguous).
    static func parseTopics(_ node: ConfigNode) throws(ConfigError) -> [Topic] {
        var topics: [Topic] = []
        var declaredBy: [String: String] = [:] // Kafka topic name -> logical name
        let topicsMap = try node.mapping()
        for logical in topicsMap.keys {
            let node = try topicsMap.required(logical)
            try checkIdentifier(logical, at: node)
            let m = try node.mapping()
            let nameNode = try m.required("name", hint: "the Kafka topic name")
            let topicName = try nameNode.string()
            guard !topicName.isEmpty, topicName.count <= 249,
                topicName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
            else {
                throw nameNode.error("'\(topicName)' is not a valid Kafka topic name (letters, digits, '.', '_', '-')")
            }
            if let other = declaredBy[topicName] {
                throw nameNode.error("topic '\(topicName)' is already declared by topics.\(other)")
            }
            declaredBy[topicName] = logical
            let partitions = try m.int("partitions", default: 1, in: 1...10_000)
            let rf = try m.int("replication_factor", default: 1, in: 1...32)
            let format = try RecordFormat(rawValue: m.choice("format", RecordFormat.allCases.map(\.rawValue), default: "json")) ?? .json
            try m.finish()
            var topic = Topic(logical: logical, name: topicName, partitions: partitions, replicationFactor: rf)
            topic.format = format
            topics.append(topic)
        }
        try topicsMap.finish()
        return topics
    }

    /// The section of one stage, or an error saying the file has none.
    public func stage(_ name: StageName) throws(ConfigError) -> StageCommon {
        guard let s = stages[name] else {
            throw ConfigError(
                file: file, line: nil, path: name.rawValue,
                message: "the pipeline has no '\(name.rawValue):' section, so the \(name.rawValue) worker has nothing to do")
        }
        return s
    }

    /// Resolves a path from the pipeline file against its directory (absolute paths stay).
    public func resolve(path: String) -> String {
        path.hasPrefix("/") ? path : URL(fileURLWithPath: baseDirectory).appendingPathComponent(path).path
    }

    static func checkIdentifier(_ text: String, at node: ConfigNode) throws(ConfigError) {
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }) else {
            throw node.error("'\(text)' must be letters, digits, '_', '-' or '.'")
        }
    }
}
