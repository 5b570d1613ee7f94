import Processing
import StreamCore
import Testing

@Suite struct ExpressionTests {
    static let reading: JSONValue = [
        "sensor_id": "sensor-007", "temperature_c": 31.5, "humidity_pct": 40, "seq": 12,
        "tags": ["a", "b"], "site": ["name": "lab", "floor": 2], "note": nil,
    ]

    func eval(_ text: String, _ value: JSONValue = reading, context: RecordContext = .none) throws -> JSONValue {
        try Expression(text).evaluate(value, context: context)
    }

    @Test(
        arguments: [
            ("temperature_c > 30", JSONValue.bool(true)),
            ("seq + 1", 13),
            ("seq / 4", 3),
            ("seq / 5", 2.4),
            ("seq % 5", 2),
            ("-seq", -12),
            ("round(temperature_c * 9 / 5 + 32, 2)", 88.7),
            ("site.name", "lab"),
            ("site[\"floor\"]", 2),
            ("tags[1]", "b"),
            ("tags[5]", nil),
            ("missing.deeper", nil),
            ("note ?? \"none\"", "none"),
            ("\"b\" in tags", true),
            ("\"name\" in site", true),
            ("\"sensor\" in sensor_id", true),
            ("sensor_id == \"sensor-007\" and humidity_pct < 50", true),
            ("not (seq > 10)", false),
            ("seq > 10 ? \"big\" : \"small\"", "big"),
            ("upper(site.name) + \"-\" + to_string(seq)", "LAB-12"),
            ("concat(sensor_id, \":\", seq)", "sensor-007:12"),
            ("len(tags) + len(sensor_id)", 12),
            ("substr(sensor_id, 7)", "007"),
            ("replace(sensor_id, \"sensor\", \"s\")", "s-007"),
            ("starts_with(sensor_id, \"sensor-\")", true),
            ("min(3, seq, 7)", 3),
            ("max(1.5, 2)", 2),
            ("to_int(\"42\")", 42),
            ("to_number(\"2.5\")", 2.5),
            ("exists(site.name)", true),
            ("exists(site.room)", false),
            ("coalesce(note, missing, 9)", 9),
            ("if(seq > 100, 1, 2)", 2),
            ("parse_time(\"2026-11-25T09:00:00Z\")", 1_795_597_200_000),
            ("format_time(1795597200000)", "2026-11-25T09:00:00.000Z"),
            ("[1, 2] + [3]", [1, 2, 3]),
            ("is_null(note) and is_string(sensor_id) and is_number(seq)", true),
        ] as [(String, JSONValue)])
    func evaluates(text: String, expected: JSONValue) throws {
        let got = try eval(text)
        #expect(got.jsonEquals(expected), "\(text) → \(got), expected \(expected)")
    }

    @Test func nullPropagatesThroughArithmeticAndComparisonsAreFalse() throws {
        #expect(try eval("missing + 1") == .null)
        #expect(try eval("missing > 1") == .bool(false))
        #expect(try eval("missing < 1") == .bool(false))
        #expect(try eval("missing == null") == .bool(true))
        // Three-valued logic: null and false is false, null or true is true, null and true is null.
        #expect(try eval("note and false") == .bool(false))
        #expect(try eval("note or true") == .bool(true))
        #expect(try eval("note and true") == .null)
        // A filter treats null as false.
        #expect(try Expression("note and true").isTrue(Self.reading) == false)
    }

    @Test func metaFieldsComeFromTheRecordContext() throws {
        let context = RecordContext(id: "gen:42:7", key: "sensor-007", eventTimeMs: 1000, topic: "iot.raw", partition: 3, offset: 99)
        #expect(try eval("$id", context: context) == "gen:42:7")
        #expect(try eval("$key", context: context) == "sensor-007")
        #expect(try eval("$event_time + 1", context: context) == 1001)
        #expect(try eval("$topic + \"/\" + to_string($partition) + \"/\" + to_string($offset)", context: context) == "iot.raw/3/99")
        #expect(try eval("$value.seq", context: context) == 12)
    }

    @Test func hashIsStableAcrossRuns() throws {
        // FNV-1a over the serialised value: a fixed number, so partitioning by it is reproducible.
        let a = try eval("hash(sensor_id)")
        #expect(a == (try eval("hash(\"sensor-007\")")))
        #expect(a != (try eval("hash(\"sensor-008\")")))
        #expect((a.int64Value ?? -1) >= 0)
    }

    @Test(arguments: [
        ("seq / 0", "division by zero"),
        ("seq % 0", "modulo by zero"),
        ("9223372036854775807 + seq", "integer overflow"),
        ("sensor_id * 2", "needs numbers"),
        ("sensor_id and true", "needs booleans"),
        ("1 in 5", "'in' needs"),
        ("abs(-9223372036854775807 - 1)", "overflow"),
        ("round(1.5, 99)", "digits"),
        ("lower(seq)", "needs a string"),
        ("1e308 * 10", "infinity"),
    ])
    func runtimeErrorsAreReportedNotCrashes(text: String, fragment: String) throws {
        let e = try Expression(text)
        let error = #expect(throws: ExpressionError.self) { try e.evaluate(Self.reading) }
        #expect(error?.message.contains(fragment) == true, "\(text): \(error?.message ?? "no error")")
    }

    @Test(arguments: [
        ("temperature_c >", "column"),
        ("nosuch(1)", "unknown function 'nosuch'"),
        ("lower(1, 2)", "takes 1 argument"),
        ("\"unterminated", "column"),
        ("a ? b", "column"),
        ("(1 + 2", "column"),
        ("seq @ 2", "column"),
    ])
    func parseErrorsNameTheColumn(text: String, fragment: String) {
        let error = #expect(throws: ExpressionParseError.self) { try Expression(text) }
        #expect(error?.description.contains(fragment) == true, "\(text): \(error?.description ?? "parsed")")
        #expect((error?.column ?? 0) >= 1)
    }

    @Test func deeplyNestedInputIsRejectedAtParseNotByStackOverflow() {
        let deep = String(repeating: "(", count: 10_000) + "1" + String(repeating: ")", count: 10_000)
        #expect(throws: ExpressionParseError.self) { try Expression(deep) }
        let unary = String(repeating: "-", count: 10_000) + "1"
        #expect(throws: ExpressionParseError.self) { try Expression(unary) }
    }

    @Test func integerArithmeticMatchesSwiftOrReportsOverflow() throws {
        // Property over a deterministic sample: +, -, * on Int64 agree with Swift's checked arithmetic.
        var rng = SplitMix64(seed: 0x9E37_79B9_7F4A_7C15)
        func next() -> Int64 {
            let v = Int64(bitPattern: rng.next())
            return rng.state % 3 == 0 ? v : v % 1_000_000
        }
        let plus = try Expression("a + b")
        let minus = try Expression("a - b")
        let times = try Expression("a * b")
        for _ in 0..<2000 {
            let a = next()
            let b = next()
            let record: JSONValue = ["a": .integer(a), "b": .integer(b)]
            for (e, op) in [
                (plus, Int64.addingReportingOverflow), (minus, Int64.subtractingReportingOverflow),
                (times, Int64.multipliedReportingOverflow),
            ] {
                let (v, overflow) = op(a)(b)
                if overflow {
                    #expect(throws: ExpressionError.self) { try e.evaluate(record) }
                } else {
                    #expect(try e.evaluate(record) == .integer(v))
                }
            }
        }
    }

    @Test func fieldPathsAreRecognised() throws {
        #expect(try Expression("a.b[0]").fieldPath == [.key("a"), .key("b"), .index(0)])
        #expect(try Expression("a + 1").fieldPath == nil)
    }
}

@Suite struct TimeFormatTests {
    @Test func knownInstants() {
        #expect(TimeFormat.format(0) == "1970-01-01T00:00:00.000Z")
        #expect(TimeFormat.format(-1) == "1969-12-31T23:59:59.999Z")
        #expect(TimeFormat.format(951_782_400_000) == "2000-02-29T00:00:00.000Z")
        #expect(TimeFormat.format(4_102_444_800_000) == "2100-01-01T00:00:00.000Z")
        #expect(TimeFormat.format(253_402_300_799_999) == "9999-12-31T23:59:59.999Z")
    }

    /// Formatting and parsing round-trip exactly from 1900 to 2100. (Foundation's own formatter is
    /// not the reference: it goes through a Double and truncates, printing −1 ms as .998.)
    @Test func roundTripsThroughTheParser() {
        var rng = SplitMix64(seed: 5)
        let low: Int64 = -2_208_988_800_000 // 1900-01-01
        let high: Int64 = 4_102_444_800_000 // 2100-01-01
        let samples: [Int64] =
            [0, -1, 1, 86_399_999, 86_400_000, -86_400_000, 951_782_400_000]
            + (0..<2000).map { _ in low + Int64(rng.below(Int(high - low))) }
        for ms in samples {
            #expect(TimeFormat.parse(TimeFormat.format(ms)) == ms, "\(ms) → \(TimeFormat.format(ms))")
        }
    }
}
