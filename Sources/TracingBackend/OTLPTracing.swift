import Foundation
import Logging
import OTel
import Pipeline
import PipelineModel
import ServiceLifecycle
import Tracing

/// The OTLP span exporter the worker executables plug into ``Pipeline/Worker``: swift-otel's tracer
/// (parent-based trace-id-ratio sampling, W3C propagation) with its OTLP/HTTP exporter (protobuf
/// or JSON), bootstrapped as the process's tracer. Its service batches spans and flushes them on
/// graceful shutdown.
///
/// ```swift
/// // Sources/ValidateWorker/main.swift
/// import StageWorker
/// import TracingBackend
/// await Worker.main(stage: .validate, tracing: OTLPTracing.backend)
/// ```
public enum OTLPTracing {
    /// The backend for ``Pipeline/Worker/main(stage:tracing:)``.
    public static let backend: TracingBackend = { settings, logger in
        try bootstrap(settings, environment: ProcessInfo.processInfo.environment, logger: logger)
    }

    /// The variables ``Pipeline/TracingSettings`` has already read (and checked): swift-otel must not
    /// read them again, or it would undo the checks (e.g. `OTEL_TRACES_SAMPLER=always_off` would stop
    /// the traceparent, `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` would trap in a build without gRPC).
    static let resolvedKeys: Set<String> = [
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_PROPAGATORS", "OTEL_LOGS_EXPORTER", "OTEL_METRICS_EXPORTER",
    ]

    /// Bootstraps `InstrumentationSystem` with swift-otel's tracer for `settings` and returns its
    /// service. The other `OTEL_*` variables of `environment` (headers, timeout, compression,
    /// certificates, batch processor, resource attributes) are swift-otel's to apply.
    public static func bootstrap(_ settings: TracingSettings, environment: [String: String], logger: Logger) throws -> any Service {
        guard let export = settings.export else {
            throw PipelineError.setup("tracing: no OTLP endpoint configured")
        }
        var config = OTel.Configuration.default
        config.serviceName = settings.serviceName
        config.logs.enabled = false
        config.metrics.enabled = false
        config.traces.enabled = true
        config.traces.exporter = .otlp
        config.traces.otlpExporter.protocol = export.protocol == "http/json" ? .httpJSON : .httpProtobuf
        // A base URL gets the traces path the OTLP/HTTP specification gives it.
        config.traces.otlpExporter.endpoint =
            export.endpointIsTracesURL
            ? export.endpoint
            : (export.endpoint.hasSuffix("/") ? String(export.endpoint.dropLast()) : export.endpoint) + "/v1/traces"
        // Parent-based: a record's `sampled` flag decides for every stage after ingest. Never the
        // constant always-off sampler, whose spans carry no context (the traceparent must flow).
        config.traces.sampler =
            settings.sampleRatio >= 1
            ? .parentBasedAlwaysOn : (.parentBasedTraceIDRatio(ratio: settings.sampleRatio) ?? .parentBasedAlwaysOn)
        // A collector that does not answer must not hold a stopping worker past its shutdown
        // deadline (default 20 s): an export gives up after 5 s (OTEL_BSP_EXPORT_TIMEOUT and
        // OTEL_EXPORTER_OTLP_TIMEOUT override).
        config.traces.batchSpanProcessor.exportTimeout = .seconds(5)
        config.traces.otlpExporter.timeout = .seconds(5)
        config.propagators = [.traceContext]
        config.diagnosticLogger = .custom(logger)
        config.diagnosticLogLevel = .warning
        let rest = environment.filter { $0.key.hasPrefix("OTEL_") && !resolvedKeys.contains($0.key) }
        return try OTel.bootstrap(configuration: config, environment: rest)
    }
}
