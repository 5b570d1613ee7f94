import ArgumentParser
import EmbeddedBroker
import Foundation
import Kafka
import Pipeline
import PipelineModel
import PipelineTools

struct TopicsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topics",
        abstract: "List, describe, create and delete topics.",
        subcommands: [List.self, Describe.self, Create.self, Delete.self],
        defaultSubcommand: List.self
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List topic names.")
        @OptionGroup var connection: ConnectionOptions
        @Flag(help: "Include internal topics (names starting with __).") var all = false
        @Flag(help: "Print {\"topics\": [names]}.") var json = false

        func run() async throws {
            bootstrapCLILogging()
            let admin = try KafkaAdmin(configuration: try connection.kafkaConfiguration())
            let names = try await admin.listTopics()
            await admin.shutdown()
            let shown = names.filter { all || !$0.hasPrefix("__") }.sorted()
            if json { emit(jsonString(["topics": shown])) } else { shown.forEach(emit) }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Partitions, leaders, replicas and watermarks of a topic.")
        @OptionGroup var connection: ConnectionOptions
        @Argument var topic: String
        @Flag(help: "Print {topic, partitions: [{partition, leader, replicas, isr, low, high}]}.") var json = false

        func run() async throws {
            bootstrapCLILogging()
            let admin = try KafkaAdmin(configuration: try connection.kafkaConfiguration())
            let d = try await admin.describeTopic(topic)
            var rows: [[String: Any]] = []
            for p in d.partitions {
                let (low, high) = try await admin.watermarks(topic: topic, partition: p.id)
                rows.append([
                    "partition": Int(p.id), "leader": Int(p.leader), "replicas": p.replicas.map(Int.init),
                    "isr": p.inSyncReplicas.map(Int.init), "low": low, "high": high,
                ])
                if !json {
                    emit("\(topic)[\(p.id)] leader=\(p.leader) replicas=\(p.replicas) isr=\(p.inSyncReplicas) offsets=\(low)..\(high)")
                }
            }
            await admin.shutdown()
            if json { emit(jsonString(["topic": topic, "partitions": rows])) }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a topic, or every topic a pipeline file declares (--pipeline; existing ones are left alone).",
            discussion: "On the embedded broker pass --control (its control address): the mock cluster has no CreateTopics API.")
        @OptionGroup var connection: ConnectionOptions
        @Argument var topic: String?
        @Option(help: "Create the topics declared in this pipeline file (their partitions and replication factor).") var pipeline: String?
        @Option var partitions = 6
        @Option var replicationFactor = -1
        @Option(name: .customLong("config"), help: "Topic config KEY=VALUE (repeatable).") var configs: [String] = []
        @Option(help: "Embedded broker control address: create through it instead of the admin API.") var control: String?
        @OptionGroup var output: OutputOptions
        var json: Bool { output.json }

        func run() async throws {
            bootstrapCLILogging()
            if let pipeline {
                let spec = try PipelineSpec.load(file: pipeline)
                let missing: [PipelineSpec.Topic]
                if let control {
                    missing = try await createThroughControl(spec, control: control)
                } else {
                    missing = try await spec.createMissingTopics(using: try connection.kafkaConfiguration())
                }
                if json {
                    let created = Set(missing.map(\.name))
                    emit(
                        jsonString([
                            "created": created.sorted(),
                            "existing": spec.topicsToCreate.map(\.name).filter { !created.contains($0) }.sorted(),
                        ]))
                    return
                }
                emit(
                    "created \(missing.count) of \(spec.topicsToCreate.count) topics of "
                        + "\(pipeline)\(missing.isEmpty ? "" : ": " + missing.map(\.name).sorted().joined(separator: ", "))"
                )
                return
            }
            guard let topic else { throw ValidationError("name a topic, or pass --pipeline FILE") }
            if let control {
                try await EmbeddedBrokerControl(address: control).createTopic(
                    topic, partitions: partitions,
                    replicationFactor: max(1, replicationFactor))
            } else {
                var config: [String: String] = [:]
                for c in configs {
                    let parts = c.split(separator: "=", maxSplits: 1)
                    guard parts.count == 2 else { throw ValidationError("--config '\(c)': expected KEY=VALUE") }
                    config[String(parts[0])] = String(parts[1])
                }
                let admin = try KafkaAdmin(configuration: try connection.kafkaConfiguration())
                do {
                    try await admin.createTopics([
                        KafkaNewTopic(name: topic, partitions: partitions, replicationFactor: replicationFactor, config: config)
                    ])
                } catch {
                    await admin.shutdown()
                    throw error
                }
                await admin.shutdown()
            }
            emit(json ? jsonString(["created": [topic], "existing": [String]()]) : "created \(topic) (\(partitions) partitions)")
        }

        /// The embedded broker has no CreateTopics: each missing topic goes through its control
        /// channel, one command each (hence the progress bar).
        func createThroughControl(_ spec: PipelineSpec, control: String) async throws -> [PipelineSpec.Topic] {
            let admin = try KafkaAdmin(configuration: try connection.kafkaConfiguration())
            let existing: Set<String>
            do {
                existing = Set(try await admin.listTopics())
            } catch {
                await admin.shutdown()
                throw error
            }
            await admin.shutdown()
            let missing = spec.topicsToCreate.filter { !existing.contains($0.name) }
            let client = try EmbeddedBrokerControl(address: control)
            let bar = output.progressBar()
            for (i, t) in missing.enumerated() {
                bar.update("creating topics", i, missing.count)
                do {
                    try await client.createTopic(t.name, partitions: t.partitions, replicationFactor: t.replicationFactor)
                } catch {
                    bar.finish()
                    throw error
                }
            }
            bar.update("creating topics", missing.count, missing.count)
            bar.finish()
            return missing
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete topics (real clusters).")
        @OptionGroup var connection: ConnectionOptions
        @Argument var topics: [String]

        func run() async throws {
            bootstrapCLILogging()
            let admin = try KafkaAdmin(configuration: try connection.kafkaConfiguration())
            try await admin.deleteTopics(topics)
            await admin.shutdown()
            emit("deleted \(topics.joined(separator: ", "))")
        }
    }
}

struct LagCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lag",
        abstract:
            "Consumer lag per partition: of a group (--group G TOPIC…), of every consuming stage of a pipeline (--pipeline FILE), "
            + "or list the groups.",
        discussion: """
            With --pipeline, each consuming stage's group (<pipeline>.<stage> unless the file sets group:) \
            is shown with its input topics (a join's both inputs). --json prints \
            {group, total, partitions: [{topic, partition, committed, high, lag}]}, with --pipeline \
            {pipeline, total, stages: [{stage, group, total, partitions: […]}]}; committed is -1 where \
            the group has committed nothing (lag then counts from the low watermark).
            """)

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "The consumer group.") var group: String?
    @Option(help: "A pipeline file: the lag of each consuming stage's group (its bootstrap servers unless --bootstrap or $KAFKA_BROKERS).")
    var pipeline: String?
    @Argument(help: "Topics the group reads.") var topics: [String] = []
    @Flag(help: "Print JSON (see below).") var json = false

    func validate() throws {
        if pipeline != nil && (group != nil || !topics.isEmpty) {
            throw ValidationError("--pipeline takes the groups and topics from the file: leave out --group and the topics")
        }
    }

    static func rows(_ lags: [KafkaPartitionLag]) -> [[String: Any]] {
        lags.map {
            ["topic": $0.topic, "partition": Int($0.partition), "committed": $0.committed, "high": $0.high, "lag": $0.lag] as [String: Any]
        }
    }

    static func text(_ l: KafkaPartitionLag) -> String {
        let c = l.committed >= 0 ? String(l.committed) : "-"
        return "\(l.topic)[\(l.partition)] committed=\(c) high=\(l.high) lag=\(l.lag)"
    }

    func run() async throws {
        bootstrapCLILogging()
        if let pipeline { return try await runPipeline(pipeline) }
        let admin = try KafkaAdmin(configuration: try connection.kafkaConfiguration())
        guard let group else {
            let groups = try await admin.listGroups()
            await admin.shutdown()
            if json {
                emit(
                    jsonString([
                        "groups": groups.map {
                            ["group": $0.name, "state": $0.state, "members": $0.memberCount, "protocol": $0.protocolName] as [String: Any]
                        }
                    ]))
                return
            }
            for g in groups { emit("\(g.name) state=\(g.state) members=\(g.memberCount) protocol=\(g.protocolName)") }
            return
        }
        guard !topics.isEmpty else {
            await admin.shutdown()
            throw ValidationError("name the topics the group reads: streamfirst lag --group G TOPIC... (or --pipeline FILE)")
        }
        let lags: [KafkaPartitionLag]
        do {
            lags = try await admin.groupLag(group: group, topics: topics)
        } catch {
            await admin.shutdown()
            throw error
        }
        await admin.shutdown()
        if json {
            emit(jsonString(["group": group, "total": lags.reduce(0) { $0 + $1.lag }, "partitions": Self.rows(lags)]))
            return
        }
        for l in lags { emit(Self.text(l)) }
        emit("total lag: \(lags.reduce(0) { $0 + $1.lag })")
    }

    func runPipeline(_ file: String) async throws {
        var environment = ProcessInfo.processInfo.environment
        if let b = connection.bootstrap { environment["KAFKA_BROKERS"] = b }
        let spec = try PipelineSpec.load(file: file, environment: environment)
        var kafka = spec.kafka
        kafka.properties.merge(try connection.kafkaConfiguration().properties) { $1 }
        let stages = try PipelineLag.consumingStages(of: spec)
        let admin = try KafkaAdmin(configuration: kafka)
        var results: [(stage: PipelineLag.Stage, lags: [KafkaPartitionLag])] = []
        do {
            for stage in stages { results.append((stage, try await admin.groupLag(group: stage.group, topics: stage.topics))) }
        } catch {
            await admin.shutdown()
            throw error
        }
        await admin.shutdown()
        let total = results.reduce(0) { $0 + $1.lags.reduce(0) { $0 + $1.lag } }
        if json {
            emit(
                jsonString([
                    "pipeline": spec.name, "total": total,
                    "stages": results.map { r in
                        [
                            "stage": r.stage.name.rawValue, "group": r.stage.group, "total": r.lags.reduce(0) { $0 + $1.lag },
                            "partitions": Self.rows(r.lags),
                        ] as [String: Any]
                    },
                ]))
            return
        }
        for r in results {
            emit("\(r.stage.name.rawValue) (group \(r.stage.group)): lag \(r.lags.reduce(0) { $0 + $1.lag })")
            for l in r.lags { emit("  " + Self.text(l)) }
        }
        emit("total lag: \(total)")
    }
}
