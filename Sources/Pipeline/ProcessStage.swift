import Config
import Kafka
import Processing
import StreamCore

/// The process stage: runs the pipeline's steps (filter, set, rename, drop, keep, enrich, route —
/// see docs/EXPRESSIONS.md) or a custom ``RecordProcessor`` on every record.
///
/// Outputs keep the input's headers (lineage: `sf.id`, `sf.event_time`, `sf.ingest_time`) and key.
/// When one input yields several outputs for the same topic, the second and later get the id
/// `<id>#<n>`, still deterministic, so a redelivered input produces identical outputs.
public struct ProcessHandler: StageHandler {
    let processor: any RecordProcessor
    let output: String
    /// Logical topic name → Kafka topic name, for routes.
    let routes: [String: String]

    public init(processor: any RecordProcessor, output: String, routes: [String: String]) {
        self.processor = processor
        self.output = output
        self.routes = routes
    }

    /// Builds the handler from the `process:` section's `steps:`, followed by `custom` when given
    /// (then `steps:` may be left out). Routes of a custom processor must name declared topics too:
    /// records routed to an unknown logical topic are dead-lettered.
    public static func make(spec: PipelineSpec, common: PipelineSpec.StageCommon, custom: (any RecordProcessor)? = nil)
        throws(ConfigError) -> ProcessHandler
    {
        let m = try common.mapping()
        let stepsNode = custom == nil
            ? try m.required("steps", hint: "a list of steps: filter, set, rename, drop, keep, enrich, route")
            : m.optional("steps")
        try m.finish()
        var processors: [any RecordProcessor] = []
        var routes: [String: String] = [:]
        if let stepsNode {
            let steps = try StepProcessor(steps: stepsNode, baseDirectory: spec.baseDirectory)
            for logical in steps.routes {
                guard let topic = spec.topics[logical] else {
                    throw stepsNode.error("a route sends records to '\(logical)', which is not declared under topics:")
                }
                routes[logical] = topic.name
            }
            processors.append(steps)
        }
        if let custom {
            processors.append(custom)
            for (logical, topic) in spec.topics where routes[logical] == nil { routes[logical] = topic.name }
        }
        guard let output = common.output else { throw common.node.error("process needs an output topic") }
        let processor: any RecordProcessor = processors.count == 1 ? processors[0] : ProcessorChain(processors)
        return ProcessHandler(processor: processor, output: output.name, routes: routes)
    }

    /// Every topic this handler may write to (for the producer to prepare).
    public var topics: [String] { [output] + routes.values }

    public func handle(_ message: KafkaMessage) -> StageOutcome {
        guard let bytes = message.value else {
            return .deadLetter(DeadLetterReason(component: "json-parse", errorClass: "MalformedJSON", message: "the record has no value (tombstone)"))
        }
        let value: JSONValue
        do {
            value = try JSONValue.parse(bytes)
        } catch {
            return .deadLetter(DeadLetterReason(component: "json-parse", errorClass: "MalformedJSON", message: error.description))
        }
        let context = message.recordContext
        let id = context.id
        let outputs: [ProcessorOutput]
        do {
            outputs = try processor.process(value, context: context)
        } catch {
            return .deadLetter(DeadLetterReason(component: error.step, errorClass: error.errorClass, message: error.message))
        }
        if outputs.isEmpty { return .filtered }
        var perTopic: [String: Int] = [:]
        var result: [StageOutput] = []
        result.reserveCapacity(outputs.count)
        for out in outputs {
            var topic = output
            if let route = out.route {
                guard let routed = routes[route] else {
                    return .deadLetter(DeadLetterReason(component: "route", errorClass: "UnknownRoute", message: "the processor routed the record to '\(route)', which is not a declared topic"))
                }
                topic = routed
            }
            let n = perTopic[topic, default: 0]
            perTopic[topic] = n + 1
            var headers = message.headers
            if n > 0 {
                headers.removeAll { $0.key == RecordHeader.id }
                headers.append(KafkaHeader(key: RecordHeader.id, value: "\(id)#\(n)"))
            } else if message.header(RecordHeader.id) == nil {
                headers.append(KafkaHeader(key: RecordHeader.id, value: id))
            }
            result.append(StageOutput(topic: topic, key: message.key, value: out.value.serialized(), headers: headers))
        }
        return .forward(result)
    }
}
