import Avro
import Foundation
import StreamCore
import TestSupport
import Testing

/// The Swift codec against fastavro, an independent implementation (PyPI, in the tests' .venv):
/// what one writes, the other reads field for field, with one schema and through resolution.
/// `make test` installs fastavro; without it these tests fail, saying how to get it.
@Suite("Avro interop with fastavro", .serialized)
struct FastavroInteropTests {
    /// Runs the fastavro helper in `mode` with `schema`, feeding `lines`; returns its output lines.
    static func fastavro(_ mode: String, schema: String, lines: [String]) async throws -> [String] {
        let schemaFile = FileManager.default.temporaryDirectory.appendingPathComponent("avro-interop-\(UUID().uuidString).avsc")
        try Data(schema.utf8).write(to: schemaFile)
        defer { try? FileManager.default.removeItem(at: schemaFile) }
        return try await PythonScript.run("avro_interop.py", [mode, schemaFile.path], lines: lines)
    }

    static func hex(_ bytes: [UInt8]) -> String { PythonScript.hex(bytes) }
    static func unhex(_ text: String) -> [UInt8] { PythonScript.unhex(text) }

    /// The rich record of AvroCodecTests and variants that take the other union branches.
    static func values() throws -> [JSONValue] {
        let base = try AvroCodecTests.json(AvroCodecTests.richValue)
        guard case .object(let o) = base else { return [base] }
        var other = o
        other["note"] = .string("grüße ✓")
        other["where"] = .null
        other["price"] = .string("1234567.89")
        other["tags"] = .array([])
        other["attrs"] = .object([:])
        other["seq"] = .integer(Int64.min)
        other["small"] = .integer(Int64(Int32.max))
        other["status"] = .string("FAIL")
        other["raw"] = .string("")
        return [base, .object(other)]
    }

    @Test("fastavro reads what the Swift writer wrote, field for field")
    func swiftWritesFastavroReads() async throws {
        let schema = try AvroSchema(json: AvroCodecTests.rich)
        let values = try Self.values()
        let lines = try values.map { Self.hex(try AvroWriter(schema: schema).encode($0)) }
        let read = try await Self.fastavro("read", schema: AvroCodecTests.rich, lines: lines)
        #expect(read.count == values.count)
        for (got, want) in zip(read, values) {
            let value = try JSONValue.parse(Array(got.utf8))
            #expect(value.jsonEquals(want), "fastavro read \(got)")
        }
    }

    @Test("the Swift reader reads what fastavro wrote, byte for byte the same encoding")
    func fastavroWritesSwiftReads() async throws {
        let schema = try AvroSchema(json: AvroCodecTests.rich)
        let values = try Self.values()
        let written = try await Self.fastavro("write", schema: AvroCodecTests.rich, lines: values.map(\.jsonString))
        #expect(written.count == values.count)
        for (line, want) in zip(written, values) {
            let bytes = Self.unhex(line)
            let value = try AvroReader(schema: schema).decode(bytes)
            #expect(value.jsonEquals(want), "Swift read \(value.jsonString)")
            // The values went to fastavro with their keys sorted, as the Swift writer orders map keys: the same bytes.
            #expect(Self.hex(try AvroWriter(schema: schema).encode(want)) == line, "the same bytes as fastavro")
        }
    }

    @Test("records fastavro wrote with an older schema are read with the newer one")
    func resolutionAgainstFastavrosWriter() async throws {
        let values = [
            #"{"name": "Ada", "age": 36, "legacy": ["x"], "color": "PURPLE", "score": 7}"#,
            #"{"name": "Bo", "age": -1, "legacy": [], "color": "GREEN", "score": null}"#,
        ]
        let written = try await Self.fastavro("write", schema: AvroCodecTests.v1, lines: values)
        let reader = try AvroReader(writer: try AvroSchema(json: AvroCodecTests.v1), reader: try AvroSchema(json: AvroCodecTests.v2))
        let got = try written.map { try reader.decode(Self.unhex($0)) }
        #expect(
            got[0].jsonEquals(
                try AvroCodecTests.json(#"{"fullName": "Ada", "age": 36, "email": null, "country": "DE", "color": "RED", "score": 7.0}"#)))
        #expect(
            got[1].jsonEquals(
                try AvroCodecTests.json(#"{"fullName": "Bo", "age": -1, "email": null, "country": "DE", "color": "GREEN", "score": null}"#))
        )
    }
}
