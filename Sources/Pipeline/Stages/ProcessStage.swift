import Config
import Kafka
import Logging
import PipelineModel
import Processing
import StreamCore

/// The process stage: runs the pipeline's steps (filter, set, rename, drop, keep, enrich, route —
/// see docs/EXPRESSIONS.md) or a custom ``RecordProcessor`` on every record.
///
/// Outputs keep the input's headers (lineage: `sf.id`, `sf.event_time`, `sf.ingest_time`) and key.
/// When one input yields several outputs for the same topic, the second and later get the id
/// `<id>#<n>`, still deterministic, so a redelivered input produces identical outputs — except for
/// the fields an `enrich` step adds from a topic's live table, which are the rows current when the
/// record is processed (docs/EXPRESSIONS.md).
public struct ProcessHandler: StageHandler {
    let processor: any RecordProcessor
    let output: String
    /// Logical topic name → Kafka topic name, for routes.
    let routes: [String: String]
    /// The tables of `enrich` steps with `topic:`, fed from Kafka: loaded by ``start(kafka:logger:)``
    /// before the stage consumes, stopped by ``stop()`` after its clients closed.
    public let liveTables: [LiveTable]
    /// No steps and no custom processor (`steps: []`): every record is forwarded as it is, its bytes
    /// unchanged (still checked to be JSON), without building and re-serialising a value.
    let forwardsUnchanged: Bool
    /// How the input's values are read (JSON, or Avro through the registry; outputs are JSON).
    package var decoding: RecordDecoding = .json

    public init(processor: any RecordProcessor, output: String, routes: [String: String], liveTables: [LiveTable] = []) {
        self.init(processor: processor, output: output, routes: routes, liveTables: liveTables, forwardsUnchanged: false)
    }

    init(processor: any RecordProcessor, output: String, routes: [String: String], liveTables: [LiveTable], forwardsUnchanged: Bool) {
        self.processor = processor
        self.output = output
        self.routes = routes
        self.liveTables = liveTables
        self.forwardsUnchanged = forwardsUnchanged
    }

    /// Builds the handler from the `process:` section's `steps:`, followed by `custom` when given
    /// (then `steps:` may be left out). Routes of a custom processor must name declared topics too:
    /// records routed to an unknown logical topic are dead-lettered.
    ///
    /// An `enrich` step with `topic:` must name a topic declared under `topics:`; it joins against a
    /// ``LiveTable`` of that topic (one per topic, shared by the steps that read it), unless `tables`
    /// supplies the table for a logical topic instead (the broker-free inline tests do).
    public static func make(
        spec: PipelineSpec, common: PipelineSpec.StageCommon, custom: (any RecordProcessor)? = nil,
        tables: ((_ logicalTopic: String) -> any LookupTable)? = nil
    ) throws(ConfigError) -> ProcessHandler {
        let m = try common.mapping()
        let stepsNode =
            custom == nil
            ? try m.required("steps", hint: "a list of steps: filter, set, rename, drop, keep, enrich, route")
            : m.optional("steps")
        try m.finish()
        var processors: [any RecordProcessor] = []
        var routes: [String: String] = [:]
        var liveTables: [LiveTable] = []
        if let stepsNode {
            var provided: [String: (table: any LookupTable, maxRows: Int)] = [:]
            let steps = try StepProcessor(steps: stepsNode, baseDirectory: spec.baseDirectory) {
                request throws(ConfigError) -> any LookupTable in
                guard let topic = spec.topics[request.topic] else {
                    throw request.node.error(
                        "enrich reads the table topic '\(request.topic)', which is not declared under topics: (declared: "
                            + "\(spec.topics.keys.sorted().joined(separator: ", ")))"
                    )
                }
                if let earlier = provided[request.topic] {
                    guard earlier.maxRows == request.maxRows else {
                        throw request.node.error(
                            "max_rows \(request.maxRows) differs from \(earlier.maxRows) of an earlier enrich step on topic "
                                + "'\(request.topic)' (they share one table)"
                        )
                    }
                    return earlier.table
                }
                let table: any LookupTable
                if let tables {
                    table = tables(request.topic)
                } else {
                    let live = LiveTable(topic: topic.name, maxRows: request.maxRows, consumerProperties: common.consumerProperties)
                    liveTables.append(live)
                    table = live
                }
                provided[request.topic] = (table, request.maxRows)
                return table
            }
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
        try common.refuseAvroOutput()
        for logical in routes.keys.sorted() where spec.topics[logical]?.format == .avro {
            throw (stepsNode ?? common.node).error(
                "a route writes to '\(logical)', which has format: avro; stages do not write Avro yet (use format: json)")
        }
        let decoding = common.input.map {
            RecordDecoding(topic: $0, registry: spec.schemaRegistry, logger: Logger(label: "streamfirst.process"))
        }
        // An Avro input is decoded and written as JSON even without steps: its bytes cannot go on as they are.
        let noSteps = custom == nil && ((try? stepsNode?.sequence())?.isEmpty ?? false) && decoding?.format != .avro
        var handler = ProcessHandler(
            processor: processor, output: output.name, routes: routes, liveTables: liveTables, forwardsUnchanged: noSteps)
        if let decoding { handler.decoding = decoding }
        return handler
    }

    /// Loads every live table (each up to the end its topic had when loading began) before the
    /// stage consumes its first record.
    public func start(kafka: KafkaConfiguration, logger: Logger) async throws {
        for table in liveTables {
            try await table.start(kafka: kafka, logger: logger)
        }
    }

    public func prepare(_ batch: [KafkaMessage], health: StageHealth) async throws {
        try await decoding.prepare(batch, health: health)
    }

    /// Stops following the tables' topics and closes their consumers.
    public func stop() async {
        for table in liveTables {
            await table.stop()
        }
    }

    /// `steps: []`: the record as it came, with its `sf.id`, if it is JSON. No tree is built: the
    /// bytes are scanned in place and parsed only when the scan cannot vouch for them (to refuse
    /// them with the parser's error, or to accept them after all).
    func forwardUnchanged(_ message: KafkaMessage, into emitter: inout StageEmitter) {
        guard let certain = message.withUnsafeValueBytes({ JSONValue.isCertainlyWellFormed($0) }) else {
            return emitter.deadLetter(.tombstone)
        }
        if !certain, let bytes = message.value {
            do {
                _ = try JSONValue.parse(bytes)
            } catch {
                return emitter.deadLetter(.malformedJSON(error))
            }
        }
        if message.hasHeader(RecordHeader.id) { return emitter.forwardInput(to: output) }
        emitter.forwardInput(to: output, addingHeaders: [KafkaHeader(key: RecordHeader.id, value: message.recordContext.id)])
    }

    /// Every topic this handler may write to (for the producer to prepare).
    public var topics: [String] { [output] + routes.values }

    public func handle(_ message: KafkaMessage, into emitter: inout StageEmitter) {
        if forwardsUnchanged { return forwardUnchanged(message, into: &emitter) }
        let value: JSONValue
        switch decoding.decode(message) {
        case .success(let v): value = v
        case .failure(let reason): return emitter.deadLetter(reason)
        }
        let context = message.recordContext
        let outputs: [ProcessorOutput]
        do {
            outputs = try processor.process(value, context: context)
        } catch {
            return emitter.deadLetter(DeadLetterReason(component: error.step, errorClass: error.errorClass, message: error.message))
        }
        guard !outputs.isEmpty else { return } // filtered
        var ids = OutputIDs(message, id: context.id)
        let key = message.key
        let headers = message.headers
        for out in outputs {
            var topic = output
            if let route = out.route {
                guard let routed = routes[route] else {
                    // Withdraws the outputs emitted before this one: the record is dead-lettered whole.
                    return emitter.deadLetter(
                        DeadLetterReason(
                            component: "route", errorClass: .unknownRoute,
                            message: "the processor routed the record to '\(route)', which is not a declared topic"))
                }
                topic = routed
            }
            emitter.emit(topic: topic, key: key, value: out.value.serialized(), headers: ids.headers(for: topic, from: headers))
        }
    }
}
