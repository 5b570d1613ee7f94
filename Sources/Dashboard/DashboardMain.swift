import ArgumentParser
import Config
import Foundation
import Hummingbird
import Logging
import NIOCore
import Pipeline
import PipelineModel
import ServiceLifecycle

/// Options of the `dashboard` executable; each has an environment variable like the workers'.
package struct DashboardOptions: ParsableArguments {
    @Option(name: .long, help: "The pipeline file (env PIPELINE); its dashboard: and metrics: sections configure the dashboard.")
    package var pipeline: String?

    @Option(name: .long, help: "HTTP port; 0 picks a free one (env HTTP_PORT; default: dashboard.port, 9100).")
    package var httpPort: Int?

    @Option(name: .long, help: "Address to listen on (env HTTP_HOST; default 127.0.0.1).")
    package var httpHost: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (env LOG_LEVEL).")
    package var logLevel: String?

    @Option(name: .long, help: "text or json (env LOG_FORMAT).")
    package var logFormat: String?

    @Flag(name: .long, help: "Check the pipeline file's dashboard: section, then exit.")
    package var check = false

    package init() {}
}

/// The body of the `dashboard` executable: read the pipeline file, serve the page and its event
/// stream beside the consumer in a `ServiceGroup` (SIGTERM / SIGINT: graceful shutdown, exit 0).
/// Exit codes as the workers': 1 it failed (Kafka), 2 bad options or configuration.
package enum Dashboard {
    package static func main() async -> Never {
        let options: DashboardOptions
        do {
            options = try DashboardOptions.parse(Array(CommandLine.arguments.dropFirst()))
        } catch {
            DashboardOptions.exit(withError: error)
        }
        let env = ProcessInfo.processInfo.environment
        WorkerProcess.bootstrapLogging(level: options.logLevel, format: options.logFormat, environment: env)
        var logger = Logger(label: "streamfirst.dashboard")
        guard let file = options.pipeline ?? env["PIPELINE"] else {
            fail(2, "dashboard: no pipeline file: pass --pipeline FILE or set PIPELINE")
        }
        let spec: PipelineSpec
        let config: DashboardConfig
        let chartJS: ByteBuffer
        do {
            spec = try PipelineSpec.load(file: file, environment: env)
            config = try DashboardConfig.make(spec: spec)
            chartJS = ByteBuffer(bytes: try Data(contentsOf: URL(fileURLWithPath: config.chartJSPath)))
        } catch {
            fail(2, "dashboard: \(error)")
        }
        logger[metadataKey: "pipeline"] = "\(spec.name)"
        if options.check {
            print("\(file): the dashboard is configured correctly")
            exit(0)
        }
        var port = config.port
        if let p = options.httpPort ?? env["HTTP_PORT"].flatMap({ Int($0) }) { port = p }
        let host = options.httpHost ?? env["HTTP_HOST"] ?? "127.0.0.1"
        let service = DashboardService(config: config, spec: spec, logger: logger)
        let http = DashboardHTTP.application(
            host: host, port: port, service: service, chartJS: chartJS, logger: logger,
            onBound: { bound in
                // The same machine-readable line as the workers' (streamfirst run, tests start it with port 0).
                FileHandle.standardOutput.write(Data("dashboard http_port=\(bound)\n".utf8))
            })
        // Shut down in reverse order: the consumer service first (it ends the event streams), then HTTP.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: http),
                    .init(service: service, successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            ).withDeadline(milliseconds: 10_000))
        do {
            try await group.run()
            exit(0)
        } catch {
            logger.error("dashboard failed", metadata: ["error": "\(error)"])
            fail(1, "dashboard: \(error)")
        }
    }

    static func fail(_ code: Int32, _ message: String) -> Never { WorkerProcess.fail(code, message) }
}
