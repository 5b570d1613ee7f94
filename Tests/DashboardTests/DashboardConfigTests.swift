import Config
import Dashboard
import Foundation
import Pipeline
import PipelineModel
import Testing

/// The `metrics:` and `dashboard:` sections: defaults, and errors that name the key and the fix.
@Suite struct DashboardConfigTests {
    static let base = """
        name: t
        topics:
          raw:     { name: t.raw }
          out:     { name: t.out, partitions: 2 }
          dead:    { name: t.dead }
          metrics: { name: t.metrics }
        dead_letter: dead
        ingest:
          output: raw
          source: { type: stdin }
        """

    func spec(_ yaml: String) throws(ConfigError) -> PipelineSpec {
        try PipelineSpec.parse(yaml: yaml, file: "/p/t.yaml", environment: [:])
    }

    func expectError(_ yaml: String, _ expected: [String], checkFiles: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let s = try spec(yaml)
            _ = try DashboardConfig.make(spec: s, checkFiles: checkFiles)
            Issue.record("expected an error containing \(expected)", sourceLocation: sourceLocation)
        } catch {
            for e in expected { #expect(error.description.contains(e), "\(error)", sourceLocation: sourceLocation) }
        }
    }

    @Test func readsTheSectionsWithDefaults() throws {
        let s = try spec(Self.base + "\nmetrics: { topic: metrics }\ndashboard:\n  topics: [out]\n  values: [temp]\n")
        #expect(s.metrics?.topic.name == "t.metrics")
        #expect(s.metrics?.intervalMs == 1000)
        let c = try DashboardConfig.make(spec: s, checkFiles: false)
        #expect(c.port == 9100)
        #expect(c.dataTopics == ["t.out"])
        #expect(c.keyField == nil)
        #expect(c.valueFields == ["temp"])
        #expect(c.windowMs == 60_000 && c.maxDevices == 50 && c.maxPoints == 120 && c.updateIntervalMs == 1000)
        #expect(!c.fromBeginning)
        #expect(c.chartJSPath == DashboardConfig.defaultChartJSPath)
        #expect(c.metricsTopic == "t.metrics" && c.deadLetterTopic == "t.dead")
        #expect(c.stages == ["ingest"])
    }

    @Test func readsEverySetting() throws {
        let s = try spec(
            Self.base + """

                metrics: { topic: metrics, interval: 250ms }
                dashboard:
                  title: Plant
                  port: 0
                  topics: [out, raw]
                  key: device
                  values: [a, b]
                  window: 30s
                  max_devices: 10
                  max_points: 60
                  update_interval: 500ms
                  start: beginning
                  chart_js: /opt/chart.js
                """)
        #expect(s.metrics?.intervalMs == 250)
        let c = try DashboardConfig.make(spec: s, checkFiles: false)
        #expect(c.title == "Plant" && c.port == 0 && c.dataTopics == ["t.out", "t.raw"] && c.keyField == "device")
        #expect(c.valueFields == ["a", "b"] && c.windowMs == 30_000 && c.maxDevices == 10 && c.maxPoints == 60)
        #expect(c.updateIntervalMs == 500 && c.fromBeginning && c.chartJSPath == "/opt/chart.js")
    }

    @Test func metricsErrorsNameTheKey() {
        expectError(Self.base + "\nmetrics: { topic: nope }\n", ["metrics.topic", "no topic 'nope'"])
        expectError(Self.base + "\nmetrics: { topic: metrics, every: 1s }\n", ["every", "unknown key"])
        expectError(Self.base + "\nmetrics: { topic: metrics, interval: 5ms }\n", ["interval", "between 100ms and 1h"])
        expectError(Self.base + "\nmetrics: { interval: 1s }\n", ["metrics.topic", "missing required key"])
    }

    @Test func dashboardErrorsNameTheKeyAndTheFix() {
        let m = Self.base + "\nmetrics: { topic: metrics }\n"
        expectError(Self.base + "\ndashboard: { topics: [out], values: [x] }\n", ["dashboard", "metrics: { topic:"])
        expectError(m + "dashboard: { values: [x] }\n", ["dashboard.topics", "missing required key"])
        expectError(m + "dashboard: { topics: [nope], values: [x] }\n", ["no topic 'nope'"])
        expectError(m + "dashboard: { topics: [], values: [x] }\n", ["dashboard.topics", "at least one topic"])
        expectError(m + "dashboard: { topics: [out] }\n", ["dashboard.values", "missing required key"])
        expectError(m + "dashboard: { topics: [out], values: [x, x] }\n", ["named twice"])
        expectError(m + "dashboard: { topics: [out], values: [x], max_devices: 0 }\n", ["dashboard.max_devices"])
        expectError(m + "dashboard: { topics: [out], values: [x], start: middle }\n", ["dashboard.start", "end, beginning"])
        expectError(m + "dashboard: { topics: [out], values: [x], colour: red }\n", ["dashboard.colour", "unknown key"])
        expectError(m + "dashboard: { topics: [out], values: [x], update_interval: 10ms }\n", ["update_interval"])
        expectError(Self.base, ["no 'dashboard:' section"])
    }

    @Test func aMissingChartJSFileNamesTheDebianPackage() {
        let m = Self.base + "\nmetrics: { topic: metrics }\n"
        expectError(
            m + "dashboard: { topics: [out], values: [x], chart_js: /nonexistent/chart.min.js }\n",
            ["dashboard.chart_js", "/nonexistent/chart.min.js", "libjs-chart.js"], checkFiles: true)
    }

    @Test func theDemoPipelineHasAValidDashboard() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("pipelines/iot-sensors.yaml").path
        let s = try PipelineSpec.load(file: file, environment: [:])
        let c = try DashboardConfig.make(spec: s)
        #expect(c.keyField == "sensor_id")
        #expect(c.valueFields.contains("temperature_c"))
        #expect(FileManager.default.isReadableFile(atPath: c.chartJSPath), "make test installs libjs-chart.js")
        let page = DashboardPage.html(config: c)
        #expect(page.contains(#"<script src="/chart.js"></script>"#))
        #expect(page.contains("new EventSource('/events')"))
    }
}

/// The container files offer the dashboard: its executable in the image with Debian's Chart.js,
/// and a compose service with a host port whose pipeline file has a valid dashboard section.
@Suite struct DashboardContainerFilesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func imageAndComposeRunTheDashboard() throws {
        let dockerfile = try String(contentsOf: Self.root.appendingPathComponent("Dockerfile"), encoding: .utf8)
        #expect(dockerfile.contains("--product dashboard"))
        let runtime = try #require(dockerfile.components(separatedBy: "FROM debian:bookworm-slim").last)
        #expect(runtime.contains("libjs-chart.js"), "the runtime stage installs Chart.js from Debian")
        let compose = try String(contentsOf: Self.root.appendingPathComponent("docker-compose.yml"), encoding: .utf8)
        let service = try #require(compose.components(separatedBy: "\n  dashboard:\n").dropFirst().first)
        #expect(service.contains(#"command: ["dashboard"]"#))
        #expect(service.contains(":9100\""), "a host port for the page")
        let pipeline = try #require(
            compose.components(separatedBy: "PIPELINE: /etc/streamfirst/pipelines/").dropFirst().first?
                .split(separator: "\n").first.map(String.init))
        let spec = try PipelineSpec.load(
            file: Self.root.appendingPathComponent("pipelines").appendingPathComponent(pipeline).path, environment: [:])
        let config = try DashboardConfig.make(spec: spec, checkFiles: false)
        #expect(config.dataTopics == ["iot.readings.enriched"])
        let makefile = try String(contentsOf: Self.root.appendingPathComponent("Makefile"), encoding: .utf8)
        // The demo needs the chart library; only the tests need the browser.
        let apt = try #require(makefile.split(separator: "\n").first { $0.hasPrefix("APT_PACKAGES :=") })
        #expect(apt.split(separator: " ").contains("libjs-chart.js"))
        let testApt = try #require(makefile.split(separator: "\n").first { $0.hasPrefix("TEST_APT_PACKAGES :=") })
        for p in ["chromium", "chromium-driver"] { #expect(testApt.split(separator: " ").contains(Substring(p)), "\(p)") }
    }
}
