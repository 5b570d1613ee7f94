import Config
import Kafka
import PipelineModel
import StreamCore
import Testing
import Tracing
import W3CTraceContext

@testable import Pipeline

/// W3C Trace Context in record headers: extraction and injection through the stage's record tracer,
/// malformed values, the `sampled` flag, and the `tracing:` settings.
@Suite struct TracingTests {
    static let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let spanID = "00f067aa0ba902b7"
    static let parent = "00-\(traceID)-\(spanID)-01"

    struct Parsed: Equatable {
        var traceID: String
        var spanID: String
        var flags: String
    }

    /// The parts of a well-formed traceparent (nil otherwise).
    static func parse(_ value: String?) -> Parsed? {
        guard let value else { return nil }
        let parts = value.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        let hex = { (s: String, n: Int) in s.count == n && s.allSatisfy { "0123456789abcdef".contains($0) } }
        guard parts.count == 4, parts[0] == "00", hex(parts[1], 32), hex(parts[2], 16), hex(parts[3], 2),
            parts[1] != String(repeating: "0", count: 32), parts[2] != String(repeating: "0", count: 16)
        else { return nil }
        return Parsed(traceID: parts[1], spanID: parts[2], flags: parts[3])
    }

    static func values(_ key: String, in headers: [KafkaHeader]) -> [String] {
        headers.filter { $0.key == key }.map { String(decoding: $0.value ?? [], as: UTF8.self) }
    }

    static func message(_ headers: [KafkaHeader], value: String = #"{"a":1}"#) -> KafkaMessage {
        KafkaMessage(
            topic: "in", partition: 2, offset: 7, key: nil, value: Array(value.utf8),
            headers: [KafkaHeader(key: RecordHeader.id, value: "r1")] + headers)
    }

    static func tracer(ratio: Double = 1) -> RecordTracer {
        RecordTracer(stage: "validate", pipeline: "p", topic: "in", group: "p.validate", tracer: PropagatingTracer(sampleRatio: ratio))
    }

    /// The traceparent the span of a record with these headers writes into its outputs.
    static func child(of headers: [KafkaHeader], ratio: Double = 1) -> [KafkaHeader] {
        let span = tracer(ratio: ratio).startConsuming(message(headers))
        var out = message(headers).headers
        span.inject(into: &out)
        span.end(.forwarded)
        return out
    }

    @Test func aRecordsSpanContinuesItsTraceWithANewSpanID() throws {
        let out = Self.child(of: [
            KafkaHeader(key: RecordHeader.traceParent, value: Self.parent),
            KafkaHeader(key: RecordHeader.traceState, value: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ])
        let parents = Self.values(RecordHeader.traceParent, in: out)
        #expect(parents.count == 1, "the input's traceparent is replaced, not duplicated")
        let parsed = try #require(Self.parse(parents.first))
        #expect(parsed.traceID == Self.traceID)
        #expect(parsed.spanID != Self.spanID)
        #expect(parsed.flags == "01")
        #expect(Self.values(RecordHeader.traceState, in: out) == ["congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"])
        #expect(Self.values(RecordHeader.id, in: out) == ["r1"], "other headers stay")
    }

    @Test func theWrittenTraceparentIsTheOneSwiftW3CTraceContextWrites() throws {
        for flags in ["00", "01"] {
            let value = "00-\(Self.traceID)-\(Self.spanID)-\(flags)"
            let context = try TraceContext(traceParentHeaderValue: value)
            #expect(PropagatingTracer.traceParent(context) == context.traceParentHeaderValue)
            #expect(PropagatingTracer.traceParent(context) == value)
        }
    }

    @Test func twoHopsKeepTheTraceAndChangeTheSpan() throws {
        let first = Self.child(of: [KafkaHeader(key: RecordHeader.traceParent, value: Self.parent)])
        let second = Self.child(of: first)
        let a = try #require(Self.parse(Self.values(RecordHeader.traceParent, in: first).first))
        let b = try #require(Self.parse(Self.values(RecordHeader.traceParent, in: second).first))
        #expect(a.traceID == Self.traceID && b.traceID == Self.traceID)
        #expect(Set([Self.spanID, a.spanID, b.spanID]).count == 3)
    }

    @Test func aRecordWithoutTraceparentStartsATrace() throws {
        let one = try #require(Self.parse(Self.values(RecordHeader.traceParent, in: Self.child(of: [])).first))
        let two = try #require(Self.parse(Self.values(RecordHeader.traceParent, in: Self.child(of: [])).first))
        #expect(one.traceID != two.traceID, "each record without a trace starts its own")
        #expect(one.flags == "01")
    }

    @Test(arguments: [
        "", "garbage", "00-\(traceID)-\(spanID)", "00-\(traceID)-\(spanID)-01-extra",
        "00-00000000000000000000000000000000-\(spanID)-01", "00-\(traceID)-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-\(spanID)-01", "ff-\(traceID)-\(spanID)-01", "00_\(traceID)_\(spanID)_01",
        "00-\(traceID)-\(spanID)-zz", "00-4bf92f3577b34da6a3ce929d0e0e473g-\(spanID)-01", "\u{0}\u{1}\u{2}",
    ])
    func aMalformedTraceparentIsIgnoredAndANewTraceBegins(_ bad: String) throws {
        #expect(
            KafkaHeadersExtractor().extract(key: RecordHeader.traceParent, from: [KafkaHeader(key: RecordHeader.traceParent, value: bad)])
                == nil)
        let record = KafkaMessage(
            topic: "t", partition: 0, offset: 0, key: nil, value: [], headers: [KafkaHeader(key: RecordHeader.traceParent, value: bad)])
        #expect(KafkaMessageExtractor().extract(key: RecordHeader.traceParent, from: record) == nil)
        let out = Self.child(of: [KafkaHeader(key: RecordHeader.traceParent, value: bad)])
        let parents = Self.values(RecordHeader.traceParent, in: out)
        #expect(parents.count == 1)
        let parsed = try #require(Self.parse(parents.first), "a well-formed traceparent replaces '\(bad)'")
        #expect(parsed.traceID != Self.traceID)
    }

    @Test func bytesThatAreNotUTF8AreIgnored() throws {
        let out = Self.child(of: [KafkaHeader(key: RecordHeader.traceParent, value: [0xFF, 0xFE, 0x00, 0xC3])])
        #expect(Self.parse(Self.values(RecordHeader.traceParent, in: out).first) != nil)
        let nilValue = Self.child(of: [KafkaHeader(key: RecordHeader.traceParent, value: nil as [UInt8]?)])
        #expect(Self.parse(Self.values(RecordHeader.traceParent, in: nilValue).first) != nil)
    }

    @Test func aMalformedTracestateIsDroppedButTheTraceContinues() throws {
        let out = Self.child(of: [
            KafkaHeader(key: RecordHeader.traceParent, value: Self.parent),
            KafkaHeader(key: RecordHeader.traceState, value: "Rojo=00f067aa0ba902b7,\u{7}=x"),
        ])
        #expect(Self.parse(Self.values(RecordHeader.traceParent, in: out).first)?.traceID == Self.traceID)
        #expect(Self.values(RecordHeader.traceState, in: out).isEmpty)
    }

    @Test func theSampledFlagOfTheParentDecides() throws {
        let unsampled = "00-\(Self.traceID)-\(Self.spanID)-00"
        let a = Self.child(of: [KafkaHeader(key: RecordHeader.traceParent, value: unsampled)], ratio: 1)
        #expect(Self.parse(Self.values(RecordHeader.traceParent, in: a).first)?.flags == "00", "not sampled stays not sampled")
        let b = Self.child(of: [KafkaHeader(key: RecordHeader.traceParent, value: Self.parent)], ratio: 0)
        #expect(Self.parse(Self.values(RecordHeader.traceParent, in: b).first)?.flags == "01", "sampled stays sampled")
    }

    @Test func newTracesAreSampledAtTheConfiguredRatio() throws {
        func sampledShare(_ ratio: Double) throws -> Double {
            var sampled = 0
            for _ in 0..<4000 {
                let parsed = try #require(Self.parse(Self.values(RecordHeader.traceParent, in: Self.child(of: [], ratio: ratio)).first))
                if parsed.flags == "01" { sampled += 1 }
            }
            return Double(sampled) / 4000
        }
        #expect(try sampledShare(0) == 0)
        #expect(try sampledShare(1) == 1)
        let half = try sampledShare(0.5)
        #expect(half > 0.4 && half < 0.6, "share \(half)")
    }

    @Test func ingestContinuesTheTraceASourceReceivedOrStartsOne() throws {
        let ingest = RecordTracer(stage: "ingest", pipeline: "p", topic: "raw", tracer: PropagatingTracer())
        var continued: [KafkaHeader] = []
        ingest.startIngesting(id: "a", source: "http", parent: [KafkaHeader(key: RecordHeader.traceParent, value: Self.parent)])
            .inject(into: &continued)
        let c = try #require(Self.parse(Self.values(RecordHeader.traceParent, in: continued).first))
        #expect(c.traceID == Self.traceID && c.spanID != Self.spanID)
        var fresh: [KafkaHeader] = []
        ingest.startIngesting(id: "b", source: "file", parent: []).inject(into: &fresh)
        #expect(try #require(Self.parse(Self.values(RecordHeader.traceParent, in: fresh).first)).traceID != Self.traceID)
    }

    /// The default tracer's fast path (the `traceparent` read in place, no span value) gives what its
    /// general path (`startSpan` through the extractor) gives, for well-formed and hostile headers alike,
    /// and declines what it cannot vouch for.
    @Test func theFastPathAgreesWithTheGeneralPath() throws {
        let tracer = Self.tracer()
        let upper = "00-\(Self.traceID.uppercased())-\(Self.spanID)-01"
        let cases: [(String, [KafkaHeader], fast: Bool)] = [
            ("no context", [], true),
            ("sampled parent", [KafkaHeader(key: RecordHeader.traceParent, value: Self.parent)], true),
            ("unsampled parent", [KafkaHeader(key: RecordHeader.traceParent, value: "00-\(Self.traceID)-\(Self.spanID)-00")], true),
            ("other flags", [KafkaHeader(key: RecordHeader.traceParent, value: "00-\(Self.traceID)-\(Self.spanID)-a3")], true),
            ("uppercase hex", [KafkaHeader(key: RecordHeader.traceParent, value: upper)], false),
            (
                "zero trace id",
                [KafkaHeader(key: RecordHeader.traceParent, value: "00-\(String(repeating: "0", count: 32))-\(Self.spanID)-01")], false
            ),
            (
                "zero span id",
                [KafkaHeader(key: RecordHeader.traceParent, value: "00-\(Self.traceID)-\(String(repeating: "0", count: 16))-01")], false
            ),
            ("version 01", [KafkaHeader(key: RecordHeader.traceParent, value: "01-\(Self.traceID)-\(Self.spanID)-01")], false),
            ("too long", [KafkaHeader(key: RecordHeader.traceParent, value: Self.parent + "0")], false),
            ("garbage", [KafkaHeader(key: RecordHeader.traceParent, value: "not a traceparent at all")], false),
            ("null value", [KafkaHeader(key: RecordHeader.traceParent, value: nil)], false),
            (
                "with tracestate",
                [KafkaHeader(key: RecordHeader.traceParent, value: Self.parent), KafkaHeader(key: RecordHeader.traceState, value: "v=1")],
                false
            ),
        ]
        for (name, headers, fast) in cases {
            let message = Self.message(headers)
            #expect((RecordTracer.propagatedParent(of: message) != nil) == fast, "\(name): fast path taken or declined")
            var viaFast: [KafkaHeader] = []
            tracer.startConsuming(message).appendContext(to: &viaFast)
            var viaGeneral: [KafkaHeader] = []
            tracer.startConsumingSpan(message).appendContext(to: &viaGeneral)
            let f = try #require(Self.parse(Self.values(RecordHeader.traceParent, in: viaFast).first), "\(name)")
            let g = try #require(Self.parse(Self.values(RecordHeader.traceParent, in: viaGeneral).first), "\(name)")
            #expect(f.flags == g.flags, "\(name): flags")
            #expect(Self.values(RecordHeader.traceState, in: viaFast) == Self.values(RecordHeader.traceState, in: viaGeneral), "\(name)")
            // Continued traces agree; new traces are new on both paths.
            let continues = g.traceID == Self.traceID
            #expect((f.traceID == Self.traceID) == continues, "\(name): continues the trace on one path only")
            if !continues { #expect(f.traceID != g.traceID, "\(name): two new traces") }
            #expect(f.spanID != Self.spanID && f.spanID != g.spanID, "\(name): a fresh span id")
        }
    }

    /// The hand-written in-place readers of header bytes, against the general ones, on seeded random
    /// mutations of well-formed values (a differential fuzz run inside the tests): the strict
    /// `traceparent` reader may decline what swift-w3c-trace-context accepts, never accept what it
    /// refuses or read it differently; the `sf.ingest_time` reader reads exactly what `Int64(String)` reads.
    @Test func theInPlaceHeaderReadersAgreeWithTheGeneralOnesOnRandomInput() {
        var random = SplitMix64(seed: 2026_12_07)
        let alphabet = Array("0123456789abcdefABCDEFg-+ \u{0}".utf8) + [0xFF, 0xC3]
        let valid = Array(Self.parent.utf8)
        var accepted = 0
        for _ in 0..<100_000 {
            var bytes = valid
            for _ in 0..<Int(random.next() % 3) + 1 {
                switch random.next() % 8 {
                case 0 where !bytes.isEmpty: bytes.removeLast()
                case 1: bytes.append(alphabet[Int(random.next() % UInt64(alphabet.count))])
                default:
                    if !bytes.isEmpty {
                        bytes[Int(random.next() % UInt64(bytes.count))] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                    }
                }
            }
            guard let strict = bytes.withUnsafeBytes({ PropagatingTracer.strictTraceParent($0) }) else { continue }
            accepted += 1
            let general = try? TraceContext(traceParentHeaderValue: String(decoding: bytes, as: UTF8.self))
            #expect(
                general?.traceID == strict.traceID && general?.spanID == strict.spanID && general?.flags == strict.flags,
                "\(String(decoding: bytes, as: UTF8.self))")
        }
        #expect(accepted > 1000, "the mutations should leave many values well-formed (\(accepted))")

        let digits = Array("0123456789+- a".utf8)
        for _ in 0..<100_000 {
            let n = Int(random.next() % 22)
            let bytes = (0..<n).map { _ in
                random.next() % 4 == 0 ? digits[Int(random.next() % UInt64(digits.count))] : digits[Int(random.next() % 10)]
            }
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(bytes.withUnsafeBytes { KafkaMessage.decimalInt64($0) } == Int64(text), "'\(text)'")
        }
    }

    /// A handler that forwards `{"ok":…}` twice and dead-letters everything else.
    struct Forker: StageHandler {
        func handle(_ message: KafkaMessage, into emitter: inout StageEmitter) {
            guard message.value == Array(#"{"ok":1}"#.utf8) else {
                return emitter.deadLetter(DeadLetterReason(component: "test", errorClass: "Refused", message: "not ok"))
            }
            let out = StageOutput(topic: "out", key: nil, value: message.value ?? [], headers: message.headers)
            emitter.apply(.forward([out, out]))
        }
    }

    @Test func outputsAndDeadLettersCarryTheStagesSpan() throws {
        let traced = TracedHandler(
            handler: Forker(), deadLetters: DeadLetterWriter(pipeline: "p", stage: "validate", topic: "dead"), tracer: Self.tracer())
        let input = [KafkaHeader(key: RecordHeader.traceParent, value: Self.parent)]
        var produced: [KafkaProducerMessage] = []
        guard case .forwarded(2) = traced.handle(Self.message(input, value: #"{"ok":1}"#), nowMs: 0, into: &produced) else {
            Issue.record("expected two outputs")
            return
        }
        guard case .deadLettered = traced.handle(Self.message(input, value: "nope"), nowMs: 0, into: &produced) else {
            Issue.record("expected a dead letter")
            return
        }
        #expect(produced.map(\.topic) == ["out", "out", "dead"])
        let spans = try produced.map { try #require(Self.parse(Self.values(RecordHeader.traceParent, in: $0.headers).first)) }
        #expect(spans.allSatisfy { $0.traceID == Self.traceID })
        #expect(spans[0].spanID == spans[1].spanID, "outputs of one record share its span")
        #expect(spans[2].spanID != spans[0].spanID, "another record, another span")
        #expect(!spans.contains { $0.spanID == Self.spanID })
        #expect(produced.allSatisfy { Self.values(RecordHeader.traceParent, in: $0.headers).count == 1 })
    }

    // MARK: Settings

    static func spec(_ tracing: String) throws -> PipelineSpec {
        try PipelineSpec.parse(
            yaml: """
                name: t
                topics: { raw: { name: raw }, dead: { name: dead } }
                dead_letter: dead
                \(tracing)
                """, file: "/tmp/t.yaml", environment: [:])
    }

    @Test func withoutSettingsNothingIsExportedAndServicesAreNamedByStage() throws {
        let s = try TracingSettings.resolve(try Self.spec("").tracing, stage: .validate, environment: [:])
        #expect(s.export == nil)
        #expect(s.serviceName == "streamfirst-validate")
        #expect(s.sampleRatio == 1)
    }

    @Test func theFileConfiguresExportAndTheEnvironmentOverridesIt() throws {
        let spec = try Self.spec(
            "tracing: { endpoint: 'http://collector:4318', protocol: http/json, service_prefix: shop, sample_ratio: 0.25 }")
        let fromFile = try TracingSettings.resolve(spec.tracing, stage: .persist, environment: [:])
        #expect(fromFile.export == .init(endpoint: "http://collector:4318", endpointIsTracesURL: false, protocol: "http/json"))
        #expect(fromFile.serviceName == "shop-persist")
        #expect(fromFile.sampleRatio == 0.25)
        let env = try TracingSettings.resolve(
            spec.tracing, stage: .persist,
            environment: [
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_SERVICE_NAME": "sink-writer",
            ])
        #expect(env.export == .init(endpoint: "http://other:4318", endpointIsTracesURL: false, protocol: "http/protobuf"))
        #expect(env.serviceName == "sink-writer")
        let traces = try TracingSettings.resolve(
            spec.tracing, stage: .persist, environment: ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/custom"])
        #expect(traces.export?.endpoint == "http://t:4318/custom")
        #expect(traces.export?.endpointIsTracesURL == true)
        let off = try TracingSettings.resolve(spec.tracing, stage: .persist, environment: ["OTEL_TRACES_EXPORTER": "none"])
        #expect(off.export == nil)
        let onlyEnv = try TracingSettings.resolve(
            try Self.spec("").tracing, stage: .ingest, environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "https://c.example:4318"])
        #expect(onlyEnv.export?.protocol == "http/protobuf", "the OTLP default")
    }

    @Test(arguments: [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x/"),
        ("OTEL_TRACES_EXPORTER", "zipkin"), ("OTEL_SDK_DISABLED", "maybe"),
    ])
    func aBadEnvironmentValueFailsNamingTheVariable(_ key: String, _ value: String) throws {
        do {
            _ = try TracingSettings.resolve(TracingSpec(), stage: .validate, environment: [key: value])
            Issue.record("\(key)=\(value) was accepted")
        } catch {
            #expect(error.path == key)
            #expect(error.description.contains(value))
        }
    }

    @Test(arguments: [
        ("tracing: { sampel_ratio: 0.5 }", "sampel_ratio"), ("tracing: { sample_ratio: 2 }", "tracing.sample_ratio"),
        ("tracing: { endpoint: 'localhost:4318' }", "tracing.endpoint"), ("tracing: { protocol: grpc }", "tracing.protocol"),
        ("tracing: { service_prefix: '' }", "tracing.service_prefix"),
    ])
    func aBadTracingSectionFailsNamingTheKey(_ section: String, _ key: String) throws {
        do {
            _ = try Self.spec(section)
            Issue.record("accepted: \(section)")
        } catch let error as ConfigError {
            #expect(error.description.contains(key), "\(error)")
        }
    }
}
