import Kafka
import StreamCore

/// Where a ``StageHandler`` writes what one consumed record becomes: push-style, as Kafka Streams'
/// `ProcessorContext.forward`. The outputs go straight into the batch the stage produces, already
/// carrying the record's trace context; nothing is collected in between.
///
/// - ``forwardInput(to:removingHeaders:addingHeaders:)``: the input record itself, its key, value
///   and headers passed from librdkafka's consumer buffer to its producer without a Swift copy; only
///   the header edits are Swift values.
/// - ``emit(topic:key:value:headers:)``: a record of owned bytes.
/// - ``deadLetter(_:)``: the input cannot be handled. Whatever was emitted for it is withdrawn (a
///   record is either handled whole or dead-lettered whole) and later emits are ignored; the stage
///   sends the original to the dead-letter topic with the reason.
/// - Emitting nothing filters the record out.
///
/// Handlers that compute a ``StageOutcome`` value hand it over with ``apply(_:)``.
public struct StageEmitter {
    /// The batch's outputs so far, this record's at the end (from `start` on).
    package var messages: [KafkaProducerMessage]
    private let input: KafkaMessage
    /// Stamps the record's trace context on each output; nil where nothing is traced (the
    /// broker-free ``StageHandler/outcome(for:)``).
    private let span: RecordSpan?
    private let start: Int
    /// Set by ``deadLetter(_:)``.
    public private(set) var deadLetterReason: DeadLetterReason?

    /// An emitter for `input` with an empty list of outputs.
    package init(input: KafkaMessage, span: RecordSpan?) {
        self.input = input
        self.span = span
        self.messages = []
        self.start = 0
    }

    /// An emitter for `input` that appends to `messages`, which it takes over (`messages` is left
    /// empty) until ``returnMessages(to:)``: moved, not copied, so appending never copies the batch.
    package init(input: KafkaMessage, span: RecordSpan?, appendingTo messages: inout [KafkaProducerMessage]) {
        self.input = input
        self.span = span
        self.messages = []
        self.start = messages.count
        swap(&self.messages, &messages)
    }

    /// Hands the outputs (the earlier ones and this record's) back to `messages`.
    package mutating func returnMessages(to messages: inout [KafkaProducerMessage]) {
        swap(&self.messages, &messages)
    }

    /// How many records were emitted for the input (0 after ``deadLetter(_:)``).
    public var count: Int { messages.count - start }

    /// Produces the input record itself to `topic`, byte for byte, with these header edits (headers
    /// named in `removingHeaders` or `addingHeaders` are left out, then `addingHeaders` is appended).
    public mutating func forwardInput(to topic: String, removingHeaders: [String] = [], addingHeaders: [KafkaHeader] = []) {
        guard deadLetterReason == nil else { return }
        guard let span else {
            messages.append(
                KafkaProducerMessage(forwarding: input, to: topic, removingHeaders: removingHeaders, addingHeaders: addingHeaders))
            return
        }
        // The input's own trace context is replaced by this record's span's: with the default tracer
        // an inline `traceparent`, so forwarding allocates nothing per record in Swift.
        let removing = removingHeaders.isEmpty ? RecordSpan.contextHeaderKeys : removingHeaders + RecordSpan.contextHeaderKeys
        if let inline = span.inlineContext() {
            messages.append(
                KafkaProducerMessage(
                    forwarding: input, to: topic, removingHeaders: removing, addingHeaders: addingHeaders, inlineHeader: inline))
            return
        }
        var headers = addingHeaders
        span.appendContext(to: &headers)
        messages.append(KafkaProducerMessage(forwarding: input, to: topic, removingHeaders: removing, addingHeaders: headers))
    }

    /// Produces a record of owned bytes to `topic`.
    public mutating func emit(topic: String, key: [UInt8]?, value: [UInt8], headers: [KafkaHeader]) {
        guard deadLetterReason == nil else { return }
        var message = KafkaProducerMessage(topic: topic, key: key, value: value, headers: headers)
        span?.stamp(&message)
        messages.append(message)
    }

    /// Produces `output`.
    public mutating func emit(_ output: StageOutput) {
        emit(topic: output.topic, key: output.key, value: output.value, headers: output.headers)
    }

    /// Refuses the input: what was emitted for it is withdrawn, later emits are ignored, and the
    /// original goes to the dead-letter topic with `reason`. The first reason given is kept.
    public mutating func deadLetter(_ reason: DeadLetterReason) {
        guard deadLetterReason == nil else { return }
        deadLetterReason = reason
        messages.removeSubrange(start...)
    }

    /// Does what `outcome` says.
    public mutating func apply(_ outcome: StageOutcome) {
        switch outcome {
        case .forward(let outputs):
            for output in outputs { emit(output) }
        case .forwardInput(let topic, let removing, let adding):
            forwardInput(to: topic, removingHeaders: removing, addingHeaders: adding)
        case .filtered:
            break
        case .deadLetter(let reason):
            deadLetter(reason)
        }
    }
}

extension StageHandler {
    /// What the handler makes of `message`, as a value: for broker-free tests and the inline test
    /// runner. Emitted records are listed as owned ``StageOutput``s (a forwarded input included),
    /// untraced.
    public func outcome(for message: KafkaMessage) -> StageOutcome {
        var emitter = StageEmitter(input: message, span: nil)
        handle(message, into: &emitter)
        if let reason = emitter.deadLetterReason { return .deadLetter(reason) }
        if emitter.messages.isEmpty { return .filtered }
        return .forward(emitter.messages.map { StageOutput(topic: $0.topic, key: $0.key, value: $0.value ?? [], headers: $0.headers) })
    }
}
