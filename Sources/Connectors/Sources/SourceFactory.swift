import Config
import Logging

/// Builds the source a pipeline's `ingest.source:` section describes.
public enum SourceFactory {
    /// Every source's documentation.
    public static let specs: [ConnectorSpec] = [
        StdinSource.spec, FileSource.spec, TailSource.spec, HTTPSource.spec, GeneratorSource.spec, MQTTSource.spec,
    ]

    /// Reads the `source:` mapping (its `type` picks the connector; unknown keys fail with their line).
    public static func make(_ m: ConfigMapping, baseDirectory: String, logger: Logger) throws(ConfigError) -> any RecordSource {
        let types = specs.map(\.type)
        let type = try m.required("type", hint: "one of \(types.joined(separator: ", "))").choice(types)
        let source: any RecordSource
        switch type {
        case "stdin": source = try StdinSource(m)
        case "file": source = try FileSource(m, baseDirectory: baseDirectory)
        case "tail": source = try TailSource(m, baseDirectory: baseDirectory)
        case "http": source = try HTTPSource(m, logger: logger)
        case "mqtt": source = try MQTTSource(m, logger: logger)
        default: source = try GeneratorSource(m)
        }
        try m.finish()
        return source
    }
}
