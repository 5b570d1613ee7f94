import Kafka
import StreamCore
import Tracing
import W3CTraceContext

/// Reads trace context from Kafka record headers for any swift-distributed-tracing `Instrument`.
///
/// Only well-formed W3C values are handed over: a malformed `traceparent` reads as absent (the span
/// then starts a new trace), a malformed `tracestate` as absent (the `traceparent` still counts) —
/// hostile input never reaches the tracer, which might otherwise log a warning per record.
public struct KafkaHeadersExtractor: Extractor {
    public typealias Carrier = [KafkaHeader]
    let validates: Bool

    /// - Parameter validates: false hands values over unchecked, for a tracer that checks them
    ///   itself (``PropagatingTracer`` parses them once, instead of twice).
    public init(validates: Bool = true) {
        self.validates = validates
    }

    public func extract(key: String, from carrier: [KafkaHeader]) -> String? {
        checked(key: key, carrier.first(where: { $0.key == key })?.value)
    }

    /// The header's value if it is well-formed for `key` (or unchecked when `validates` is false).
    func checked(key: String, _ bytes: [UInt8]?) -> String? {
        guard let bytes else { return nil }
        let value = String(decoding: bytes, as: UTF8.self)
        guard validates else { return value }
        switch key {
        case RecordHeader.traceParent:
            return (try? TraceContext(traceParentHeaderValue: value)) == nil ? nil : value
        case RecordHeader.traceState:
            return (try? TraceContext(traceParentHeaderValue: Self.validParent, traceStateHeaderValue: value)) == nil ? nil : value
        default:
            return value
        }
    }

    /// A syntactically valid traceparent, to check a tracestate on its own.
    static let validParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
}

/// Reads trace context straight from a consumed record: each key is looked up in place
/// (``KafkaMessage/header(_:)``) rather than copying all of the record's headers first.
public struct KafkaMessageExtractor: Extractor {
    public typealias Carrier = KafkaMessage
    let headers: KafkaHeadersExtractor

    public init(validates: Bool = true) {
        self.headers = KafkaHeadersExtractor(validates: validates)
    }

    public func extract(key: String, from carrier: KafkaMessage) -> String? {
        headers.checked(key: key, carrier.header(key)?.value)
    }
}

/// Writes trace context into Kafka record headers, replacing a value the headers already have (an
/// output copies its input's headers; it must carry its own stage's span, not the previous one).
public struct KafkaHeadersInjector: Injector {
    public typealias Carrier = [KafkaHeader]

    public init() {}

    public func inject(_ value: String, forKey key: String, into carrier: inout [KafkaHeader]) {
        carrier.removeAll { $0.key == key }
        carrier.append(KafkaHeader(key: key, value: value))
    }
}

/// How a stage finished with one record, as the span's `streamfirst.outcome` attribute says it.
public enum RecordOutcome: String, Sendable {
    case forwarded, filtered
    case deadLetter = "dead_letter"
    case persisted, late
    /// Taken into a window's or a join's state (the stateful process stage).
    case aggregated
}

/// The tracing of one stage: a span per record it handles, parented by the record's `traceparent`
/// (or starting a trace), and that span's context injected into every record it produces — outputs,
/// routed records, dead letters. The one place the stages touch the tracing API.
///
/// Spans follow OpenTelemetry's messaging conventions: consuming stages open `<stage> <topic>`
/// spans of kind consumer (operation type `process`), ingest opens `ingest <topic>` of kind producer
/// (`send`); attributes `messaging.system`, `messaging.destination.name`,
/// `messaging.destination.partition.id`, `messaging.kafka.offset`, `messaging.consumer.group.name`,
/// plus `streamfirst.stage`, `streamfirst.pipeline`, `streamfirst.record.id`, `streamfirst.outcome`
/// and, for a dead letter, `error.type`. Attributes are only built for recording (sampled) spans.
public struct RecordTracer: Sendable {
    public let stage: String
    public let pipeline: String
    let tracer: any Tracer
    let extractor: KafkaHeadersExtractor
    /// The same checks as `extractor`, reading a consumed record's headers in place.
    let messageExtractor: KafkaMessageExtractor
    let group: String?
    /// `<stage> <topic>` of the topic most records come from, built once.
    let primaryTopic: String
    let primaryName: String
    /// The tracer when it is the default ``PropagatingTracer``: consumed records then take the fast
    /// path of ``startConsuming(_:)``.
    let propagating: PropagatingTracer?

    /// - Parameters:
    ///   - tracer: defaults to the bootstrapped one (`Worker` bootstraps it before building stages).
    ///   - topic: the input topic of a consuming stage, the output topic of ingest (span names).
    public init(stage: String, pipeline: String, topic: String, group: String? = nil, tracer: any Tracer = InstrumentationSystem.tracer) {
        self.stage = stage
        self.pipeline = pipeline
        self.tracer = tracer
        self.extractor = KafkaHeadersExtractor(validates: !(tracer is PropagatingTracer))
        self.messageExtractor = KafkaMessageExtractor(validates: extractor.validates)
        self.group = group
        self.primaryTopic = topic
        self.primaryName = "\(stage) \(topic)"
        self.propagating = tracer as? PropagatingTracer
    }

    /// The context the headers carry (top level when they carry none, or a malformed one).
    public func context(from headers: [KafkaHeader]) -> InstrumentationContext {
        context(from: headers, using: extractor)
    }

    func context<E: Extractor>(from carrier: E.Carrier, using extractor: E) -> InstrumentationContext {
        var context = InstrumentationContext.topLevel
        tracer.extract(carrier, into: &context, using: extractor)
        return context
    }

    /// Opens the span of a consumed record: child of the record's `traceparent`.
    public func startConsuming(_ message: KafkaMessage) -> RecordSpan {
        if let propagating, let parent = Self.propagatedParent(of: message) {
            return RecordSpan(propagated: propagating.childContext(of: parent.context), tracer: tracer)
        }
        return startConsumingSpan(message)
    }

    /// What the fast path read of a record's trace context.
    struct PropagatedParent {
        /// The record's `traceparent`; nil when it has none (its span starts a new trace).
        var context: TraceContext?
    }

    /// For the default tracer, the record's parent context read in place; nil when the fast reading
    /// cannot vouch for what the record carries (a `tracestate`, or a `traceparent` other than the
    /// strict lowercase version-00 form) and the general path must read it.
    // Per record: no header copy, no String, no InstrumentationContext, no span value. The general
    // path gives the same context (TracingTests checks the two against each other).
    static func propagatedParent(of message: KafkaMessage) -> PropagatedParent? {
        if message.hasHeader(RecordHeader.traceState) { return nil }
        guard let parsed = message.withUnsafeHeaderValue(RecordHeader.traceParent, { PropagatingTracer.strictTraceParent($0) }) else {
            // No value: absent (a new trace), or null (the general path decides).
            return message.hasHeader(RecordHeader.traceParent) ? nil : PropagatedParent(context: nil)
        }
        guard let parent = parsed else { return nil }
        return PropagatedParent(context: parent)
    }

    /// The general path of ``startConsuming(_:)``: the tracer's own `startSpan`.
    func startConsumingSpan(_ message: KafkaMessage) -> RecordSpan {
        let name = message.topic == primaryTopic ? primaryName : "\(stage) \(message.topic)"
        let span = tracer.startSpan(name, context: context(from: message, using: messageExtractor), ofKind: .consumer)
        if span.isRecording {
            var a = common(operation: "process", topic: message.topic)
            a.set("messaging.destination.partition.id", value: .string(String(message.partition)))
            a.set("messaging.kafka.offset", value: .int64(message.offset))
            a.set("streamfirst.record.id", value: .string(message.recordID))
            if let group { a.set("messaging.consumer.group.name", value: .string(group)) }
            span.attributes = a
        }
        return RecordSpan(span: span, tracer: tracer)
    }

    /// Opens the span of a record a source read (ingest): it continues `parent` — a `traceparent`
    /// the source received, e.g. the HTTP request's — or starts a new trace.
    public func startIngesting(id: String, source: String, parent: [KafkaHeader]) -> RecordSpan {
        let context = parent.isEmpty ? .topLevel : self.context(from: parent)
        let span = tracer.startSpan(primaryName, context: context, ofKind: .producer)
        if span.isRecording {
            var a = common(operation: "send", topic: primaryTopic)
            a.set("streamfirst.record.id", value: .string(id))
            a.set("streamfirst.source", value: .string(source))
            span.attributes = a
        }
        return RecordSpan(span: span, tracer: tracer)
    }

    /// Opens the span of a record a stage makes from several (a window result): child of `parent`
    /// (the span of the record that closed the window), or a new trace when no record did (a window
    /// closed by the wall clock).
    public func startDerived(name: String, id: String, topic: String, parent: RecordSpan?) -> RecordSpan {
        let span = tracer.startSpan(name, context: parent?.span.context ?? .topLevel, ofKind: .producer)
        if span.isRecording {
            var a = common(operation: "send", topic: topic)
            a.set("streamfirst.record.id", value: .string(id))
            span.attributes = a
        }
        return RecordSpan(span: span, tracer: tracer)
    }

    private func common(operation: String, topic: String) -> SpanAttributes {
        var a = SpanAttributes()
        a.set("messaging.system", value: .string("kafka"))
        a.set("messaging.operation.type", value: .string(operation))
        a.set("messaging.destination.name", value: .string(topic))
        a.set("streamfirst.stage", value: .string(stage))
        a.set("streamfirst.pipeline", value: .string(pipeline))
        return a
    }
}

/// The span of one record in one stage.
public struct RecordSpan: Sendable {
    private let storage: Storage
    let tracer: any Tracer

    private enum Storage: Sendable {
        case span(any Span)
        /// The default tracer's span of a consumed record, as its W3C context only: it records
        /// nothing, so no span value is made unless ``span`` is asked for.
        case propagated(TraceContext)
    }

    init(span: any Span, tracer: any Tracer) {
        self.storage = .span(span)
        self.tracer = tracer
    }

    init(propagated context: TraceContext, tracer: any Tracer) {
        self.storage = .propagated(context)
        self.tracer = tracer
    }

    /// The span (for the default tracer's consumed records, made on demand: it records nothing).
    public var span: any Span {
        switch storage {
        case .span(let span): return span
        case .propagated(let c):
            var context = InstrumentationContext.topLevel
            context[W3CContextKey.self] = c
            return PropagatingSpan(context: context)
        }
    }

    /// Writes this span's context as the `traceparent` (and `tracestate`) of `headers`.
    public func inject(into headers: inout [KafkaHeader]) {
        headers = self.headers(replacingContextIn: headers)
    }

    /// ``inject(into:)`` for a record about to be produced.
    public func stamp(_ message: inout KafkaProducerMessage) {
        message.headers = headers(replacingContextIn: message.headers)
    }

    /// `input` without its trace context, followed by this span's `traceparent` (and `tracestate`).
    // Runs for every record a stage produces. `input` is usually shared with the stage's output
    // value, so editing it in place would copy it and then grow the copy; one array of the final
    // size is built instead, and the default tracer's traceparent is written straight as bytes.
    public func headers(replacingContextIn input: [KafkaHeader]) -> [KafkaHeader] {
        var headers: [KafkaHeader] = []
        headers.reserveCapacity(input.count + 2)
        for h in input where h.key != RecordHeader.traceParent && h.key != RecordHeader.traceState {
            headers.append(h)
        }
        appendContext(to: &headers)
        return headers
    }

    /// The header keys that carry a span's context: what ``headers(replacingContextIn:)`` replaces.
    public static let contextHeaderKeys = [RecordHeader.traceParent, RecordHeader.traceState]

    /// This span's context as one inline header (a `traceparent` that costs no allocation), when
    /// that is all of it: the default tracer's context without a `tracestate`. Otherwise nil, and
    /// ``appendContext(to:)`` writes it.
    public func inlineContext() -> KafkaInlineHeader? {
        switch storage {
        case .propagated(let c): return PropagatingTracer.inlineTraceParent(c)
        case .span(let span):
            guard span is PropagatingSpan, let c = span.context[W3CContextKey.self] else { return nil }
            return PropagatingTracer.inlineTraceParent(c)
        }
    }

    /// Appends this span's context headers (`traceparent`, and `tracestate` when it has one).
    public func appendContext(to headers: inout [KafkaHeader]) {
        if case .propagated(let c) = storage {
            PropagatingTracer.append(c, to: &headers)
            return
        }
        let span = self.span
        if !PropagatingTracer.append(span.context, to: &headers) {
            tracer.inject(span.context, into: &headers, using: KafkaHeadersInjector())
        }
    }

    /// Ends the span with the outcome (a dead letter also sets `error.type` and the error status).
    public func end(_ outcome: RecordOutcome, errorClass: DeadLetterClass? = nil) {
        guard case .span(let span) = storage else { return } // records nothing
        if span.isRecording {
            span.updateAttributes { a in
                a.set("streamfirst.outcome", value: .string(outcome.rawValue))
                if let errorClass { a.set("error.type", value: .string(errorClass.rawValue)) }
            }
            if let errorClass { span.setStatus(SpanStatus(code: .error, message: errorClass.rawValue)) }
        }
        span.end()
    }
}
