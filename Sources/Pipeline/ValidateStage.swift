import Config
import Kafka
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

    public init(schema: JSONSchema, schemaName: String, output: String) {
        self.schema = schema
        self.schemaName = schemaName
        self.output = output
    }

    /// Builds the handler from the `validate:` section (loads and compiles the schemas).
    public static func make(spec: PipelineSpec, common: PipelineSpec.StageCommon) throws(ConfigError) -> ValidateHandler {
        let m = try common.mapping()
        let schemaNode = try m.required("schema", hint: "the schema's file name in the schemas directory, without .json")
        let name = try schemaNode.string()
        let dirNode = m.optional("schemas_dir")
        let dir = spec.resolve(path: try dirNode?.string() ?? "schemas")
        let formatAssertion = try m.bool("format_assertion", default: false)
        try m.finish()
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
        guard let output = common.output else { throw schemaNode.error("validate needs an output topic") }
        return ValidateHandler(schema: schema, schemaName: name, output: output.name)
    }

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
        let violations = schema.validate(value)
        if violations.isEmpty {
            return .forward([StageOutput(topic: output, key: message.key, value: bytes, headers: message.headers)])
        }
        let list = JSONValue.array(
            violations.map { v in
                ["path": .string(v.instancePath), "keyword": .string(v.keywordLocation), "message": .string(v.message)]
            })
        let first = violations[0]
        let summary = "\(violations.count) violation\(violations.count == 1 ? "" : "s") of schema \(schemaName); first at '\(first.instancePath)': \(first.message)"
        return .deadLetter(DeadLetterReason(component: "schema:\(schemaName)", errorClass: "SchemaViolation", message: summary, violations: list))
    }
}

extension PipelineSpec.StageCommon {
    /// The keys every stage section has; a stage reads its own keys from the mapping this returns.
    static let commonKeys = [
        "input", "output", "group", "batch_size", "batch_wait", "http_port", "shutdown_timeout", "consumer", "producer",
    ]

    /// This section as a mapping with the common keys already accounted for.
    public func mapping() throws(ConfigError) -> ConfigMapping {
        let m = try node.mapping()
        m.markUsed(Self.commonKeys)
        return m
    }
}
