import EmbeddedBroker
import Foundation
import Kafka
import LocalRun
import Pipeline
import PipelineModel
import StreamCore
import Testing

/// The demo pipeline (`pipelines/iot-sensors.yaml`) on the embedded broker with its dashboard, all
/// as processes, and a real headless Chromium (Debian's, through chromedriver) looking at the
/// page while records flow. Fails — does not skip — when Chromium is missing.
@Suite(.serialized) struct DashboardBrowserTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let pipelineFile = root.appendingPathComponent("pipelines/iot-sensors.yaml").path
    /// Where the screenshot goes (inside the ignored .streamfirst directory).
    static let screenshot = root.appendingPathComponent(".streamfirst/screenshots/dashboard.png")

    static let count = 2400

    /// What the page shows, read from the Chart.js instances and the tiles.
    struct PageView {
        var charts: [String: Bool]
        var frames: Int
        var labels: Int
        var ingestRates: [Double]
        var deadRates: [Double]
        var ingested: Int
        var deadTotal: Int
        var devices: [String: Double]

        init(_ v: JSONValue) {
            var charts: [String: Bool] = [:]
            for (k, b) in v["charts"]?.objectValue ?? [:] { charts[k] = b.boolValue ?? false }
            self.charts = charts
            frames = Int(v["frames"]?.int64Value ?? 0)
            labels = Int(v["labels"]?.int64Value ?? 0)
            ingestRates = (v["ingestRates"]?.arrayValue ?? []).compactMap(\.doubleValue)
            deadRates = (v["deadRates"]?.arrayValue ?? []).compactMap(\.doubleValue)
            ingested = Int(v["ingested"]?.int64Value ?? -1)
            deadTotal = Int(v["deadTotal"]?.int64Value ?? -1)
            var devices: [String: Double] = [:]
            let ids = v["deviceIds"]?.arrayValue ?? []
            let latest = v["deviceLatest"]?.arrayValue ?? []
            for (i, id) in ids.enumerated() where i < latest.count {
                if let s = id.stringValue, let d = latest[i].doubleValue { devices[s] = d }
            }
            self.devices = devices
        }
    }

    /// Reads the page: which charts exist, the throughput chart's points, the tiles, the device chart.
    static let readPage = """
        const ids = ['throughput', 'lag', 'deadletters', 'devices', 'averages'];
        const charts = {};
        for (const id of ids) charts[id] = typeof Chart !== 'undefined' && Chart.getChart(id) !== undefined;
        if (!charts.throughput || !charts.devices) return { charts };
        const t = Chart.getChart('throughput'), dl = Chart.getChart('deadletters'), dev = Chart.getChart('devices');
        const series = (c, label) => (c.data.datasets.find(d => d.label === label) || { data: [] }).data.filter(x => x !== null);
        const num = id => Number(document.getElementById(id).textContent.replace(/,/g, ''));
        const sum = c => c.data.datasets.map(d => d.data.filter(x => x !== null)).flat();
        return { charts, frames: window.sfDashboard.frames, labels: t.data.labels.length,
          ingestRates: series(t, 'ingest'), deadRates: sum(dl),
          ingested: num('ingested'), deadTotal: num('dead-total'),
          deviceIds: dev.data.labels, deviceLatest: dev.data.datasets[0].data };
        """

    static func view(_ browser: WebDriver) async throws -> PageView {
        PageView(try await browser.execute(readPage))
    }

    /// Polls the page until `condition` holds (bounded; the page updates every 500 ms).
    static func waitForPage(
        _ browser: WebDriver, _ what: String, timeout: Duration = .seconds(60), _ condition: (PageView) -> Bool
    ) async throws -> PageView {
        let deadline = ContinuousClock.now + timeout
        var last = try await view(browser)
        while ContinuousClock.now < deadline {
            if condition(last) { return last }
            try await Task.sleep(for: .milliseconds(200))
            last = try await view(browser)
        }
        throw WebDriver.Failure(description: "the page never showed \(what); last: \(last)")
    }

    @Test func thePageChartsTheRunningPipelineLive() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-dashboard-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        let local = try await LocalPipeline.launch(
            .init(
                pipelineFile: Self.pipelineFile, workDirectory: work,
                environment: [
                    "IOT_COUNT": String(Self.count), "IOT_RATE": "200", "IOT_SEED": "11",
                    "METRICS_INTERVAL": "500ms", "DASHBOARD_UPDATE": "500ms",
                    "KAFKA_SESSION_TIMEOUT_MS": "6000", "KAFKA_HEARTBEAT_MS": "500",
                ]))
        var browser: WebDriver?
        do {
            try await local.start([.validate, .process, .persist])
            let port = try await local.startDashboard()
            let b = try await WebDriver.start()
            browser = b
            try await b.navigate("http://127.0.0.1:\(port)/")

            // 1. The page loads and draws its five Chart.js charts, and the event stream delivers frames.
            let loaded = try await Self.waitForPage(b, "its charts and a first frame") { $0.charts.count == 5 && $0.frames > 0 }
            #expect(loaded.charts == ["throughput": true, "lag": true, "deadletters": true, "devices": true, "averages": true])
            #expect(loaded.ingested == 0 && loaded.devices.isEmpty, "nothing flows before ingest starts")

            // 2. Records flow: ingest's throughput shows up, and the charts keep changing.
            try await local.start(.ingest)
            let first = try await Self.waitForPage(b, "ingest throughput > 0") { ($0.ingestRates.max() ?? 0) > 0 && !$0.devices.isEmpty }
            let second = try await Self.waitForPage(b, "new points and more records") {
                $0.labels > first.labels && $0.ingested > first.ingested && $0.devices != first.devices
            }
            #expect(second.ingested > first.ingested)
            #expect(second.labels > first.labels)

            // 3. After the run, the numbers shown are the numbers produced.
            if let ingest = local.process(.ingest) {
                // Bounded: a hung ingest fails here with its stderr instead of holding the run.
                var status = await ingest.wait(timeout: .seconds(240))
                if status == nil {
                    Issue.record("ingest had not exited after 240 s: \(ingest.standardError.suffix(2000))")
                    status = await ingest.kill()
                }
                #expect(status == .init(code: 0, signaled: false), "ingest: \(ingest.standardError.suffix(2000))")
            }
            try await local.waitUntilDrained(timeout: .seconds(120))
            let enriched = try await local.readAll("enriched")
            var lastTemperature: [String: Double] = [:]
            for m in enriched {
                guard let v = m.value, let json = try? JSONValue.parse(v), let id = json["sensor_id"]?.stringValue,
                    let t = json["temperature_c"]?.doubleValue
                else { continue }
                lastTemperature[id] = t // a sensor's records share a partition: the last one read is its last
            }
            let dead = try await local.readAll("dead")
            #expect(!lastTemperature.isEmpty)
            #expect(dead.count > 0, "the generator mixes in malformed and invalid readings")
            let final = try await Self.waitForPage(b, "the final counts") {
                $0.ingested == Self.count && $0.deadTotal == dead.count && $0.devices == lastTemperature
            }
            #expect(final.ingested == Self.count)
            #expect(final.deadTotal == dead.count)
            #expect(final.devices == lastTemperature, "each sensor's latest temperature is the last one produced for it")
            #expect((final.ingestRates.max() ?? 0) > 0)
            #expect((final.deadRates.max() ?? 0) > 0, "the dead-letter chart shows the dead letters")

            // 4. A screenshot for people (CI keeps it).
            let png = try await b.screenshot()
            #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "a PNG")
            try FileManager.default.createDirectory(at: Self.screenshot.deletingLastPathComponent(), withIntermediateDirectories: true)
            try png.write(to: Self.screenshot)
            print("dashboard screenshot: \(Self.screenshot.path) (\(png.count) bytes)")

            // 5. The dashboard stops gracefully while the page still holds its event stream open.
            let dashboardExit = await local.stopDashboard(timeout: .seconds(20))
            #expect(dashboardExit == .init(code: 0, signaled: false))
            await b.quit()
            browser = nil

            // 6. Every worker's last snapshot on the metrics topic is marked final and has its last counts.
            var exits: [PipelineSpec.StageName: ChildProcess.ExitStatus] = [:]
            for stage in [PipelineSpec.StageName.validate, .process, .persist] {
                if let r = await local.terminate(stage) { exits[stage] = r.status }
            }
            let snapshots = try await local.readAll("metrics").compactMap { m in m.value.flatMap { try? WorkerMetricsSnapshot.decode($0) } }
            for stage in PipelineSpec.StageName.allCases {
                let last = snapshots.last { $0.stats.stage == stage.rawValue }
                #expect(last?.final == true, "\(stage.rawValue): no final snapshot")
                if stage == .ingest { #expect(last?.stats.recordsIn == Self.count) }
                if stage != .ingest { #expect(exits[stage] == .init(code: 0, signaled: false), "\(stage.rawValue)") }
            }
            _ = await local.stop()
        } catch {
            if let p = local.dashboardProcess { Issue.record("dashboard stderr:\n\(p.standardError.suffix(3000))") }
            if let browser { await browser.quit() }
            _ = await local.stop()
            throw error
        }
    }
}
