import ArgumentParser
import Config
import Foundation
import Stateful
import StreamCore

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
    @Option(help: "Memory budget in MiB.") var budgetMiB = 64
    @Option(help: "Input partitions (state is per partition).") var partitions = 6
    @Option(help: "Event-time spacing between records, ms.") var intervalMs = 1
    @Option(help: "Records per commit (the stage commits per batch).") var batch = 500

    func run() async throws {
        let window = """
            type: tumbling
            size: 1m
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
            let k = Int(rng.below(UInt64(keys)))
            let value: JSONValue = ["ts": .integer(Int64(i) * Int64(intervalMs)), "v": .integer(Int64(rng.below(1000))), "sensor": .string("key-\(k)")]
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
        print("window benchmark: \(records) records, \(keys) keys, \(partitions) partitions, tumbling 1m windows (event time \(intervalMs) ms apart), budget \(budgetMiB) MiB")
        print(String(format: "  stateful engine : %9.0f records/s  (%.2f s)", withState, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
        print(String(format: "  baseline (parse only, same run): %9.0f records/s  → ratio %.2f", without, withState / without))
        print("  window results: \(results); evictions: \(engine.counters.evictions); late: \(engine.counters.late)")
        print("  state: peak \(peakState / 1024) KiB of \(budgetMiB << 10) KiB budget; changelog written: \(changelogBytes / (1 << 20)) MiB")
        print("  RSS: \(rssBefore / 1024) MiB after generating the input, peak \(rssPeak / 1024) MiB (input held in memory: ~\(records * 80 / (1 << 20)) MiB)")
        if checksum == 42 { print("") }  // keeps the baseline loop from being optimised away
    }

    static func peakRSSKiB() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF, &usage)
        return Int(usage.ru_maxrss)
    }
}
