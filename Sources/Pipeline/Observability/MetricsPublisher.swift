import Foundation
import Kafka
import Logging
import PipelineModel
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One worker's counters at one moment, as published to the pipeline's metrics topic (the same data
/// as its `/stats`, plus who and when). Keyed by `<stage>/<instance>` in Kafka.
public struct WorkerMetricsSnapshot: Sendable, Codable, Equatable {
    /// The worker instance (env `INSTANCE_ID`, else `<hostname>-<pid>`: a pod name in Kubernetes).
    public var instance: String
    /// When the snapshot was taken, milliseconds since the epoch.
    public var timeMs: Int64
    /// The publishing interval: a reader may forget an instance silent for a few intervals.
    public var intervalMs: Int64
    /// The last snapshot of a worker that is stopping (graceful shutdown).
    public var final: Bool
    /// The counters (``StageStats``: records in / out, dead letters, filtered, lag, latency quantiles).
    public var stats: StageStats

    public init(instance: String, timeMs: Int64, intervalMs: Int64, final: Bool, stats: StageStats) {
        self.instance = instance
        self.timeMs = timeMs
        self.intervalMs = intervalMs
        self.final = final
        self.stats = stats
    }

    /// The Kafka key of the snapshot.
    public var key: String { "\(stats.stage)/\(instance)" }

    /// The JSON the topic carries (sorted keys).
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self))
    }

    /// Reads a snapshot published by ``MetricsPublisher``.
    public static func decode(_ bytes: [UInt8]) throws -> WorkerMetricsSnapshot {
        try JSONDecoder().decode(WorkerMetricsSnapshot.self, from: Data(bytes))
    }

    /// The instance id of this process: `INSTANCE_ID`, else `<hostname>-<pid>`.
    public static func instanceID(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let id = environment["INSTANCE_ID"], !id.isEmpty { return id }
        var name = [CChar](repeating: 0, count: 256)
        let host =
            gethostname(&name, name.count) == 0
            ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "host"
        return "\(host)-\(getpid())"
    }
}

/// Publishes a worker's ``StageMetrics`` to the pipeline's `metrics:` topic every interval, so that
/// anything (the dashboard, a tail) can follow every worker through Kafka instead of scraping each
/// one's `/stats`.
///
/// It has its own small producer and its own task: the stage's hot loop never waits for it. Each
/// snapshot is handed over with `tryEnqueue` (fire-and-forget); if librdkafka's queue is full (the
/// broker is unreachable) the snapshot is dropped and counted — the next one carries the same
/// counters, they are cumulative. On graceful shutdown it publishes a last snapshot marked `final`,
/// flushes for at most two seconds and shuts its producer down.
public final class MetricsPublisher: Service, Sendable {
    let settings: PipelineSpec.MetricsSettings
    let kafka: KafkaConfiguration
    let producerProperties: [String: String]
    let metrics: StageMetrics
    let instance: String
    let logger: Logger
    private let dropped = Synchronization.Atomic<Int>(0)
    private let published = Synchronization.Atomic<Int>(0)

    public init(spec: PipelineSpec, settings: PipelineSpec.MetricsSettings, metrics: StageMetrics, instance: String, logger: Logger) {
        self.settings = settings
        self.kafka = spec.kafka
        self.producerProperties = spec.producerProperties
        self.metrics = metrics
        self.instance = instance
        self.logger = logger
    }

    /// Snapshots handed to the producer so far.
    public var publishedCount: Int { published.load(ordering: .relaxed) }
    /// Snapshots dropped because the producer's queue was full.
    public var droppedCount: Int { dropped.load(ordering: .relaxed) }

    public func run() async throws {
        var config = KafkaProducerConfiguration(kafka: kafka)
        config.linger = .milliseconds(5)
        config.properties = producerProperties
        // Snapshots are cumulative: a lost one is replaced by the next, so no idempotence or retries
        // beyond librdkafka's defaults are needed, and a small queue bounds memory if the broker is gone.
        config.properties["enable.idempotence"] = "false"
        config.properties["queue.buffering.max.messages"] = "1000"
        config.properties["message.timeout.ms"] = String(max(5_000, settings.intervalMs * 5))
        let producer = try KafkaProducer(configuration: config, logger: logger)
        try? producer.prepare(topics: [settings.topic.name])
        logger.info("publishing metrics", metadata: ["topic": "\(settings.topic.name)", "interval_ms": "\(settings.intervalMs)"])
        let interval = Duration.milliseconds(settings.intervalMs)
        // A sleep that a graceful shutdown cuts short; then the loop ends.
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            publish(producer, final: false)
            _ = try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
        publish(producer, final: true)
        do {
            try await producer.flush(timeout: .seconds(2))
        } catch {
            logger.debug("metrics flush on shutdown", metadata: ["error": "\(error)"])
        }
        await producer.shutdown(timeout: .seconds(2))
    }

    func publish(_ producer: KafkaProducer, final: Bool) {
        let snapshot = WorkerMetricsSnapshot(
            instance: instance, timeMs: currentTimeMs(), intervalMs: settings.intervalMs, final: final, stats: metrics.snapshot())
        do {
            let value = try snapshot.encoded()
            try producer.tryEnqueue(KafkaProducerMessage(topic: settings.topic.name, key: Array(snapshot.key.utf8), value: value))
            published.add(1, ordering: .relaxed)
        } catch {
            let n = dropped.add(1, ordering: .relaxed).newValue
            if n == 1 || n % 100 == 0 {
                logger.warning("metrics snapshot dropped", metadata: ["error": "\(error)", "dropped": "\(n)"])
            }
        }
    }
}
