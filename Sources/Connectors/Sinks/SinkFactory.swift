import Config
import Kafka
import Logging

/// Builds the sink a pipeline's `persist.sink:` section describes. Nothing is opened or connected here.
public enum SinkFactory {
    /// Every sink's documentation.
    public static let specs: [ConnectorSpec] = [SQLiteSink.spec, PostgresSink.spec, NDJSONSink.spec, KafkaSink.spec]

    /// Reads the `sink:` mapping (its `type` picks the connector; unknown keys fail with their line).
    /// Relative paths resolve against the working directory.
    public static func make(
        _ m: ConfigMapping, baseDirectory: String, kafka: KafkaProducerConfiguration?, logger: Logger
    ) throws(ConfigError) -> any RecordSink {
        let types = specs.map(\.type)
        let typeNode = try m.required("type", hint: "one of \(types.joined(separator: ", "))")
        let type = try typeNode.choice(types)
        let sink: any RecordSink
        switch type {
        case "sqlite": sink = try SQLiteSink(m, logger: logger)
        case "postgres": sink = try PostgresSink(m, logger: logger)
        case "ndjson": sink = try NDJSONSink(m)
        default:
            guard let kafka else { throw typeNode.error("the kafka sink needs the pipeline's Kafka settings") }
            sink = try KafkaSink(m, kafka: kafka, logger: logger)
        }
        try m.finish()
        return sink
    }
}
