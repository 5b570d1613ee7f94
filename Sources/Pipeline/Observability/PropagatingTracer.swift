import Kafka
import StreamCore
import Synchronization
import Tracing
import W3CTraceContext

/// The tracer a worker runs when no OTLP exporter is configured: it records nothing, but it carries
/// W3C Trace Context through the pipeline — every span gets a fresh span id, continues the trace of
/// its parent (or starts one), and respects the parent's `sampled` flag; a new trace is sampled with
/// probability `sampleRatio`, decided on the trace id exactly as swift-otel's trace-id-ratio sampler
/// decides it, so the two tracers agree on any trace.
// Hand-written because no listed package propagates without recording: swift-otel's tracer with its
// exporter off still records every sampled span and hands it to a batch processor. Parsing the headers
// is swift-w3c-trace-context's; writing the `traceparent` is done here, in one buffer (it runs per
// record, see `traceParent(_:)`). See docs/decisions/0028-tracing-default-propagating-tracer.md.
public struct PropagatingTracer: Tracer {
    public typealias Span = PropagatingSpan

    /// Upper bound (exclusive) of the trace-id value that is sampled; see ``init(sampleRatio:)``.
    let sampleBound: UInt64
    let sampleAll: Bool

    /// - Parameter sampleRatio: the probability, 0…1, that a new trace is sampled (children follow
    ///   their parent's flag). Values outside the range are clamped.
    public init(sampleRatio: Double = 1.0) {
        let ratio = min(1, max(0, sampleRatio.isNaN ? 1 : sampleRatio))
        sampleAll = ratio >= 1
        sampleBound = ratio >= 1 ? .max : UInt64(ratio * Double(UInt64.max))
    }

    /// The context of a new span: a child of `parent` (same trace, a fresh span id, the parent's
    /// flags and state), or the root of a new trace, sampled by ``isSampled(_:)``.
    func childContext(of parent: TraceContext?) -> TraceContext {
        var generator = FastIDGenerator()
        if let parent {
            return TraceContext(traceID: parent.traceID, spanID: .random(using: &generator), flags: parent.flags, state: parent.state)
        }
        let traceID = TraceID.random(using: &generator)
        return TraceContext(
            traceID: traceID, spanID: .random(using: &generator), flags: isSampled(traceID) ? .sampled : [], state: TraceState())
    }

    public func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> InstrumentationContext, ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt
    ) -> PropagatingSpan {
        var child = context()
        child[W3CContextKey.self] = childContext(of: child[W3CContextKey.self])
        return PropagatingSpan(context: child)
    }

    /// The trace-id-ratio decision for a new trace (bytes 8–15 of the id, as swift-otel reads them).
    func isSampled(_ traceID: TraceID) -> Bool {
        if sampleAll { return true }
        let value = traceID.withSpan { span in span.bytes.unsafeLoadUnaligned(fromByteOffset: 8, as: UInt64.self) }
        return value < sampleBound
    }

    public func forceFlush() {}

    public func extract<Carrier, Extract>(_ carrier: Carrier, into context: inout InstrumentationContext, using extractor: Extract)
    where Extract: Extractor, Carrier == Extract.Carrier {
        guard let parent = extractor.extract(key: RecordHeader.traceParent, from: carrier) else { return }
        let state = extractor.extract(key: RecordHeader.traceState, from: carrier)
        // A malformed traceparent is ignored (the span starts a new trace); a malformed tracestate
        // alone is dropped (W3C: the traceparent still counts).
        if let c = try? TraceContext(traceParentHeaderValue: parent, traceStateHeaderValue: state) {
            context[W3CContextKey.self] = c
        } else if let c = try? TraceContext(traceParentHeaderValue: parent) {
            context[W3CContextKey.self] = c
        }
    }

    public func inject<Carrier, Inject>(_ context: InstrumentationContext, into carrier: inout Carrier, using injector: Inject)
    where Inject: Injector, Carrier == Inject.Carrier {
        guard let c = context[W3CContextKey.self] else { return }
        injector.inject(Self.traceParent(c), forKey: RecordHeader.traceParent, into: &carrier)
        if let state = c.traceStateHeaderValue {
            injector.inject(state, forKey: RecordHeader.traceState, into: &carrier)
        }
    }
}

extension PropagatingTracer {
    static let hex = Array("0123456789abcdef".utf8)

    /// `00-<trace id>-<span id>-<flags>`: the same string as `TraceContext`'s `traceParentHeaderValue`.
    public static func traceParent(_ c: TraceContext) -> String {
        String(unsafeUninitializedCapacity: 55) { write(c, into: $0) }
    }

    /// ``traceParent(_:)`` as the header value's bytes.
    public static func traceParentBytes(_ c: TraceContext) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 55) { out, count in count = write(c, into: out) }
    }

    /// A `traceparent` value in the strict form `00-<32 hex>-<16 hex>-<2 hex>` (lowercase, non-zero
    /// ids), read from bytes without copying them; nil for anything else — which the general parser
    /// (swift-w3c-trace-context's) then reads, so this only ever agrees with it.
    static func strictTraceParent(_ b: UnsafeRawBufferPointer) -> TraceContext? {
        guard b.count == 55, b[0] == UInt8(ascii: "0"), b[1] == UInt8(ascii: "0"), b[2] == UInt8(ascii: "-"), b[35] == UInt8(ascii: "-"),
            b[52] == UInt8(ascii: "-")
        else { return nil }
        @inline(__always) func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c &- UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c &- UInt8(ascii: "a") &+ 10
            default: return nil
            }
        }
        @inline(__always) func byte(_ i: Int) -> UInt8? {
            guard let hi = nibble(b[i]), let lo = nibble(b[i + 1]) else { return nil }
            return hi << 4 | lo
        }
        // The 16 trace-id bytes, the 8 span-id bytes and the flags byte, decoded in order.
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 25) { raw -> TraceContext? in
            for k in 0..<25 {
                guard let v = byte(k < 16 ? 3 + 2 * k : k < 24 ? 36 + 2 * (k - 16) : 53) else { return nil }
                raw[k] = v
            }
            guard raw[0..<16].contains(where: { $0 != 0 }), raw[16..<24].contains(where: { $0 != 0 }) else { return nil }
            var traceID = TraceID.null
            traceID.withMutableSpan { span in for k in 0..<16 { span[k] = raw[k] } }
            var spanID = SpanID.null
            spanID.withMutableSpan { span in for k in 0..<8 { span[k] = raw[16 + k] } }
            return TraceContext(traceID: traceID, spanID: spanID, flags: TraceFlags(rawValue: raw[24]), state: TraceState())
        }
    }

    /// The `traceparent` of `c` as a header kept inline (no heap allocation); nil when `c` also
    /// has a `tracestate`, which needs a header of its own.
    static func inlineTraceParent(_ c: TraceContext) -> KafkaInlineHeader? {
        guard c.traceStateHeaderValue == nil else { return nil }
        return KafkaInlineHeader(key: RecordHeader.traceParent) { raw in
            write(c, into: raw.bindMemory(to: UInt8.self))
        }
    }

    /// Appends the `traceparent` (and `tracestate`) of `c` to `headers`, the `traceparent` written
    /// straight as bytes.
    static func append(_ c: TraceContext, to headers: inout [KafkaHeader]) {
        headers.append(KafkaHeader(key: RecordHeader.traceParent, value: traceParentBytes(c)))
        if let state = c.traceStateHeaderValue { headers.append(KafkaHeader(key: RecordHeader.traceState, value: state)) }
    }

    /// Appends the `traceparent` (and `tracestate`) of `context` to `headers`, the `traceparent` written
    /// straight as bytes; false when `context` holds no context of this tracer.
    static func append(_ context: InstrumentationContext, to headers: inout [KafkaHeader]) -> Bool {
        guard let c = context[W3CContextKey.self] else { return false }
        append(c, to: &headers)
        return true
    }

    // Written into one buffer, one allocation: it runs per record.
    private static func write(_ c: TraceContext, into out: UnsafeMutableBufferPointer<UInt8>) -> Int {
        var i = 0
        func put(_ byte: UInt8) {
            out[i] = hex[Int(byte >> 4)]
            out[i + 1] = hex[Int(byte & 0x0F)]
            i += 2
        }
        func dash() {
            out[i] = UInt8(ascii: "-")
            i += 1
        }
        put(0)
        dash()
        withUnsafeBytes(of: c.traceID.bytes) { for b in $0 { put(b) } }
        dash()
        withUnsafeBytes(of: c.spanID.bytes) { for b in $0 { put(b) } }
        dash()
        put(c.flags.rawValue)
        return i
    }
}

/// A span of ``PropagatingTracer``: only its context (never recording).
public struct PropagatingSpan: Tracing.Span {
    public let context: InstrumentationContext

    /// The W3C context of this span (trace id, span id, flags, state).
    public var traceContext: TraceContext? { context[W3CContextKey.self] }

    public var isRecording: Bool { false }
    public var operationName: String {
        get { "" }
        nonmutating set {}
    }
    public var attributes: SpanAttributes {
        get { [:] }
        nonmutating set {}
    }
    public func setStatus(_ status: SpanStatus) {}
    public func addEvent(_ event: SpanEvent) {}
    public func addLink(_ link: SpanLink) {}
    public func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant)
    {}
    public func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {}
}

/// Where ``PropagatingTracer`` keeps the W3C context in an `InstrumentationContext`.
enum W3CContextKey: InstrumentationContextKey {
    typealias Value = TraceContext
    static var nameOverride: String? { "streamfirst-w3c-trace-context" }
}

/// Random-looking, unique ids without a lock or a system call per id: SplitMix64 (a bijective mix)
/// over a process-wide counter that starts at a random value. W3C asks for random ids; uniqueness
/// within the process is exact, across processes as good as the 64-bit random start.
struct FastIDGenerator: RandomNumberGenerator {
    static let counter = Atomic<UInt64>(UInt64.random(in: .min ... .max))

    mutating func next() -> UInt64 {
        var mix = SplitMix64(seed: Self.counter.add(1, ordering: .relaxed).newValue)
        return mix.next()
    }
}
