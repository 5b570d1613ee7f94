import ArgumentParser
import CBaseline
import EmbeddedBroker
import Foundation
import Kafka
import Pipeline
import PipelineTools
import Synchronization

// What the stage and end-to-end benchmarks share: the C relay and source as child processes of this
// executable (hidden subcommands), the worker executables as child processes, their CPU from /proc,
// and progress read from the broker.

/// `streamfirst-bench c-relay`: the C consume → produce relay (Sources/CBaseline) as its own process,
/// so it is measured exactly like a worker process. Runs until SIGTERM.
struct CRelayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "c-relay", abstract: "The C librdkafka relay (baseline of the stage and e2e benchmarks).", shouldDisplay: false)

    @Option var brokers: String
    @Option var group: String
    @Option var from: String
    @Option var to: String
    @Option var fetchWaitMs = 10
    @Option var linger = 2
    @Flag var nagleDisable = false

    func run() throws {
        cb_install_stop_handler()
        var err = [CChar](repeating: 0, count: 256)
        let rc = brokers.withCString { b in
            group.withCString { g in
                from.withCString { f in
                    to.withCString { t in
                        var config = cb_relay_config(
                            brokers: b, group: g, from_topic: f, to_topic: t, fetch_wait_max_ms: Int32(fetchWaitMs),
                            linger_ms: Int32(linger), nagle_disable: nagleDisable ? 1 : 0)
                        return cb_relay(&config, &err, Int32(err.count))
                    }
                }
            }
        }
        if rc != 0 { throw ValidationError("relay failed: \(cString(err))") }
    }
}

/// `streamfirst-bench c-source`: the C producer of the end-to-end baseline at a constant rate.
struct CSourceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "c-source", abstract: "The C librdkafka source at a constant rate (baseline of the e2e benchmark).",
        shouldDisplay: false)

    @Option var brokers: String
    @Option var topic: String
    @Option var count: Int
    @Option var rate: Int
    @Option var linger = 2
    @Flag var nagleDisable = false

    func run() throws {
        cb_install_stop_handler()
        let payload = benchRecord
        var r = cb_result()
        var err = [CChar](repeating: 0, count: 256)
        let rc = cb_source(
            brokers, topic, Int64(count), payload, Int32(payload.count), Int32(linger), Int32(rate), nagleDisable ? 1 : 0, &r, &err,
            Int32(err.count))
        if rc != 0 { throw ValidationError("source failed: \(cString(err))") }
        print("sent \(r.messages)")
    }
}

func cString(_ chars: [CChar]) -> String {
    String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The record every stage benchmark sends: 10 fields, the shape of an IoT reading (~170 bytes).
let benchRecord: [UInt8] = Array(
    (#"{"sensor_id":"sensor-042","seq":123456,"ts":"2026-01-01T00:00:00Z","temperature_c":21.5,"humidity_pct":45.2,"battery_v":3.71,"#
        + #""site":"plant-a","status":"ok","firmware":"1.4.2","rssi":-67}"#)
        .utf8)

/// A JSON Schema (draft 2020-12) of `benchRecord`'s 10 fields, with the keywords a real one uses.
let benchSchema = """
    {
      "$schema": "https://json-schema.org/draft/2020-12/schema",
      "type": "object",
      "required": ["sensor_id", "seq", "ts", "temperature_c", "humidity_pct", "battery_v", "site", "status", "firmware", "rssi"],
      "additionalProperties": false,
      "properties": {
        "sensor_id": { "type": "string", "pattern": "^sensor-[0-9]{3,6}$" },
        "seq": { "type": "integer", "minimum": 0 },
        "ts": { "type": "string", "format": "date-time" },
        "temperature_c": { "type": "number", "minimum": -60, "maximum": 150 },
        "humidity_pct": { "type": "number", "minimum": 0, "maximum": 100 },
        "battery_v": { "type": "number", "minimum": 0, "maximum": 5 },
        "site": { "type": "string", "minLength": 1, "maxLength": 64 },
        "status": { "enum": ["ok", "degraded", "fault"] },
        "firmware": { "type": "string", "pattern": "^[0-9]+\\\\.[0-9]+\\\\.[0-9]+$" },
        "rssi": { "type": "integer", "minimum": -150, "maximum": 0 }
      }
    }
    """

/// The bench record's shape as an Avro schema (the stage benchmark's record, in Avro).
let benchAvroSchema = """
    {"type": "record", "name": "Reading", "namespace": "iot", "fields": [
      {"name": "sensor_id", "type": "string"}, {"name": "seq", "type": "long"}, {"name": "ts", "type": "string"},
      {"name": "temperature_c", "type": "double"}, {"name": "humidity_pct", "type": "double"},
      {"name": "battery_v", "type": "double"}, {"name": "site", "type": "string"},
      {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["ok", "degraded", "fault"]}},
      {"name": "firmware", "type": "string"}, {"name": "rssi", "type": "int"}
    ]}
    """

/// User + system CPU seconds of a process so far, from /proc/<pid>/stat (Linux).
func processCPUSeconds(_ pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command: state (field 3) … utime (14), stime (15).
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// One measured run of a stage (Swift worker or C relay).
struct StageSample {
    var records: Int64
    var wall: Double
    var cpu: Double
    var rate: Double { Double(records) / wall }
    var cpuPerMillion: Double { cpu / Double(records) * 1_000_000 }
}

/// A process of this benchmark and the lines it printed.
final class BenchProcess: Sendable {
    final class Lines: Sendable {
        let lines = Mutex<[String]>([])
    }
    let child: ChildProcess
    private let output = Lines()

    init(executable: URL, arguments: [String], environment: [String: String] = [:]) throws {
        let output = self.output
        child = try ChildProcess(executable: executable, arguments: arguments, environment: environment) { line in
            output.lines.withLock { $0.append(line) }
        }
    }

    var printed: [String] { output.lines.withLock { $0 } }

    /// The port of a worker's HTTP endpoints, from its `… http_port=N` line.
    func httpPort() async throws -> Int {
        try await waitForLine(containing: "http_port=")
        guard let line = printed.first(where: { $0.contains("http_port=") }), let r = line.range(of: "http_port="),
            let port = Int(line[r.upperBound...])
        else { throw ValidationError("no http_port line") }
        return port
    }

    /// Waits until the process printed a line containing `text` (or exits, or `timeout` passes).
    func waitForLine(containing text: String, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if printed.contains(where: { $0.contains(text) }) { return }
            if let status = child.exited {
                throw ValidationError("\(child.executable) exited (\(status)) before printing '\(text)':\n\(child.standardError)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ValidationError("\(child.executable) did not print '\(text)' within \(timeout):\n\(child.standardError)")
    }

    func stop() async {
        _ = await child.terminate(timeout: .seconds(20))
    }
}

/// Polls `progress` (records done so far) until it reaches `expected`, and measures the span from
/// the first record seen done to the last: wall time, and the CPU the process used meanwhile.
/// Start-up (group join, first fetch) is outside the span for every contestant alike.
func measureUntilDone(
    _ process: BenchProcess, expected: Int64, timeout: Duration = .seconds(180), progress: () async throws -> Int64
) async throws -> StageSample {
    let pid = process.child.processIdentifier
    let deadline = ContinuousClock.now + timeout
    var first: (at: ContinuousClock.Instant, done: Int64, cpu: Double)?
    while ContinuousClock.now < deadline {
        let done = try await progress()
        let now = ContinuousClock.now
        if done > 0, first == nil { first = (now, done, processCPUSeconds(pid) ?? 0) }
        if done >= expected, let first {
            let cpu = (processCPUSeconds(pid) ?? 0) - first.cpu
            return StageSample(records: expected - first.done, wall: (now - first.at).seconds, cpu: cpu)
        }
        if let status = process.child.exited {
            throw ValidationError(
                "\(process.child.executable) exited (\(status)) after \(done) of \(expected):\n\(process.child.standardError)")
        }
        try await Task.sleep(for: .milliseconds(5))
    }
    throw ValidationError("not done within \(timeout): \((try? await progress()) ?? -1) of \(expected)")
}

/// Sum of the high watermarks of a topic's partitions: records written to it.
func topicCount(_ admin: KafkaAdmin, _ topic: String, partitions: Int) async throws -> Int64 {
    var sum: Int64 = 0
    for p in 0..<partitions { sum += try await admin.watermarks(topic: topic, partition: Int32(p), timeout: .seconds(5)).high }
    return sum
}

/// Records a persist worker has written to its sink so far (its `/stats` document).
func sinkRows(port: Int) async throws -> Int64 {
    guard let r = try? await HTTPGet.get(host: "127.0.0.1", port: port, path: "/stats"), r.status == 200,
        let stats = try? JSONDecoder().decode(StageStats.self, from: Data(r.body))
    else { return 0 }
    return Int64(stats.recordsOut)
}

/// Fills `topic` with `count` copies of `benchRecord` as fast as the C producer goes.
func prefill(_ brokers: String, _ topic: String, count: Int) throws {
    var r = cb_result()
    var err = [CChar](repeating: 0, count: 256)
    guard cb_source(brokers, topic, Int64(count), benchRecord, Int32(benchRecord.count), 5, 0, 0, &r, &err, Int32(err.count)) == 0 else {
        throw ValidationError("prefill failed: \(cString(err))")
    }
}

/// Refuses a stage-benchmark volume that would pass the embedded broker's 5 MiB per partition
/// (~260 bytes per sensor record with its headers) and so be evicted before it is read.
func checkStageRetention(records: Int, partitions: Int) throws {
    let perPartition = Double(records) * 260 / Double(partitions)
    if perPartition > 4.5 * 1024 * 1024 {
        throw ValidationError(
            "--records \(records) over --partitions \(partitions) is ~\(Int(perPartition / 1024)) KiB per partition: "
                + "the embedded broker keeps at most 5 MiB per partition. Raise --partitions or lower --records.")
    }
}

func ratioText(_ x: Double) -> String { String(format: "%.2f", x) }

/// The `kafka:` section both worker benchmarks give their pipeline file (top level, ending in a newline):
/// the same consumer and producer settings for every stage, so only the stage under test differs.
func benchKafkaSection(brokers: String, fetchWaitMs: Int, linger: Int, nagleDisable: Bool) -> String {
    """
    kafka:
      bootstrap: "\(brokers)"
      consumer:
        fetch.wait.max.ms: \(fetchWaitMs)
        session.timeout.ms: 6000
        heartbeat.interval.ms: 1000
    \(nagleLines(nagleDisable, indent: "    "))  producer:
        linger.ms: \(linger)
    \(nagleLines(nagleDisable, indent: "    "))
    """
}

/// The pipeline-file line that disables Nagle's algorithm on a stage's clients (`--nagle-disable`), or
/// nothing when `on` is false.
func nagleLines(_ on: Bool, indent: String) -> String {
    on ? "\(indent)socket.nagle.disable: true\n" : ""
}
