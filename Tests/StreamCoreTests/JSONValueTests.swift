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
