import CBaseline
import EmbeddedBroker
import Foundation
import Kafka
import Logging
import Pipeline
import PipelineModel
import ServiceLifecycle
import StreamCore
import Validation

/// The whole stage path under an allocation counter (`streamfirst-bench alloc`, second table): the
/// real `ConsumeProduceStage` — consume, handle, produce, store offsets — run in this process on the
/// embedded broker (its own process, so the broker's allocations are not counted), against the C
/// relay run in this process the same way. The counter sees every thread of the process, so the C
/// relay's figure is what librdkafka itself allocates per record; the difference is the Swift side's.
///
/// Each path runs twice, on `small` and `large` records; the figure is the slope
/// (count(large) − count(small)) / (large − small), so client start-up, the group join and shutdown
/// (fixed costs) drop out.
struct AllocPath {
    /// Starts counting from zero.
    let start: () -> Void
    /// Stops counting and returns (malloc calls, bytes) since `start`.
    let stop: () -> (count: Int64, bytes: Int64)
    let small: Int
    let large: Int
    let partitions: Int

    struct Row {
        var name: String
        var mallocsPerRecord: Double
        var bytesPerRecord: Double
    }

    static let paths = ["C relay (librdkafka alone)", "pass-through (process, steps: [])", "validate (10-field schema)"]

    func run() async throws -> [Row] {
        let broker = try await EmbeddedBrokerProcess.launch()
        defer { Task { _ = try? await broker.terminate() } }
        let brokers = broker.bootstrapServers
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: brokers, clientID: "streamfirst-bench"))
        var rows: [Row] = []
        for name in Self.paths {
            var counts: [(count: Int64, bytes: Int64)] = []
            for records in [small, large] {
                let id = UUID().uuidString.prefix(8).lowercased()
                let (input, output, dead) = ("ap-in-\(id)", "ap-out-\(id)", "ap-dead-\(id)")
                try await broker.control.createTopic(input, partitions: partitions)
                try await broker.control.createTopic(output, partitions: partitions)
                try await broker.control.createTopic(dead, partitions: 1)
                try prefill(brokers, input, count: records)
                let done = { () async throws -> Bool in
                    let n = try await topicCount(admin, output, partitions: partitions) + topicCount(admin, dead, partitions: 1)
                    return n >= Int64(records)
                }
                if name == Self.paths[0] {
                    counts.append(try await runC(brokers: brokers, group: "ap-c-\(id)", from: input, to: output, done: done))
                } else {
                    counts.append(
                        try await runSwift(
                            validate: name == Self.paths[2], brokers: brokers, group: "ap-s-\(id)", input: input, output: output,
                            dead: dead, done: done))
                }
            }
            let n = Double(large - small)
            rows.append(
                Row(
                    name: name, mallocsPerRecord: Double(counts[1].count - counts[0].count) / n,
                    bytesPerRecord: Double(counts[1].bytes - counts[0].bytes) / n))
        }
        await admin.shutdown()
        return rows
    }

    /// Waits, polling every 100 ms, until `done` says so (at most 2 minutes).
    func wait(until done: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while try await !done() {
            guard ContinuousClock.now < deadline else { throw BenchError("the path did not finish within 2 minutes") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func runC(brokers: String, group: String, from: String, to: String, done: () async throws -> Bool) async throws -> (Int64, Int64) {
        cb_clear_stop()
        start()
        let finished = DispatchSemaphore(value: 0)
        let thread = Thread {
            var err = [CChar](repeating: 0, count: 256)
            brokers.withCString { b in
                group.withCString { g in
                    from.withCString { f in
                        to.withCString { t in
                            var config = cb_relay_config(
                                brokers: b, group: g, from_topic: f, to_topic: t, fetch_wait_max_ms: 10, linger_ms: 2, nagle_disable: 0)
                            _ = cb_relay(&config, &err, Int32(err.count))
                        }
                    }
                }
            }
            finished.signal()
        }
        thread.start()
        try await wait(until: done)
        cb_request_stop()
        // The relay's thread flushes and destroys its clients; waited for off the cooperative pool.
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                finished.wait()
                c.resume()
            }
        }
        cb_clear_stop()
        return stop()
    }

    func runSwift(
        validate: Bool, brokers: String, group: String, input: String, output: String, dead: String, done: () async throws -> Bool
    ) async throws -> (Int64, Int64) {
        let stage = validate ? "validate" : "process"
        let yaml = """
            name: alloc-path
            \(benchKafkaSection(brokers: brokers, fetchWaitMs: 10, linger: 2, nagleDisable: false))
            topics:
              in: { name: \(input), partitions: \(partitions) }
              out: { name: \(output), partitions: \(partitions) }
              dead: { name: \(dead) }
            dead_letter: dead
            \(stage):
              input: in
              output: out
              group: \(group)
            \(validate ? "  schema: bench" : "  steps: []")
            """
        let spec = try PipelineSpec.parse(yaml: yaml, file: "/tmp/alloc-path.yaml", environment: [:])
        var logger = Logger(label: "alloc-path")
        logger.logLevel = .warning
        let context = try StageContext(stage: validate ? .validate : .process, spec: spec, logger: logger)
        let handler: any StageHandler =
            validate
            ? ValidateHandler(schema: try JSONSchema(try JSONValue.parse(Array(benchSchema.utf8))), schemaName: "bench", output: output)
            : try ProcessHandler.make(spec: spec, common: context.common)
        let service = ConsumeProduceStage(context: context, handler: handler)
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [.init(service: service)], logger: logger))
        start()
        let running = Task { try await group.run() }
        try await wait(until: done)
        await group.triggerGracefulShutdown()
        try await running.value
        return stop()
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
