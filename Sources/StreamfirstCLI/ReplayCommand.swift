import ArgumentParser
import Foundation
import Logging
import Pipeline
import PipelineModel
import PipelineTools
import Processing

struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Rewind a stage to a time or offset and re-run it; digests to verify a replay.",
        discussion: """
            A replay, step by step: save the digests of the stage's output topic, stop the stage's workers, \
            rewind it, start them again, wait until it has caught up, and compare:

              streamfirst replay digest --pipeline p.yaml --topic stats --save before.txt
              streamfirst replay rewind --pipeline p.yaml --stage process --to 2026-11-25T09:00:00Z --reset-state
              (start the process workers; wait until `streamfirst lag` shows 0)
              streamfirst replay digest --pipeline p.yaml --topic stats --compare before.txt

            Results keep their ids (<key>@<window start>, <left id>+<right id>, the input's sf.id), so a \
            replayed result replaces the original one in a sink that upserts by id or key. Where replay \
            is not byte-identical, see docs/PIPELINES.md ("Replay").
            """,
        subcommands: [Rewind.self, Digest.self])

    struct Rewind: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a stopped stage's group (and, with --reset-state, a stateful stage's changelog) to a point in its input.")

        @Option(name: .long, help: "The pipeline file.") var pipeline: String
        @Option(help: "validate or process (ingest reads a source; persist resumes from its sink).") var stage: String
        @Option(help: "Replay from the first record at or after this time (ISO-8601 or ms since the epoch).") var to: String?
        @Option(help: "Replay from this offset in every partition (clamped to what the broker retains).") var toOffset: Int64?
        @Flag(help: "Replay from the first retained record.") var toBeginning = false
        @Flag(help: "Stateful process stage: forget its state and start empty at the replay point.") var resetState = false
        @Flag(help: "Print the offsets, change nothing.") var dryRun = false
        @Option(help: "Kafka bootstrap servers (default: the pipeline's, or $KAFKA_BROKERS).") var bootstrap: String?
        @OptionGroup var output: OutputOptions

        func validate() throws {
            guard PipelineSpec.StageName(rawValue: stage) != nil else {
                throw ValidationError("--stage \(stage): expected validate or process")
            }
            let given = [to != nil, toOffset != nil, toBeginning].filter { $0 }.count
            guard given == 1 else { throw ValidationError("give exactly one of --to TIME, --to-offset N, --to-beginning") }
            if let to, RedriveCommand.time(to) == nil {
                throw ValidationError("--to \(to): expected ISO-8601 (2026-11-25T09:00:00Z) or milliseconds since the epoch")
            }
        }

        func run() async throws {
            var environment = ProcessInfo.processInfo.environment
            if let bootstrap { environment["KAFKA_BROKERS"] = bootstrap }
            let spec = try PipelineSpec.load(file: pipeline, environment: environment)
            var logger = Logger(label: "streamfirst.replay")
            logger.logLevel = .warning
            let position: Replay.Position =
                toBeginning ? .beginning : toOffset.map { .offset($0) } ?? .timestamp(to.flatMap(RedriveCommand.time) ?? 0)
            let stageName = PipelineSpec.StageName(rawValue: stage) ?? .process
            var replay = Replay(spec: spec, stage: stageName, logger: logger)
            let bar = output.progressBar()
            replay.progress = bar.handler
            let report: Replay.Report
            do {
                report = try await replay.rewind(to: position, resetState: resetState, dryRun: dryRun)
                bar.finish()
            } catch {
                bar.finish()
                throw error
            }
            let group = try spec.stage(stageName).group
            if output.json {
                // {dry_run, stage, group, offsets: [{topic, partition, offset}], reset_partitions}
                emit(
                    jsonString([
                        "dry_run": dryRun, "stage": stage, "group": group,
                        "offsets": report.offsets.map {
                            ["topic": $0.topicPartition.topic, "partition": Int($0.topicPartition.partition), "offset": $0.offset]
                                as [String: Any]
                        },
                        "reset_partitions": report.resetPartitions.count,
                    ]))
                return
            }
            print("\(dryRun ? "would rewind" : "rewound") group \(group) to:")
            for o in report.offsets { print("  \(o.topicPartition.topic)[\(o.topicPartition.partition)] → \(o.offset)") }
            if !report.resetPartitions.isEmpty {
                print("state reset in \(report.resetPartitions.count) changelog partitions: the stage starts empty at these offsets")
            }
            if !dryRun { print("start the \(stage) workers again to replay") }
        }
    }

    struct Digest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Digest per record id (last record per id) of a topic; save it, or compare with a saved one.")

        @Option(name: .long, help: "The pipeline file.") var pipeline: String
        @Option(help: "The logical topic (e.g. the stateful stage's output).") var topic: String
        @Option(help: "Write the digests to this file.") var save: String?
        @Option(help: "Compare with digests saved before; exit 1 if any id's digest differs.") var compare: String?
        @Option(help: "Kafka bootstrap servers (default: the pipeline's, or $KAFKA_BROKERS).") var bootstrap: String?
        @OptionGroup var output: OutputOptions

        func run() async throws {
            var environment = ProcessInfo.processInfo.environment
            if let bootstrap { environment["KAFKA_BROKERS"] = bootstrap }
            let spec = try PipelineSpec.load(file: pipeline, environment: environment)
            guard let t = spec.topics[topic] else {
                throw ValidationError(
                    "--topic \(topic): not a topic of \(pipeline) (topics: \(spec.topics.keys.sorted().joined(separator: ", ")))")
            }
            let bar = output.progressBar()
            let digests: [String: String]
            do {
                digests = try await Replay.digests(topic: t.name, kafka: spec.kafka, progress: bar.handler)
                bar.finish()
            } catch {
                bar.finish()
                throw error
            }
            let text = digests.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: "\n") + "\n"
            if let save { try text.write(toFile: save, atomically: true, encoding: .utf8) }
            if output.json {
                // {topic, ids, saved?, digests? (neither --save nor --compare), comparison? (--compare)}
                var object: [String: Any] = ["topic": t.name, "ids": digests.count]
                if let save { object["saved"] = save }
                if save == nil && compare == nil { object["digests"] = digests }
                var differs = false
                if let compare {
                    let c = Replay.compare(try Self.load(compare), digests)
                    differs = !c.different.isEmpty
                    object["comparison"] = [
                        "identical": c.same, "different": c.different, "only_before": c.onlyBefore, "only_now": c.onlyAfter,
                    ]
                }
                emit(jsonString(object))
                if differs { throw ExitCode(1) }
                return
            }
            if let save { print("\(digests.count) ids of \(t.name) → \(save)") }
            if let compare {
                let c = Replay.compare(try Self.load(compare), digests)
                print(
                    "\(c.same) ids identical, \(c.different.count) different, \(c.onlyBefore.count) only before, "
                        + "\(c.onlyAfter.count) only now"
                )
                for id in c.different.prefix(20) { print("  differs: \(id)") }
                for id in c.onlyBefore.prefix(10) { print("  missing now: \(id)") }
                if !c.different.isEmpty { throw ExitCode(1) }
            }
            if save == nil && compare == nil { print(text, terminator: "") }
        }

        /// Digests saved by --save: one `id digest` line each.
        static func load(_ file: String) throws -> [String: String] {
            let saved = try String(contentsOfFile: file, encoding: .utf8)
            var before: [String: String] = [:]
            for line in saved.split(separator: "\n") {
                let parts = line.split(separator: " ")
                if parts.count == 2 { before[String(parts[0])] = String(parts[1]) }
            }
            return before
        }
    }
}
