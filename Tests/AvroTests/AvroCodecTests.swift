import Avro
import Foundation
import StreamCore
import Testing

/// The Avro codec against the specification's examples, round trips, schema resolution and hostile
/// input.
@Suite struct AvroCodecTests {
    static func schema(_ text: String) throws -> AvroSchema { try AvroSchema(json: text) }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined(separator: " ") }

    static func json(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

    /// The specification's zig-zag examples and its string example.
    @Test func primitiveEncodingsAreTheSpecifications() throws {
        let long = AvroWriter(schema: try Self.schema(#""long""#))
        let cases: [(Int64, String)] = [(0, "00"), (-1, "01"), (1, "02"), (-2, "03"), (2, "04"), (-64, "7f"), (64, "80 01")]
        for (v, want) in cases {
            #expect(Self.hex(try long.encode(.integer(v))) == want, "\(v)")
            #expect(try AvroReader(schema: long.schema).decode(try long.encode(.integer(v))) == .integer(v))
        }
        #expect(Self.hex(try AvroWriter(schema: try Self.schema(#""string""#)).encode(.string("foo"))) == "06 66 6f 6f")
        let extremes: [Int64] = [Int64.max, Int64.min, Int64(Int32.max) + 1]
        for v in extremes {
            #expect(try AvroReader(schema: long.schema).decode(try long.encode(.integer(v))) == .integer(v))
        }
        #expect(throws: AvroEncodingError.self) { try AvroWriter(schema: try Self.schema(#""int""#)).encode(.integer(1 << 31)) }
    }

    static let rich = """
        {"type": "record", "name": "Reading", "namespace": "iot", "fields": [
          {"name": "id", "type": "string"},
          {"name": "seq", "type": "long"},
          {"name": "small", "type": "int"},
          {"name": "ok", "type": "boolean"},
          {"name": "t", "type": "double"},
          {"name": "f", "type": "float"},
          {"name": "raw", "type": "bytes"},
          {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["OK", "LOW", "FAIL"]}},
          {"name": "mac", "type": {"type": "fixed", "name": "Mac", "size": 6}},
          {"name": "tags", "type": {"type": "array", "items": "string"}},
          {"name": "attrs", "type": {"type": "map", "values": "long"}},
          {"name": "note", "type": ["null", "string"], "default": null},
          {"name": "where", "type": ["null", {"type": "record", "name": "Place", "fields": [
            {"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}]}]},
          {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
          {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
          {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
          {"name": "status2", "type": "Status"}
        ]}
        """

    static let richValue = """
        {"id": "s-1", "seq": 123456789012, "small": -5, "ok": true, "t": 21.5, "f": 0.5,
         "raw": "\\u0000\\u00ff\\u007f", "status": "LOW", "mac": "abcdef", "tags": ["a", "b"],
         "attrs": {"x": 1, "y": -2}, "note": null, "where": {"lat": 52.5, "lon": 13.4},
         "price": "-12.30", "at": 1767225600000, "uid": "0af76519-16cd-43dd-8448-eb211c80319c", "status2": "OK"}
        """

    @Test func aRichRecordRoundTrips() throws {
        let schema = try Self.schema(Self.rich)
        let value = try Self.json(Self.richValue)
        let bytes = try AvroWriter(schema: schema).encode(value)
        #expect(try AvroReader(schema: schema).decode(bytes) == value)
        // The other union branches too.
        var other = value
        if case .object(var o) = other {
            o["note"] = .string("hi")
            o["where"] = .null
            o["price"] = .string("0.05")
            other = .object(o)
        }
        #expect(try AvroReader(schema: schema).decode(try AvroWriter(schema: schema).encode(other)) == other)
    }

    /// A union of a decimal and a string: a decimal string takes the decimal branch, any other string
    /// the string branch (not an error from the decimal).
    @Test func aUnionOfDecimalAndStringChoosesByContent() throws {
        let schema = try Self.schema(#"[{"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}, "string"]"#)
        let writer = AvroWriter(schema: schema)
        let reader = AvroReader(schema: schema)
        #expect(try writer.encode(.string("12.50")).first == 0x00, "branch 0")
        #expect(try reader.decode(try writer.encode(.string("12.50"))) == .string("12.50"))
        for text in ["hello.world", "1.234", "n/a"] {
            let bytes = try writer.encode(.string(text))
            #expect(bytes.first == 0x02, "\(text): branch 1")
            #expect(try reader.decode(bytes) == .string(text))
        }
    }

    @Test func decimalsAreExactStrings() throws {
        let bytesSchema = try Self.schema(#"{"type": "bytes", "logicalType": "decimal", "precision": 40, "scale": 3}"#)
        for text in ["0.000", "1.000", "-1.000", "-0.128", "0.127", "123456789012345678901234567890.123", "-99999999999999999999.999"] {
            let bytes = try AvroWriter(schema: bytesSchema).encode(.string(text))
            #expect(try AvroReader(schema: bytesSchema).decode(bytes) == .string(text), "\(text)")
        }
        // -1.28 at scale 2 is the unscaled -128: one byte, 0x80, after its length 1 (02).
        let two = try Self.schema(#"{"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}"#)
        #expect(Self.hex(try AvroWriter(schema: two).encode(.string("-1.28"))) == "02 80")
        #expect(Self.hex(try AvroWriter(schema: two).encode(.string("1.5"))) == "04 00 96", "150 needs a sign byte")
        #expect(throws: AvroEncodingError.self) { try AvroWriter(schema: two).encode(.string("1.234")) } // rounding
        #expect(try AvroReader(schema: two).decode(try AvroWriter(schema: two).encode(.number(2.5))) == .string("2.50"))
        let fixed = try Self.schema(
            #"{"type": {"type": "fixed", "name": "D", "size": 4}, "logicalType": "decimal", "precision": 9, "scale": 1}"#)
        #expect(Self.hex(try AvroWriter(schema: fixed).encode(.string("-0.1"))) == "ff ff ff ff")
        #expect(try AvroReader(schema: fixed).decode([0xFF, 0xFF, 0xFF, 0xFF]) == .string("-0.1"))
    }

    // MARK: Schema resolution

    static let v1 = """
        {"type": "record", "name": "User", "fields": [
          {"name": "name", "type": "string"},
          {"name": "age", "type": "int"},
          {"name": "legacy", "type": {"type": "array", "items": "string"}},
          {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "PURPLE"]}},
          {"name": "score", "type": ["null", "int"]}
        ]}
        """

    static let v2 = """
        {"type": "record", "name": "User", "fields": [
          {"name": "fullName", "type": "string", "aliases": ["name"]},
          {"name": "age", "type": "long"},
          {"name": "email", "type": ["null", "string"], "default": null},
          {"name": "country", "type": "string", "default": "DE"},
          {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"], "default": "RED"}},
          {"name": "score", "type": ["null", "double"]}
        ]}
        """

    @Test func aRecordWrittenWithAnOlderSchemaIsReadWithTheNewer() throws {
        let writer = try Self.schema(Self.v1)
        let reader = try Self.schema(Self.v2)
        let written = try AvroWriter(schema: writer).encode(
            try Self.json(#"{"name": "Ada", "age": 36, "legacy": ["x", "y"], "color": "PURPLE", "score": 7}"#))
        let read = try AvroReader(writer: writer, reader: reader).decode(written)
        #expect(
            read
                == (try Self.json(
                    #"{"fullName": "Ada", "age": 36, "email": null, "country": "DE", "color": "RED", "score": 7.0}"#)))
        #expect(read["score"] == .number(7), "int promoted to double inside a union")
        #expect(read["legacy"] == nil, "a field the reader dropped is skipped")
    }

    @Test func resolutionErrorsAreNamed() throws {
        let writer = try Self.schema(#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}"#)
        let needsB = try Self.schema(#"{"type": "record", "name": "R", "fields": [{"name": "b", "type": "int"}]}"#)
        #expect {
            _ = try AvroReader(writer: writer, reader: needsB)
        } throws: { error in
            "\(error)".contains("'b' is not in the writer's record and has no default")
        }
        let otherName = try Self.schema(#"{"type": "record", "name": "S", "fields": [{"name": "a", "type": "int"}]}"#)
        #expect(throws: AvroSchemaError.self) { _ = try AvroReader(writer: writer, reader: otherName) }
        #expect(throws: AvroSchemaError.self) {
            _ = try AvroReader(writer: try Self.schema(#""long""#), reader: try Self.schema(#""int""#))
        }
        // An enum symbol the reader lacks, without a reader default: fails for that record only.
        let w = try Self.schema(#"{"type": "enum", "name": "E", "symbols": ["A", "B"]}"#)
        let r = try Self.schema(#"{"type": "enum", "name": "E", "symbols": ["A"]}"#)
        let resolved = try AvroReader(writer: w, reader: r)
        #expect(try resolved.decode([0x00]) == .string("A"))
        #expect(throws: AvroDecodingError.self) { try resolved.decode([0x02]) }
    }

    @Test func recursiveTypesResolve() throws {
        let list =
            #"{"type": "record", "name": "Node", "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}"#
        let schema = try Self.schema(list)
        let value = try Self.json(#"{"v": 1, "next": {"v": 2, "next": {"v": 3, "next": null}}}"#)
        let bytes = try AvroWriter(schema: schema).encode(value)
        #expect(try AvroReader(schema: schema).decode(bytes) == value)
        let widened = try Self.schema(list.replacingOccurrences(of: #""type": "int""#, with: #""type": "long""#))
        #expect(try AvroReader(writer: schema, reader: widened).decode(bytes) == value)
    }

    // MARK: Hostile input

    @Test func badSchemasAreRefusedWithTheirPath() {
        func message(_ text: String) -> String {
            do {
                _ = try AvroSchema(json: text)
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(message(#""Nope""#).contains("unknown type 'Nope'"))
        #expect(
            message(#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]}"#).contains(
                "appears twice"))
        #expect(message(#"{"type": "record", "name": "9R", "fields": []}"#).contains("not a valid Avro name"))
        #expect(message(#"["int", "int"]"#).contains("two branches of type int"))
        #expect(message(#"["null", ["int"]]"#).contains("may not directly contain a union"))
        #expect(message(#"{"type": "enum", "name": "E", "symbols": ["A"], "default": "B"}"#).contains("not one of the symbols"))
        #expect(message(#"{"type": "fixed", "name": "F", "size": -1}"#).contains("size"))
        #expect(
            message(#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "R2"}]}"#).hasPrefix(
                "/fields/1/type"))
        var deep = #""int""#
        for _ in 0..<100 { deep = #"{"type": "array", "items": \#(deep)}"# }
        #expect(message(deep).contains("nested deeper than"))
    }

    @Test func hostileBytesAreErrorsNotCrashes() throws {
        let schema = try Self.schema(Self.rich)
        let reader = AvroReader(schema: schema)
        let good = try AvroWriter(schema: schema).encode(try Self.json(Self.richValue))
        // Every truncation fails cleanly; so does a trailing byte.
        for n in 0..<good.count {
            #expect(throws: AvroDecodingError.self) { try reader.decode(Array(good.prefix(n))) }
        }
        #expect(throws: AvroDecodingError.self) { try reader.decode(good + [0]) }
        let s = AvroReader(schema: try Self.schema(#""string""#))
        #expect(throws: AvroDecodingError.self) { try s.decode([0xFE, 0xFF, 0xFF, 0xFF, 0x0F]) } // a huge length
        #expect(throws: AvroDecodingError.self) { try s.decode([0x01]) } // a negative length
        #expect(throws: AvroDecodingError.self) { try s.decode([0x02, 0xC3]) } // not UTF-8
        let l = AvroReader(schema: try Self.schema(#""long""#))
        #expect(throws: AvroDecodingError.self) { try l.decode([UInt8](repeating: 0xFF, count: 11)) }
        // An array of two billion nulls in six bytes.
        let nulls = AvroReader(schema: try Self.schema(#"{"type": "array", "items": "null"}"#))
        #expect(throws: AvroDecodingError.self) { try nulls.decode([0xFE, 0xFF, 0xFF, 0xFF, 0x0F, 0x00]) }
        // A linked list deeper than the nesting bound.
        let list = AvroReader(
            schema: try Self.schema(#"{"type": "record", "name": "N", "fields": [{"name": "next", "type": ["null", "N"]}]}"#))
        #expect(throws: AvroDecodingError.self) { try list.decode([UInt8](repeating: 0x02, count: 1000) + [0x00]) }
        let union = AvroReader(schema: try Self.schema(#"["null", "int"]"#))
        #expect(throws: AvroDecodingError.self) { try union.decode([0x04]) }
        #expect(throws: AvroDecodingError.self) { try AvroReader(schema: try Self.schema(#""boolean""#)).decode([0x02]) }
    }

    /// Found by the `avro` fuzz target: a double whose bits are a NaN decodes to NaN and is written
    /// back as a NaN (JSON text shows it as null).
    @Test func aNaNRoundTripsAsANaN() throws {
        let schema = try Self.schema(
            #"{"type": "record", "name": "R", "fields": [{"name": "d", "type": "double"}, {"name": "f", "type": "float"}]}"#)
        let bytes: [UInt8] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF8, 0x7F, 0x00, 0x00, 0xC0, 0xFF]
        let value = try AvroReader(schema: schema).decode(bytes)
        guard case .number(let d)? = value["d"], case .number(let f)? = value["f"] else {
            Issue.record("expected two numbers, got \(value)")
            return
        }
        #expect(d.isNaN && f.isNaN)
        let back = try AvroReader(schema: schema).decode(try AvroWriter(schema: schema).encode(value))
        #expect(back["d"]?.doubleValue?.isNaN == true && back["f"]?.doubleValue?.isNaN == true)
    }

    /// Found by the `avro` fuzz target (CI): a map value of union [null, int, float] whose int branch
    /// held a 56-bit number decoded as an integer, and came back from a round trip as a float. An int
    /// beyond 32 bits is invalid data, and is refused.
    @Test func anIntBeyond32BitsIsInvalidData() throws {
        let schema = try Self.schema(
            """
            {"type": "record", "name": "R", "fields": [
              {"name": "s", "type": "string"}, {"name": "l", "type": "long"}, {"name": "d", "type": "double"},
              {"name": "b", "type": "bytes"}, {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
              {"name": "f", "type": {"type": "fixed", "name": "F", "size": 3}},
              {"name": "m", "type": {"type": "map", "values": ["null", "int", "float"]}},
              {"name": "a", "type": {"type": "array", "items": "R"}},
              {"name": "n", "type": ["null", "R"]},
              {"name": "p", "type": {"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 4}}
            ]}
            """)
        let bytes: [UInt8] = [
            0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x34, 0x02, 0x06, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x01, 0x02, 0x02,
            0x49, 0x6e, 0x74, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x12, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
            0x02, 0x02, 0x02, 0x02, 0x02, 0x00, 0x00, 0x00, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x12, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
            0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x12, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x3f,
        ]
        #expect {
            _ = try AvroReader(schema: schema).decode(bytes)
        } throws: { error in
            "\(error)".contains("an int out of 32-bit range")
        }
        let int = AvroReader(schema: try Self.schema(#""int""#))
        #expect(throws: AvroDecodingError.self) { try int.decode([0x80, 0x80, 0x80, 0x80, 0x10]) } // 2^31
        #expect(try int.decode([0xFE, 0xFF, 0xFF, 0xFF, 0x0F]) == .integer(Int64(Int32.max)))
        // Read as a long through resolution, it is still the writer's int: refused too.
        let widened = try AvroReader(writer: try Self.schema(#""int""#), reader: try Self.schema(#""long""#))
        #expect(throws: AvroDecodingError.self) { try widened.decode([0x80, 0x80, 0x80, 0x80, 0x10]) }
    }

    /// Seeded random bytes through the rich schema: never a crash, and whatever decodes re-encodes
    /// to the same bytes.
    @Test func randomBytesNeverCrash() throws {
        let schema = try Self.schema(Self.rich)
        let reader = AvroReader(schema: schema)
        let writer = AvroWriter(schema: schema)
        let good = try writer.encode(try Self.json(Self.richValue))
        var rng = SplitMix64(seed: 2026)
        var decoded = 0
        for _ in 0..<20_000 {
            var bytes = good
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let i = Int(rng.next() % UInt64(bytes.count))
                bytes[i] = UInt8(truncatingIfNeeded: rng.next())
            }
            if rng.next() % 4 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1)))) }
            guard let value = try? reader.decode(bytes) else { continue }
            decoded += 1
            let again = try writer.encode(value)
            let back = try reader.decode(again)
            #expect(back == value || value.containsNaN)
        }
        #expect(decoded > 0, "some mutations still decode")
    }
}

extension JSONValue {
    /// NaN never equals itself: a value holding one compares unequal to its own copy.
    fileprivate var containsNaN: Bool {
        switch self {
        case .number(let d): return d.isNaN
        case .array(let a): return a.contains { $0.containsNaN }
        case .object(let o): return o.values.contains { $0.containsNaN }
        default: return false
        }
    }
}
