import ArgumentParser
import Config
import Foundation
import Logging
import Metrics
import Pipeline
import PipelineModel
import Processing
import Prometheus
import ServiceLifecycle

/// Options every worker executable takes. Each has an environment variable, so one container image
/// runs anywhere: `PIPELINE`, `KAFKA_BROKERS` (read by the pipeline file), `HTTP_PORT`, `LOG_LEVEL`,
/// `LOG_FORMAT`.
public struct WorkerOptions: ParsableArguments {
    @Option(name: .long, help: "The pipeline file (env PIPELINE).")
    public var pipeline: String?

    @Option(
        name: .long,
        help: "Port of /healthz, /readyz, /metrics and /stats; 0 picks a free one (env HTTP_PORT; default per stage: 9101–9104).")
    public var httpPort: Int?

    @Option(name: .long, help: "Address the HTTP endpoints listen on (env HTTP_HOST).")
    public var httpHost: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (env LOG_LEVEL).")
    public var logLevel: String?

    @Option(name: .long, help: "text or json: json writes one JSON object per line (env LOG_FORMAT).")
    public var logFormat: String?

    @Flag(name: .long, help: "Check the pipeline file and the stage's settings, then exit.")
    public var check = false

    public init() {}
}

/// The body of the four worker executables: parse options, bootstrap logging and metrics, build the
/// stage from the pipeline file, run it with the HTTP endpoints in a `ServiceGroup` that turns
/// SIGTERM / SIGINT into a graceful shutdown, and exit 0 when it ends cleanly.
///
/// Exit codes: 0 clean stop; 1 the stage failed (Kafka, sink); 2 bad options or configuration
/// (the message names the file, line and key).
public enum Worker {
    /// Runs one of the four stages as configured by the pipeline file.
    ///
    /// - Parameter tracing: exports spans when the pipeline or the environment configures an OTLP
    ///   endpoint; without it (or without an endpoint) the worker still carries `traceparent`
    ///   through every record, with ``PropagatingTracer``.
    public static func main(stage: PipelineSpec.StageName, tracing: TracingBackend? = nil) async -> Never {
        await main(stage: stage, processor: nil, tracing: tracing)
    }

    /// Runs the process stage with your own processor: the pipeline's `process:` section supplies
    /// topics and settings, and its `steps:` (optional here) run before `processor`.
    ///
    /// ```swift
    /// // Sources/MyProcess/main.swift
    /// import StageWorker
    /// import Processing
    /// struct Celsius: RecordProcessor { … }
    /// await Worker.main(processor: Celsius())
    /// ```
    public static func main(processor: any RecordProcessor, tracing: TracingBackend? = nil) async -> Never {
        await main(stage: .process, processor: processor, tracing: tracing)
    }

    static func main(
        stage: PipelineSpec.StageName, processor custom: (any RecordProcessor)?, tracing backend: TracingBackend?
    ) async -> Never {
        let options: WorkerOptions
        do {
            options = try WorkerOptions.parse(Array(CommandLine.arguments.dropFirst()))
        } catch {
            WorkerOptions.exit(withError: error)
        }
        let env = ProcessInfo.processInfo.environment
        WorkerProcess.bootstrapLogging(level: options.logLevel, format: options.logFormat, environment: env)
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var logger = Logger(label: "streamfirst.\(stage.rawValue)")
        logger[metadataKey: "stage"] = "\(stage.rawValue)"

        guard let file = options.pipeline ?? env["PIPELINE"] else {
            WorkerProcess.fail(2, "\(stage.rawValue): no pipeline file: pass --pipeline FILE or set PIPELINE")
        }
        let built: BuiltStage
        let spec: PipelineSpec
        var tracingService: (any Service)?
        do {
            spec = try PipelineSpec.load(file: file, environment: env)
            logger[metadataKey: "pipeline"] = "\(spec.name)"
            // Before the stage is built: its record tracer takes the bootstrapped tracer.
            tracingService = try WorkerProcess.bootstrapTracing(
                spec: spec, stage: stage, environment: env, backend: backend, logger: logger)
            built = try BuiltStage.build(stage, spec: spec, logger: logger, processor: custom)
        } catch {
            WorkerProcess.fail(2, "\(stage.rawValue): \(error)")
        }
        if options.check {
            print("\(file): the \(stage.rawValue) stage is configured correctly")
            exit(0)
        }

        var port = built.common.httpPort
        if let p = options.httpPort ?? env["HTTP_PORT"].flatMap({ Int($0) }) { port = p }
        // Loopback unless told otherwise (containers set HTTP_HOST=0.0.0.0, see the Dockerfile).
        let host = options.httpHost ?? env["HTTP_HOST"] ?? "127.0.0.1"
        let token: String?
        do {
            token = try env["HTTP_TOKEN"].map { t throws(Interpolation.Failure) in try Interpolation.expand(t, environment: env) }
        } catch {
            WorkerProcess.fail(2, "HTTP_TOKEN: \(error.message)")
        }
        let http = WorkerHTTP.application(
            host: host, port: port, metrics: built.metrics, health: built.health, registry: registry, token: token, logger: logger,
            onBound: { bound in
                // A machine-readable line for launchers (streamfirst demo, tests) that start workers with port 0.
                FileHandle.standardOutput.write(Data("\(stage.rawValue) http_port=\(bound)\n".utf8))
            })
        // With a `metrics:` section, a snapshot of the counters goes to its topic every interval. It is
        // ahead of the stage in the group so that it is shut down after it: its final snapshot has the last counts.
        let publisher: [ServiceGroupConfiguration.ServiceConfiguration] =
            spec.metrics.map { settings in
                [
                    .init(
                        service: MetricsPublisher(
                            spec: spec, settings: settings, metrics: built.metrics,
                            instance: WorkerMetricsSnapshot.instanceID(environment: env), logger: logger))
                ]
            } ?? []
        // Services shut down in reverse order: the span exporter (first) flushes after everything else ended.
        let tracing: [ServiceGroupConfiguration.ServiceConfiguration] =
            tracingService.map { [.init(service: $0, successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore)] } ?? []
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: tracing + publisher + [
                    .init(service: built.service, successTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: http),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            ).withDeadline(milliseconds: built.common.shutdownTimeoutMs))
        do {
            try await group.run()
            logger.info("stopped")
            exit(0)
        } catch {
            logger.error("stage failed", metadata: ["error": "\(error)"])
            WorkerProcess.fail(1, "\(stage.rawValue): \(error)")
        }
    }
}
