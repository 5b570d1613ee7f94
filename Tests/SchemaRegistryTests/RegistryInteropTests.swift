import Avro
import Foundation
import SchemaRegistry
import StreamCore
import TestSupport
import Testing

/// Python's confluent-kafka AvroSerializer / AvroDeserializer (PyPI, in the tests' .venv) against the
/// development registry, with the Swift client and codec on the other side: records serialized in
/// Python are read in Swift field for field, and the other way round.
@Suite("Registry interop with confluent-kafka's Avro serializers", .serialized)
struct RegistryInteropTests {
    /// Runs the registry helper with `arguments`, feeding `lines`; returns its output lines.
    static func run(_ arguments: [String], lines: [String]) async throws -> [String] {
        try await PythonScript.run("registry_interop.py", arguments, lines: lines)
    }

    static let schema = """
        {"type": "record", "name": "Order", "namespace": "shop", "fields": [
          {"name": "id", "type": "string"}, {"name": "qty", "type": "long"},
          {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}},
          {"name": "note", "type": ["null", "string"], "default": null},
          {"name": "lines", "type": {"type": "array", "items": "double"}}
        ]}
        """

    static let values = [
        #"{"id": "o-1", "qty": 3, "status": "PAID", "note": null, "lines": [1.5, 2.25]}"#,
        #"{"id": "o-2", "qty": -9007199254740993, "status": "NEW", "note": "gift ✓", "lines": []}"#,
    ]

    @Test("records confluent-kafka serialized are read in Swift by their schema id")
    func pythonSerializesSwiftReads() async throws {
        try await SchemaRegistryTests.withRegistry { url in
            let schemaFile = FileManager.default.temporaryDirectory.appendingPathComponent("order-\(UUID().uuidString).avsc")
            try Data(Self.schema.utf8).write(to: schemaFile)
            defer { try? FileManager.default.removeItem(at: schemaFile) }
            let records = try await Self.run(["serialize", url, "orders", schemaFile.path], lines: Self.values)
            #expect(records.count == Self.values.count)
            let client = SchemaRegistryClient(url: url)
            #expect(try await client.subjects() == ["orders-value"], "AvroSerializer registered <topic>-value")
            for (hex, want) in zip(records, Self.values) {
                let bytes = PythonScript.unhex(hex)
                let (id, payload) = try bytes.withUnsafeBytes { raw in
                    let (id, payload) = try ConfluentWireFormat.parse(raw)
                    return (id, Array(payload))
                }
                let schema = try AvroSchema(json: try await client.schema(id: id).text)
                let value = try AvroReader(schema: schema).decode(payload)
                #expect(value.jsonEquals(try JSONValue.parse(Array(want.utf8))), "\(value.jsonString)")
            }
        }
    }

    @Test("records the Swift side framed and encoded are read by confluent-kafka's AvroDeserializer")
    func swiftSerializesPythonReads() async throws {
        try await SchemaRegistryTests.withRegistry { url in
            let client = SchemaRegistryClient(url: url)
            let id = try await client.register(subject: "orders-value", schema: RegisteredSchema(text: Self.schema))
            let writer = AvroWriter(schema: try AvroSchema(json: Self.schema))
            let records = try Self.values.map { text in
                PythonScript.hex(ConfluentWireFormat.frame(schemaID: id, payload: try writer.encode(try JSONValue.parse(Array(text.utf8)))))
            }
            let read = try await Self.run(["deserialize", url, "orders"], lines: records)
            #expect(read.count == Self.values.count)
            for (got, want) in zip(read, Self.values) {
                #expect(try JSONValue.parse(Array(got.utf8)).jsonEquals(try JSONValue.parse(Array(want.utf8))), "\(got)")
            }
        }
    }
}
