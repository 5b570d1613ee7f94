import ArgumentParser
import Pipeline
import EmbeddedBroker
import Foundation
import Kafka

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

        func run() async throws {
            bootstrapCLILogging()
            let admin = try KafkaAdmin(configuration: try connection.kafkaConfiguration())
            let names = try await admin.listTopics()
            await admin.shutdown()
            for n in names where all || !n.hasPrefix("__") { emit(n) }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Partitions, leaders, replicas and watermarks of a topic.")
        @OptionGroup var connection: ConnectionOptions
        @Argument var topic: String
        @Flag var json = false

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

        func run() async throws {
            bootstrapCLILogging()
            if let pipeline {
                let spec = try PipelineSpec.load(file: pipeline)
                let missing = try await spec.createMissingTopics(using: try connection.kafkaConfiguration())
                emit("created \(missing.count) of \(spec.topicsToCreate.count) topics of \(pipeline)\(missing.isEmpty ? "" : ": " + missing.map(\.name).sorted().joined(separator: ", "))")
                return
            }
            guard let topic else { throw ValidationError("name a topic, or pass --pipeline FILE") }
            if let control {
                try await EmbeddedBrokerControl(address: control).createTopic(topic, partitions: partitions,
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
            emit("created \(topic) (\(partitions) partitions)")
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
        abstract: "A consumer group's committed offsets and lag per partition (or list groups without --group).")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "The consumer group.") var group: String?
    @Argument(help: "Topics the group reads.") var topics: [String] = []
    @Flag var json = false

    func run() async throws {
        bootstrapCLILogging()
        let admin = try KafkaAdmin(configuration: try connection.kafkaConfiguration())
        guard let group else {
            for g in try await admin.listGroups() {
                emit("\(g.name) state=\(g.state) members=\(g.memberCount) protocol=\(g.protocolName)")
            }
            await admin.shutdown()
            return
        }
        guard !topics.isEmpty else { throw ValidationError("name the topics the group reads: streamfirst lag --group G TOPIC...") }
        let lags = try await admin.groupLag(group: group, topics: topics)
        await admin.shutdown()
        if json {
            emit(jsonString([
                "group": group, "total": lags.reduce(0) { $0 + $1.lag },
                "partitions": lags.map {
                    ["topic": $0.topic, "partition": Int($0.partition), "committed": $0.committed, "high": $0.high, "lag": $0.lag]
                        as [String: Any]
                },
            ]))
            return
        }
        for l in lags {
            let c = l.committed >= 0 ? String(l.committed) : "-"
            emit("\(l.topic)[\(l.partition)] committed=\(c) high=\(l.high) lag=\(l.lag)")
        }
        emit("total lag: \(lags.reduce(0) { $0 + $1.lag })")
    }
}
