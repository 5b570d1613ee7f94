import StreamCore

/// One record a processor emits.
public struct ProcessorOutput: Sendable, Equatable {
    public var value: JSONValue
    /// A logical topic of the pipeline; nil sends the record to the stage's default output.
    public var route: String?

    public init(value: JSONValue, route: String? = nil) {
        self.value = value
        self.route = route
    }
}

/// Why a processor refused a record: becomes the dead letter's headers.
public struct ProcessingError: Error, Sendable, CustomStringConvertible, Equatable {
    /// Which step, e.g. `steps[1].set.temperature_f`.
    public var step: String
    /// The error class, e.g. ``DeadLetterClass/expressionError``, or your own.
    public var errorClass: DeadLetterClass
    public var message: String

    public init(step: String, errorClass: DeadLetterClass, message: String) {
        self.step = step
        self.errorClass = errorClass
        self.message = message
    }

    public var description: String { "\(step): \(errorClass): \(message)" }
}

/// Stateless per-record logic of the process stage. Implement it in your own executable for custom
/// logic and run it with `Worker.main(processor:)` (module `StageWorker`).
///
/// Must be deterministic (the same record and context give the same outputs): a record redelivered
/// after a crash must produce the same records, which is what makes redelivery harmless downstream.
/// Return `[]` to filter a record out; throw to dead-letter it.
public protocol RecordProcessor: Sendable {
    func process(_ value: JSONValue, context: RecordContext) throws(ProcessingError) -> [ProcessorOutput]
}

/// Runs processors in sequence: every output of one is the input of the next, keeping its route
/// unless the next processor sets another.
public struct ProcessorChain: RecordProcessor {
    public let processors: [any RecordProcessor]

    public init(_ processors: [any RecordProcessor]) {
        self.processors = processors
    }

    public func process(_ value: JSONValue, context: RecordContext) throws(ProcessingError) -> [ProcessorOutput] {
        var current = [ProcessorOutput(value: value)]
        for processor in processors {
            var next: [ProcessorOutput] = []
            for item in current {
                for out in try processor.process(item.value, context: context) {
                    next.append(ProcessorOutput(value: out.value, route: out.route ?? item.route))
                }
            }
            current = next
            if current.isEmpty { break }
        }
        return current
    }
}
