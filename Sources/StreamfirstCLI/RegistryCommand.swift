import ArgumentParser
import Foundation
import Logging
import SchemaRegistryServer
import ServiceLifecycle

/// `streamfirst registry`: the development schema registry (Confluent's REST API, in memory), so
/// records in the Confluent wire format can be produced and read against the embedded broker.
struct RegistryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "registry",
        abstract: "Serve a development schema registry (the Confluent REST API; schemas kept in memory).",
        discussion: """
            Serializers and deserializers that speak to a Confluent Schema Registry (confluent-kafka's \
            AvroSerializer, Kafka Connect's converters) work against it. Avro schemas are checked for \
            compatibility (default BACKWARD); schemas are forgotten when it stops. Prints \
            `registry url=http://HOST:PORT` once it listens; SIGTERM or SIGINT stops it.
            """)

    @Option(help: "Port to listen on (0: any free port).") var port = 8081
    @Option(help: "Address to listen on.") var host = "127.0.0.1"

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
    }

    func run() async throws {
        var logger = Logger(label: "streamfirst.registry")
        logger.logLevel = .warning
        let host = self.host
        let app = DevSchemaRegistry().application(host: host, port: port, logger: logger) { bound in
            FileHandle.standardOutput.write(Data("registry url=http://\(host):\(bound)\n".utf8))
        }
        let group = ServiceGroup(
            configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger))
        try await group.run()
    }
}
