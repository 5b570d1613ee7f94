import Config
import Kafka
import Logging
import PipelineModel
import Processing
import StreamCore
import Validation

/// The validate stage: every record must be JSON and satisfy the pipeline's JSON Schema (draft
/// 2020-12). Valid records go on byte for byte with their headers; the others go to the dead-letter
/// topic with every violation's JSON Pointer in `sf.errors.violations`.
///
/// Settings (section `validate:`): `schema` (name of a file in the schemas directory without
/// `.json`), `schemas_dir` (default `schemas`, relative to the pipeline file), `format_assertion`
/// (default false: `format` is an annotation, as 2020-12 specifies).
public struct ValidateHandler: StageHandler {
    let schema: JSONSchema
    let schemaName: String
    let output: String
    /// Set when `schema` names a versioned subject (a directory); `schema` is then its latest version.
    let subject: SchemaSubject?
    /// How the input's values are read (JSON, or Avro through the registry). Valid records of a
    /// JSON input go on byte for byte; those of an Avro input are written as JSON.
    package var decoding: RecordDecoding = .json

    public init(schema: JSONSchema, schemaName: String, output: String) {
        self.schema = schema
        self.schemaName = schemaName
        self.output = output
        self.subject = nil
    }

    public init(subject: SchemaSubject, output: String) throws(ConfigError) {
        guard let latest = subject.schemas[subject.latest] else {
            throw ConfigError(file: subject.directory, line: nil, path: "", message: "the subject has no versions")
        }
        self.schema = latest
        self.schemaName = subject.name
        self.output = output
        self.subject = subject
    }

    /// Builds the handler from the `validate:` section (loads and compiles the schemas; for a
    /// versioned subject also checks its versions' compatibility and refuses to start on a break).
    public static func make(spec: PipelineSpec, common: PipelineSpec.StageCommon) throws(ConfigError) -> ValidateHandler {
        let m = try common.mapping()
        let schemaNode = try m.required(
            "schema", hint: "the schema's file name in the schemas directory, without .json, or a subject directory")
        let name = try schemaNode.string()
        let dirNode = m.optional("schemas_dir")
        let dir = spec.resolve(path: try dirNode?.string() ?? "schemas")
        let formatAssertion = try m.bool("format_assertion", default: false)
        try m.finish()
        guard let output = common.output else { throw schemaNode.error("validate needs an output topic") }
        if SchemaSubject.exists(name: name, in: dir) {
            let subject = try SchemaSubject.load(
                name: name, schemasDirectory: dir, formatAssertion: formatAssertion, environment: spec.environment)
            let problems = subject.compatibilityProblems()
            if !problems.isEmpty {
                throw schemaNode.error(
                    "subject \(name) breaks its compatibility mode \(subject.compatibility.rawValue):\n  "
                        + problems.joined(separator: "\n  "))
            }
            var handler = try ValidateHandler(subject: subject, output: output.name)
            handler.decoding = try Self.decoding(spec: spec, common: common, at: schemaNode)
            return handler
        }
        let registry: SchemaRegistry
        do {
            registry = try SchemaRegistry.load(directory: dir, formatAssertion: formatAssertion)
        } catch {
            throw (dirNode ?? schemaNode).error("cannot load the schemas in \(dir): \(error)")
        }
        let schema: JSONSchema
        do {
            schema = try registry.schema(named: name)
        } catch {
            throw schemaNode.error("\(error)")
        }
        var handler = ValidateHandler(schema: schema, schemaName: name, output: output.name)
        handler.decoding = try Self.decoding(spec: spec, common: common, at: schemaNode)
        return handler
    }

    /// The input's decoding; refuses an output topic in Avro (writing Avro is not built yet).
    static func decoding(spec: PipelineSpec, common: PipelineSpec.StageCommon, at node: ConfigNode) throws(ConfigError) -> RecordDecoding {
        try common.refuseAvroOutput()
        guard let input = common.input else { return .json }
        return RecordDecoding(topic: input, registry: spec.schemaRegistry, logger: Logger(label: "streamfirst.validate"))
    }

    public func prepare(_ batch: [KafkaMessage], health: StageHealth) async throws {
        try await decoding.prepare(batch, health: health)
    }

    public func handle(_ message: KafkaMessage, into emitter: inout StageEmitter) {
        emitter.apply(decide(message))
    }

    /// The decision for one record, as a value (a valid record is at most one output).
    func decide(_ message: KafkaMessage) -> StageOutcome {
        // Parsed in place, from the consumer's buffer: the bytes are copied only for an output
        // that changes them (an upcast record).
        var value: JSONValue
        switch decoding.decode(message) {
        case .success(let v): value = v
        case .failure(let reason): return .deadLetter(reason)
        }
        var versionHeaders: [KafkaHeader] = []
        var upcastFrom: Int?
        if let subject {
            let declared = message.headerString(SchemaSubject.versionHeader)
            guard let version = subject.version(of: value, header: declared) else {
                return .deadLetter(
                    DeadLetterReason(
                        component: "schema:\(schemaName)", errorClass: .unknownSchemaVersion,
                        message:
                            "the record's schema version is not a positive integer "
                            + "(\(declared ?? subject.versionField.map { "field \($0)" } ?? "?"))"
                    ))
            }
            guard version <= subject.latest else {
                return .deadLetter(
                    DeadLetterReason(
                        component: "schema:\(schemaName)", errorClass: .unknownSchemaVersion,
                        message:
                            "schema version \(version) of \(schemaName) is not known here (latest: v\(subject.latest)); deploy it, then "
                            + "redrive"
                    ))
            }
            if version < subject.latest {
                // First against the version the record claims (a v1 producer must keep the v1
                // contract), then upcast and against the latest.
                if let own = subject.schemas[version] {
                    let violations = own.validate(value)
                    if !violations.isEmpty { return Self.violation(violations, schema: "\(schemaName) v\(version)") }
                }
                do {
                    value = try subject.upcast(value, from: version, context: message.recordContext)
                } catch {
                    return .deadLetter(
                        DeadLetterReason(
                            component: "schema:\(schemaName):v\(version)", errorClass: .upcastFailed,
                            message: "\(error.step): \(error.message)"))
                }
                upcastFrom = version
            }
            versionHeaders.append(KafkaHeader(key: SchemaSubject.versionHeader, value: String(subject.latest)))
            if let upcastFrom { versionHeaders.append(KafkaHeader(key: "sf.schema.upcast_from", value: String(upcastFrom))) }
        }
        let violations = schema.validate(value)
        if violations.isEmpty {
            // Unchanged records go on byte for byte, from the consumer's buffer; upcast ones re-serialised.
            guard upcastFrom != nil || decoding.format != .json else {
                return .forwardInput(to: output, addingHeaders: versionHeaders)
            }
            let headers = message.headers.filter { h in !versionHeaders.contains { $0.key == h.key } } + versionHeaders
            return .forward([StageOutput(topic: output, key: message.key, value: value.serialized(), headers: headers)])
        }
        let versionNote = upcastFrom.map { " (upcast from v\($0))" } ?? ""
        return Self.violation(violations, schema: "\(schemaName)\(subject.map { " v\($0.latest)" } ?? "")\(versionNote)")
    }

    static func violation(_ violations: [SchemaViolation], schema: String) -> StageOutcome {
        let list = JSONValue.array(
            violations.map { v in
                ["path": .string(v.instancePath), "keyword": .string(v.keywordLocation), "message": .string(v.message)]
            })
        let first = violations[0]
        let summary =
            "\(violations.count) violation\(violations.count == 1 ? "" : "s") of schema \(schema); first at '\(first.instancePath)': "
            + "\(first.message)"
        let component = "schema:" + (schema.split(separator: " ").first.map(String.init) ?? schema)
        return .deadLetter(DeadLetterReason(component: component, errorClass: .schemaViolation, message: summary, violations: list))
    }
}

extension PipelineSpec.StageCommon {
    /// Refuses `format: avro` on the stage's output: stages read Avro, but do not write it yet.
    func refuseAvroOutput() throws(ConfigError) {
        if let output, output.format == .avro {
            throw node.error(
                "the output topic '\(output.logical)' has format: avro, which stages do not write yet: write json (format: json), "
                    + "and read Avro topics as input")
        }
    }

    /// The keys every stage section has; a stage reads its own keys from the mapping this returns.
    static let commonKeys = [
        "input", "output", "group", "batch_size", "batch_wait", "http_port", "shutdown_timeout", "consumer", "producer",
    ]

    /// This section as a mapping with the common keys already accounted for.
    public func mapping() throws(ConfigError) -> ConfigMapping {
        let m = try node.mapping()
        m.markUsed(Self.commonKeys)
        if name == .validate || name == .process { m.markUsed(["in_flight_batches", "concurrency"]) }
        return m
    }
}
