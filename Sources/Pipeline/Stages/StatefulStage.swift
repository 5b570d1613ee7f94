import Config
import Dispatch
import Foundation
import Kafka
import Logging
import Metrics
import NIOConcurrencyHelpers
import PipelineModel
import Processing
import ServiceLifecycle
import Stateful
import StreamCore
import Synchronization

/// The stateful settings of a `process:` section: optional stateless `steps:` first, then one
/// `window:` or `join:`, with `state:` (changelog topic, memory budget) and `late:` (where records
/// that arrive after their window closed go; default the dead-letter topic).
///
/// ```yaml
/// process:
///   input: valid
///   output: stats
///   window: { type: tumbling, size: 1m, grace: 10s, time: ts, aggregate: { n: count() } }
///   late: late
///   state:
///     changelog: stats-changelog     # a declared topic with as many partitions as the input
///     memory_budget: 64MiB           # over all partitions this instance holds
///     snapshot_bytes: 1MiB           # write a snapshot after this much changelog (retention brokers)
/// ```
public struct StatefulProcessConfig: Sendable {
    public let op: StatefulOperator
    public let steps: StepProcessor?
    /// Logical route → Kafka topic, for routes of the steps.
    public let routes: [String: String]
    public let input: PipelineSpec.Topic
    /// The second input of a join.
    public let right: PipelineSpec.Topic?
    public let output: PipelineSpec.Topic
    public let changelog: PipelineSpec.Topic
    public let late: PipelineSpec.Topic
    public let lateIsDeadLetter: Bool
    public let budgetBytes: Int
    public let snapshotBytes: Int

    /// The Kafka topics this stage consumes, in side order.
    public var inputTopics: [String] { [input.name] + (right.map { [$0.name] } ?? []) }

    /// Runs the steps before the operator on one record: what they route goes out at once, with
    /// its `sf.id` (``OutputIDs``), and the rest goes on to the window or join. Without steps the
    /// record itself goes on. Shared by the stage and its broker-free test handler.
    func runSteps(
        on value: JSONValue, message: KafkaMessage, context: RecordContext
    ) throws(ProcessingError) -> (routed: [StageOutput], values: [JSONValue]) {
        guard let steps else { return ([], [value]) }
        var ids = OutputIDs(message, id: context.id)
        var routed: [StageOutput] = []
        var values: [JSONValue] = []
        for o in try steps.process(value, context: context) {
            if let route = o.route, let topic = routes[route] {
                let headers = ids.headers(for: topic, from: message.headers)
                routed.append(StageOutput(topic: topic, key: message.key, value: o.value.serialized(), headers: headers))
            } else {
                values.append(o.value)
            }
        }
        return (routed, values)
    }

    /// Whether a `process:` section is stateful (has `window:` or `join:`).
    public static func isStateful(_ common: PipelineSpec.StageCommon) -> Bool {
        guard let m = try? common.node.mapping() else { return false }
        return m.contains("window") || m.contains("join")
    }

    public static func make(spec: PipelineSpec, common: PipelineSpec.StageCommon) throws(ConfigError) -> StatefulProcessConfig {
        let m = try common.mapping()
        guard let input = common.input, let output = common.output else {
            throw common.node.error("process needs input: and output: topics")
        }
        try common.refuseAvroOutput()
        for t in [input] where t.format == .avro {
            throw common.node.error(
                "the input topic '\(t.logical)' has format: avro, which a window or join stage does not read yet: put a process "
                    + "stage before it that reads Avro and writes json")
        }
        let windowNode = m.optional("window")
        let joinNode = m.optional("join")
        if windowNode != nil && joinNode != nil {
            throw common.node.error("a process stage has one stateful operator: window: or join:, not both (chain two stages for both)")
        }
        var op: StatefulOperator
        var right: PipelineSpec.Topic?
        if let windowNode {
            op = .window(try WindowSpec(windowNode))
        } else if let joinNode {
            let j = try JoinSpec(joinNode)
            guard let r = spec.topics[j.right] else {
                throw joinNode.error(
                    "join.with: no topic '\(j.right)' under topics: (declared: \(spec.topics.keys.sorted().joined(separator: ", ")))")
            }
            guard r.partitions == input.partitions else {
                throw joinNode.error(
                    "join.with: '\(j.right)' has \(r.partitions) partitions and the input '\(input.logical)' has \(input.partitions): "
                        + "a join needs co-partitioned inputs (same partition count, same key partitioning)")
            }
            guard r.format == .json else {
                throw joinNode.error("join.with: '\(j.right)' has format: avro, which a join does not read yet (use format: json)")
            }
            right = r
            op = .join(j)
        } else {
            throw common.node.error("a stateful process stage needs window: or join:")
        }
        var steps: StepProcessor?
        var routes: [String: String] = [:]
        if let stepsNode = m.optional("steps") {
            let s = try StepProcessor(steps: stepsNode, baseDirectory: spec.baseDirectory)
            for logical in s.routes {
                guard let topic = spec.topics[logical] else {
                    throw stepsNode.error("a route sends records to '\(logical)', which is not declared under topics:")
                }
                routes[logical] = topic.name
            }
            steps = s
        }
        func topic(_ node: ConfigNode) throws(ConfigError) -> PipelineSpec.Topic {
            let logical = try node.string()
            guard let t = spec.topics[logical] else {
                throw node.error("no topic '\(logical)' under topics: (declared: \(spec.topics.keys.sorted().joined(separator: ", ")))")
            }
            return t
        }
        let stateNode = try m.required("state", hint: "state: { changelog: <topic>, memory_budget: 64MiB }")
        let sm = try stateNode.mapping()
        let changelogNode = try sm.required(
            "changelog", hint: "a declared topic with as many partitions as the input, e.g. stats-changelog")
        let changelog = try topic(changelogNode)
        guard changelog.partitions == input.partitions else {
            throw changelogNode.error(
                "the changelog '\(changelog.logical)' has \(changelog.partitions) partitions and the input '\(input.logical)' has "
                    + "\(input.partitions): they must be equal (partition p's state lives in changelog partition p)")
        }
        guard changelog.name != input.name, changelog.name != output.name, changelog.name != right?.name else {
            throw changelogNode.error("the changelog must be a topic of its own")
        }
        let budget = try Self.bytes(sm.optional("memory_budget"), default: 64 << 20)
        let snapshot = try Self.bytes(sm.optional("snapshot_bytes"), default: 1 << 20)
        try sm.finish()
        let lateTopic = try m.optional("late").map(topic) ?? spec.deadLetter
        try m.finish()
        if let strategy = common.consumerProperties["partition.assignment.strategy"], strategy != "range" {
            throw common.node.error(
                "consumer partition.assignment.strategy is '\(strategy)': a stateful stage needs 'range' so that partition p of "
                    + "every input lands on the same instance (remove the setting)")
        }
        return StatefulProcessConfig(
            op: op, steps: steps, routes: routes, input: input, right: right, output: output, changelog: changelog,
            late: lateTopic, lateIsDeadLetter: lateTopic.name == spec.deadLetter.name, budgetBytes: budget, snapshotBytes: snapshot)
    }

    /// `64MiB`, `512KiB`, `1GB`, `1000000`: bytes.
    static func bytes(_ node: ConfigNode?, default value: Int) throws(ConfigError) -> Int {
        guard let node else { return value }
        let text = try node.string().trimmingCharacters(in: .whitespaces)
        let units: [(String, Int)] = [
            ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000),
            ("kB", 1_000), ("B", 1),
        ]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            if let n = Double(number), n > 0, n * Double(factor) < 1e15 { return Int(n * Double(factor)) }
            throw node.error("'\(text)' is not a size: write e.g. 64MiB, 512KiB or 1GB")
        }
        if let n = Int(text), n > 0 { return n }
        throw node.error("'\(text)' is not a size: write e.g. 64MiB, 512KiB or 1GB")
    }
}

/// The process stage with state: windows or a stream–stream join (see ``StatefulEngine``).
///
/// Per batch: records run through the steps and the engine; results, late records, dead letters and
/// the changelog entries are produced and acknowledged; then the checkpoints (input offsets and
/// event-time clocks) follow. On assignment a partition's state is restored from its changelog
/// partition and the consumer starts at the checkpoint — state and input offsets move together, so a
/// crash at any moment restores a state that matches the position it resumes from. Results carry
/// deterministic ids (`<key>@<window start>`, `<left id>+<right id>`), so a re-emitted result after a
/// crash is the same record and downstream upserts absorb it.
///
/// Rebalances wait for the batch in flight (a gate), so a partition's state is never written by two
/// instances at once in a healthy group. A member that stalls past the session timeout and comes
/// back could still write once more (a "zombie"); Kafka transactions would fence it, which the
/// embedded broker does not support — see docs/ARCHITECTURE.md.
public final class StatefulStage: Service, ContextualStage, Sendable {
    let context: StageContext
    let config: StatefulProcessConfig
    let lateWriter: DeadLetterWriter
    /// `window <output>` or `join <output>`: the span of a result (child of the record that closed it).
    let resultSpanName: String
    let engine: NIOLockedValueBox<StatefulEngine>
    /// 0 idle, 1 a batch is running, 2 a rebalance is running.
    let gate = BatchRebalanceGate()

    let stateBytesGauge: Gauge
    let stateEntriesGauge: Gauge
    let evictionsCounter: Counter
    let lateCounter: Counter
    let restoreTimer: Metrics.Timer
    let reported = NIOLockedValueBox(StateCounters())
    /// Checkpoint positions of newly assigned partitions, to store as the group's offsets once the
    /// assignment is in place: without this, a partition whose input is idle keeps showing the lag
    /// of a commit that failed during the rebalance, though its checkpoint is at the end.
    let positionsToStore = NIOLockedValueBox<[KafkaTopicPartitionOffset]>([])

    public init(context: StageContext, config: StatefulProcessConfig) {
        let spec = context.spec
        self.context = context
        self.config = config
        self.lateWriter = DeadLetterWriter(pipeline: spec.name, stage: "process", topic: config.late.name)
        if case .join = config.op {
            self.resultSpanName = "join \(config.output.name)"
        } else {
            self.resultSpanName = "window \(config.output.name)"
        }
        self.engine = NIOLockedValueBox(
            StatefulEngine(
                op: config.op, inputTopics: config.inputTopics, budgetBytes: config.budgetBytes, snapshotBytes: config.snapshotBytes))
        let dims = [("pipeline", spec.name), ("stage", "process")]
        stateBytesGauge = Gauge(label: "streamfirst_state_bytes", dimensions: dims)
        stateEntriesGauge = Gauge(label: "streamfirst_state_entries", dimensions: dims)
        evictionsCounter = Counter(label: "streamfirst_state_evictions_total", dimensions: dims)
        lateCounter = Counter(label: "streamfirst_records_late_total", dimensions: dims)
        restoreTimer = Metrics.Timer(label: "streamfirst_state_restore_duration_seconds", dimensions: dims)
    }

    public func run() async throws {
        try await checkCoPartitioning()
        let listener = KafkaRebalanceListener(
            onAssigned: { [self] partitions in self.assigned(partitions) },
            onRevoked: { [self] partitions in self.revoked(partitions) })
        var stageCommon = common
        stageCommon.consumerProperties["partition.assignment.strategy"] = "range"
        let clients = try StageClients(spec: spec, common: stageCommon, logger: logger, rebalanceListener: listener)
        let outputs = [spec.deadLetter.name, config.output.name, config.changelog.name, config.late.name] + config.routes.values
        try clients.producer.prepare(topics: Array(Set(outputs)))
        try await clients.consumer.subscribe(topics: config.inputTopics)
        let readiness = clients.startReadinessWatch(health: health, logger: logger)
        defer { readiness.cancel() }
        logger.info(
            "consuming with state",
            metadata: ["topics": "\(config.inputTopics)", "group": "\(common.group)", "changelog": "\(config.changelog.name)"])
        var lastTick = ContinuousClock.now
        try await clients.runLoop(health: health, metrics: metrics, logger: logger) { _ in
            let positions = positionsToStore.withLockedValue { p in
                defer { p = [] }
                return p
            }
            if !positions.isEmpty {
                do { try clients.consumer.storeOffsets(positions) } catch {
                    logger.debug("could not store the restored positions", metadata: ["error": "\(error)"])
                }
            }
            let batch = try await clients.consumer.poll(maxMessages: common.batchSize, timeout: .milliseconds(100))
            // Idle partitions and the memory budget are looked at every second even without records.
            let tickDue = ContinuousClock.now - lastTick >= .seconds(1)
            if batch.isEmpty && !tickDue { return }
            if tickDue { lastTick = ContinuousClock.now }
            try await process(batch, clients: clients)
        }
    }

    /// Refuses to start when the broker's partition counts break co-partitioning (the file's are
    /// checked when it is read; the cluster may differ).
    func checkCoPartitioning() async throws {
        let admin = try KafkaAdmin(configuration: spec.kafka)
        var counts: [String: Int] = [:]
        do {
            for t in config.inputTopics + [config.changelog.name] { counts[t] = try await admin.describeTopic(t).partitions.count }
        } catch {
            await admin.shutdown()
            throw PipelineError.setup("cannot describe the stateful stage's topics: \(error)")
        }
        await admin.shutdown()
        let inputCount = counts[config.input.name] ?? 0
        for (t, n) in counts.sorted(by: { $0.key < $1.key }) where n != inputCount {
            throw PipelineError.setup(
                "topic \(t) has \(n) partitions on the cluster and the input \(config.input.name) has \(inputCount): the inputs "
                    + "and the changelog of a stateful stage must be co-partitioned (same partition count)")
        }
    }

    // MARK: - Rebalance (on the consumer's polling thread, never on the cooperative pool)

    func assigned(_ partitions: [KafkaTopicPartition]) -> [KafkaTopicPartitionOffset] {
        gate.enterRebalance()
        defer { gate.leaveRebalance() }
        let numbers = Set(partitions.map(\.partition)).sorted()
        var seeks: [KafkaTopicPartitionOffset] = []
        for p in numbers {
            let started = ContinuousClock.now
            let read = Self.blockingRead(topic: config.changelog.name, partition: p, kafka: spec.kafka, logger: logger)
            let now = currentTimeMs()
            let result: Result<[String: Int64], StateRestoreError> = engine.withLockedValue { e in
                do throws(StateRestoreError) {
                    return .success(try e.assign(partition: p, changelog: read.messages, complete: read.complete, nowWallMs: now))
                } catch {
                    return .failure(error)
                }
            }
            switch result {
            case .success(let offsets):
                let elapsed = ContinuousClock.now - started
                restoreTimer.recordNanoseconds(elapsed.nanoseconds)
                logger.info(
                    "state restored",
                    metadata: [
                        "partition": "\(p)", "changelog_records": "\(read.messages.count)",
                        "resume": "\(offsets.sorted { $0.key < $1.key })",
                        "took": "\(elapsed)",
                    ])
                for tp in partitions where tp.partition == p {
                    if let o = offsets[tp.topic] { seeks.append(KafkaTopicPartitionOffset(tp, offset: o)) }
                }
            case .failure(let error):
                // Loud, and the partition is not processed: records stay in Kafka (lag grows) until
                // an operator fixes the changelog or resets the state (`streamfirst replay --reset-state`).
                logger.critical("cannot restore state; partition not processed", metadata: ["error": "\(error)"])
                health.setReady(false)
            }
        }
        publishGauges()
        positionsToStore.withLockedValue { $0 += seeks.filter { $0.offset >= 0 } }
        return seeks
    }

    func revoked(_ partitions: [KafkaTopicPartition]) {
        gate.enterRebalance()
        engine.withLockedValue { e in
            for p in Set(partitions.map(\.partition)) { e.revoke(partition: p) }
        }
        gate.leaveRebalance()
        publishGauges()
    }

    /// Reads one changelog partition to its end, waiting on a semaphore (this runs on the consumer's
    /// polling thread inside the rebalance callback, not on the cooperative pool).
    static func blockingRead(
        topic: String, partition: Int32, kafka: KafkaConfiguration, logger: Logger
    ) -> (messages: [ChangelogMessage], complete: Bool) {
        let box = NIOLockedValueBox<([ChangelogMessage], Bool)?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do {
                box.withLockedValue { $0 = nil }
                let r = try await readChangelog(topic: topic, partition: partition, kafka: kafka)
                box.withLockedValue { $0 = r }
            } catch {
                logger.error(
                    "reading the changelog failed", metadata: ["topic": "\(topic)", "partition": "\(partition)", "error": "\(error)"])
            }
            done.signal()
        }
        done.wait()
        return box.withLockedValue { $0 } ?? ([], false)
    }

    /// One changelog partition from its first retained record to the end it had when the read began.
    package static func readChangelog(topic: String, partition: Int32, kafka: KafkaConfiguration) async throws -> ([ChangelogMessage], Bool)
    {
        var config = KafkaConsumerConfiguration(kafka: kafka, groupID: nil)
        config.fetchWaitMax = .milliseconds(10)
        let consumer = try KafkaConsumer(configuration: config)
        do {
            let (low, high) = try await consumer.watermarks(topic: topic, partition: partition)
            if high <= low {
                await consumer.close()
                return ([], low == 0)
            }
            try await consumer.assign(
                [KafkaTopicPartition(topic: topic, partition: partition)],
                startingAt: .offsets([KafkaTopicPartition(topic: topic, partition: partition): low]))
            var out: [ChangelogMessage] = []
            var first: Int64?
            let deadline = ContinuousClock.now + .seconds(120)
            var last = low - 1
            while last + 1 < high {
                guard ContinuousClock.now < deadline else {
                    throw PipelineError.setup("reading changelog \(topic)[\(partition)] did not reach offset \(high) within 120 s")
                }
                for m in try await consumer.poll(maxMessages: 5000, timeout: .milliseconds(200)) where m.offset < high {
                    if first == nil { first = m.offset }
                    out.append(ChangelogMessage(key: m.key.map { String(decoding: $0, as: UTF8.self) }, value: m.value))
                    last = m.offset
                }
            }
            await consumer.close()
            return (out, (first ?? low) == 0)
        } catch {
            await consumer.close()
            throw error
        }
    }

    // MARK: - Batches

    func acquireBatchGate() async { await gate.enterBatch() }

    func releaseBatchGate() { gate.leaveBatch() }

    func process(_ batch: [KafkaMessage], clients: StageClients) async throws {
        let started = ContinuousClock.now
        await acquireBatchGate()
        var released = false
        defer { if !released { releaseBatchGate() } }
        metrics.recordIn(batch)
        let now = currentTimeMs()
        var messages: [KafkaProducerMessage] = []
        var deadClasses: [DeadLetterClass] = []
        var filtered = 0
        var outCount = 0
        var lateCount = 0
        let output = config.output.name
        let changelogTopic = config.changelog.name
        let plan: (changes: [ChangelogRecord], checkpoints: [ChangelogRecord]) = engine.withLockedValue { engine in
            for message in batch {
                guard engine.isAssigned(message.partition) else { continue } // revoked while polled
                // The record's span: parent of everything it produces, including the results of the
                // windows it closes (docs/ARCHITECTURE.md, "Tracing").
                let span = tracer.startConsuming(message)
                var outcome = RecordOutcome.aggregated
                var failedClass: DeadLetterClass?
                defer { span.end(outcome, errorClass: failedClass) }
                func dead(_ component: String, _ errorClass: DeadLetterClass, _ text: String) {
                    var m = deadLetters.message(
                        for: message, reason: DeadLetterReason(component: component, errorClass: errorClass, message: text), nowMs: now)
                    span.stamp(&m)
                    messages.append(m)
                    deadClasses.append(errorClass)
                    outcome = .deadLetter
                    failedClass = errorClass
                }
                let value: JSONValue
                switch message.decodeJSON() {
                case .success(let v): value = v
                case .failure(let reason):
                    dead(reason.component, reason.errorClass, reason.message)
                    continue
                }
                let context = message.recordContext
                let values: [JSONValue]
                do throws(ProcessingError) {
                    let stepped = try config.runSteps(on: value, message: message, context: context)
                    values = stepped.values
                    for o in stepped.routed {
                        var m = KafkaProducerMessage(topic: o.topic, key: o.key, value: o.value, headers: o.headers)
                        span.stamp(&m)
                        messages.append(m)
                        outCount += 1
                    }
                } catch {
                    dead(error.step, error.errorClass, error.message)
                    continue
                }
                if values.isEmpty {
                    filtered += 1
                    outcome = .filtered
                }
                for (n, v) in values.enumerated() {
                    let record = StreamRecord(
                        topic: message.topic, partition: message.partition, offset: message.offset,
                        key: context.key, value: v, id: n == 0 ? context.id : "\(context.id)#\(n)",
                        timestampMs: message.timestamp?.milliseconds ?? now,
                        eventTimeHeaderMs: context.eventTimeMs)
                    do throws(ProcessingError) {
                        let result = try engine.process(record, nowWallMs: now, continuing: n > 0)
                        if result.duplicate {
                            filtered += 1
                            outcome = .filtered
                        }
                        if result.late {
                            lateCount += 1
                            var m = lateWriter.message(
                                for: message,
                                reason: DeadLetterReason(
                                    component: "window", errorClass: .lateRecord,
                                    message: "arrived after its window closed (event time − grace passed it)"),
                                nowMs: now)
                            span.stamp(&m)
                            messages.append(m)
                            if config.lateIsDeadLetter { deadClasses.append(.lateRecord) }
                            outcome = .late
                        }
                        for r in result.results { messages.append(resultMessage(r, topic: output, closedBy: span)) }
                        outCount += result.results.count
                    } catch {
                        dead(error.step, error.errorClass, error.message)
                        break
                    }
                }
            }
            for (_, r) in engine.tick(nowWallMs: now) {
                // Closed by the wall clock (idle timeout), not by a record: a trace of its own.
                messages.append(resultMessage(r, topic: output, closedBy: nil))
                outCount += 1
            }
            return engine.commit()
        }
        for c in plan.changes {
            messages.append(
                KafkaProducerMessage(topic: changelogTopic, partition: c.partition, key: Array(c.key.utf8), value: c.value, headers: []))
        }
        try await deliver(messages, clients: clients, what: "outputs and state changes")
        try await deliver(
            plan.checkpoints.map {
                KafkaProducerMessage(topic: changelogTopic, partition: $0.partition, key: Array($0.key.utf8), value: $0.value, headers: [])
            },
            clients: clients, what: "checkpoints")
        releaseBatchGate()
        released = true
        // Group offsets only for partitions whose state this instance holds (informational: the
        // checkpoints decide where a partition resumes).
        let owned = engine.withLockedValue { e in batch.filter { e.isAssigned($0.partition) } }
        if !owned.isEmpty { clients.storeAndCommit(owned, logger: logger) }
        metrics.recordOut(outCount)
        metrics.recordFiltered(filtered)
        for c in deadClasses { metrics.recordDeadLetter(errorClass: c) }
        if lateCount > 0 { lateCounter.increment(by: lateCount) }
        publishGauges()
        if !batch.isEmpty {
            metrics.recordProcessing(nanoseconds: (ContinuousClock.now - started).nanoseconds, records: batch.count)
        }
    }

    func deliver(_ messages: [KafkaProducerMessage], clients: StageClients, what: String) async throws {
        guard !messages.isEmpty else { return }
        let delivery = await clients.producer.sendConfirmed(messages, logger: logger)
        if let failed = delivery.failures.first {
            let error = failed.error
            // Not checkpointing: the batch is processed again after restart, from the last checkpoint.
            throw PipelineError.delivery("could not deliver \(what) to \(failed.topic): \(error)")
        }
    }

    /// A result record with its own span, child of the span of the record that closed the window
    /// (or completed the join), or the root of a new trace when the wall clock closed it.
    func resultMessage(_ r: StatefulResult, topic: String, closedBy parent: RecordSpan?) -> KafkaProducerMessage {
        var m = Self.message(r, topic: topic)
        let span = tracer.startDerived(name: resultSpanName, id: r.id, topic: topic, parent: parent)
        span.stamp(&m)
        span.end(.forwarded)
        return m
    }

    static func message(_ r: StatefulResult, topic: String) -> KafkaProducerMessage {
        KafkaProducerMessage(
            topic: topic, key: Array(r.key.utf8), value: r.value.serialized(),
            headers: [
                KafkaHeader(key: RecordHeader.id, value: r.id),
                KafkaHeader(key: RecordHeader.eventTime, value: String(r.eventTimeMs)),
            ])
    }

    func publishGauges() {
        let (bytes, entries, counters) = engine.withLockedValue { ($0.stateBytes, $0.stateEntries, $0.counters) }
        stateBytesGauge.record(bytes)
        stateEntriesGauge.record(entries)
        let newEvictions = reported.withLockedValue { r -> Int in
            defer { r = counters }
            return counters.evictions - r.evictions
        }
        if newEvictions > 0 {
            evictionsCounter.increment(by: newEvictions)
            logger.warning(
                "memory budget reached: closed windows / expired join records early",
                metadata: ["evicted": "\(newEvictions)", "budget_bytes": "\(config.budgetBytes)"])
        }
        metrics.recordState(bytes: bytes, entries: entries, evictions: counters.evictions, late: counters.late)
    }
}

/// The stateful process stage as a ``StageHandler``, for broker-free pipeline tests
/// (``PipelineTestRunner``): one record at a time, every partition's state in memory, no changelog.
/// Results go to the output topic; late records to the late topic (or, when that is the dead-letter
/// topic, they are dead letters of class `LateRecord`).
public final class StatefulTestHandler: StageHandler {
    let config: StatefulProcessConfig
    let engine: NIOLockedValueBox<StatefulEngine>

    public init(config: StatefulProcessConfig) {
        self.config = config
        self.engine = NIOLockedValueBox(Self.fresh(config))
    }

    static func fresh(_ config: StatefulProcessConfig) -> StatefulEngine {
        var e = StatefulEngine(
            op: config.op, inputTopics: config.inputTopics, budgetBytes: config.budgetBytes, snapshotBytes: config.snapshotBytes)
        for p in 0..<Int32(max(1, config.input.partitions)) {
            _ = try? e.assign(partition: p, changelog: [], complete: true, nowWallMs: 0)
        }
        return e
    }

    /// Forgets all state (each inline test starts empty).
    public func reset() {
        engine.withLockedValue { $0 = Self.fresh(config) }
    }

    public func handle(_ message: KafkaMessage, into emitter: inout StageEmitter) {
        emitter.apply(decide(message))
    }

    func decide(_ message: KafkaMessage) -> StageOutcome {
        let value: JSONValue
        switch message.decodeJSON() {
        case .success(let v): value = v
        case .failure(let reason): return .deadLetter(reason)
        }
        let context = message.recordContext
        let values: [JSONValue]
        var outputs: [StageOutput]
        do {
            (outputs, values) = try config.runSteps(on: value, message: message, context: context)
        } catch {
            return .deadLetter(DeadLetterReason(component: error.step, errorClass: error.errorClass, message: error.message))
        }
        if values.isEmpty && outputs.isEmpty { return .filtered }
        var late = false
        var duplicates = 0
        let result: Result<Void, ProcessingError> = engine.withLockedValue { e in
            for (n, v) in values.enumerated() {
                let record = StreamRecord(
                    topic: message.topic, partition: message.partition, offset: message.offset, key: context.key, value: v,
                    id: n == 0 ? context.id : "\(context.id)#\(n)", timestampMs: message.timestamp?.milliseconds ?? 0,
                    eventTimeHeaderMs: context.eventTimeMs)
                do throws(ProcessingError) {
                    let outcome = try e.process(record, nowWallMs: 0, continuing: n > 0)
                    late = late || outcome.late
                    duplicates += outcome.duplicate ? 1 : 0
                    for r in outcome.results {
                        let m = StatefulStage.message(r, topic: config.output.name)
                        outputs.append(StageOutput(topic: m.topic, key: m.key, value: m.value ?? [], headers: m.headers))
                    }
                } catch {
                    return .failure(error)
                }
            }
            return .success(())
        }
        if case .failure(let error) = result {
            return .deadLetter(DeadLetterReason(component: error.step, errorClass: error.errorClass, message: error.message))
        }
        if duplicates == values.count && outputs.isEmpty { return .filtered }
        if late {
            let reason = DeadLetterReason(component: "window", errorClass: .lateRecord, message: "arrived after its window closed")
            if config.lateIsDeadLetter { return .deadLetter(reason) }
            outputs.append(StageOutput(topic: config.late.name, key: message.key, value: message.value ?? [], headers: message.headers))
        }
        return .forward(outputs)
    }
}
