import Avro
import EmbeddedBroker
import Foundation
import Hummingbird
import Kafka
import Logging
import SchemaRegistry
import SchemaRegistryServer
import ServiceLifecycle
import StreamCore
import Testing

/// The registry client against the development registry over HTTP, and the wire format.
@Suite("Schema registry client and development registry", .serialized)
struct SchemaRegistryTests {
    /// Runs a development registry (`registry`, default: a new one in memory) on a free loopback port
    /// for the duration of `body`.
    static func withRegistry<R: Sendable>(
        _ registry: DevSchemaRegistry = DevSchemaRegistry(), _ body: @Sendable (String) async throws -> R
    ) async throws -> R {
        var logger = Logger(label: "registry-test")
        logger.logLevel = .warning
        let (ports, bound) = AsyncStream<Int>.makeStream()
        let app = registry.application(host: "127.0.0.1", port: 0, logger: logger) { bound.yield($0) }
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let running = Task { try await group.run() }
        var it = ports.makeAsyncIterator()
        guard let port = await it.next() else { throw SchemaRegistryError(code: nil, message: "the registry did not start") }
        do {
            let result = try await body("http://127.0.0.1:\(port)")
            await group.triggerGracefulShutdown()
            try await running.value
            return result
        } catch {
            await group.triggerGracefulShutdown()
            try? await running.value
            throw error
        }
    }

    static let v1 = """
        {"type": "record", "name": "Order", "namespace": "shop",
         "fields": [{"name": "id", "type": "string"}, {"name": "qty", "type": "int"}]}
        """
    static let v2 = """
        {"type": "record", "name": "Order", "namespace": "shop", "fields": [
          {"name": "id", "type": "string"}, {"name": "qty", "type": "long"},
          {"name": "note", "type": ["null", "string"], "default": null}]}
        """
    static let breaking = """
        {"type": "record", "name": "Order", "namespace": "shop",
         "fields": [{"name": "id", "type": "string"}, {"name": "customer", "type": "string"}]}
        """

    @Test func registerFetchAndEvolve() async throws {
        try await Self.withRegistry { url in
            let client = SchemaRegistryClient(url: url)
            let id1 = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.v1))
            #expect(try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.v1)) == id1, "registering again")
            #expect(try await client.register(subject: "other-value", schema: RegisteredSchema(text: Self.v1)) == id1, "one id per schema")
            let id2 = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.v2))
            #expect(id2 != id1)
            let latest = try await client.latest(subject: "orders-value")
            #expect(latest.version == 2 && latest.id == id2)
            #expect(try await client.version(1, of: "orders-value").id == id1)
            #expect(try await client.subjects() == ["orders-value", "other-value"])
            let fetched = try await SchemaRegistryClient(url: url).schema(id: id1)
            #expect(fetched.type == "AVRO")
            #expect(try AvroSchema(json: fetched.text) == AvroSchema(json: Self.v1))
        }
    }

    @Test func theRegistryRefusesWhatItShould() async throws {
        try await Self.withRegistry { url in
            let client = SchemaRegistryClient(url: url)
            _ = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.v1))
            // A new required field without a default: v2 cannot read v1 data.
            await #expect {
                _ = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.breaking))
            } throws: { error in
                (error as? SchemaRegistryError)?.code == 409 && "\(error)".contains("'customer'")
            }
            await #expect {
                _ = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: #"{"type": "nope"}"#))
            } throws: { error in
                (error as? SchemaRegistryError)?.code == 42201
            }
            await #expect {
                _ = try await client.schema(id: 999)
            } throws: { error in
                (error as? SchemaRegistryError)?.code == 40403
            }
            await #expect {
                _ = try await client.latest(subject: "missing")
            } throws: { error in
                (error as? SchemaRegistryError)?.code == 40401
            }
            // With compatibility NONE for the subject, the breaking schema is accepted.
            try await client.setCompatibility("NONE", subject: "orders-value")
            _ = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.breaking))
        }
    }

    @Test func aRegistryThatIsDownIsUnavailableNotWrong() async throws {
        // Port 9 (discard): nothing listens there on these machines.
        let client = SchemaRegistryClient(url: "http://127.0.0.1:9", timeout: .seconds(2))
        await #expect {
            _ = try await client.schema(id: 1)
        } throws: { error in
            (error as? SchemaRegistryError)?.isUnavailable == true
        }
    }

    /// Schemas, ids, versions and settings survive a restart through the `_schemas` topic (on the
    /// embedded broker, in its own process).
    @Test func aRestartedRegistryKnowsWhatItWasTold() async throws {
        let broker = try await EmbeddedBrokerProcess.launch()
        let topic = "_schemas-\(UUID().uuidString.prefix(8))"
        try await broker.control.createTopic(topic, partitions: 1)
        var logger = Logger(label: "registry-test")
        logger.logLevel = .warning
        let kafka = KafkaConfiguration(bootstrapServers: broker.bootstrapServers)
        let first = try KafkaSchemaLog(kafka: kafka, topic: topic, logger: logger)
        let (id1, id2) = try await Self.withRegistry(try await DevSchemaRegistry.restore(from: first)) { url in
            let client = SchemaRegistryClient(url: url)
            let id1 = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.v1))
            let id2 = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.v2))
            try await client.setCompatibility("NONE", subject: "orders-value")
            return (id1, id2)
        }
        await first.shutdown()

        let second = try KafkaSchemaLog(kafka: kafka, topic: topic, logger: logger)
        try await Self.withRegistry(try await DevSchemaRegistry.restore(from: second)) { url in
            let client = SchemaRegistryClient(url: url)
            #expect(try await client.latest(subject: "orders-value").version == 2)
            #expect(try await client.version(1, of: "orders-value").id == id1)
            #expect(try AvroSchema(json: try await client.schema(id: id2).text) == AvroSchema(json: Self.v2))
            #expect(try await client.register(subject: "copy-value", schema: RegisteredSchema(text: Self.v1)) == id1, "the same id again")
            // The subject's NONE setting came back: the breaking schema is accepted.
            let id3 = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.breaking))
            #expect(id3 > id2, "new ids continue after the restored ones")
        }
        await second.shutdown()
        _ = try await broker.terminate()
    }

    @Test func theWireFormat() throws {
        let framed = ConfluentWireFormat.frame(schemaID: 258, payload: [0xAA, 0xBB])
        #expect(framed == [0, 0, 0, 1, 2, 0xAA, 0xBB])
        try framed.withUnsafeBytes { raw in
            let (id, payload) = try ConfluentWireFormat.parse(raw)
            #expect(id == 258 && Array(payload) == [0xAA, 0xBB])
        }
        for bad: [UInt8] in [[], [0, 0, 0, 1], [1, 0, 0, 0, 1], Array("{\"a\":1}".utf8)] {
            #expect(throws: ConfluentWireFormat.Error.self) { try bad.withUnsafeBytes { _ = try ConfluentWireFormat.parse($0) } }
        }
    }
}
