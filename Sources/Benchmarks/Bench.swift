import ArgumentParser
import CBaseline
import Config
import EmbeddedBroker
import Foundation
import Kafka
import Logging
import Stateful
import StreamCore

/// `streamfirst-bench client`: the Swift client against plain C librdkafka loops, same process,
/// same embedded broker, same settings, same run.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streamfirst-bench",
        abstract:
            "Benchmarks: the Swift Kafka client against C librdkafka (client); windowed aggregation state (window); "
            + "tracing per record (trace); one stage against a C relay (stage); four stages against a C relay chain (e2e).",
        subcommands: [
            ClientBench.self, WindowBench.self, TraceBench.self, StageBench.self, EndToEndBench.self, ScaleBench.self, MemoryBench.self,
            AllocBench.self, CRelayCommand.self, CSourceCommand.self,
        ],
        defaultSubcommand: ClientBench.self
    )
}

struct ClientBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Producer and consumer throughput: Swift vs C, interleaved rounds, medians and ratios.",
        discussion: """
            Starts `streamfirst broker` (librdkafka's mock cluster) in its own process unless --bootstrap is given.
            Volume is kept inside the mock's retention (5 MiB per partition): keep messages*size/partitions under ~4 MB.
            """
    )

    @Option(help: "Records per run.") var messages = 300_000
    @Option(help: "Record value size in bytes.") var size = 100
    @Option(help: "Partitions per topic.") var partitions = 12
    @Option(help: "Rounds (each runs C and Swift, alternating which goes first).") var rounds = 5
    @Option(help: "linger.ms for both producers.") var linger = 5
    @Option(
        help: """
            queued.min.messages for both consumers. librdkafka 2.0.2 stops fetching for ~0.5-1 s whenever its prefetch \
            queue passes this (fixed in 2.1 by fetch.queue.backoff.ms); the default of 100000 makes results bimodal. \
            0 keeps librdkafka's default.
            """)
    var queuedMinMessages = 1_000_000
    @Option(help: "Use a running broker at this bootstrap address (its control channel via --control).")
    var bootstrap: String?
    @Option(help: "Control address of the running embedded broker (to create topics).") var control: String?
    @Option(help: "Records per request of the Swift consumer's sequence to its polling thread (default: KafkaMessageSequence's).")
    var swiftBatchSize: Int?
    @Option(help: "Profile one side only: c-consumer, swift-consumer, c-producer or swift-producer (no comparison).")
    var only: String?

    func validate() throws {
        let perPartition = Double(messages) * Double(size + 12) / Double(partitions)
        if perPartition > 4.5 * 1024 * 1024 {
            throw ValidationError(
                "--messages \(messages) x --size \(size) over --partitions \(partitions) is \(Int(perPartition / 1024)) KiB per partition: "
                    + "the embedded broker keeps at most 5 MiB per partition. Raise --partitions or lower --messages.")
        }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        var broker: EmbeddedBrokerProcess?
        let bootstrapServers: String
        let controlChannel: EmbeddedBrokerControl
        if let bootstrap, let control {
            bootstrapServers = bootstrap
            controlChannel = try EmbeddedBrokerControl(address: control)
        } else {
            let b = try await EmbeddedBrokerProcess.launch()
            broker = b
            bootstrapServers = b.bootstrapServers
            controlChannel = b.control
        }
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; librdkafka \(KafkaClientInfo.librdkafkaVersion)")
        print("broker: embedded (librdkafka mock cluster, separate process) at \(bootstrapServers)")
        print(
            "workload: \(messages) records x \(size) B, \(partitions) partitions, linger.ms=\(linger), idempotent, acks=all; "
                + "consumers: assign from beginning, "
                + "queued.min.messages=\(queuedMinMessages > 0 ? String(queuedMinMessages) : "default"); \(rounds) rounds\n"
        )

        if let only {
            try await profileOnly(only, servers: bootstrapServers, control: controlChannel)
            if let broker { _ = try? await broker.terminate() }
            return
        }
        var cProduce: [Sample] = []
        var sProduce: [Sample] = []
        var cConsume: [Sample] = []
        var sConsume: [Sample] = []
        for round in 0..<rounds {
            let cTopic = "bench-c-\(round)-\(UUID().uuidString.prefix(8))"
            let sTopic = "bench-s-\(round)-\(UUID().uuidString.prefix(8))"
            try await controlChannel.createTopic(cTopic, partitions: partitions)
            try await controlChannel.createTopic(sTopic, partitions: partitions)
            let swiftFirst = round % 2 == 1
            for which in (swiftFirst ? ["swift", "c"] : ["c", "swift"]) {
                if which == "c" {
                    cProduce.append(try cProduceRun(bootstrapServers, cTopic))
                } else {
                    sProduce.append(try await swiftProduceRun(bootstrapServers, sTopic))
                }
            }
            for which in (swiftFirst ? ["swift", "c"] : ["c", "swift"]) {
                // Both consumers read the same data (the C producer's topic).
                if which == "c" {
                    cConsume.append(try cConsumeRun(bootstrapServers, cTopic))
                } else {
                    sConsume.append(try await swiftConsumeRun(bootstrapServers, cTopic))
                }
            }
            print(
                "round \(round + 1): produce C \(fmt(cProduce.last!.rate)) / Swift \(fmt(sProduce.last!.rate)) msg/s; "
                    + "consume C \(fmt(cConsume.last!.rate)) / Swift \(fmt(sConsume.last!.rate)) msg/s")
        }
        print("")
        report("producer", c: cProduce, swift: sProduce)
        report("consumer", c: cConsume, swift: sConsume)
        if let broker { _ = try? await broker.terminate() }
    }

    func profileOnly(_ which: String, servers: String, control: EmbeddedBrokerControl) async throws {
        for round in 0..<rounds {
            let topic = "profile-\(round)-\(UUID().uuidString.prefix(8))"
            try await control.createTopic(topic, partitions: partitions)
            let sample: Sample
            switch which {
            case "c-producer": sample = try cProduceRun(servers, topic)
            case "swift-producer": sample = try await swiftProduceRun(servers, topic)
            case "c-consumer":
                _ = try cProduceRun(servers, topic)
                sample = try cConsumeRun(servers, topic)
            case "swift-consumer":
                _ = try cProduceRun(servers, topic)
                sample = try await swiftConsumeRun(servers, topic)
            default: throw ValidationError("--only \(which): expected c-consumer, swift-consumer, c-producer or swift-producer")
            }
            print("\(which): \(fmt(sample.rate)) msg/s, \(String(format: "%.2f", sample.cpuPerMillion)) CPU s per M records")
        }
    }

    struct Sample {
        var wall: Double
        var cpu: Double
        var messages: Int64
        var bytes: Int64
        var rate: Double { Double(messages) / wall }
        var mbps: Double { Double(bytes) / wall / 1_000_000 }
        var cpuPerMillion: Double { cpu / Double(messages) * 1_000_000 }
    }

    func cProduceRun(_ brokers: String, _ topic: String) throws -> Sample {
        var r = cb_result()
        var err = [CChar](repeating: 0, count: 256)
        guard cb_produce(brokers, topic, Int32(partitions), Int64(messages), Int32(size), Int32(linger), &r, &err, Int32(err.count)) == 0
        else {
            throw ValidationError(
                "C producer failed: \(String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
        return Sample(wall: r.wall_seconds, cpu: r.cpu_seconds, messages: r.messages, bytes: r.bytes)
    }

    func cConsumeRun(_ brokers: String, _ topic: String) throws -> Sample {
        var r = cb_result()
        var err = [CChar](repeating: 0, count: 256)
        guard cb_consume(brokers, topic, Int32(partitions), Int64(messages), Int32(queuedMinMessages), &r, &err, Int32(err.count)) == 0
        else {
            throw ValidationError(
                "C consumer failed: \(String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
        return Sample(wall: r.wall_seconds, cpu: r.cpu_seconds, messages: r.messages, bytes: r.bytes)
    }

    func swiftProduceRun(_ brokers: String, _ topic: String) async throws -> Sample {
        var config = KafkaProducerConfiguration(kafka: KafkaConfiguration(bootstrapServers: brokers))
        config.linger = .milliseconds(linger)
        config.queueMaxMessages = 100_000
        let producer = try KafkaProducer(configuration: config)
        try producer.prepare(topics: [topic])
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: size)
        var message = KafkaProducerMessage(topic: topic, value: payload)
        let (total, spread) = (messages, Int32(partitions))
        let t0 = ContinuousClock.now
        let c0 = cpuSeconds()
        for i in 0..<total {
            message.partition = Int32(i) % spread
            try await producer.enqueue(message)
        }
        try await producer.flush(timeout: .seconds(60))
        let wall = (ContinuousClock.now - t0).seconds
        let cpu = cpuSeconds() - c0
        let counts = producer.deliveryCounts
        await producer.shutdown()
        guard counts.delivered == messages else {
            throw ValidationError("Swift producer delivered \(counts.delivered) of \(messages): \(String(describing: counts.lastError))")
        }
        return Sample(wall: wall, cpu: cpu, messages: Int64(counts.delivered), bytes: Int64(counts.delivered * size))
    }

    func swiftConsumeRun(_ brokers: String, _ topic: String) async throws -> Sample {
        var config = KafkaConsumerConfiguration(kafka: KafkaConfiguration(bootstrapServers: brokers), groupID: nil)
        config.autoCommit = false
        if queuedMinMessages > 0 { config.properties["queued.min.messages"] = String(queuedMinMessages) }
        let consumer = try KafkaConsumer(configuration: config)
        let t0 = ContinuousClock.now
        let c0 = cpuSeconds()
        try await consumer.assign(
            (0..<partitions).map { KafkaTopicPartition(topic: topic, partition: Int32($0)) }, startingAt: .beginning)
        var count = 0
        var bytes = 0
        let expected = messages
        var records = consumer.messages
        if let swiftBatchSize { records.batchSize = swiftBatchSize }
        for try await m in records {
            count += 1
            bytes += m.valueCount ?? 0 // the length, like the C loop (m->len): no copy of the payload
            if count == expected { break }
        }
        let wall = (ContinuousClock.now - t0).seconds
        let cpu = cpuSeconds() - c0
        await consumer.close()
        return Sample(wall: wall, cpu: cpu, messages: Int64(count), bytes: Int64(bytes))
    }

    func report(_ what: String, c: [Sample], swift: [Sample]) {
        let cRate = median(c.map(\.rate))
        let sRate = median(swift.map(\.rate))
        let cCPU = median(c.map(\.cpuPerMillion))
        let sCPU = median(swift.map(\.cpuPerMillion))
        print("\(what) (median of \(c.count))")
        print(
            "  C     : \(fmt(cRate)) msg/s  \(String(format: "%.1f", median(c.map(\.mbps)))) MB/s  "
                + "\(String(format: "%.3f", median(c.map(\.cpu)))) CPU s (\(String(format: "%.2f", cCPU)) CPU s per M records)"
        )
        print(
            "  Swift : \(fmt(sRate)) msg/s  \(String(format: "%.1f", median(swift.map(\.mbps)))) MB/s  "
                + "\(String(format: "%.3f", median(swift.map(\.cpu)))) CPU s (\(String(format: "%.2f", sCPU)) CPU s per M records)"
        )
        print(
            "  Swift/C throughput ratio: \(String(format: "%.2f", sRate / cRate))   CPU efficiency ratio (C CPU / Swift CPU): "
                + "\(String(format: "%.2f", cCPU / sCPU))"
        )
        // The same ratios taken round by round (C and Swift of one round ran back to back), so that
        // a machine that drifts between rounds moves both sides of each ratio together.
        let rates = zip(c, swift).map { $0.1.rate / $0.0.rate }.sorted()
        let efficiencies = zip(c, swift).map { $0.0.cpuPerMillion / $0.1.cpuPerMillion }.sorted()
        if let lo = rates.first, let hi = rates.last, let elo = efficiencies.first, let ehi = efficiencies.last {
            print(
                "  per round: throughput ratio median \(String(format: "%.2f", median(rates))) "
                    + "(\(String(format: "%.2f", lo))–\(String(format: "%.2f", hi))), "
                    + "CPU efficiency median \(String(format: "%.2f", median(efficiencies))) "
                    + "(\(String(format: "%.2f", elo))–\(String(format: "%.2f", ehi)))"
            )
        }
    }
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func fmt(_ x: Double) -> String {
    x >= 1000 ? String(format: "%.0fk", x / 1000) : String(format: "%.0f", x)
}

func cpuSeconds() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6 + Double(ru.ru_stime.tv_sec)
        + Double(ru.ru_stime.tv_usec) / 1e6
}

extension Duration {
    var seconds: Double {
        let (s, a) = components
        return Double(s) + Double(a) / 1e18
    }
}

/// `streamfirst-bench window`: a windowed aggregation over many keys in the engine the process stage
/// runs (no broker: this measures the state, not Kafka) — throughput, state size, evictions and peak
/// RSS against the configured memory budget. The baseline, from the same run, is the work every
/// record costs without state: parsing its JSON and reading its key and event time.
struct WindowBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "window",
        abstract: "Windowed aggregation throughput and memory against the budget (engine only, no broker).")

    @Option(help: "Records.") var records = 1_000_000
    @Option(help: "Distinct keys.") var keys = 100_000
    @Option(name: .customLong("budget-mib"), help: "Memory budget in MiB.") var budgetMiB = 64
    @Option(help: "Input partitions (state is per partition).") var partitions = 6
    @Option(help: "Event-time spacing between records, ms.") var intervalMs = 1
    @Option(help: "Records per commit (the stage commits per batch).") var batch = 500
    @Option(help: "Tumbling window size in minutes.") var windowMinutes = 1

    func run() async throws {
        let window = """
            type: tumbling
            size: \(windowMinutes)m
            grace: 5s
            time: ts
            idle_timeout: 0s
            aggregate: { n: count(), avg_v: avg(v), max_v: max(v), p95: "percentile(v, 95)" }
            """
        let spec = try WindowSpec(try ConfigNode.parse(yaml: window, source: ConfigSource(file: "bench", environment: [:])))
        // Inputs as bytes, the way the stage receives them.
        var rng = SplitMix64(seed: 42)
        var inputs: [(key: String, partition: Int32, bytes: [UInt8])] = []
        inputs.reserveCapacity(records)
        for i in 0..<records {
            let k = Int(rng.below(keys))
            let value: JSONValue = [
                "ts": .integer(Int64(i) * Int64(intervalMs)), "v": .integer(Int64(rng.below(1000))), "sensor": .string("key-\(k)"),
            ]
            inputs.append(("key-\(k)", Int32(k % partitions), value.serialized()))
        }
        let rssBefore = Self.peakRSSKiB()

        // Baseline: parse and read key and event time, no state.
        let baseStart = ContinuousClock.now
        var checksum: Int64 = 0
        for input in inputs {
            let v = try JSONValue.parse(input.bytes)
            checksum &+= v["ts"]?.int64Value ?? 0
            checksum &+= Int64(input.key.utf8.count)
        }
        let baseline = ContinuousClock.now - baseStart

        // The engine: parse, aggregate, close windows, commit (changelog records serialised) per batch.
        var engine = StatefulEngine(op: .window(spec), inputTopics: ["in"], budgetBytes: budgetMiB << 20)
        for p in 0..<Int32(partitions) { _ = try engine.assign(partition: p, changelog: [], complete: true, nowWallMs: 0) }
        var results = 0
        var changelogBytes = 0
        var peakState = 0
        var offsets = [Int64](repeating: 0, count: partitions)
        let start = ContinuousClock.now
        for (i, input) in inputs.enumerated() {
            let value = try JSONValue.parse(input.bytes)
            let offset = offsets[Int(input.partition)]
            offsets[Int(input.partition)] += 1
            let record = StreamRecord(
                topic: "in", partition: input.partition, offset: offset, key: input.key, value: value, id: "r\(i)", timestampMs: 0)
            results += try engine.process(record, nowWallMs: 0).results.count
            if (i + 1) % batch == 0 || i == inputs.count - 1 {
                results += engine.tick(nowWallMs: 0).count
                let (changes, checkpoints) = engine.commit()
                for c in changes { changelogBytes += c.value.count + c.key.utf8.count }
                for c in checkpoints { changelogBytes += c.value.count }
                peakState = max(peakState, engine.stateBytes)
            }
        }
        let elapsed = ContinuousClock.now - start
        let rssPeak = Self.peakRSSKiB()
        func rate(_ d: Duration) -> Double { Double(records) / (Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) }
        let withState = rate(elapsed)
        let without = rate(baseline)
        print(
            "window benchmark: \(records) records, \(keys) keys, \(partitions) partitions, tumbling \(windowMinutes)m windows (event "
                + "time \(intervalMs) ms apart), budget \(budgetMiB) MiB"
        )
        print(
            String(
                format: "  stateful engine : %9.0f records/s  (%.2f s)", withState,
                Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
        print(String(format: "  baseline (parse only, same run): %9.0f records/s  → ratio %.2f", without, withState / without))
        print("  window results: \(results); evictions: \(engine.counters.evictions); late: \(engine.counters.late)")
        print(
            "  state: peak \(peakState / 1024) KiB of \(budgetMiB << 10) KiB budget; changelog written: \(changelogBytes / (1 << 20)) MiB")
        print(
            "  RSS: \(rssBefore / 1024) MiB after generating the input, peak \(rssPeak / 1024) MiB (input held in memory: "
                + "~\(records * 80 / (1 << 20)) MiB)"
        )
        if checksum == 42 { print("") } // keeps the baseline loop from being optimised away
    }

    static func peakRSSKiB() -> Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Int(usage.ru_maxrss)
    }
}
