import Config
import Foundation
import Pipeline
import PipelineModel

/// The `dashboard:` section of a pipeline file, read and checked (unknown keys, ranges, the topics
/// it names, the pipeline's `metrics:` section it depends on, the Chart.js file it serves).
///
/// ```yaml
/// metrics: { topic: metrics, interval: 1s }   # the workers publish their counters here
/// dashboard:
///   port: 9100                 # HTTP port (env HTTP_PORT / --http-port win)
///   topics: [enriched]         # data topics to chart (logical names)
///   key: sensor_id             # the field naming the device (default: the record's Kafka key)
///   values: [temperature_c, humidity_pct]   # numeric fields to plot
///   window: 60s                # windowed averages over this much processing time
///   max_devices: 50            # devices kept (more are counted, not shown)
///   max_points: 120            # points kept per chart series
///   update_interval: 1s        # how often the page gets an update (Server-Sent Events)
///   start: end                 # end | beginning: where the topics are read from
///   chart_js: /usr/share/javascript/chart.js/chart.min.js   # Debian's libjs-chart.js
/// ```
package struct DashboardConfig: Sendable {
    /// Where Debian's `libjs-chart.js` installs Chart.js.
    package static let defaultChartJSPath = "/usr/share/javascript/chart.js/chart.min.js"
    /// The default HTTP port (the workers' defaults are 9101–9104).
    package static let defaultPort = 9100

    /// The page's title (`title`, default `<pipeline> — live`).
    package var title: String
    /// The HTTP port (`port`); `HTTP_PORT` / `--http-port` win.
    package var port: Int
    /// Data topics (Kafka names) to chart.
    package var dataTopics: [String]
    /// The field naming the device; nil: the record's Kafka key.
    package var keyField: String?
    /// The numeric fields plotted per device.
    package var valueFields: [String]
    /// Windowed averages cover this many milliseconds of processing time (`window`).
    package var windowMs: Int64
    /// Devices kept (`max_devices`).
    package var maxDevices: Int
    /// Points per chart series and samples per device and field (`max_points`).
    package var maxPoints: Int
    /// Milliseconds between two updates of the page (`update_interval`).
    package var updateIntervalMs: Int64
    /// Read the topics from their beginning (true) or only what arrives after start (false).
    package var fromBeginning: Bool
    /// The Chart.js file served at `/chart.js` (`chart_js`).
    package var chartJSPath: String
    /// The metrics topic (Kafka name) the workers publish to.
    package var metricsTopic: String
    /// The dead-letter topic (Kafka name).
    package var deadLetterTopic: String
    /// The pipeline's stages, in pipeline order (the charts' series order).
    package var stages: [String]

    /// Reads `spec`'s `dashboard:` section. Throws a ``ConfigError`` naming the key (and the fix)
    /// when the section is missing or wrong, when the pipeline has no `metrics:` section, or when
    /// the Chart.js file does not exist (`checkFiles`).
    package static func make(spec: PipelineSpec, checkFiles: Bool = true) throws(ConfigError) -> DashboardConfig {
        guard let node = spec.dashboard else {
            throw ConfigError(
                file: spec.file, line: nil, path: "dashboard",
                message: "the pipeline has no 'dashboard:' section, so the dashboard has nothing to show "
                    + "(see docs/PIPELINES.md#metrics-topic-and-dashboard)")
        }
        let m = try node.mapping()
        guard let metrics = spec.metrics else {
            throw ConfigError(
                file: spec.file, line: node.line, path: "dashboard",
                message:
                    "the dashboard reads the workers' counters from the metrics topic: add a top-level 'metrics: { topic: "
                    + "<logical topic>, interval: 1s }' section"
            )
        }
        func topic(_ n: ConfigNode) throws(ConfigError) -> String {
            let logical = try n.string()
            guard let t = spec.topics[logical] else {
                throw n.error("no topic '\(logical)' under topics: (declared: \(spec.topics.keys.sorted().joined(separator: ", ")))")
            }
            return t.name
        }
        let title = try m.string("title", default: "\(spec.name) — live")
        let port = try m.int("port", default: defaultPort, in: 0...65535)
        let topicsNode = try m.required("topics", hint: "the logical data topics to chart, e.g. [enriched]")
        let topicNodes = try topicsNode.sequence()
        guard !topicNodes.isEmpty else { throw topicsNode.error("name at least one topic, e.g. [enriched]") }
        var dataTopics: [String] = []
        for n in topicNodes { dataTopics.append(try topic(n)) }
        let keyField = try m.string("key")
        let valuesNode = try m.required("values", hint: "the numeric fields to plot, e.g. [temperature_c]")
        let values = try valuesNode.stringList()
        guard (1...8).contains(values.count) else { throw valuesNode.error("name 1 to 8 numeric fields to plot, e.g. [temperature_c]") }
        guard Set(values).count == values.count else { throw valuesNode.error("a field is named twice") }
        let window = try m.duration("window", defaultMilliseconds: 60_000)
        guard window >= 1000 else { throw (m.optional("window") ?? node).error("window must be at least 1s") }
        let maxDevices = try m.int("max_devices", default: 50, in: 1...1000)
        let maxPoints = try m.int("max_points", default: 120, in: 10...10_000)
        let update = try m.duration("update_interval", defaultMilliseconds: 1000)
        guard (100...60_000).contains(update) else {
            throw (m.optional("update_interval") ?? node).error("update_interval must be between 100ms and 1m")
        }
        let start = try m.choice("start", ["end", "beginning"], default: "end")
        let chartNode = m.optional("chart_js")
        let chartJS = try chartNode?.string() ?? defaultChartJSPath
        try m.finish()
        if checkFiles && !FileManager.default.isReadableFile(atPath: chartJS) {
            let message =
                "Chart.js is not at \(chartJS): install Debian's libjs-chart.js (apt-get install libjs-chart.js; "
                + "`make test` and the container image do) or point chart_js at the file"
            throw chartNode?.error(message) ?? ConfigError(file: spec.file, line: node.line, path: "dashboard.chart_js", message: message)
        }
        return DashboardConfig(
            title: title, port: port, dataTopics: dataTopics, keyField: keyField, valueFields: values, windowMs: window,
            maxDevices: maxDevices, maxPoints: maxPoints, updateIntervalMs: update, fromBeginning: start == "beginning",
            chartJSPath: chartJS, metricsTopic: metrics.topic.name, deadLetterTopic: spec.deadLetter.name,
            stages: PipelineSpec.StageName.allCases.filter { spec.stages[$0] != nil }.map(\.rawValue))
    }

    /// What ``DashboardState`` needs of the configuration.
    package var limits: DashboardState.Limits {
        DashboardState.Limits(
            keyField: keyField, valueFields: valueFields, windowMs: windowMs, maxDevices: maxDevices, maxPoints: maxPoints,
            stages: stages)
    }
}
