import Config
import Foundation

/// The pipeline file's `tracing:` section (every key optional; see docs/PIPELINES.md):
///
/// ```yaml
/// tracing:
///   endpoint: http://otel-collector:4318   # OTLP/HTTP base URL; absent: no export (traceparent still flows)
///   protocol: http/protobuf                # or http/json
///   service_prefix: streamfirst            # service name of a stage: <prefix>-<stage>
///   sample_ratio: 1.0                      # probability that a new trace is sampled (0…1)
/// ```
public struct TracingSpec: Sendable, Equatable {
    public var endpoint: String?
    public var `protocol`: String?
    public var servicePrefix: String
    public var sampleRatio: Double
    /// File and line of the section, for errors found when it is combined with the environment.
    var file: String
    var line: Int?

    public init(endpoint: String? = nil, protocol: String? = nil, servicePrefix: String = "streamfirst", sampleRatio: Double = 1.0) {
        self.endpoint = endpoint
        self.protocol = `protocol`
        self.servicePrefix = servicePrefix
        self.sampleRatio = sampleRatio
        self.file = ""
        self.line = nil
    }

    /// The protocols this build exports with (swift-otel's OTLP/HTTP exporter; gRPC is not built in).
    public static let protocols = ["http/protobuf", "http/json"]

    package static func parse(_ node: ConfigNode?, file: String) throws(ConfigError) -> TracingSpec {
        var spec = TracingSpec()
        spec.file = file
        guard let node else { return spec }
        spec.line = node.line
        let m = try node.mapping()
        if let e = m.optional("endpoint") {
            let text = try e.string()
            if !text.isEmpty {
                guard TracingSettings.isEndpoint(text) else {
                    throw e.error("'\(text)' is not an OTLP/HTTP endpoint: write a URL such as http://otel-collector:4318")
                }
                spec.endpoint = text
            }
        }
        if let p = m.optional("protocol") { spec.protocol = try p.choice(protocols) }
        if let s = m.optional("service_prefix") {
            let text = try s.string()
            guard !text.isEmpty else { throw s.error("the service prefix must not be empty") }
            spec.servicePrefix = text
        }
        spec.sampleRatio = try m.double("sample_ratio", default: 1.0, in: 0...1)
        try m.finish()
        return spec
    }
}

/// The tracing a worker runs with: the pipeline's `tracing:` section with the standard OpenTelemetry
/// environment variables applied over it (`OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_EXPORTER`,
/// `OTEL_SDK_DISABLED`). Bad values fail at start, naming the variable or key.
public struct TracingSettings: Sendable, Equatable {
    /// Where and how spans are exported; nil when no endpoint is configured (then the worker still
    /// propagates `traceparent`, with ``PropagatingTracer``).
    public struct Export: Sendable, Equatable {
        /// The OTLP endpoint.
        public var endpoint: String
        /// True when `endpoint` is the full traces URL (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); false
        /// for a base URL, to which `/v1/traces` is appended.
        public var endpointIsTracesURL: Bool
        /// `http/protobuf` or `http/json`.
        public var `protocol`: String

        public init(endpoint: String, endpointIsTracesURL: Bool, protocol: String) {
            self.endpoint = endpoint
            self.endpointIsTracesURL = endpointIsTracesURL
            self.protocol = `protocol`
        }
    }

    public var export: Export?
    /// `OTEL_SERVICE_NAME`, else `<service_prefix>-<stage>` (e.g. `streamfirst-validate`).
    public var serviceName: String
    public var sampleRatio: Double

    /// Combines the file's section with the environment for one stage.
    public static func resolve(
        _ spec: TracingSpec, stage: PipelineSpec.StageName, environment: [String: String]
    ) throws(ConfigError) -> TracingSettings {
        func env(_ key: String) -> String? {
            guard let v = environment[key]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        func fail(_ key: String, _ message: String) -> ConfigError {
            ConfigError(file: "environment", line: nil, path: key, message: message)
        }
        var serviceName = "\(spec.servicePrefix)-\(stage.rawValue)"
        if let name = env("OTEL_SERVICE_NAME") { serviceName = name }

        var exporting = true
        if let disabled = env("OTEL_SDK_DISABLED") {
            switch disabled.lowercased() {
            case "true": exporting = false
            case "false": break
            default: throw fail("OTEL_SDK_DISABLED", "'\(disabled)' is not true or false")
            }
        }
        if let exporter = env("OTEL_TRACES_EXPORTER") {
            switch exporter.lowercased() {
            case "none": exporting = false
            case "otlp": break
            default:
                throw fail("OTEL_TRACES_EXPORTER", "'\(exporter)' is not supported: use otlp (the default) or none")
            }
        }

        var endpoint: (url: String, tracesURL: Bool, key: String)?
        if let url = spec.endpoint { endpoint = (url, false, "tracing.endpoint") }
        for (key, tracesURL) in [("OTEL_EXPORTER_OTLP_ENDPOINT", false), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", true)] {
            if let url = env(key) { endpoint = (url, tracesURL, key) }
        }
        if let e = endpoint, !isEndpoint(e.url) {
            let message = "'\(e.url)' is not an OTLP/HTTP endpoint: write a URL such as http://otel-collector:4318"
            throw e.key.hasPrefix("OTEL_")
                ? fail(e.key, message) : ConfigError(file: spec.file, line: spec.line, path: e.key, message: message)
        }
        var proto = spec.protocol ?? "http/protobuf"
        for key in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
            guard let p = env(key) else { continue }
            guard TracingSpec.protocols.contains(p) else {
                let hint = p == "grpc" ? " (this build exports over OTLP/HTTP only: gRPC collectors listen for HTTP on port 4318)" : ""
                throw fail(key, "'\(p)' is not supported: use http/protobuf or http/json\(hint)")
            }
            proto = p
        }
        let export = exporting ? endpoint.map { Export(endpoint: $0.url, endpointIsTracesURL: $0.tracesURL, protocol: proto) } : nil
        return TracingSettings(export: export, serviceName: serviceName, sampleRatio: spec.sampleRatio)
    }

    /// An absolute http(s) URL with a host.
    package static func isEndpoint(_ text: String) -> Bool {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty
        else { return false }
        return true
    }
}
