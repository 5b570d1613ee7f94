import Config
import Kafka
import Pipeline
import PipelineModel
import Processing
import StreamCore
import Yams

/// Runs a pipeline file's inline `tests:` without a broker (in the spirit of Kafka Streams'
/// TopologyTestDriver): each test's input records enter the first consuming stage (validate, else
/// process); every record a stage emits is handed to the stage that consumes its topic, in order;
/// outputs, filtered records and dead letters are collected per topic and compared with `expect`.
/// The stages' own handlers run — the same code as the workers — built from the same file.
///
/// ```yaml
/// tests:
///   - name: hot readings are copied to alerts
///     input:
///       - { sensor_id: sensor-001, temperature_c: 35 }        # a record value
///       - raw: "{not json"                                    # bytes as they are
///       - value: { n: 1 }
///         key: k1
///         headers: { sf.schema.version: "1" }
///     expect:
///       enriched: [ { sensor_id: sensor-001, hot: true } ]    # per logical topic, in order; each a subset
///       dead_letter: [ { stage: validate, reason: MalformedJSON } ]
/// ```
///
/// `enrich` steps that join a topic (`topic:`) read an in-memory table here instead of Kafka. A
/// test fills it with `tables:` — per logical table topic, the records of that topic in order, as
/// `{ key, value }`; a later record for a key replaces the earlier one and `value: null` (a
/// tombstone) deletes it, as on Kafka. Tables a test does not fill are empty; every test starts
/// from its own tables.
///
/// ```yaml
///   - name: readings get the sensor's site
///     tables:
///       sensors: [ { key: s1, value: { site: north } }, { key: s2, value: { site: south } }, { key: s2, value: null } ]
///     input: [ { sensor_id: s1 }, { sensor_id: s2 } ]
///     expect: { enriched: [ { site: north }, { sensor_id: s2 } ] }
/// ```
package struct PipelineTestRunner: Sendable {
    /// One test's outcome: failures are readable lines; empty means it passed.
    package struct Result: Sendable {
        package var name: String
        package var line: Int?
        package var failures: [String]
        package var passed: Bool { failures.isEmpty }
    }

    struct Emitted {
        var topic: String
        var value: [UInt8]
        var key: [UInt8]?
        var headers: [KafkaHeader]
    }

    struct DeadLetter {
        var stage: String
        var reason: DeadLetterReason
        var value: [UInt8]?
    }

    let spec: PipelineSpec
    let handlers: [(stage: PipelineSpec.StageName, input: String, handler: any StageHandler)]
    /// The tables of `enrich` steps with `topic:`, by logical topic, filled per test.
    let tables: [String: InMemoryLookupTable]

    /// Builds the validate and process handlers of `spec` (a configuration error names its line).
    package init(spec: PipelineSpec) throws(ConfigError) {
        self.spec = spec
        var handlers: [(PipelineSpec.StageName, String, any StageHandler)] = []
        if let common = spec.stages[.validate], let input = common.input {
            // Inline tests give record values, not their encoding: every input is read as JSON.
            var handler = try ValidateHandler.make(spec: spec, common: common)
            handler.decoding = .json
            handlers.append((.validate, input.name, handler))
        }
        var tables: [String: InMemoryLookupTable] = [:]
        if let common = spec.stages[.process], let input = common.input {
            if StatefulProcessConfig.isStateful(common) {
                let config = try StatefulProcessConfig.make(spec: spec, common: common)
                let handler = StatefulTestHandler(config: config)
                for topic in config.inputTopics { handlers.append((.process, topic, handler)) }
            } else {
                var handler = try ProcessHandler.make(spec: spec, common: common) { logical in
                    let table = InMemoryLookupTable()
                    tables[logical] = table
                    return table
                }
                handler.decoding = .json
                handlers.append((.process, input.name, handler))
            }
        }
        self.handlers = handlers
        self.tables = tables
    }

    /// Fills the in-memory tables from a test's `tables:` (absent: all empty).
    func fillTables(_ node: ConfigNode?) throws(ConfigError) {
        var contents: [String: [String: [String: JSONValue]]] = [:]
        if let node {
            let m = try node.mapping()
            for logical in m.keys {
                let listNode = try m.required(logical)
                guard tables[logical] != nil else {
                    throw listNode.error(
                        "'\(logical)' is not a table topic of an enrich step (table topics: "
                            + "\(tables.keys.sorted().joined(separator: ", ")))"
                    )
                }
                var rows: [String: [String: JSONValue]] = [:]
                for item in try listNode.sequence() {
                    let r = try item.mapping()
                    let key = try r.required("key", hint: "the record's Kafka key").string()
                    guard r.contains("value") else {
                        throw item.error("missing required key value (a JSON object, or null to delete the key)")
                    }
                    let valueNode = r.optional("value") // nil: explicitly null, a tombstone
                    try r.finish()
                    switch valueNode.map({ Self.json($0.node) }) ?? .null {
                    case .object(let row): rows[key] = row
                    case .null: rows[key] = nil
                    default: throw item.error("a table row's value must be an object (or null to delete the key)")
                    }
                }
                contents[logical] = rows
            }
        }
        for (logical, table) in tables { table.replaceAll(with: contents[logical] ?? [:]) }
    }

    /// What the validate and process stages made of some records, without a broker.
    package struct Driven: Sendable {
        /// Every record a stage produced, by topic name, in the order produced.
        package var outputs: [String: [KafkaMessage]] = [:]
        /// Every record a stage dead-lettered, with the stage and the reason.
        package var deadLetters: [(stage: PipelineSpec.StageName, reason: DeadLetterReason, message: KafkaMessage)] = []
    }

    /// Feeds `inputs` to the stage that consumes their topic and every record a stage emits to the
    /// stage that consumes its topic, in order (the inline tests and `streamfirst chaos`' oracle).
    /// Stateful stages start from empty state. `partition` places an emitted record the way the
    /// producer would (the stateful engine keeps state per input partition); by default all go to 0.
    package func drive(
        _ inputs: [KafkaMessage], partition: (_ topic: String, _ key: [UInt8]?) -> Int32 = { _, _ in 0 }
    ) -> Driven {
        for h in handlers { (h.handler as? StatefulTestHandler)?.reset() }
        var driven = Driven()
        var queue = inputs
        var next = 0 // an index, not removeFirst: chaos drives tens of thousands of records
        var offsets: [String: Int64] = [:]
        while next < queue.count {
            let message = queue[next]
            next += 1
            guard let stage = handlers.first(where: { $0.input == message.topic }) else { continue }
            switch stage.handler.outcome(for: message) {
            case .filtered: continue
            case .deadLetter(let reason):
                driven.deadLetters.append((stage.stage, reason, message))
            case let outcome:
                for out in outcome.outputs(for: message) {
                    let p = partition(out.topic, out.key)
                    let key = "\(out.topic)/\(p)"
                    let offset = offsets[key, default: 0]
                    offsets[key] = offset + 1
                    let m = KafkaMessage(
                        topic: out.topic, partition: p, offset: offset, key: out.key, value: out.value, headers: out.headers)
                    driven.outputs[out.topic, default: []].append(m)
                    queue.append(m)
                }
            }
        }
        return driven
    }

    /// Runs every test of the file's `tests:` section (none: an empty list).
    package func run() throws(ConfigError) -> [Result] {
        guard let node = spec.tests else { return [] }
        guard let firstInput = handlers.first?.input else {
            throw node.error("tests need a validate or process stage to feed")
        }
        var results: [Result] = []
        for (t, testNode) in try node.sequence().enumerated() {
            let m = try testNode.mapping()
            let name = try m.string("name") ?? "test \(t + 1)"
            let inputs = try m.required("input", hint: "a list of records").sequence()
            let expectNode = try m.required("expect", hint: "logical topic: [records], dead_letter: [{stage, reason}]")
            let tablesNode = m.optional("tables")
            try m.finish()
            try fillTables(tablesNode)

            // Drive the records through the stages.
            var queue: [KafkaMessage] = []
            var offsets: [String: Int64] = [:]
            for (i, item) in inputs.enumerated() {
                var message = try Self.message(item, topic: firstInput, offset: 0, id: "test:\(t + 1):\(i + 1)", spec: spec)
                message.offset = offsets[message.topic, default: 0]
                offsets[message.topic] = message.offset + 1
                queue.append(message)
            }
            let driven = drive(queue)
            var outputs: [String: [Emitted]] = [:]
            for (topic, messages) in driven.outputs {
                outputs[topic] = messages.map { Emitted(topic: $0.topic, value: $0.value ?? [], key: $0.key, headers: $0.headers) }
            }
            let deadLetters = driven.deadLetters.map { DeadLetter(stage: $0.stage.rawValue, reason: $0.reason, value: $0.message.value) }

            // Compare.
            var failures: [String] = []
            let expect = try expectNode.mapping()
            var checkedDeadLetters = false
            for logical in expect.keys {
                let list = try expect.required(logical).sequence()
                if logical == "dead_letter" || logical == spec.deadLetter.logical {
                    checkedDeadLetters = true
                    failures += try Self.compareDeadLetters(list, deadLetters)
                    continue
                }
                guard let topic = spec.topics[logical] else {
                    throw try expect.required(logical).error(
                        "'\(logical)' is not a topic of this pipeline (topics: \(spec.topics.keys.sorted().joined(separator: ", ")), "
                            + "dead_letter)"
                    )
                }
                let actual = outputs[topic.name] ?? []
                if actual.count != list.count {
                    failures.append("\(logical): expected \(list.count) record(s), got \(actual.count)\(Self.preview(actual))")
                    continue
                }
                for (i, (want, got)) in zip(list, actual).enumerated() {
                    let gotValue = (try? JSONValue.parse(got.value)) ?? .string(String(decoding: got.value, as: UTF8.self))
                    if let why = Self.mismatch(expected: Self.json(want.node), actual: gotValue, path: "") {
                        failures.append("\(logical)[\(i)]: \(why) in \(gotValue.jsonString)")
                    }
                }
            }
            if !checkedDeadLetters && !deadLetters.isEmpty {
                failures.append(
                    "unexpected dead letters: "
                        + deadLetters.map { "\($0.stage) \($0.reason.errorClass): \($0.reason.message)" }.joined(separator: "; "))
            }
            results.append(Result(name: name, line: testNode.line, failures: failures))
        }
        return results
    }

    /// An input item: `raw: "text"`, `value: {…}` (with optional `key`, `headers`, and `topic` — a
    /// logical topic, e.g. the second input of a join; default: the first stage's input), or the value itself.
    static func message(
        _ item: ConfigNode, topic defaultTopic: String, offset: Int64, id: String, spec: PipelineSpec
    ) throws(ConfigError) -> KafkaMessage {
        var topic = defaultTopic
        var headers = [KafkaHeader(key: RecordHeader.id, value: id)]
        var key: [UInt8]?
        let bytes: [UInt8]
        if case .mapping(let mapping) = item.node, mapping.keys.contains(where: { $0.string == "raw" || $0.string == "value" }) {
            let m = try item.mapping()
            if let raw = m.optional("raw") {
                bytes = Array(try raw.string().utf8)
            } else {
                bytes = json(try m.required("value").node).serialized()
            }
            key = try m.string("key").map { Array($0.utf8) }
            if let t = m.optional("topic") {
                let logical = try t.string()
                guard let declared = spec.topics[logical] else { throw t.error("'\(logical)' is not a topic of this pipeline") }
                topic = declared.name
            }
            if let h = m.optional("headers") {
                for (k, v) in try h.stringMap().sorted(by: { $0.key < $1.key }) { headers.append(KafkaHeader(key: k, value: v)) }
            }
            try m.finish()
        } else {
            bytes = json(item.node).serialized()
        }
        return KafkaMessage(topic: topic, partition: 0, offset: offset, key: key, value: bytes, headers: headers)
    }

    static func compareDeadLetters(_ list: [ConfigNode], _ actual: [DeadLetter]) throws(ConfigError) -> [String] {
        guard list.count == actual.count else {
            return [
                "dead_letter: expected \(list.count), got \(actual.count)"
                    + (actual.isEmpty ? "" : ": " + actual.map { "\($0.stage) \($0.reason.errorClass)" }.joined(separator: ", "))
            ]
        }
        var failures: [String] = []
        for (i, (want, got)) in zip(list, actual).enumerated() {
            let m = try want.mapping()
            if let stage = try m.string("stage"), stage != got.stage {
                failures.append("dead_letter[\(i)]: stage \(got.stage), expected \(stage)")
            }
            if let reason = try m.string("reason"), reason != got.reason.errorClass.rawValue {
                failures.append("dead_letter[\(i)]: reason \(got.reason.errorClass) (\(got.reason.message)), expected \(reason)")
            }
            if let text = try m.string("message_contains"), !got.reason.message.contains(text) {
                failures.append("dead_letter[\(i)]: message '\(got.reason.message)' does not contain '\(text)'")
            }
            try m.finish()
        }
        return failures
    }

    static func preview(_ actual: [Emitted]) -> String {
        actual.isEmpty ? "" : ": " + actual.prefix(3).map { String(decoding: $0.value, as: UTF8.self) }.joined(separator: ", ")
    }

    /// Why `actual` does not contain `expected` (objects: every expected key, recursively; other
    /// values: equal), or nil.
    static func mismatch(expected: JSONValue, actual: JSONValue, path: String) -> String? {
        if case .object(let e) = expected {
            guard case .object(let a) = actual else {
                return "\(path.isEmpty ? "the record" : path) is \(actual.typeName), expected an object"
            }
            for (k, v) in e.sorted(by: { $0.key < $1.key }) {
                guard let got = a[k] else { return "\(path)/\(k) is missing" }
                if let why = mismatch(expected: v, actual: got, path: "\(path)/\(k)") { return why }
            }
            return nil
        }
        return expected.jsonEquals(actual)
            ? nil : "\(path.isEmpty ? "the record" : path) is \(actual.jsonString), expected \(expected.jsonString)"
    }

    /// YAML → JSON with YAML 1.2 core types for plain scalars (quoted scalars stay strings).
    static func json(_ node: Node) -> JSONValue {
        switch node {
        case .scalar(let s):
            guard s.style == .plain else { return .string(s.string) }
            switch s.string {
            case "", "~", "null", "Null", "NULL": return .null
            case "true", "True", "TRUE": return .bool(true)
            case "false", "False", "FALSE": return .bool(false)
            default:
                if let i = Int64(s.string) { return .integer(i) }
                if let d = Double(s.string), s.string.contains(where: { $0.isNumber }) { return .number(d) }
                return .string(s.string)
            }
        case .mapping(let m):
            var o: [String: JSONValue] = [:]
            for (k, v) in m { o[k.string ?? ""] = json(v) }
            return .object(o)
        case .sequence(let seq):
            return .array(seq.map(json))
        case .alias:
            return .null
        }
    }
}
