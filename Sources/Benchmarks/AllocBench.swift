import ArgumentParser
import Avro
import Foundation
import Kafka
import Pipeline
import PipelineModel
import StreamCore
import Tracing
import Validation

#if STREAMFIRST_BENCH_ALLOC
import MallocInterposerSwift
#endif

/// `streamfirst-bench alloc`: heap allocations (malloc calls) and time per record of what a stage does
/// per record without the broker — JSON read, schema validation, the process step chain, the
/// dead-letter message, the traced handler. Counted by ordo-one's malloc interposer (the counter
/// behind ordo-one/benchmark's malloc metrics), which is only in the build with STREAMFIRST_BENCH=1
/// (`make bench-alloc`); the plain build prints how to get it.
struct AllocBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alloc",
        abstract: "malloc calls and time per record on the hot path (JSON read, schema, steps, dead letter, traced handler).",
        discussion: """
            Needs the build with STREAMFIRST_BENCH=1 (`make bench-alloc`): it links ordo-one/malloc-interposer and \
            re-executes itself with LD_PRELOAD set to it. Per case: --warmup calls, then --iterations calls with \
            counting on (malloc calls / iterations), then --rounds timed rounds of --iterations calls with counting \
            off (median ns per call). Counts are exact and repeatable; times depend on the machine's load.
            """)

    @Option(help: "The pipeline whose process section (steps) runs.") var pipeline = "pipelines/iot-sensors.yaml"
    @Option(help: "Calls counted per case.") var iterations = 20_000
    @Option(help: "Timed rounds per case (median).") var rounds = 5
    @Option(help: "Warm-up calls per case.") var warmup = 2_000
    @Option(help: "Comma-separated cases to run (default: all).") var only: String?
    @Flag(
        inversion: .prefixedNo,
        help: "Also count the whole stage path (consume → handle → produce → store offsets) on the embedded broker, against the C relay.")
    var path = true
    @Option(help: "Records of the larger whole-path run (the smaller has a quarter; the figure is the slope between them).")
    var pathRecords = 200_000
    @Option(help: "Partitions of the whole-path topics.") var pathPartitions = 24

    func run() async throws {
        #if STREAMFIRST_BENCH_ALLOC
        try reexecWithInterposer()
        let cases = try AllocCases(pipeline: pipeline)
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; load: \(loadAverage()); build: release, STREAMFIRST_BENCH=1")
        print(
            "record: the 10-field sensor record (\(benchRecord.count) B); schema: the stage benchmark's 10-field schema; "
                + "steps: \(pipeline) process section; \(iterations) counted calls, median of \(rounds) timed rounds\n")
        print("  case                                   mallocs/record  bytes/record  ns/record")
        let wanted = only.map { Set($0.split(separator: ",").map(String.init)) }
        for (name, body) in cases.all where wanted?.contains(name) ?? true {
            for _ in 0..<warmup { body() }
            MallocInterposerSwift.reset()
            MallocInterposerSwift.hook()
            for _ in 0..<iterations { body() }
            MallocInterposerSwift.unhook()
            let stats = MallocInterposerSwift.getStatistics()
            var times: [Double] = []
            for _ in 0..<rounds {
                let start = ContinuousClock.now
                for _ in 0..<iterations { body() }
                times.append((ContinuousClock.now - start).seconds * 1e9 / Double(iterations))
            }
            let mallocs = Double(stats.mallocCount) / Double(iterations)
            let bytes = Double(stats.mallocBytesCount) / Double(iterations)
            print(
                "  \(name.padding(toLength: 39, withPad: " ", startingAt: 0))  \(String(format: "%14.1f", mallocs))  "
                    + "\(String(format: "%12.0f", bytes))  \(String(format: "%9.0f", median(times)))")
        }
        print("\n  (load now: \(loadAverage()); sink \(cases.sink.value % 10))")
        if path {
            // As a worker does: records carry traceparent through the default tracer.
            InstrumentationSystem.bootstrap(PropagatingTracer())
            try checkStageRetention(records: pathRecords, partitions: pathPartitions)
            let runs = AllocPath(
                start: {
                    MallocInterposerSwift.reset()
                    MallocInterposerSwift.hook()
                },
                stop: {
                    MallocInterposerSwift.unhook()
                    let s = MallocInterposerSwift.getStatistics()
                    return (Int64(s.mallocCount), Int64(s.mallocBytesCount))
                }, small: pathRecords / 4, large: pathRecords, partitions: pathPartitions)
            print(
                "\nwhole stage path: consume → handle → produce → store offsets, every thread of this process, the broker in its own "
                    + "process; slope between \(pathRecords / 4) and \(pathRecords) records over \(pathPartitions) partitions")
            print("  path                                   mallocs/record  bytes/record  beyond the C relay")
            let rows = try await runs.run()
            let base = rows.first
            for row in rows {
                let beyond = row.name == base?.name ? "" : String(format: "%+18.1f", row.mallocsPerRecord - (base?.mallocsPerRecord ?? 0))
                print(
                    "  \(row.name.padding(toLength: 39, withPad: " ", startingAt: 0))  \(String(format: "%14.1f", row.mallocsPerRecord))  "
                        + "\(String(format: "%12.0f", row.bytesPerRecord))  \(beyond)")
            }
        }
        #else
        throw ValidationError(
            "streamfirst-bench alloc needs the malloc interposer: build with STREAMFIRST_BENCH=1 (`make bench-alloc`)")
        #endif
    }

    #if STREAMFIRST_BENCH_ALLOC
    /// The interposer counts only when its library is preloaded: re-executes this process with
    /// LD_PRELOAD naming the copy built next to this executable, and checks that counting works.
    func reexecWithInterposer() throws {
        let env = ProcessInfo.processInfo.environment
        guard let exe = Bundle.main.executableURL else { throw ValidationError("cannot find this executable") }
        let lib = exe.deletingLastPathComponent().appendingPathComponent("libMallocInterposerSwift.so").path
        if !(env["LD_PRELOAD"] ?? "").contains("libMallocInterposerSwift") {
            guard FileManager.default.fileExists(atPath: lib) else { throw ValidationError("\(lib) not found") }
            let args = CommandLine.arguments
            var newEnv = env
            newEnv["LD_PRELOAD"] = lib
            let cArgs = args.map { strdup($0) } + [nil]
            let cEnv = newEnv.map { strdup("\($0.key)=\($0.value)") } + [nil]
            execve(exe.path, cArgs, cEnv)
            throw ValidationError("execve \(exe.path) failed: errno \(errno)")
        }
        MallocInterposerSwift.reset()
        MallocInterposerSwift.hook()
        let probe = [Int](repeating: 1, count: Int.random(in: 100...200))
        MallocInterposerSwift.unhook()
        guard MallocInterposerSwift.getStatistics().mallocCount > 0, probe.count > 0 else {
            throw ValidationError("the malloc interposer counts nothing (LD_PRELOAD=\(env["LD_PRELOAD"] ?? ""))")
        }
    }
    #endif
}

/// The per-record operations the allocation benchmark measures, set up once.
final class AllocCases {
    final class Sink { var value = 0 }
    let sink = Sink()
    var all: [(String, () -> Void)] = []

    init(pipeline: String) throws {
        let spec = try PipelineSpec.load(file: pipeline, environment: ["SQLITE_PATH": "/dev/null"])
        let process = try ProcessHandler.make(spec: spec, common: try spec.stage(.process))
        let schema = try JSONSchema(try JSONValue.parse(Array(benchSchema.utf8)))
        let validate = ValidateHandler(schema: schema, schemaName: "bench", output: "valid")
        let value = try JSONValue.parse(benchRecord)
        let headers = [
            KafkaHeader(key: RecordHeader.id, value: "gen:42:123456"),
            KafkaHeader(key: RecordHeader.eventTime, value: "1767225600000"),
            KafkaHeader(key: RecordHeader.ingestTime, value: "1767225600000"),
            KafkaHeader(key: RecordHeader.source, value: "generator:iot-sensors:42"),
            KafkaHeader(key: RecordHeader.contentType, value: "application/json"),
            KafkaHeader(key: RecordHeader.traceParent, value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ]
        // A sensor id that is in tables/sensors.csv, so the enrich step matches; not hot (no copy to alerts), the common path.
        let processValue: [UInt8] = Array(
            (#"{"sensor_id":"sensor-001","seq":123456,"ts":"2026-01-01T00:00:00Z","temperature_c":21.5,"humidity_pct":45.2,"#
                + #""battery_v":3.71,"site":"plant-a"}"#)
                .utf8)
        let message = KafkaMessage(
            topic: "iot.readings.raw", partition: 3, offset: 123_456, key: Array("sensor-042".utf8), value: benchRecord,
            headers: headers, timestamp: nil)
        let processMessage = KafkaMessage(
            topic: "iot.readings.valid", partition: 3, offset: 123_456, key: Array("sensor-001".utf8), value: processValue,
            headers: headers, timestamp: nil)
        let deadLetters = DeadLetterWriter(pipeline: spec.name, stage: "validate", topic: "iot.dead-letter")
        let reason = DeadLetterReason(
            component: "schema:bench", errorClass: "SchemaViolation",
            message: "1 violation of schema bench; first at '/temperature_c': 180 is more than the maximum 150")
        let tracedValidate = TracedHandler(
            handler: validate, deadLetters: deadLetters,
            tracer: RecordTracer(
                stage: "validate", pipeline: spec.name, topic: "iot.readings.raw", group: "bench", tracer: PropagatingTracer()))
        let tracedProcess = TracedHandler(
            handler: process, deadLetters: DeadLetterWriter(pipeline: spec.name, stage: "process", topic: "iot.dead-letter"),
            tracer: RecordTracer(
                stage: "process", pipeline: spec.name, topic: "iot.readings.valid", group: "bench", tracer: PropagatingTracer()))
        let sink = self.sink
        var out: [KafkaProducerMessage] = []
        out.reserveCapacity(16)
        // Every case is checked once: a case that dead-letters where it should forward measures the wrong path.
        guard (try? JSONValue.parse(benchRecord)) != nil, schema.validate(value).isEmpty,
            !validate.outcome(for: message).outputs(for: message).isEmpty, case .forward = process.outcome(for: processMessage)
        else { throw ValidationError("a benchmark case does not take its normal path (check the record, schema and steps)") }

        let avroSchema = try AvroSchema(json: benchAvroSchema)
        let avroReader = AvroReader(schema: avroSchema)
        let avroWriter = AvroWriter(schema: avroSchema)
        let avroRecord = try avroWriter.encode(value)
        guard (try? avroReader.decode(avroRecord))?.jsonEquals(value) == true else {
            throw ValidationError("the bench record does not round-trip through its Avro schema")
        }
        all = [
            ("json-read (parse the record)", { if (try? JSONValue.parse(benchRecord)) != nil { sink.value &+= 1 } }),
            ("json-write (serialise the record)", { sink.value &+= value.serialized().count }),
            ("avro-read (decode the record)", { if (try? avroReader.decode(avroRecord)) != nil { sink.value &+= 1 } }),
            ("avro-write (encode the record)", { sink.value &+= (try? avroWriter.encode(value))?.count ?? 0 }),
            ("schema (validate a parsed record)", { sink.value &+= schema.validate(value).count }),
            (
                "validate handler (parse + schema)",
                {
                    out.removeAll(keepingCapacity: true)
                    var emitter = StageEmitter(input: message, span: nil, appendingTo: &out)
                    validate.handle(message, into: &emitter)
                    emitter.returnMessages(to: &out)
                    sink.value &+= out.count
                }
            ),
            (
                "process handler (parse, steps, write)",
                {
                    out.removeAll(keepingCapacity: true)
                    var emitter = StageEmitter(input: processMessage, span: nil, appendingTo: &out)
                    process.handle(processMessage, into: &emitter)
                    emitter.returnMessages(to: &out)
                    sink.value &+= out.count
                }
            ),
            ("dead-letter message build", { sink.value &+= deadLetters.message(for: message, reason: reason, nowMs: 0).headers.count }),
            (
                "traced validate (TracedHandler.handle)",
                {
                    out.removeAll(keepingCapacity: true)
                    _ = tracedValidate.handle(message, nowMs: 0, into: &out)
                    sink.value &+= out.count
                }
            ),
            (
                "traced process (TracedHandler.handle)",
                {
                    out.removeAll(keepingCapacity: true)
                    _ = tracedProcess.handle(processMessage, nowMs: 0, into: &out)
                    sink.value &+= out.count
                }
            ),
        ]
    }
}
