import Config
import Foundation
import Logging
import PipelineModel
import Processing
import ServiceLifecycle
import Tracing

/// Exports spans over OTLP: bootstraps `InstrumentationSystem` with its tracer for `settings` (whose
/// ``TracingSettings/export`` is set) and returns the service that batches and flushes the spans;
/// the worker runs it in its `ServiceGroup`, shut down after the stage so the last spans go out.
/// The worker executables pass `OTLPTracing.backend` (module `TracingBackend`, swift-otel), so the
/// libraries depend on the swift-distributed-tracing API only.
public typealias TracingBackend = @Sendable (_ settings: TracingSettings, _ logger: Logger) throws -> any Service

/// What every Streamfirst executable does at start and on failure (the workers, `streamfirst`'s
/// commands, the dashboard): logging, tracing, exit codes.
public enum WorkerProcess {
    /// Bootstraps the process's tracer: the OTLP backend when an endpoint is configured, otherwise
    /// ``PropagatingTracer`` (traceparent flows, nothing is recorded). Returns the exporter's service.
    package static func bootstrapTracing(
        spec: PipelineSpec, stage: PipelineSpec.StageName, environment: [String: String], backend: TracingBackend?,
        logger: Logger
    ) throws -> (any Service)? {
        let settings = try TracingSettings.resolve(spec.tracing, stage: stage, environment: environment)
        guard let export = settings.export else {
            InstrumentationSystem.bootstrap(PropagatingTracer(sampleRatio: settings.sampleRatio))
            logger.debug("tracing: propagating traceparent, no exporter configured", metadata: ["sample_ratio": "\(settings.sampleRatio)"])
            return nil
        }
        guard let backend else {
            throw PipelineError.setup(
                "tracing: an OTLP endpoint is configured (\(export.endpoint)) but this worker has no exporter built in: "
                    + "pass `tracing: OTLPTracing.backend` (module TracingBackend) to Worker.main, or unset tracing.endpoint / "
                    + "OTEL_EXPORTER_OTLP_ENDPOINT"
            )
        }
        let service = try backend(settings, logger)
        logger.info(
            "tracing: exporting spans",
            metadata: [
                "endpoint": "\(export.endpoint)", "protocol": "\(export.protocol)", "service": "\(settings.serviceName)",
                "sample_ratio": "\(settings.sampleRatio)",
            ])
        return service
    }

    /// Bootstraps swift-log for a Streamfirst executable: `level` (else `LOG_LEVEL`, default info),
    /// `format` `text` or `json` (else `LOG_FORMAT`; json writes one object per line). Shared by the
    /// workers and the dashboard.
    public static func bootstrapLogging(level: String?, format: String?, environment env: [String: String]) {
        let level = Logger.Level(rawValue: level ?? env["LOG_LEVEL"] ?? "info") ?? .info
        let json = (format ?? env["LOG_FORMAT"] ?? "text") == "json"
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// Writes `message` to standard error and exits with `code` (1: failed, 2: bad options or configuration).
    public static func fail(_ code: Int32, _ message: String) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(code)
    }
}

extension ServiceGroupConfiguration {
    /// The graceful-shutdown bound of a Streamfirst executable, then 5 s for cancellation.
    public func withDeadline(milliseconds: Int64) -> ServiceGroupConfiguration {
        var c = self
        c.maximumGracefulShutdownDuration = .milliseconds(milliseconds)
        c.maximumCancellationDuration = .seconds(5)
        return c
    }
}

/// A stage built from its pipeline section: the service to run and what the endpoints report.
public struct BuiltStage: Sendable {
    public let service: any Service
    public let common: PipelineSpec.StageCommon
    public let metrics: StageMetrics
    public let health: StageHealth

    /// Builds the stage `name` from `spec` (reads and checks the stage's section; loads schemas,
    /// tables and connector settings). Throws a ``ConfigError`` naming the key and line.
    public static func build(
        _ name: PipelineSpec.StageName, spec: PipelineSpec, logger: Logger, processor custom: (any RecordProcessor)? = nil
    ) throws(ConfigError) -> BuiltStage {
        let context = try StageContext(stage: name, spec: spec, logger: logger)
        let common = context.common
        let service: any Service
        switch name {
        case .ingest:
            service = try IngestStage(context: context)
        case .validate:
            service = ConsumeProduceStage(context: context, handler: try ValidateHandler.make(spec: spec, common: common))
        case .process where custom == nil && StatefulProcessConfig.isStateful(common):
            service = StatefulStage(context: context, config: try StatefulProcessConfig.make(spec: spec, common: common))
        case .process:
            let handler = try ProcessHandler.make(spec: spec, common: common, custom: custom)
            service = ConsumeProduceStage(context: context, handler: handler, extraTopics: handler.topics)
        case .persist:
            service = try PersistStage(context: context)
        }
        return BuiltStage(service: service, common: common, metrics: context.metrics, health: context.health)
    }
}
