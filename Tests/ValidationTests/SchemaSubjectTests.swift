import Config
import Foundation
import Processing
import StreamCore
import Testing
import Validation

@Suite struct SchemaCompatibilityTests {
    static func p(_ reader: JSONValue, _ writer: JSONValue) -> [String] { SchemaCompatibility.problems(reader: reader, writer: writer) }

    @Test func compatibleChangesHaveNoProblems() {
        // A closed old schema: old records have no "b", so a new optional "b" of any type is safe.
        let old: JSONValue = [
            "type": "object", "required": ["a"], "properties": ["a": ["type": "integer", "maximum": 10], "e": ["enum": ["x"]]],
            "additionalProperties": false,
        ]
        // Widening: integer → number, a higher maximum, an extra enum value, a new optional property.
        let new: JSONValue = [
            "type": "object", "required": ["a"],
            "properties": ["a": ["type": "number", "maximum": 20], "e": ["enum": ["x", "y"]], "b": ["type": "string"]],
        ]
        #expect(Self.p(new, old) == [])
        #expect(Self.p(old, old) == [])
        #expect(Self.p(true, old) == [])
    }

    @Test(
        arguments: [
            (["type": "integer"], ["type": "number"], "type number is no longer accepted"),
            (["type": "string"], [:], "old records may hold any type"),
            (["required": ["a"]], [:], "property 'a' became required"),
            (["enum": ["x"]], ["enum": ["x", "y"]], "enum value \"y\" was removed"),
            (["maximum": 5], ["maximum": 10], "maximum lowered from 10 to 5"),
            (["minLength": 3], ["minLength": 1], "minLength raised from 1 to 3"),
            (["maxItems": 3], [:], "maxItems 3 was added"),
            (["pattern": "^a"], [:], "pattern \"^a\" was added"),
            (
                ["additionalProperties": false, "properties": ["a": true]], ["properties": ["a": true, "b": true]],
                "property 'b' is no longer allowed"
            ),
            (["additionalProperties": false], [:], "additionalProperties is now false"),
            (
                ["properties": ["n": ["properties": ["m": ["type": "integer"]]]]],
                ["properties": ["n": ["properties": ["m": ["type": "string"]]]]], "/properties/n/properties/m: type string"
            ),
            (["items": ["type": "integer"]], ["items": ["type": "number"]], "/items: type number"),
            (["anyOf": [["type": "string"]]], [:], "'anyOf' was added; compatibility cannot be proven"),
            (["$ref": "#/$defs/x"], ["$ref": "#/$defs/y"], "'$ref' changed"),
            (false, [:], "refuses every value"),
            // An open old schema may already hold "b" with any value.
            (["properties": ["b": ["type": "string"]]], [:], "/properties/b: the type is now restricted"),
        ] as [(JSONValue, JSONValue, String)])
    func breakingChangesAreNamed(reader: JSONValue, writer: JSONValue, fragment: String) {
        let problems = Self.p(reader, writer)
        #expect(problems.contains { $0.contains(fragment) }, "\(problems)")
    }
}

@Suite struct SchemaSubjectTests {
    static let schemasDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("pipelines/schemas").path

    /// A schemas directory with one subject `s` made of the given files.
    static func subject(_ files: [String: String]) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("sf-subject-\(UUID().uuidString.prefix(8))")
        let dir = root.appendingPathComponent("s")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return root.path
    }

    static let v1 =
        #"{"type":"object","required":["id","name"],"properties":{"id":{"type":"integer"},"name":{"type":"string"}},"#
        + #""additionalProperties":false,"examples":[{"id":1,"name":"Ann"}]}"#
    static let v2 =
        #"{"type":"object","required":["id","full_name","tier"],"properties":{"id":{"type":"integer"},"full_name":{"type":"string"},"#
        + #""tier":{"enum":["free","paid"]}},"additionalProperties":false}"#

    @Test func theShippedOrdersSubjectIsConsistentAndUpcasts() throws {
        let subject = try SchemaSubject.load(name: "orders", schemasDirectory: Self.schemasDirectory)
        #expect(subject.latest == 2)
        #expect(subject.compatibility == .backwardTransitive)
        #expect(subject.compatibilityProblems() == [])
        let v1: JSONValue = ["schema_version": 1, "order_id": "o-1", "customer": "c-7", "amount": 12.5, "currency": "EUR"]
        let up = try subject.upcast(v1, from: 1, context: .none)
        #expect(up == ["schema_version": 2, "order_id": "o-1", "customer_id": "c-7", "amount": 12.5, "currency": "EUR", "channel": "web"])
        #expect(subject.schemas[2]?.isValid(up) == true)
        // Versions: the header wins, then the field, else default_version (1 for orders).
        #expect(subject.version(of: v1, header: "2") == 2)
        #expect(subject.version(of: v1, header: nil) == 1)
        #expect(subject.version(of: ["order_id": "x"], header: nil) == 1)
        #expect(subject.version(of: ["schema_version": "two"], header: nil) == nil)
        #expect(subject.version(of: [:], header: "0") == nil)
    }

    @Test func aRenameAndARequiredFieldNeedAMigration() throws {
        let bare = try Self.subject(["v1.json": Self.v1, "v2.json": Self.v2])
        let problems = try SchemaSubject.load(name: "s", schemasDirectory: bare).compatibilityProblems()
        let text = problems.joined(separator: "\n")
        #expect(text.contains("v1 → v2 (BACKWARD"))
        #expect(text.contains("property 'full_name' became required"))
        #expect(text.contains("property 'tier' became required"))
        #expect(text.contains("property 'name' is no longer allowed"))
        #expect(text.contains("example 0 upcast to v2 is invalid"))

        let migrated = try Self.subject([
            "v1.json": Self.v1, "v2.json": Self.v2,
            "subject.yaml": "migrations:\n  1:\n    - rename: { name: full_name }\n    - set: { tier: \"'free'\" }\n",
        ])
        #expect(try SchemaSubject.load(name: "s", schemasDirectory: migrated).compatibilityProblems() == [])
    }

    @Test func aMigrationThatComputesAWrongValueIsCaughtByTheExamples() throws {
        let dir = try Self.subject([
            "v1.json": Self.v1, "v2.json": Self.v2,
            "subject.yaml": "migrations:\n  1:\n    - rename: { name: full_name }\n    - set: { tier: \"'gold'\" }\n",
        ])
        let problems = try SchemaSubject.load(name: "s", schemasDirectory: dir).compatibilityProblems()
        #expect(problems.contains { $0.contains("example 0 upcast to v2 is invalid") && $0.contains("/tier") }, "\(problems)")
    }

    @Test func forwardAndFullAndTransitiveModes() throws {
        let a = #"{"properties":{"x":{"type":"integer"}}}"#
        let b = #"{"properties":{"x":{"type":"number"}}}"# // widened: backward yes, forward no
        let c = #"{"properties":{"x":{"type":"number","maximum":5}}}"# // narrows v2 but not… v1 had no maximum
        #expect(
            try SchemaSubject.load(name: "s", schemasDirectory: Self.subject(["v1.json": a, "v2.json": b])).compatibilityProblems() == [])
        let forward = try SchemaSubject.load(
            name: "s", schemasDirectory: Self.subject(["v1.json": a, "v2.json": b, "subject.yaml": "compatibility: FORWARD"]))
        #expect(
            forward.compatibilityProblems().contains {
                $0.contains("v2 → v1 (FORWARD") && $0.contains("type number is no longer accepted")
            }
        )
        let full = try SchemaSubject.load(
            name: "s", schemasDirectory: Self.subject(["v1.json": a, "v2.json": b, "subject.yaml": "compatibility: FULL"]))
        #expect(!full.compatibilityProblems().isEmpty)
        let none = try SchemaSubject.load(
            name: "s", schemasDirectory: Self.subject(["v1.json": a, "v2.json": b, "subject.yaml": "compatibility: NONE"]))
        #expect(none.compatibilityProblems() == [])
        // v3 adds a maximum: breaks v2 → v3; the transitive mode also reports v1 → v3.
        let plain = try SchemaSubject.load(name: "s", schemasDirectory: Self.subject(["v1.json": a, "v2.json": b, "v3.json": c]))
        #expect(plain.compatibilityProblems().count == 1)
        let transitive = try SchemaSubject.load(
            name: "s",
            schemasDirectory: Self.subject(["v1.json": a, "v2.json": b, "v3.json": c, "subject.yaml": "compatibility: BACKWARD_TRANSITIVE"])
        )
        #expect(transitive.compatibilityProblems().count == 2)
        #expect(transitive.compatibilityProblems().contains { $0.hasPrefix("v1 → v3") })
    }

    @Test(arguments: [
        (["v1.json": "{}", "v3.json": "{}"], "v2.json is missing"),
        (["v1.json": "{}", "latest.json": "{}"], "named v1.json"),
        (["v1.json": "{}", "v2.json": "{}", "subject.yaml": "migrations:\n  2: []"], "keyed by the version they start from"),
        (
            ["v1.json": "{}", "v2.json": "{}", "subject.yaml": "migrations:\n  1:\n    - filter: \"true\""],
            "may only set, rename, drop and keep"
        ),
        (["v1.json": "{}", "v2.json": "{}", "subject.yaml": "compatibility: SIDEWAYS"], "compatibility"),
        (["v1.json": "{}", "subject.yaml": "versoin_field: v"], "version_field"),
        (["v1.json": "{"], "v1.json"),
        (["subject.yaml": ""], "no version files"),
    ])
    func badSubjectsFailAtLoadNamingTheProblem(files: [String: String], fragment: String) throws {
        let dir = try Self.subject(files)
        let error = #expect(throws: ConfigError.self) { try SchemaSubject.load(name: "s", schemasDirectory: dir) }
        #expect(error?.description.contains(fragment) == true, "\(error?.description ?? "loaded")")
    }
}
