import ArgumentParser
import EmbeddedBroker
import Foundation
import Kafka
import Logging

struct ClientDemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client-demo",
        abstract:
            "The Kafka client alone: stream readings through the embedded broker with one producer and one consumer group; "
            + "report order and latency.",
        discussion: """
            Starts the embedded broker (librdkafka's mock cluster) as a separate process, creates the topic
            `iot.readings` (6 partitions), streams generated sensor readings into it at a steady rate while a
            consumer group reads them as they arrive, then prints counts, per-sensor ordering checks,
            end-to-end latency percentiles and the group's lag, and stops the broker.
            """
    )

    @Option(help: "Readings to stream.") var records = 20_000
    @Option(help: "Readings per second.") var rate = 5_000
    @Option(help: "Number of sensors (message keys).") var sensors = 24
    @Option(help: "Use this broker instead of starting the embedded one (topic must exist or be auto-created).")
    var bootstrap: String?

    func run() async throws {
        bootstrapCLILogging()
        let topic = "iot.readings"
        var broker: EmbeddedBrokerProcess?
        let servers: String
        if let bootstrap {
            servers = bootstrap
        } else {
            say("starting the embedded broker (librdkafka \(KafkaClientInfo.librdkafkaVersion) mock cluster, separate process)…")
            let b = try await EmbeddedBrokerProcess.launch(arguments: ["--topic", "\(topic):6"])
            broker = b
            servers = b.bootstrapServers
            say("broker ready at \(servers); topic \(topic) with 6 partitions")
        }
        let kafka = KafkaConfiguration(bootstrapServers: servers, clientID: "streamfirst-demo")

        var consumerConfig = KafkaConsumerConfiguration(kafka: kafka, groupID: "demo-\(UUID().uuidString.prefix(8))")
        consumerConfig.fetchWaitMax = .milliseconds(5)
        consumerConfig.sessionTimeout = .seconds(6)
        consumerConfig.heartbeatInterval = .seconds(1)
        consumerConfig.autoCommitInterval = .milliseconds(500)
        let consumer = try KafkaConsumer(configuration: consumerConfig)
        try await consumer.subscribe(topics: [topic])
        // Start reading (polling is what drives the group join), then wait for the group's first
        // assignment before streaming, so that latency is measured end to end.
        let stats = DemoStats()
        let readerTask = Task { try await readAll(consumer: consumer, expected: records, stats: stats) }
        var assignedEvents = consumer.events.makeAsyncIterator()
        while let event = await assignedEvents.next() {
            if case .assigned(let p) = event {
                say("consumer group joined: \(p.count) partitions assigned")
                break
            }
        }

        var producerConfig = KafkaProducerConfiguration(kafka: kafka)
        producerConfig.linger = .milliseconds(1)
        let producer = try KafkaProducer(configuration: producerConfig)
        try producer.prepare(topics: [topic])
        say("streaming \(records) readings from \(sensors) sensors at \(rate)/s…")
        let start = ContinuousClock.now
        let interval = Duration.seconds(1) / rate
        var generator = ReadingGenerator(sensors: sensors)
        var lastProgress = start
        for i in 0..<records {
            let due = start + interval * i
            if due > ContinuousClock.now { try await Task.sleep(until: due, clock: .continuous) }
            let (key, value, eventTime) = generator.next()
            try await producer.enqueue(
                KafkaProducerMessage(
                    topic: topic, key: Array(key.utf8), value: Array(value.utf8),
                    headers: [KafkaHeader(key: "sent-at-us", value: String(nowMicros()))], timestamp: eventTime))
            if ContinuousClock.now - lastProgress >= .seconds(1) {
                lastProgress = ContinuousClock.now
                say("  produced \(i + 1), consumed \(stats.count)")
            }
        }
        try await producer.flush()
        let produceTime = ContinuousClock.now - start
        let delivered = producer.deliveryCounts
        await producer.shutdown()
        try await readerTask.value
        try await consumer.commit()
        let lag = try await consumer.lag()
        await consumer.close()
        if let broker { _ = try? await broker.terminate() }

        let s = stats.snapshot()
        let lat = s.latenciesMicros.sorted()
        func pct(_ p: Double) -> String {
            guard !lat.isEmpty else { return "-" }
            let v = lat[min(lat.count - 1, Int(Double(lat.count) * p))]
            return String(format: "%.1f ms", Double(v) / 1000)
        }
        say("")
        say("== summary ==")
        let seconds = Double(produceTime.components.seconds) + Double(produceTime.components.attoseconds) / 1e18
        say("produced      \(delivered.delivered) delivered, \(delivered.failed) failed, in \(String(format: "%.2f", seconds)) s")
        say("consumed      \(s.count) records, \(s.duplicates) duplicates, \(records - s.distinct) missing")
        say("partitions    " + s.perPartition.sorted { $0.key < $1.key }.map { "p\($0.key)=\($0.value)" }.joined(separator: " "))
        say("ordering      \(s.orderViolations) per-sensor order violations across \(s.perSensorLast.count) sensors")
        say("latency       p50 \(pct(0.50))  p99 \(pct(0.99))  max \(pct(1.0))  (produce → consume, fetch.wait.max.ms=5)")
        let hottest = s.temperatureSums.map { ($0.key, $0.value.0 / Double($0.value.1)) }.sorted { $0.1 > $1.1 }.prefix(3)
        say("hottest       " + hottest.map { "\($0.0) \(String(format: "%.1f", $0.1))°C" }.joined(separator: ", "))
        say("group lag     \(lag.reduce(0) { $0 + $1.lag }) after commit")
        let ok = delivered.failed == 0 && s.distinct == records && s.duplicates == 0 && s.orderViolations == 0
        say(ok ? "result        OK: every reading arrived once, in order per sensor" : "result        FAILED")
        if !ok { throw ExitCode(1) }
    }

    func readAll(consumer: KafkaConsumer, expected: Int, stats: DemoStats) async throws {
        for try await m in consumer.messages {
            stats.record(m)
            try consumer.storeOffset(for: m)
            if stats.distinctCount >= expected { return }
        }
    }
}

func say(_ s: String) { emit(s) }

func nowMicros() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
}

/// Deterministic sample readings: sensor id, JSON body, event time.
struct ReadingGenerator {
    let sensors: Int
    var sequence = 0
    var seed: UInt64 = 0x5EED

    mutating func random() -> Double {
        seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Double(seed >> 11) / Double(1 << 53)
    }

    mutating func next() -> (key: String, value: String, eventTime: Int64) {
        let sensor = sequence % sensors
        let key = String(format: "sensor-%02d", sensor)
        let eventTime = 1_764_028_800_000 + Int64(sequence) * 10
        let temperature = 18 + Double(sensor % 7) + random() * 4
        let humidity = 40 + random() * 20
        let value = String(
            format: #"{"sensor":"%@","seq":%d,"ts":%lld,"temperature":%.2f,"humidity":%.1f}"#, key, sequence / sensors,
            eventTime, temperature, humidity)
        sequence += 1
        return (key, value, eventTime)
    }
}

/// What the demo's consumer saw.
final class DemoStats: @unchecked Sendable {
    // `@unchecked`: every access goes through `lock`.
    struct Snapshot {
        var count = 0
        var distinct = 0
        var duplicates = 0
        var orderViolations = 0
        var perPartition: [Int32: Int] = [:]
        var perSensorLast: [String: Int] = [:]
        var latenciesMicros: [Int64] = []
        var temperatureSums: [String: (Double, Int)] = [:]
        var seen: Set<String> = []
    }
    private let lock = NSLock()
    private var s = Snapshot()

    var count: Int { lock.withLock { s.count } }
    var distinctCount: Int { lock.withLock { s.distinct } }
    func snapshot() -> Snapshot { lock.withLock { s } }

    func record(_ m: KafkaMessage) {
        let now = nowMicros()
        let sent = m.header("sent-at-us")?.value.flatMap { Int64(String(decoding: $0, as: UTF8.self)) }
        let body = m.value.flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] } ?? [:]
        let sensor = body["sensor"] as? String ?? "?"
        let seq = body["seq"] as? Int ?? -1
        let temperature = body["temperature"] as? Double ?? 0
        lock.withLock {
            s.count += 1
            let id = "\(sensor)#\(seq)"
            if s.seen.insert(id).inserted { s.distinct += 1 } else { s.duplicates += 1 }
            s.perPartition[m.partition, default: 0] += 1
            if let last = s.perSensorLast[sensor], seq <= last { s.orderViolations += 1 }
            s.perSensorLast[sensor] = seq
            if let sent { s.latenciesMicros.append(now - sent) }
            let t = s.temperatureSums[sensor] ?? (0, 0)
            s.temperatureSums[sensor] = (t.0 + temperature, t.1 + 1)
        }
    }
}
