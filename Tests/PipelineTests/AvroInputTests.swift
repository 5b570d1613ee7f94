import Avro
import EmbeddedBroker
import Foundation
import Kafka
import Logging
import Pipeline
import PipelineModel
import SchemaRegistry
import SchemaRegistryServer
import ServiceLifecycle
import StreamCore
import TestSupport
import Testing

/// Stages reading a `format: avro` topic: records serialized by Python's confluent-kafka
/// `AvroSerializer` against the development registry come out as JSON; bytes that are not the wire
/// format, unknown schema ids and schema violations are dead letters with their reasons. The broker
/// (embedded, its own process) and the registry (HTTP) are real; the stage runs in this process.
@Suite("Avro input topics", .serialized)
struct AvroInputTests {
    static let avroSchema = """
        {"type": "record", "name": "Order", "namespace": "shop", "fields": [
          {"name": "id", "type": "string"}, {"name": "qty", "type": "long"},
          {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
          {"name": "note", "type": ["null", "string"], "default": null}
        ]}
        """
    static let jsonSchema = """
        {"type": "object", "required": ["id", "qty", "status"],
         "properties": {"qty": {"type": "integer", "minimum": 1}, "status": {"enum": ["NEW", "PAID"]}}}
        """
    static let values = [
        #"{"id": "o-1", "qty": 3, "status": "PAID", "note": null}"#,
        #"{"id": "o-2", "qty": 0, "status": "NEW", "note": "breaks minimum"}"#,
        #"{"id": "o-3", "qty": 7, "status": "NEW", "note": "gift ✓"}"#,
    ]

    /// Runs a development registry on a free loopback port for the duration of `body`.
    static func withRegistry(_ body: @Sendable (String) async throws -> Void) async throws {
        var logger = Logger(label: "registry")
        logger.logLevel = .warning
        let (ports, bound) = AsyncStream<Int>.makeStream()
        let app = DevSchemaRegistry().application(host: "127.0.0.1", port: 0, logger: logger) { bound.yield($0) }
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let running = Task { try await group.run() }
        var it = ports.makeAsyncIterator()
        let port = try #require(await it.next())
        do {
            try await body("http://127.0.0.1:\(port)")
        } catch {
            await group.triggerGracefulShutdown()
            try? await running.value
            throw error
        }
        await group.triggerGracefulShutdown()
        try await running.value
    }

    /// Python's AvroSerializer output for `values`, registered under `<topic>-value`.
    static func serialized(url: String, topic: String) async throws -> [[UInt8]] {
        let schemaFile = FileManager.default.temporaryDirectory.appendingPathComponent("order-\(UUID().uuidString).avsc")
        try Data(avroSchema.utf8).write(to: schemaFile)
        defer { try? FileManager.default.removeItem(at: schemaFile) }
        return try await PythonScript.run("registry_interop.py", ["serialize", url, topic, schemaFile.path], lines: values).map {
            PythonScript.unhex($0)
        }
    }

    /// validate (with a JSON Schema) and process (`steps: []`) both read the Avro topic.
    @Test(arguments: ["validate", "process"])
    func aStageReadsAvroAndWritesJSON(stage: String) async throws {
        let broker = try await EmbeddedBrokerProcess.launch()
        let id = UUID().uuidString.prefix(8).lowercased()
        let (input, output, dead) = ("avro-in-\(id)", "avro-out-\(id)", "avro-dead-\(id)")
        for t in [input, output, dead] { try await broker.control.createTopic(t, partitions: 1) }
        try await Self.withRegistry { url in
            // What a Python producer of an existing cluster writes, plus two records no registry explains.
            var records = try await Self.serialized(url: url, topic: input)
            #expect(records.count == Self.values.count)
            records.append(Array(#"{"id": "plain json"}"#.utf8))
            records.append(ConfluentWireFormat.frame(schemaID: 4242, payload: [0x02]))
            let producer = try KafkaProducer(
                configuration: KafkaProducerConfiguration(kafka: KafkaConfiguration(bootstrapServers: broker.bootstrapServers)))
            let delivery = await producer.sendBatch(
                records.enumerated().map { i, bytes in
                    KafkaProducerMessage(
                        topic: input, key: Array("k\(i)".utf8), value: bytes, headers: [KafkaHeader(key: "sf.id", value: "r-\(i)")])
                })
            #expect(delivery.succeeded, "\(delivery.failures)")
            await producer.shutdown()

            // The stage, from a pipeline file.
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("avro-pipeline-\(id)")
            try FileManager.default.createDirectory(at: dir.appendingPathComponent("schemas"), withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            try Data(Self.jsonSchema.utf8).write(to: dir.appendingPathComponent("schemas/order.json"))
            let section =
                stage == "validate"
                ? "validate: { input: in, output: out, schema: order }" : "process: { input: in, output: out, steps: [] }"
            let spec = try PipelineSpec.parse(
                yaml: """
                    name: avro-\(id)
                    kafka: { bootstrap: "\(broker.bootstrapServers)" }
                    schema_registry: { url: "\(url)" }
                    topics:
                      in: { name: \(input), format: avro }
                      out: { name: \(output) }
                      dead: { name: \(dead) }
                    dead_letter: dead
                    \(section)
                    """, file: dir.appendingPathComponent("p.yaml").path, environment: [:])
            var logger = Logger(label: "avro-input-test")
            logger.logLevel = .warning
            let context = try StageContext(stage: stage == "validate" ? .validate : .process, spec: spec, logger: logger)
            let handler: any StageHandler =
                stage == "validate"
                ? try ValidateHandler.make(spec: spec, common: context.common) : try ProcessHandler.make(spec: spec, common: context.common)
            let service = ConsumeProduceStage(context: context, handler: handler)
            let group = ServiceGroup(configuration: .init(services: [service], logger: logger))
            let running = Task { try await group.run() }

            let reader = try KafkaConsumer(configuration: KafkaConsumerConfiguration(kafka: spec.kafka, groupID: nil))
            try await reader.assign(
                [KafkaTopicPartition(topic: output, partition: 0), KafkaTopicPartition(topic: dead, partition: 0)], startingAt: .beginning)
            var got: [KafkaMessage] = []
            let deadline = ContinuousClock.now + .seconds(60)
            while got.count < records.count, ContinuousClock.now < deadline {
                got += try await reader.poll(maxMessages: 100, timeout: .seconds(1))
            }
            await reader.close()
            await group.triggerGracefulShutdown()
            try await running.value

            let outputs = got.filter { $0.topic == output }
            let deads = Dictionary(
                uniqueKeysWithValues: got.filter { $0.topic == dead }.map {
                    (String(decoding: $0.header("sf.id")?.value ?? [], as: UTF8.self), $0)
                })
            // The valid Avro records, as JSON, with their ids (validate refuses r-1, which breaks its JSON Schema).
            let passed = stage == "validate" ? [0, 2] : [0, 1, 2]
            #expect(outputs.map { String(decoding: $0.header("sf.id")?.value ?? [], as: UTF8.self) } == passed.map { "r-\($0)" })
            for (m, i) in zip(outputs, passed) {
                let value = try JSONValue.parse(m.value ?? [])
                #expect(value.jsonEquals(try JSONValue.parse(Array(Self.values[i].utf8))), "\(value.jsonString)")
            }
            func errorClass(_ id: String) -> String? {
                deads[id]?.header(DeadLetterHeader.exceptionClass).map { String(decoding: $0.value ?? [], as: UTF8.self) }
            }
            #expect(errorClass("r-1") == (stage == "validate" ? "SchemaViolation" : nil))
            #expect(errorClass("r-3") == "MalformedAvro")
            #expect(errorClass("r-4") == "UnknownSchemaId")
            // A dead letter keeps the original bytes.
            #expect(deads["r-4"]?.value == records[4])
        }
        _ = try await broker.terminate()
    }
}
