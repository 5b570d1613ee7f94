import ArgumentParser
import Connectors
import Foundation
import Kafka
import OTel
import Pipeline
import PipelineModel
import ServiceLifecycle
import StreamCore
import Tracing

/// `streamfirst-bench trace`: what a span per record costs on the hot path of the validate and
/// process stages — the per-record work of ``TracedHandler`` (open the span from the record's
/// `traceparent`, run the stage's handler, stamp the outputs, end the span) with each tracer, from
/// the same run, interleaved rounds, medians. No broker: this measures the stage's CPU per record,
/// not Kafka. Records come from the demo pipeline's generator (1 % malformed, 3 % invalid).
struct TraceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Per-record cost of tracing in the validate and process stages (no tracer, traceparent only, swift-otel).",
        discussion: """
            Every tracer runs the same records through the same handler. records/s is wall time (noisy on
            shared machines); CPU µs/record is the process's CPU time (all threads, getrusage), with its
            difference from the no-tracer baseline of the same run.
            """)

    @Option(help: "The pipeline whose validate and process sections run.") var pipeline = "pipelines/iot-sensors.yaml"
    @Option(help: "Records per round.") var records = 100_000
    @Option(help: "Rounds (each runs every tracer once, in turn).") var rounds = 5

    func run() async throws {
        let spec = try PipelineSpec.load(file: pipeline, environment: ["SQLITE_PATH": "/dev/null"])
        let validate = try ValidateHandler.make(spec: spec, common: try spec.stage(.validate))
        let process = try ProcessHandler.make(spec: spec, common: try spec.stage(.process))
        let rawTopic = try spec.stage(.validate).input?.name ?? "raw"
        let validTopic = try spec.stage(.process).input?.name ?? "valid"
        let generator = GeneratorSource(count: Int64(records), seed: 42, malformedRatio: 0.01, invalidRatio: 0.03)
        // Inputs as the stages receive them: ingest's headers, a traceparent among them.
        let propagating = PropagatingTracer()
        let ingestTracer = RecordTracer(stage: "ingest", pipeline: spec.name, topic: rawTopic, tracer: propagating)
        var inputs: [KafkaMessage] = []
        inputs.reserveCapacity(records)
        for i in 0..<records {
            var headers = [
                KafkaHeader(key: RecordHeader.id, value: "gen:42:\(i)"),
                KafkaHeader(key: RecordHeader.eventTime, value: "1767225600000"),
                KafkaHeader(key: RecordHeader.ingestTime, value: "1767225600000"),
                KafkaHeader(key: RecordHeader.source, value: generator.name),
                KafkaHeader(key: RecordHeader.contentType, value: "application/json"),
            ]
            ingestTracer.startIngesting(id: "gen:42:\(i)", source: generator.name, parent: []).inject(into: &headers)
            inputs.append(
                KafkaMessage(
                    topic: rawTopic, partition: Int32(i % 6), offset: Int64(i / 6), key: nil, value: generator.record(Int64(i)),
                    headers: headers, timestamp: nil))
        }
        // The process stage reads what validate wrote.
        var validInputs: [KafkaMessage] = []
        let passthrough = TracedHandler(
            handler: validate, deadLetters: DeadLetterWriter(pipeline: spec.name, stage: "validate", topic: "dead"),
            tracer: RecordTracer(stage: "validate", pipeline: spec.name, topic: rawTopic, tracer: propagating))
        for m in inputs {
            var out: [KafkaProducerMessage] = []
            if case .forwarded = passthrough.handle(m, nowMs: 0, into: &out), let o = out.first {
                validInputs.append(
                    KafkaMessage(
                        topic: validTopic, partition: m.partition, offset: m.offset, key: o.key, value: o.value, headers: o.headers,
                        timestamp: nil))
            }
        }

        // The same records with their `sampled` flag cleared (a trace the sampler dropped upstream).
        func unsampled(_ messages: [KafkaMessage]) -> [KafkaMessage] {
            messages.map { m in
                var m = m
                m.headers = m.headers.map { h in
                    guard h.key == RecordHeader.traceParent, let v = h.value else { return h }
                    return KafkaHeader(key: h.key, value: Array(v.dropLast(2)) + Array("00".utf8))
                }
                return m
            }
        }

        // swift-otel's tracer as the workers configure it (parent-based sampling), exporter off:
        // sampled spans are recorded and batched, then dropped.
        var config = OTel.Configuration.default
        config.logs.enabled = false
        config.metrics.enabled = false
        config.traces.exporter = .none
        config.traces.sampler = .parentBasedAlwaysOn
        config.diagnosticLogLevel = .error
        let otel = try OTel.makeTracingBackend(configuration: config)
        let group = ServiceGroup(services: [otel.service], logger: .init(label: "bench"))
        let running = Task { try await group.run() }

        // (name, tracer, whether the input records are sampled)
        let tracers: [(String, any Tracer, Bool)] = [
            ("no tracer (NoOpTracer: no traceparent)", NoOpTracer(), true),
            ("traceparent only (PropagatingTracer, the default)", propagating, true),
            ("swift-otel, exporter off, records sampled", otel.factory, true),
            ("swift-otel, exporter off, records not sampled", otel.factory, false),
        ]
        let stages: [(String, any StageHandler, [KafkaMessage], [KafkaMessage], String)] = [
            ("validate", validate, inputs, unsampled(inputs), rawTopic),
            ("process", process, validInputs, unsampled(validInputs), validTopic),
        ]
        var rates: [String: [Double]] = [:]
        var cpuPerRecord: [String: [Double]] = [:]
        var sink = 0
        for _ in 0..<rounds {
            for (stage, handler, sampledMessages, unsampledMessages, topic) in stages {
                for (name, tracer, sampled) in tracers {
                    let messages = sampled ? sampledMessages : unsampledMessages
                    let traced = TracedHandler(
                        handler: handler, deadLetters: DeadLetterWriter(pipeline: spec.name, stage: stage, topic: "dead"),
                        tracer: RecordTracer(stage: stage, pipeline: spec.name, topic: topic, group: "bench", tracer: tracer))
                    var out: [KafkaProducerMessage] = []
                    out.reserveCapacity(600)
                    let cpuStart = cpuSeconds()
                    let start = ContinuousClock.now
                    for (i, m) in messages.enumerated() {
                        _ = traced.handle(m, nowMs: 0, into: &out)
                        if i % 500 == 499 { // the stage's batch: produced, then the buffer is reused
                            sink &+= out.count
                            out.removeAll(keepingCapacity: true)
                        }
                    }
                    let elapsed = ContinuousClock.now - start
                    // swift-otel finishes recorded spans on its own task: its CPU counts, so the
                    // CPU figure runs until that backlog had time to drain.
                    try await Task.sleep(for: .milliseconds(300))
                    let cpu = cpuSeconds() - cpuStart
                    rates["\(stage)|\(name)", default: []].append(Double(messages.count) / elapsed.seconds)
                    cpuPerRecord["\(stage)|\(name)", default: []].append(cpu * 1e9 / Double(messages.count))
                }
            }
        }
        await group.triggerGracefulShutdown()
        _ = try? await running.value

        print("trace benchmark: \(records) generated records (\(validInputs.count) reach process), \(rounds) interleaved rounds, medians")
        for (stage, _, messages, _, _) in stages {
            print("  \(stage) (\(messages.count) records per round):")
            let base = median(rates["\(stage)|\(tracers[0].0)"] ?? [])
            let baseCPU = median(cpuPerRecord["\(stage)|\(tracers[0].0)"] ?? [])
            for (name, _, _) in tracers {
                let r = median(rates["\(stage)|\(name)"] ?? [])
                let cpu = median(cpuPerRecord["\(stage)|\(name)"] ?? [])
                let label = name.padding(toLength: 50, withPad: " ", startingAt: 0)
                print(
                    "    \(label)"
                        + String(
                            format: " %8.0f records/s (ratio %.2f)   CPU %6.2f µs/record (%+6.2f µs)", r, r / base, cpu / 1000,
                            (cpu - baseCPU) / 1000))
            }
        }
        if sink == 42 { print("") } // keeps the loops from being optimised away
    }
}
