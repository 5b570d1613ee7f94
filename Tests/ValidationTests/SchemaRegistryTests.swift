import Foundation
import StreamCore
import Testing
import Validation

@Suite struct SchemaRegistryTests {
    static let schemasDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("pipelines/schemas").path

    static func temporaryDirectory(_ files: [String: String]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-schemas-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return dir.path
    }

    @Test func demoSchemaAcceptsAGoodReadingAndReportsEveryViolationOfABadOne() throws {
        let registry = try SchemaRegistry.load(directory: Self.schemasDirectory, formatAssertion: true)
        let schema = try registry.schema(named: "iot-reading")
        let good = try JSONValue.parse(
            Array(
                #"{"sensor_id":"sensor-001","seq":1,"ts":"2026-11-25T09:00:00Z","temperature_c":21.5,"humidity_pct":40,"site":"lab"}"#.utf8)
        )
        #expect(schema.validate(good).isEmpty)

        let bad = try JSONValue.parse(
            Array(#"{"sensor_id":"s1","seq":-1,"ts":"yesterday","temperature_c":"hot","humidity_pct":40,"site":"","extra":1}"#.utf8))
        let paths = Set(schema.validate(bad).map(\.instancePath))
        #expect(paths == ["/sensor_id", "/seq", "/ts", "/temperature_c", "/site", "/extra"], "got \(schema.validate(bad))")
    }

    /// Schemas are compiled once, references on first use; a document registered later still
    /// changes what an already-followed `$ref` means (as it did when references resolved per record).
    @Test func aDocumentRegisteredAfterUseChangesWhatAReferenceMeans() throws {
        let registry = SchemaRegistry()
        try registry.register(.object(["type": "string"]), uri: "urn:test:defs")
        let schema = try JSONSchema(.object(["$ref": "urn:test:defs"]), baseURI: "urn:test:root", registry: registry)
        #expect(schema.isValid("text"))
        #expect(!schema.isValid(1))

        try registry.register(.object(["type": "integer"]), uri: "urn:test:defs")
        #expect(schema.isValid(1))
        #expect(!schema.isValid("text"))
    }

    @Test func missingRequiredPropertiesAreNamed() throws {
        let registry = try SchemaRegistry.load(directory: Self.schemasDirectory)
        let violations = try registry.schema(named: "iot-reading").validate(["sensor_id": "sensor-001"])
        let text = violations.map(\.description).joined(separator: "\n")
        for name in ["seq", "ts", "temperature_c", "humidity_pct"] { #expect(text.contains(name), "\(text)") }
    }

    @Test func formatIsAnAnnotationUnlessAssertionIsOn() throws {
        let dir = try Self.temporaryDirectory(["t.json": #"{"type":"string","format":"date"}"#])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try SchemaRegistry.load(directory: dir).schema(named: "t").isValid("not a date"))
        #expect(!(try SchemaRegistry.load(directory: dir, formatAssertion: true).schema(named: "t").isValid("not a date")))
    }

    @Test func referencesAcrossFilesResolveByRelativeURI() throws {
        let dir = try Self.temporaryDirectory([
            "order.json": #"{"type":"object","properties":{"customer":{"$ref":"customer.json"}},"required":["customer"]}"#,
            "customer.json": #"{"type":"object","properties":{"email":{"type":"string"}},"required":["email"]}"#,
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let order = try SchemaRegistry.load(directory: dir).schema(named: "order")
        #expect(order.isValid(["customer": ["email": "a@b.c"]]))
        let violations = order.validate(["customer": [:]])
        #expect(violations.map(\.instancePath) == ["/customer/email"], "a missing property is reported at its own path")
    }

    @Test func aDanglingReferenceFailsAtLoadNamingTheFile() throws {
        let dir = try Self.temporaryDirectory(["a.json": #"{"properties":{"x":{"$ref":"missing.json"}}}"#])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let error = #expect(throws: SchemaError.self) { try SchemaRegistry.load(directory: dir) }
        #expect(error?.description.contains("a.json") == true)
        #expect(error?.description.contains("missing.json") == true)
    }

    @Test func anInvalidPatternFailsAtLoad() throws {
        let dir = try Self.temporaryDirectory(["p.json": #"{"type":"string","pattern":"(unclosed"}"#])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let error = #expect(throws: SchemaError.self) { try SchemaRegistry.load(directory: dir) }
        #expect(error?.description.contains("(unclosed") == true)
    }

    @Test func anUnknownSchemaNameListsTheKnownOnes() throws {
        let registry = try SchemaRegistry.load(directory: Self.schemasDirectory)
        let error = #expect(throws: SchemaError.self) { try registry.schema(named: "iot-readings") }
        #expect(error?.description.contains("iot-reading") == true)
    }

    @Test func unparseableSchemaFileFailsWithItsPath() throws {
        let dir = try Self.temporaryDirectory(["broken.json": #"{"type": "#])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let error = #expect(throws: SchemaError.self) { try SchemaRegistry.load(directory: dir) }
        #expect(error?.description.contains("broken.json") == true)
    }

    @Test func deeplyRecursiveSchemasStopWithAViolationNotACrash() throws {
        let schema = try JSONSchema(["$ref": "#"])
        #expect(!schema.isValid(1))
    }
}
