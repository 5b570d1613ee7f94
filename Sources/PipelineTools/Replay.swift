import Config
import Foundation
import Kafka
import Logging
import Pipeline
import PipelineModel
import Stateful
import StreamCore

/// `streamfirst replay`: rewinds a consuming stage to a point in its input (a time, an offset, the
/// beginning) so that its workers, when started again, process from there; and per-record digests
/// of an output topic, to check that a replay produced the same results.
///
/// Why this is enough for deterministic replay: every stage's outputs are a function of its input
/// records in partition order (record ids are deterministic, objects serialise with sorted keys),
/// and a stateful stage's results of windows that lie wholly after the replay point depend only on
/// records after it. So a rewound stage re-emits, under the same ids, byte-identical records —
/// except where results depend on wall-clock time (`idle_timeout`), on how partitions were spread
/// under memory-budget evictions, on a stream–table join's table as it was then, or on windows that
/// straddle the replay point (they see only part of their records). docs/PIPELINES.md lists them.
package struct Replay: Sendable {
    package enum Position: Sendable, Equatable {
        case beginning
        case timestamp(Int64)
        case offset(Int64)
    }

    package struct Report: Sendable {
        /// Offsets the stage's group now starts from, by topic and partition.
        package var offsets: [KafkaTopicPartitionOffset]
        /// Changelog partitions reset (stateful stages).
        package var resetPartitions: [Int32]
    }

    package let spec: PipelineSpec
    package let stage: PipelineSpec.StageName
    package let logger: Logger
    /// Told how far resolving the offsets (per topic) and resetting the state (per changelog
    /// partition) got (`streamfirst replay rewind`'s progress bar).
    package var progress: ProgressHandler?

    package init(spec: PipelineSpec, stage: PipelineSpec.StageName, logger: Logger) {
        self.spec = spec
        self.stage = stage
        self.logger = logger
    }

    /// Rewinds the stage's group to `position` (the stage's workers must be stopped: a running
    /// member would commit over it). A stateful process stage needs `resetState`: its state is
    /// only valid at its own checkpoint, so the changelog gets a reset marker and a checkpoint at the
    /// new position, and the stage starts from there with empty state.
    package func rewind(to position: Position, resetState: Bool, dryRun: Bool) async throws -> Report {
        let common = try spec.stage(stage)
        switch stage {
        case .ingest:
            throw PipelineError.setup("ingest reads a source, not a topic: rewind its source (or re-run it) instead")
        case .persist:
            throw PipelineError.setup(
                "persist resumes from the offsets its sink stores with the rows, not from the group: replay an upstream stage "
                    + "(its records keep their ids, so the sink's upsert absorbs repeats), or empty the sink's table to rebuild it")
        case .validate, .process:
            break
        }
        var topics: [PipelineSpec.Topic] = common.input.map { [$0] } ?? []
        var stateful: StatefulProcessConfig?
        if stage == .process && StatefulProcessConfig.isStateful(common) {
            let config = try StatefulProcessConfig.make(spec: spec, common: common)
            stateful = config
            if let right = config.right { topics.append(right) }
            guard resetState else {
                throw PipelineError.setup(
                    "the process stage keeps state (window/join): its state is valid only at its own checkpoint, so rewinding it "
                        + "needs --reset-state (state starts empty at the replay point; windows that straddle it see only part of their "
                        + "records)"
                )
            }
        }
        var config = KafkaConsumerConfiguration(kafka: spec.kafka, groupID: common.group)
        config.autoCommit = false
        // Join the group the way the stage's workers do (same assignor, same timeouts).
        config.properties = common.consumerProperties
        if stateful != nil { config.properties["partition.assignment.strategy"] = "range" }
        let consumer = try KafkaConsumer(configuration: config, logger: logger)
        var offsets: [KafkaTopicPartitionOffset] = []
        do {
            for (done, topic) in topics.enumerated() {
                progress?("resolving offsets", done, topics.count)
                let partitions = (0..<topic.partitions).map { KafkaTopicPartition(topic: topic.name, partition: Int32($0)) }
                switch position {
                case .beginning:
                    for tp in partitions {
                        let w = try await consumer.watermarks(topic: tp.topic, partition: tp.partition)
                        offsets.append(KafkaTopicPartitionOffset(tp, offset: w.low))
                    }
                case .timestamp(let ms):
                    offsets += try await consumer.resolve(.timestamp(ms), for: partitions)
                case .offset(let n):
                    for tp in partitions {
                        let w = try await consumer.watermarks(topic: tp.topic, partition: tp.partition)
                        offsets.append(KafkaTopicPartitionOffset(tp, offset: min(max(n, w.low), w.high)))
                    }
                }
            }
            // Offsets past the end (a time after the last record) start at the end.
            var resolved: [KafkaTopicPartitionOffset] = []
            for o in offsets {
                if o.offset >= 0 {
                    resolved.append(o)
                } else {
                    let w = try await consumer.watermarks(topic: o.topicPartition.topic, partition: o.topicPartition.partition)
                    resolved.append(KafkaTopicPartitionOffset(o.topicPartition, offset: w.high))
                }
            }
            offsets = resolved
            progress?("resolving offsets", topics.count, topics.count)
            if !dryRun { try await Self.commitAsMember(offsets, consumer: consumer, topics: topics.map(\.name)) }
        } catch {
            await consumer.close()
            throw error
        }
        await consumer.close()
        var reset: [Int32] = []
        if let stateful, !dryRun {
            let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(kafka: spec.kafka), logger: logger)
            do {
                for p in 0..<Int32(stateful.changelog.partitions) {
                    progress?("resetting state", Int(p), stateful.changelog.partitions)
                    let (log, _) = try await StatefulStage.readChangelog(topic: stateful.changelog.name, partition: p, kafka: spec.kafka)
                    var start: [String: Int64] = [:]
                    for o in offsets where o.topicPartition.partition == p { start[o.topicPartition.topic] = o.offset }
                    let records = Changelog.resetRecords(partition: p, after: Changelog.highestSequence(log), offsets: start)
                    let reports = await producer.send(
                        records.map {
                            KafkaProducerMessage(
                                topic: stateful.changelog.name, partition: $0.partition, key: Array($0.key.utf8), value: $0.value)
                        })
                    if let failed = reports.first(where: { $0.error != nil }), let error = failed.error {
                        throw PipelineError.delivery("changelog \(stateful.changelog.name)[\(p)]: \(error)")
                    }
                    reset.append(p)
                    progress?("resetting state", Int(p) + 1, stateful.changelog.partitions)
                }
                try await producer.flush(timeout: .seconds(10))
            } catch {
                await producer.shutdown()
                throw error
            }
            await producer.shutdown()
        }
        return Report(
            offsets: offsets.sorted {
                ($0.topicPartition.topic, $0.topicPartition.partition) < ($1.topicPartition.topic, $1.topicPartition.partition)
            }, resetPartitions: reset)
    }

    /// Joins the stage's group (whose workers are stopped), waits for the assignment of every
    /// partition, and commits `offsets` as the group's member — brokers refuse commits from outside
    /// a group they know (the embedded broker always; real ones while the group has members).
    static func commitAsMember(_ offsets: [KafkaTopicPartitionOffset], consumer: KafkaConsumer, topics: [String]) async throws {
        try await consumer.subscribe(topics: topics)
        let wanted = Set(offsets.map(\.topicPartition))
        let deadline = ContinuousClock.now + .seconds(60)
        while Set(try await consumer.assignment()) != wanted {
            guard ContinuousClock.now < deadline else {
                throw PipelineError.setup(
                    "the group did not give the replay all partitions within 60 s: are the stage's workers still running? Stop them first")
            }
            _ = try await consumer.poll(maxMessages: 1, timeout: .milliseconds(200))
        }
        try await consumer.commit(offsets)
    }

    /// One line per record id of a topic: `<id> <digest>`, the digest being FNV-1a 64 of the value
    /// bytes of the id's last record (a window re-emitted after a restart counts once, as a sink's
    /// upsert does). Sorted by id, so two runs can be compared line by line.
    package static func digests(topic: String, kafka: KafkaConfiguration, progress: ProgressHandler? = nil) async throws -> [String: String]
    {
        var out: [String: String] = [:]
        for m in try await TopicReader.readToEnd(topic: topic, kafka: kafka, progress: progress) {
            let id = m.header(RecordHeader.id)?.value.map { String(decoding: $0, as: UTF8.self) } ?? "\(m.topic):\(m.partition):\(m.offset)"
            out[id] = String(FNV1a.hash(m.value ?? []), radix: 16)
        }
        return out
    }

    /// Compares two digest sets: ids with equal digests, different digests, and ids only in one.
    package static func compare(
        _ before: [String: String], _ after: [String: String]
    ) -> (same: Int, different: [String], onlyBefore: [String], onlyAfter: [String]) {
        var same = 0
        var different: [String] = []
        for (id, d) in before {
            if let a = after[id] { if a == d { same += 1 } else { different.append(id) } }
        }
        return (
            same, different.sorted(), Set(before.keys).subtracting(after.keys).sorted(), Set(after.keys).subtracting(before.keys).sorted()
        )
    }
}
