import Foundation
import Kafka
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Pipeline
import PipelineModel
import ServiceLifecycle

/// The dashboard's Kafka side: one group-less consumer assigned to every partition of the metrics
/// topic, the data topics and the dead-letter topic (it joins no pipeline group and commits
/// nothing, so it never takes records from a stage), feeding a ``DashboardState``; and a ticker
/// that every `update_interval` turns the state into a frame and sends it to every connected page
/// through the ``EventHub``.
///
/// Graceful shutdown (SIGTERM): the poll loop ends, the consumer is closed, and the hub is closed,
/// which ends every Server-Sent Events response — so the HTTP server, shut down after this service,
/// has no endless request left to wait for.
package final class DashboardService: Service, Sendable {
    package let config: DashboardConfig
    let kafka: KafkaConfiguration
    let consumerProperties: [String: String]
    let logger: Logger
    /// The page's update stream.
    package let hub = EventHub()
    /// Liveness and readiness (ready once the consumer is assigned).
    package let health = StageHealth()
    private let state: NIOLockedValueBox<DashboardState>
    private let lastFrame = NIOLockedValueBox<DashboardState.Frame?>(nil)

    package init(config: DashboardConfig, spec: PipelineSpec, logger: Logger) {
        self.config = config
        self.kafka = spec.kafka
        self.consumerProperties = spec.consumerProperties
        self.logger = logger
        self.state = NIOLockedValueBox(DashboardState(limits: config.limits))
    }

    /// The latest frame sent (nil before the first tick).
    package var latestFrame: DashboardState.Frame? { lastFrame.withLockedValue { $0 } }

    /// The SSE events a page gets when it connects: the stage history, then the latest frame.
    package func initialEvents() -> [ByteBuffer] {
        let history = state.withLockedValue { $0.stageHistory }
        var out: [ByteBuffer] = [ByteBuffer(string: "retry: 2000\n\n")]
        if let data = try? Self.encoder.encode(history) { out.append(Self.event("history", data)) }
        if let frame = latestFrame, let data = try? Self.encoder.encode(frame) { out.append(Self.event("frame", data)) }
        return out
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return e
    }()

    static func event(_ name: String, _ data: Data) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeString("event: \(name)\ndata: ")
        b.writeBytes(data)
        b.writeString("\n\n")
        return b
    }

    package func run() async throws {
        var consumerConfig = KafkaConsumerConfiguration(kafka: kafka, groupID: nil)
        consumerConfig.autoOffsetReset = config.fromBeginning ? .earliest : .latest
        consumerConfig.autoCommit = false
        consumerConfig.fetchWaitMax = .milliseconds(50)
        consumerConfig.properties = consumerProperties
        let consumer = try KafkaConsumer(configuration: consumerConfig, logger: logger)
        let ticker = startTicker()
        do {
            try await cancelWhenGracefulShutdown { try await self.assign(consumer) }
            health.setReady(true)
            logger.info(
                "dashboard consuming",
                metadata: [
                    "metrics": "\(config.metricsTopic)", "data": "\(config.dataTopics.joined(separator: ","))",
                    "dead_letter": "\(config.deadLetterTopic)",
                ])
            let stopping = StopFlag()
            try await withGracefulShutdownHandler {
                while !stopping.isSet && !Task.isCancelled {
                    health.beat()
                    let batch = try await consumer.poll(maxMessages: 1000, timeout: .milliseconds(200))
                    if !batch.isEmpty { apply(batch) }
                }
            } onGracefulShutdown: {
                stopping.set()
            }
        } catch {
            if !Task.isShuttingDownGracefully {
                ticker.cancel()
                health.setReady(false)
                hub.close()
                await consumer.close()
                throw error
            }
        }
        ticker.cancel()
        health.setReady(false)
        hub.close()
        await consumer.close()
        logger.info("dashboard stopped")
    }

    /// Assigns every partition of the topics it reads, from their end (or beginning).
    func assign(_ consumer: KafkaConsumer) async throws {
        let admin = try KafkaAdmin(configuration: kafka, logger: logger)
        var partitions: [KafkaTopicPartition] = []
        do {
            for topic in Array(Set([config.metricsTopic, config.deadLetterTopic] + config.dataTopics)).sorted() {
                let description = try await admin.describeTopic(topic)
                partitions += description.partitions.map { KafkaTopicPartition(topic: topic, partition: $0.id) }
            }
        } catch {
            await admin.shutdown()
            throw error
        }
        await admin.shutdown()
        try await consumer.assign(partitions, startingAt: config.fromBeginning ? .beginning : .end)
    }

    /// Parses a batch (outside the lock) and applies it to the state.
    func apply(_ batch: [KafkaMessage]) {
        var snapshots: [WorkerMetricsSnapshot] = []
        var dead: [[String: String]] = []
        var data: [KafkaMessage] = []
        for m in batch {
            if m.topic == config.metricsTopic {
                guard let value = m.value, let s = try? WorkerMetricsSnapshot.decode(value) else { continue }
                snapshots.append(s)
            } else if m.topic == config.deadLetterTopic {
                var headers: [String: String] = [:]
                for h in m.headers { if let v = h.value { headers[h.key] = String(decoding: v, as: UTF8.self) } }
                dead.append(headers)
            }
            if config.dataTopics.contains(m.topic) { data.append(m) }
        }
        let now = Self.nowMs()
        state.withLockedValue { s in
            for snap in snapshots { s.apply(metrics: snap) }
            for h in dead { s.apply(deadLetter: h, nowMs: now) }
            for m in data { s.apply(record: m.value, topic: m.topic, key: m.key, nowMs: now) }
        }
    }

    func startTicker() -> Task<Void, Never> {
        let interval = Duration.milliseconds(config.updateIntervalMs)
        return Task.detached { [self] in
            while !Task.isCancelled {
                let frame = state.withLockedValue { $0.frame(nowMs: Self.nowMs()) }
                lastFrame.withLockedValue { $0 = frame }
                if let data = try? Self.encoder.encode(frame) { hub.broadcast(Self.event("frame", data)) }
                try? await Task.sleep(for: interval)
            }
        }
    }

    static func nowMs() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
}

/// Connected pages: each gets an `AsyncStream` of Server-Sent Events. A page that reads too slowly
/// loses old frames (each stream buffers the newest 16 beyond its initial events), so a stuck browser
/// cannot grow memory.
package final class EventHub: Sendable {
    private struct State {
        var closed = false
        var next = 0
        var subscribers: [Int: AsyncStream<ByteBuffer>.Continuation] = [:]
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    /// A new subscriber's stream, starting with `initial`. If the hub is closed, the stream ends right
    /// after `initial`.
    package func subscribe(initial: [ByteBuffer]) -> AsyncStream<ByteBuffer> {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingNewest(16 + initial.count))
        for b in initial { continuation.yield(b) }
        let id = state.withLockedValue { s -> Int? in
            guard !s.closed else { return nil }
            s.next += 1
            s.subscribers[s.next] = continuation
            return s.next
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLockedValue { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Sends an event to every subscriber.
    package func broadcast(_ buffer: ByteBuffer) {
        let all = state.withLockedValue { Array($0.subscribers.values) }
        for c in all { c.yield(buffer) }
    }

    /// Ends every stream; later subscribers get a finished stream.
    package func close() {
        let all = state.withLockedValue { s -> [AsyncStream<ByteBuffer>.Continuation] in
            s.closed = true
            defer { s.subscribers = [:] }
            return Array(s.subscribers.values)
        }
        for c in all { c.finish() }
    }

    /// Pages connected now.
    package var subscriberCount: Int { state.withLockedValue { $0.subscribers.count } }
}

/// Set when the service should stop.
final class StopFlag: Sendable {
    private let flag = NIOLockedValueBox(false)
    func set() { flag.withLockedValue { $0 = true } }
    var isSet: Bool { flag.withLockedValue { $0 } }
}
