import Config
import StreamCore
import Testing

@Suite struct JSONValueTests {
    @Test func parsesEveryTypeAndKeepsIntegersApart() throws {
        let v = try JSONValue.parse(#"{"a":1,"b":1.5,"c":true,"d":null,"e":"x\u00e9\n","f":[1,2],"g":-0,"h":1e2}"#)
        #expect(v["a"] == .integer(1))
        #expect(v["b"] == .number(1.5))
        #expect(v["c"] == .bool(true))
        #expect(v["d"] == .null)
        #expect(v["e"] == .string("xé\n"))
        #expect(v["f"] == .array([1, 2]))
        #expect(v["h"] == .number(100))
        #expect(v["h"]?.typeName == "integer")
    }

    @Test func roundTripsWithSortedKeys() throws {
        let v = try JSONValue.parse(#"{"z":[1,{"b":"\"q\"","a":null}],"a":2.25}"#)
        #expect(v.jsonString == #"{"a":2.25,"z":[1,{"a":null,"b":"\"q\""}]}"#)
        #expect(try JSONValue.parse(v.jsonString) == v)
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\" 1}", "01", "1.", "tru", "\"\\x\"", "\"abc", "[1] x", "{\"a\":1,}", "\"\u{01}\"",
        "\"\\ud800\"", "nul", "-", "1e", "[",
    ])
    func rejectsMalformedInput(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }

    /// Objects are gathered on one member stack and built at `}`: nested and sibling objects keep
    /// their own members, however many, and a repeated key is found at any depth with its offset.
    @Test func nestedObjectsKeepTheirOwnMembersAndDuplicatesAreFoundAtAnyDepth() throws {
        let wide = (0..<40).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
        let v = try JSONValue.parse(#"{"a":{"b":1,"c":{"d":2},"e":[{"f":3},{}]},"# + "\"w\":{\(wide)},\"z\":4}")
        #expect(v["a"]?["b"] == .integer(1))
        #expect(v["a"]?["c"] == .object(["d": 2]))
        #expect(v["a"]?["e"] == .array([.object(["f": 3]), .object([:])]))
        #expect(v["a"]?.objectValue?.count == 3)
        #expect(v["w"]?.objectValue?.count == 40)
        #expect(v["w"]?["k39"] == .integer(39))
        #expect(v["z"] == .integer(4))
        #expect(v.objectValue?.count == 3)

        for (text, offset) in [(#"{"a":1,"a":2}"#, 11), (#"{"x":{"y":[{"k":1,"k":2}]}}"#, 22), (#"{"a":{"a":1},"a":2}"#, 17)] {
            do {
                _ = try JSONValue.parse(text)
                Issue.record("\(text) parsed")
            } catch {
                #expect(error.reason.contains("duplicate key"), "\(text): \(error)")
                #expect(error.offset == offset, "\(text): \(error)")
            }
        }
        // The same key in sibling or nested objects is not a duplicate.
        #expect((try? JSONValue.parse(#"{"a":{"a":{"a":1}},"b":{"a":2}}"#)) != nil)
    }

    /// ASCII strings skip UTF-8 validation; any other byte still goes through it, with or without escapes.
    @Test func nonASCIIStringsAreValidatedAndASCIIOnesAreKept() throws {
        #expect(
            try JSONValue.parse(#"["plain","héllo","日本","\u00e9\t","é\n"]"#)
                == .array(["plain", "héllo", "日本", "é\t", "é\n"]))
        for bytes: [UInt8] in [[0x22, 0x61, 0xC3, 0x28, 0x22], [0x22, 0xFF, 0x22], [0x22, 0x5C, 0x6E, 0xE2, 0x82, 0x22]] {
            #expect(throws: JSONParseError.self, "\(bytes)") { try JSONValue.parse(bytes) }
        }
    }

    @Test func rejectsNestingBeyondTheLimit() {
        let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
        let ok = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect((try? JSONValue.parse(ok)) != nil)
    }

    @Test func errorNamesTheOffset() {
        do {
            _ = try JSONValue.parse(#"{"a": tx}"#)
            Issue.record("expected an error")
        } catch {
            #expect(error.offset == 6)
            #expect(error.description.contains("byte 6"))
        }
    }

    @Test func surrogatePairsDecode() throws {
        #expect(try JSONValue.parse(#""\ud83d\ude00""#) == .string("😀"))
    }
}

@Suite struct ConfigNodeTests {
    let env = ["HOST": "kafka:9092", "EMPTY": ""]

    func mapping(_ yaml: String) throws -> ConfigMapping {
        try ConfigNode.parse(yaml: yaml, source: ConfigSource(file: "p.yaml", environment: env)).mapping()
    }

    @Test func interpolatesAndTypes() throws {
        let m = try mapping("a: ${HOST}\nb: ${MISSING:-7}\nc: ${EMPTY:-x}\nd: 5s\ne: $$5\n")
        #expect(try m.string("a") == "kafka:9092")
        #expect(try m.int("b", default: 0) == 7)
        #expect(try m.string("c") == "x")
        #expect(try m.duration("d", defaultMilliseconds: 0) == 5000)
        #expect(try m.string("e") == "$5")
        try m.finish()
    }

    @Test func unknownKeyNamesLineAndSuggestion() throws {
        let m = try mapping("stage:\n  batch_size: 5\n  bach_wait: 2s\n")
        let stage = try m.required("stage").mapping()
        _ = try stage.int("batch_size", default: 1)
        _ = try stage.duration("batch_wait", defaultMilliseconds: 1)
        do {
            try stage.finish()
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "p.yaml:3: stage.bach_wait: unknown key; did you mean 'batch_wait'?")
        }
    }

    @Test func badValueNamesKeyAndLine() throws {
        let m = try mapping("x: 1\nn: lots\n")
        do {
            _ = try m.int("n", default: 1)
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "p.yaml:2: n: expected an integer, got 'lots'")
        }
    }

    @Test func unsetVariableIsAnError() throws {
        let m = try mapping("x: ${NOPE}\n")
        #expect(throws: ConfigError.self) { try m.string("x") }
    }
}
