import Avro
import Foundation
import StreamCore
import Testing

/// The Swift codec against fastavro, an independent implementation (PyPI, in the tests' .venv):
/// what one writes, the other reads field for field, with one schema and through resolution.
/// `make test` installs fastavro; without it these tests fail, saying how to get it.
@Suite("Avro interop with fastavro", .serialized)
struct FastavroInteropTests {
    static func python() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let candidates = [env["STREAMFIRST_PYTHON"], FileManager.default.currentDirectoryPath + "/.venv/bin/python"].compactMap { $0 }
        guard let p = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw InteropError("no Python with fastavro: run `make test` (it creates .venv) or set STREAMFIRST_PYTHON")
        }
        return p
    }

    struct InteropError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Interop/avro_interop.py").path
    }

    /// Runs the interop script in `mode` with `schema`, feeding `lines`; returns its output lines.
    static func fastavro(_ mode: String, schema: String, lines: [String]) throws -> [String] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("avro-interop-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let schemaFile = dir.appendingPathComponent("schema.avsc")
        let input = dir.appendingPathComponent("input.txt")
        try Data(schema.utf8).write(to: schemaFile)
        try Data(lines.joined(separator: "\n").utf8).write(to: input)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try python())
        process.arguments = [script, mode, schemaFile.path]
        process.standardInput = try FileHandle(forReadingFrom: input)
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Small outputs: read to the end, then wait.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw InteropError("avro_interop.py \(mode) failed (\(process.terminationStatus)): \(String(decoding: stderr, as: UTF8.self))")
        }
        return String(decoding: stdout, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    static func unhex(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = text.utf8.makeIterator()
        while let hi = it.next(), let lo = it.next() {
            func v(_ c: UInt8) -> UInt8 { c <= UInt8(ascii: "9") ? c - UInt8(ascii: "0") : c - UInt8(ascii: "a") + 10 }
            out.append(v(hi) << 4 | v(lo))
        }
        return out
    }

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
    func swiftWritesFastavroReads() throws {
        let schema = try AvroSchema(json: AvroCodecTests.rich)
        let values = try Self.values()
        let lines = try values.map { Self.hex(try AvroWriter(schema: schema).encode($0)) }
        let read = try Self.fastavro("read", schema: AvroCodecTests.rich, lines: lines)
        #expect(read.count == values.count)
        for (got, want) in zip(read, values) {
            let value = try JSONValue.parse(Array(got.utf8))
            #expect(value.jsonEquals(want), "fastavro read \(got)")
        }
    }

    @Test("the Swift reader reads what fastavro wrote, byte for byte the same encoding")
    func fastavroWritesSwiftReads() throws {
        let schema = try AvroSchema(json: AvroCodecTests.rich)
        let values = try Self.values()
        let written = try Self.fastavro("write", schema: AvroCodecTests.rich, lines: values.map(\.jsonString))
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
    func resolutionAgainstFastavrosWriter() throws {
        let values = [
            #"{"name": "Ada", "age": 36, "legacy": ["x"], "color": "PURPLE", "score": 7}"#,
            #"{"name": "Bo", "age": -1, "legacy": [], "color": "GREEN", "score": null}"#,
        ]
        let written = try Self.fastavro("write", schema: AvroCodecTests.v1, lines: values)
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
