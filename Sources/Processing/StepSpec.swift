import Config

/// A processor's documentation: its name, what it does, the form of its value and its settings —
/// the processors' counterpart of the connectors' `ConnectorSpec` (same shape; Processing does not
/// depend on Connectors). The reference pages (`streamfirst reference`, docs/reference/processors/)
/// are rendered from these, and a test feeds every documented key through the real reader.
public struct StepSpec: Sendable {
    public typealias Field = SettingSpec

    /// Where the processor is written in a `process:` section.
    public enum Placement: String, Sendable {
        /// An item of `steps:` (`- filter: …`).
        case step
        /// A key of the `process:` section itself (`window:`, `join:`): the stage becomes stateful.
        case stage
    }

    public var name: String
    public var summary: String
    /// What the value is, e.g. "an expression", "a mapping of field path → expression".
    public var form: String
    public var placement: Placement
    /// The keys of a processor configured by a mapping; empty for value-shaped ones (filter, set, …).
    public var fields: [Field]
    /// Valid values (YAML, the value under the processor's name), one per form it takes.
    public var examples: [String]
    /// More text for the reference page (Markdown).
    public var notes: String

    public init(
        name: String, summary: String, form: String, placement: Placement = .step, fields: [Field] = [],
        examples: [String], notes: String = ""
    ) {
        self.name = name
        self.summary = summary
        self.form = form
        self.placement = placement
        self.fields = fields
        self.examples = examples
        self.notes = notes
    }
}

extension StepProcessor {
    /// Every step's documentation, in the order of docs/EXPRESSIONS.md.
    public static let specs: [StepSpec] = [
        StepSpec(
            name: "filter", summary: "Keeps a record only when the expression is true (the others are counted as filtered in /stats).",
            form: "an expression ([EXPRESSIONS.md](../../EXPRESSIONS.md)); a record for which it is not `true` is dropped",
            examples: [#""temperature_c > -40 && temperature_c < 85""#]),
        StepSpec(
            name: "set", summary: "Assigns fields from expressions, in order; each expression sees the earlier assignments.",
            form: "a mapping of field path (`name`, `a.b`, `a[0]`) → expression; nested objects are created",
            examples: ["temperature_f: \"round(temperature_c * 9 / 5 + 32, 2)\"\nhot: \"temperature_c >= 30\""]),
        StepSpec(
            name: "rename", summary: "Moves fields to new paths (a missing field is ignored).",
            form: "a mapping of old field path → new field path",
            examples: ["temp: temperature_c\nmeta.site: site"]),
        StepSpec(
            name: "drop", summary: "Removes fields.",
            form: "a field path or a list of field paths",
            examples: ["[debug, raw.payload]"]),
        StepSpec(
            name: "keep", summary: "Keeps only the listed fields (and drops every other one).",
            form: "a field path or a list of field paths",
            examples: ["[sensor_id, ts, temperature_c]"]),
        StepSpec(
            name: "enrich",
            summary:
                "Adds the columns of a table row to records whose `match` finds one: a static file (CSV, JSON, NDJSON) or the latest "
                + "rows of a topic.",
            form: "a mapping with the keys below; exactly one of `table` and `topic`",
            fields: [
                .init(
                    "table", "path", default: "none",
                    "a CSV (with a header), JSON array or NDJSON file, relative to the pipeline file; read once at start"),
                .init("topic", "logical topic", default: "none", "instead of `table`: the latest JSON object per Kafka key of this topic"),
                .init("match", "expression", "the record's lookup value, e.g. `sensor_id`"),
                .init(
                    "on", "column", default: "required with `table`",
                    "the table column `match` must equal (not with `topic`: the Kafka key is compared)"),
                .init("fields", "list of columns", default: "every column but `on`", "the columns to add"),
                .init("into", "field path", default: "the top level", "put the added columns under this field"),
                .init(
                    "missing", "keep | filter | dead-letter", default: "keep",
                    "what happens when no row matches (dead-letter: class EnrichmentMissing)"),
                .init("max_rows", "integer", default: "1000000", "with `topic`: at most this many keys are held"),
            ],
            examples: [
                "table: tables/sensors.csv\nmatch: sensor_id\non: sensor_id\nfields: [building, floor]\nmissing: dead-letter",
                "topic: sensors\nmatch: sensor_id\nfields: [building]\ninto: site\nmax_rows: 100000",
            ],
            notes: "A topic table is a processing-time join: see docs/EXPRESSIONS.md, *enrich from a topic*."),
        StepSpec(
            name: "route",
            summary: "Chooses output topics by condition: the first rule whose `when` is true sends the record to its `to` topic.",
            form: "a list of rules, or a mapping `{ rules, default }`",
            fields: [
                .init("when", "expression", "a rule's condition"),
                .init("to", "logical topic", "a rule's topic (declared under `topics:`)"),
                .init("copy", "bool", default: "false", "a rule's: send a copy and go on with later rules and the default"),
                .init("rules", "list of rules", default: "required in the mapping form", "the rules (`when`, `to`, `copy`)"),
                .init("default", "logical topic | drop", default: "the stage's output", "where records no rule takes go (mapping form)"),
            ],
            examples: [
                "- when: \"hot\"\n  to: alerts\n  copy: true",
                "rules:\n  - when: \"temperature_c < 0\"\n    to: alerts\ndefault: drop",
            ],
            notes: "One input record can become several outputs: the first to a topic keeps the record's id, the next ones to the "
                + "same topic get `<id>#1`, `<id>#2`, … so downstream upserts stay idempotent and never overwrite one another."
        ),
    ]
}
