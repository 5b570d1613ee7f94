import Config
import Dashboard
import Foundation
import Pipeline
import StreamCore
import Testing

/// The dashboard's aggregation, fed by hand (no broker): rates from successive snapshots, lag and
/// liveness of instances, per-device latest values and averages, the bounds, dead letters.
@Suite struct DashboardStateTests {
    static let limits = DashboardState.Limits(
        keyField: "sensor_id", valueFields: ["t", "h"], windowMs: 10_000, maxDevices: 3, maxPoints: 10,
        stages: ["ingest", "validate", "persist"])

    static func stats(_ stage: String, in recordsIn: Int, out: Int = 0, dead: Int = 0, lag: Int = -1) -> StageStats {
        let empty = StageStats.Quantiles(count: 0, p50: 0, p99: 0, max: 0)
        return StageStats(
            pipeline: "p", stage: stage, recordsIn: recordsIn, recordsOut: out, deadLettered: dead, filtered: 0, consumerLag: lag,
            deadLetterClasses: [:], processingMicros: empty, endToEndMicros: empty, state: nil)
    }

    static func snapshot(
        _ stage: String, _ instance: String, at t: Int64, in n: Int, dead: Int = 0, lag: Int = -1, final: Bool = false
    )
        -> WorkerMetricsSnapshot
    {
        WorkerMetricsSnapshot(
            instance: instance, timeMs: t, intervalMs: 1000, final: final, stats: stats(stage, in: n, dead: dead, lag: lag))
    }

    func record(_ json: String) -> [UInt8] { Array(json.utf8) }

    /// Applies a record (outside `#expect`, which cannot take a mutating call).
    func feed(_ state: inout DashboardState, _ value: [UInt8]?, topic: String, key: [UInt8]?, nowMs: Int64) -> Bool {
        state.apply(record: value, topic: topic, key: key, nowMs: nowMs)
    }

    @Test func ratesComeFromSuccessiveSnapshotsAndAddUpOverInstances() throws {
        var s = DashboardState(limits: Self.limits)
        s.apply(metrics: Self.snapshot("validate", "a", at: 10_000, in: 100, dead: 1, lag: 50))
        s.apply(metrics: Self.snapshot("validate", "a", at: 12_000, in: 300, dead: 5, lag: 20))
        s.apply(metrics: Self.snapshot("validate", "b", at: 11_000, in: 0, lag: 5))
        s.apply(metrics: Self.snapshot("validate", "b", at: 12_000, in: 50, lag: 7))
        // A repeated (or older) snapshot of an instance changes nothing.
        s.apply(metrics: Self.snapshot("validate", "a", at: 11_000, in: 999))
        let points = s.stagePoints(nowMs: 12_500)
        #expect(points.map(\.stage) == ["ingest", "validate", "persist"])
        let v = try #require(points.first { $0.stage == "validate" })
        #expect(v.inRate == 100 + 50) // 200 records in 2 s + 50 in 1 s
        #expect(v.deadRate == 2)
        #expect(v.recordsIn == 350)
        #expect(v.deadLettered == 5)
        #expect(v.lag == 27)
        #expect(v.instances == 2)
        let ingest = try #require(points.first { $0.stage == "ingest" })
        #expect(ingest.instances == 0 && ingest.lag == nil && ingest.inRate == 0)
    }

    @Test func silentAndStoppedInstancesKeepTheirTotalsButNoRate() throws {
        var s = DashboardState(limits: Self.limits)
        s.apply(metrics: Self.snapshot("ingest", "a", at: 1000, in: 0))
        s.apply(metrics: Self.snapshot("ingest", "a", at: 2000, in: 500))
        s.apply(metrics: Self.snapshot("ingest", "b", at: 1000, in: 0))
        s.apply(metrics: Self.snapshot("ingest", "b", at: 2000, in: 100, final: true))
        let now = try #require(s.stagePoints(nowMs: 2500).first { $0.stage == "ingest" })
        #expect(now.inRate == 500, "b has stopped: only a counts")
        #expect(now.recordsIn == 600)
        #expect(now.instances == 1)
        // Three intervals without a snapshot: a is no longer live either.
        let later = try #require(s.stagePoints(nowMs: 6000).first { $0.stage == "ingest" })
        #expect(later.inRate == 0 && later.instances == 0 && later.recordsIn == 600)
    }

    @Test func devicesKeepLatestValueRunningAndWindowedAverages() throws {
        var s = DashboardState(limits: Self.limits)
        do {
            let ok = feed(&s, record(#"{"sensor_id":"s1","t":10,"h":50}"#), topic: "d", key: nil, nowMs: 1000)
            #expect(ok)
        }
        do {
            let ok = feed(&s, record(#"{"sensor_id":"s1","t":20}"#), topic: "d", key: nil, nowMs: 5000)
            #expect(ok)
        }
        do {
            let ok = feed(&s, record(#"{"sensor_id":"s1","t":33.5,"h":"n/a"}"#), topic: "d", key: nil, nowMs: 14_000)
            #expect(ok)
        }
        do {
            let ok = feed(&s, record(#"{"sensor_id":"s2","t":-1.25}"#), topic: "d", key: nil, nowMs: 14_000)
            #expect(ok)
        }
        let f = s.frame(nowMs: 14_000)
        #expect(f.devices.map(\.id) == ["s1", "s2"])
        let s1 = f.devices[0]
        #expect(s1.latest == ["t": 33.5, "h": 50])
        #expect(s1.count == 3)
        #expect(s1.average["t"] == (10 + 20 + 33.5) / 3)
        #expect(s1.windowAverage["t"] == (20 + 33.5) / 2, "the reading at 1000 is outside the 10 s window")
        #expect(s1.windowAverage["h"] == nil, "h was only read outside the window")
        #expect(f.devices[1].latest["t"] == -1.25)
        #expect(f.fieldAverages["t"] == (20 + 33.5 - 1.25) / 3)
        #expect(f.records == ["d": 4])
    }

    @Test func boundsDevicesSamplesAndHistory() throws {
        var s = DashboardState(limits: Self.limits)
        for i in 1...5 { s.apply(record: record(#"{"sensor_id":"s\#(i)","t":\#(i)}"#), topic: "d", key: nil, nowMs: 0) }
        // An existing device still updates when the table is full.
        do {
            let ok = feed(&s, record(#"{"sensor_id":"s1","t":7}"#), topic: "d", key: nil, nowMs: 0)
            #expect(ok)
        }
        var f = s.frame(nowMs: 0)
        #expect(s.deviceCount == 3)
        #expect(f.devicesRefused == 2)
        #expect(f.devices.first { $0.id == "s1" }?.latest["t"] == 7)
        // 20 readings of one device within the window: only the newest maxPoints (10) count.
        for i in 1...20 { s.apply(record: record(#"{"sensor_id":"s2","t":\#(i)}"#), topic: "d", key: nil, nowMs: Int64(i)) }
        f = s.frame(nowMs: 20)
        #expect(f.devices.first { $0.id == "s2" }?.windowAverage["t"] == Double((11...20).reduce(0, +)) / 10)
        for t in 0..<25 { _ = s.frame(nowMs: Int64(100 + t)) }
        #expect(s.stageHistory.count == 10)
        #expect(s.stageHistory.first?.timeMs == 115 && s.stageHistory.last?.timeMs == 124)
    }

    @Test func unusableRecordsAreCountedNotFatal() {
        var s = DashboardState(limits: Self.limits)
        do {
            let ok = feed(&s, record("{not json"), topic: "d", key: nil, nowMs: 0)
            #expect(!ok)
        }
        do {
            let ok = feed(&s, record("[1,2]"), topic: "d", key: nil, nowMs: 0)
            #expect(!ok)
        }
        do {
            let ok = feed(&s, record(#"{"t":1}"#), topic: "d", key: nil, nowMs: 0)
            #expect(!ok)
        }
        do {
            let ok = feed(&s, nil, topic: "d", key: nil, nowMs: 0)
            #expect(!ok)
        }
        let f = s.frame(nowMs: 0)
        #expect(f.unusable == 4 && f.devices.isEmpty && f.records == ["d": 4])
        // Without a key field, the Kafka key names the device.
        var k = DashboardState(limits: .init(keyField: nil, valueFields: ["t"], windowMs: 1000, maxDevices: 5, maxPoints: 10, stages: []))
        do {
            let ok = feed(&k, record(#"{"t":3}"#), topic: "d", key: Array("dev-9".utf8), nowMs: 0)
            #expect(ok)
        }
        let kf = k.frame(nowMs: 0)
        #expect(kf.devices.map(\.id) == ["dev-9"])
    }

    @Test func deadLettersAreCountedByStageAndClassNewestFirst() {
        var s = DashboardState(limits: Self.limits)
        for i in 0..<12 {
            s.apply(
                deadLetter: [
                    DeadLetterHeader.stage: i < 3 ? "ingest" : "validate",
                    DeadLetterHeader.exceptionClass: i < 3 ? "MalformedJSON" : "SchemaViolation",
                    DeadLetterHeader.exceptionMessage: "m\(i)", DeadLetterHeader.time: String(1000 + i),
                ], nowMs: 0)
        }
        let d = s.frame(nowMs: 0).deadLetters
        #expect(d.total == 12)
        #expect(d.byStage == ["ingest": 3, "validate": 9])
        #expect(d.byClass == ["MalformedJSON": 3, "SchemaViolation": 9])
        #expect(d.recent.count == DashboardState.recentDeadLetters)
        #expect(d.recent.first?.message == "m11" && d.recent.first?.timeMs == 1011)
    }

    @Test func snapshotsRoundTripThroughTheirJSON() throws {
        let snap = Self.snapshot("process", "host-12", at: 42, in: 7, lag: 3)
        #expect(snap.key == "process/host-12")
        #expect(try WorkerMetricsSnapshot.decode(snap.encoded()) == snap)
        #expect(WorkerMetricsSnapshot.instanceID(environment: ["INSTANCE_ID": "pod-1"]) == "pod-1")
        #expect(WorkerMetricsSnapshot.instanceID(environment: [:]).hasSuffix("-\(getpid())"))
    }
}
