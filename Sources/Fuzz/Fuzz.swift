// libFuzzer targets for everything that parses outside input. Built only when STREAMFIRST_FUZZ=1
// (see Package.swift and `make fuzz`), with `-sanitize=fuzzer,address`; libFuzzer supplies `main`.
// The target is chosen by the FUZZ_TARGET environment variable:
//   json        JSONValue.parse (and re-serialisation must parse back to an equal value), and
//               JSONValue.isCertainlyWellFormed never accepting what the parser refuses
//   schema      the input as a JSON Schema, compiled and used to validate itself
//   expression  Expression parse + evaluation against a fixed record
//   csv         CSV.parse and type inference
//   config      pipeline-file YAML: ConfigNode.parse, interpolation, every typed accessor
//   avro        Avro binary data of a fixed rich schema (recursive types, unions, decimals): what
//               decodes must encode back to bytes that decode to the same value
//   avro-schema the input as an Avro schema: parsed, resolved against itself and against a fixed
//               schema, and a few bytes decoded with it
// A crash, an assertion failure or a sanitizer report is a finding; findings become regression
// tests in Tests/*/FuzzRegressionTests.swift.
import Avro
import CFuzzDriver
import Config
import Foundation
import Processing
import StreamCore
import Validation

enum FuzzTarget: String {
    case json, schema, expression, csv, config
    case avro
    case avroSchema = "avro-schema"
}

// Parsed per input, not held in a global: LeakSanitizer cannot follow Swift's tagged enum payload
// pointers out of a global, and reports the schema's nodes as leaked at exit.
func fixedAvroSchema() -> AvroSchema? {
    try? AvroSchema(json: fixedAvroSchemaText)
}

let fixedAvroSchemaText = """
    {"type": "record", "name": "R", "fields": [
      {"name": "s", "type": "string"}, {"name": "l", "type": "long"}, {"name": "d", "type": "double"},
      {"name": "b", "type": "bytes"}, {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
      {"name": "f", "type": {"type": "fixed", "name": "F", "size": 3}},
      {"name": "m", "type": {"type": "map", "values": ["null", "int", "float"]}},
      {"name": "a", "type": {"type": "array", "items": "R"}},
      {"name": "n", "type": ["null", "R"]},
      {"name": "p", "type": {"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 4}}
    ]}
    """

let target = FuzzTarget(rawValue: ProcessInfo.processInfo.environment["FUZZ_TARGET"] ?? "json") ?? .json

let fixedRecord: JSONValue = ["a": 1, "b": "text", "c": [1.5, 2, nil], "d": ["e": true], "n": nil]

// SwiftPM links an executable's entry as `<Target>_main`; hand control to libFuzzer's driver.
@_cdecl("Fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v, { data, size in fuzz(data, size) })
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    switch target {
    case .json:
        // The harness's own invariant checks: a trap is how libFuzzer records a finding. This target
        // is built only with STREAMFIRST_FUZZ=1 and ships in no product, so no input, configuration
        // or broker data reaches these traps.
        // The scanner may only say yes where the parser does (the forwarding fast path relies on it).
        let certain = bytes.withUnsafeBytes { JSONValue.isCertainlyWellFormed($0) }
        let parsed = try? JSONValue.parse(bytes)
        if certain && parsed == nil {
            fatalError("the scanner accepted what the parser refuses: \(String(decoding: bytes, as: UTF8.self))")
        }
        if let value = parsed {
            let again = value.serialized()
            guard let back = try? JSONValue.parse(again), back.jsonEquals(value) || value.containsNaN else {
                fatalError("serialised JSON does not parse back to the same value: \(String(decoding: again, as: UTF8.self))")
            }
        }
    case .schema:
        if let doc = try? JSONValue.parse(bytes), let schema = try? JSONSchema(doc) {
            _ = schema.validate(doc)
            _ = schema.validate(fixedRecord)
        }
    case .expression:
        let text = String(decoding: bytes, as: UTF8.self)
        if let e = try? Expression(text) {
            _ = try? e.evaluate(fixedRecord, context: RecordContext(id: "x", key: "k", eventTimeMs: 1, topic: "t", partition: 0, offset: 0))
            _ = e.fieldPath
        }
    case .csv:
        let text = String(decoding: bytes, as: UTF8.self)
        if let rows = try? CSV.parse(text) {
            for row in rows { for field in row { _ = CSV.infer(field) } }
        }
    case .avro:
        // The harness's invariant: a trap records a finding (see the json target).
        guard let schema = fixedAvroSchema() else { fatalError("the fixed Avro schema does not parse") }
        if let value = try? AvroReader(schema: schema).decode(bytes) {
            // NaN is not equal to itself: a value holding one only has to decode again.
            guard let again = try? AvroWriter(schema: schema).encode(value), let back = try? AvroReader(schema: schema).decode(again),
                back == value || value.containsNaN
            else {
                fatalError("decoded Avro does not encode back to the same value: \(value.jsonString.prefix(200))")
            }
        }
    case .avroSchema:
        if let doc = try? JSONValue.parse(bytes), let schema = try? AvroSchema(doc) {
            let reader = AvroReader(schema: schema)
            _ = try? reader.decode([0x02, 0x04, 0x00])
            if let fixed = fixedAvroSchema() {
                _ = try? AvroReader(writer: schema, reader: fixed)
                _ = try? AvroReader(writer: fixed, reader: schema)
            }
        }
    case .config:
        let text = String(decoding: bytes, as: UTF8.self)
        _ = try? Interpolation.expand(text, environment: ["A": "1", "B": "x"])
        if let node = try? ConfigNode.parse(yaml: text, source: ConfigSource(file: "fuzz.yaml", environment: ["A": "1"])) {
            walk(node, depth: 0)
        }
    }
    return 0
}

/// Every accessor on every node: none may crash, whatever the YAML.
func walk(_ node: ConfigNode, depth: Int) {
    guard depth < 64 else { return }
    _ = try? node.string()
    _ = try? node.int()
    _ = try? node.double()
    _ = try? node.bool()
    _ = try? node.durationMilliseconds()
    _ = try? node.stringList()
    _ = try? node.stringMap()
    if let m = try? node.mapping() {
        for k in m.keys { if let child = m.optional(k) { walk(child, depth: depth + 1) } }
        _ = try? m.finish()
    }
    if let s = try? node.sequence() { for child in s { walk(child, depth: depth + 1) } }
}

extension JSONValue {
    /// NaN never equals itself; the parser cannot produce one, but be explicit.
    var containsNaN: Bool {
        switch self {
        case .number(let d): return d.isNaN
        case .array(let a): return a.contains { $0.containsNaN }
        case .object(let o): return o.values.contains { $0.containsNaN }
        default: return false
        }
    }
}
