import StreamCore
import Testing

/// ``JSONValue/isCertainlyWellFormed(_:maxDepth:)`` against the parser, the one definition of
/// JSON here: it must never accept what the parser refuses, and it must accept typical records.
@Suite struct JSONScannerTests {
    static func scan(_ text: String, maxDepth: Int = JSONValue.defaultMaxDepth) -> Bool {
        Array(text.utf8).withUnsafeBytes { JSONValue.isCertainlyWellFormed($0, maxDepth: maxDepth) }
    }

    @Test(arguments: [
        #"{"sensor_id":"s-17","temperature_c":21.5,"humidity":0.43,"ok":true,"tags":["a","b"],"meta":null}"#,
        #"  [1, -0, 0.5, 1e2, 1.5E-300, -12345678901234567890, {"a":{"b":[[]]}}, {}, []]  "#,
        #"{"e":"x\u00e9\n\"q\"\\\/\b\f\r\t","s":"\ud83d\ude00","u":"héllo ✓ 😀"}"#,
        "\"plain\"", "true", "false", "null", "0", "-1.25",
    ])
    func acceptsWhatTheParserAccepts(_ text: String) throws {
        _ = try JSONValue.parse(text)
        #expect(Self.scan(text))
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\" 1}", "01", "1.", "tru", "\"\\x\"", "\"abc", "[1] x", "{\"a\":1,}", "\"\u{01}\"",
        "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "nul", "-", "1e", "[", "{\"a\":1,\"a\":2}", "{1:2}", "[1 2]",
        "1e400", "-1e309",
    ])
    func refusesWhatTheParserRefuses(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
        #expect(!Self.scan(text))
    }

    @Test func refusesInvalidUTF8() {
        for bad: [UInt8] in [[0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0xFF], [0x80]] {
            let doc = [UInt8(ascii: "\"")] + bad + [UInt8(ascii: "\"")]
            #expect(throws: JSONParseError.self) { try JSONValue.parse(doc) }
            #expect(!doc.withUnsafeBytes { JSONValue.isCertainlyWellFormed($0) }, "\(bad)")
        }
    }

    /// What only a Swift String comparison or a Double conversion decides is left to the parser.
    @Test(arguments: [
        #"{"\u0041":1,"A":2}"#, // a duplicate key through an escape (the parser refuses it)
        "{\"e\u{301}\":1,\"\u{e9}\":2}", // canonically equivalent keys (the parser refuses them)
        #"{"a":1e308}"#, "9e307",
    ])
    func leavesUndecidedCasesToTheParser(_ text: String) {
        #expect(!Self.scan(text))
    }

    @Test func honoursTheDepthLimit() throws {
        let deep = String(repeating: "[", count: 10) + String(repeating: "]", count: 10)
        #expect(Self.scan(deep, maxDepth: 10))
        #expect(!Self.scan(deep, maxDepth: 9))
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep, maxDepth: 9) }
    }

    /// Seeded mutations of valid records: whatever the scanner accepts, the parser accepts.
    @Test func neverAcceptsWhatTheParserRefusesUnderMutation() {
        let seeds = [
            #"{"sensor_id":"s-17","temperature_c":21.5,"n":[1,2,{"x":null}],"t":"2026-12-07T10:00:00Z","u":"é\u00e9"}"#,
            #"[true,false,null,-0.5e-3,"a\"b",{"k":{"k":{"k":[]}}}]"#,
        ].map { Array($0.utf8) }
        let alphabet = Array(#"{}[]":,.-+eE0123456789tfnrua\ "#.utf8) + [0x00, 0x1F, 0x80, 0xC3, 0xA9, 0xED, 0xF0]
        var random = SplitMix64(seed: 2026)
        var accepted = 0
        var checked = 0
        for _ in 0..<20_000 {
            var doc = seeds[Int(random.next() % UInt64(seeds.count))]
            for _ in 0...(random.next() % 3) {
                let i = Int(random.next() % UInt64(doc.count))
                switch random.next() % 3 {
                case 0: doc[i] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                case 1: doc.remove(at: i)
                default: doc.insert(alphabet[Int(random.next() % UInt64(alphabet.count))], at: i)
                }
                if doc.isEmpty { break }
            }
            let certain = doc.withUnsafeBytes { JSONValue.isCertainlyWellFormed($0) }
            checked += 1
            if certain {
                accepted += 1
                #expect(throws: Never.self, "\(String(decoding: doc, as: UTF8.self))") { try JSONValue.parse(doc) }
            }
        }
        #expect(checked == 20_000 && accepted > 100, "the mutations should leave some documents valid: \(accepted)")
    }
}
