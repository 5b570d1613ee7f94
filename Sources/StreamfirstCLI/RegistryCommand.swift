import ArgumentParser
import Foundation
import Kafka
import Logging
import SchemaRegistryServer
import ServiceLifecycle

/// `streamfirst registry`: the development schema registry (Confluent's REST API), so records in the
/// Confluent wire format can be produced and read against the embedded broker. With `--bootstrap`
/// its schemas live in a compacted `_schemas` topic and survive restarts.
struct RegistryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "registry",
        abstract: "Serve a development schema registry (the Confluent REST API; schemas in memory or in a _schemas topic).",
        discussion: """
            Serializers and deserializers that speak to a Confluent Schema Registry (confluent-kafka's \
            AvroSerializer, Kafka Connect's converters) work against it. Avro schemas are checked for \
            compatibility (default BACKWARD). Without --bootstrap the schemas are forgotten when it stops; \
            with it they are kept in the --topic topic (compacted, one partition; created where the cluster \
            allows) and read back at start. Prints `registry url=http://HOST:PORT` once it listens; SIGTERM \
            or SIGINT stops it.
            """)

    @Option(help: "Port to listen on (0: any free port).") var port = 8081
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Kafka bootstrap servers: keep the schemas in a topic there (default: $KAFKA_BROKERS, else in memory).")
    var bootstrap: String?
    @Option(help: "The topic that keeps the schemas.") var topic = "_schemas"

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
    }

    func run() async throws {
        var logger = Logger(label: "streamfirst.registry")
        logger.logLevel = .warning
        let host = self.host
        let registry: DevSchemaRegistry
        var log: KafkaSchemaLog?
        if let brokers = bootstrap ?? ProcessInfo.processInfo.environment["KAFKA_BROKERS"], !brokers.isEmpty {
            let kafkaLog = try KafkaSchemaLog(kafka: KafkaConfiguration(bootstrapServers: brokers), topic: topic, logger: logger)
            await kafkaLog.createTopicIfMissing()
            registry = try await DevSchemaRegistry.restore(from: kafkaLog)
            log = kafkaLog
        } else {
            registry = DevSchemaRegistry()
        }
        let app = registry.application(host: host, port: port, logger: logger) { bound in
            FileHandle.standardOutput.write(Data("registry url=http://\(host):\(bound)\n".utf8))
        }
        let group = ServiceGroup(
            configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger))
        try await group.run()
        await log?.shutdown()
    }
}
