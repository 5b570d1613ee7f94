import Config
import Processing
import StreamCore
import Testing

@testable import Stateful

func joinSpec(_ yaml: String) throws -> JoinSpec {
    try JoinSpec(try ConfigNode.parse(yaml: yaml, source: ConfigSource(file: "test.yaml", environment: [:])))
}

@Suite struct JoinTests {
    @Test func innerJoinPairsRecordsWithinTheWindow() throws {
        let spec = try joinSpec("with: payments\nwindow: 10s\nas: { left: order, right: payment }")
        var d = StatefulTestDriver(op: .join(spec), inputTopics: ["orders", "payments"])
        try d.pipe(topic: "orders", key: "o1", value: ["amount": 10], eventTimeMs: 1_000, id: "O1")
        try d.pipe(topic: "payments", key: "o1", value: ["paid": 10], eventTimeMs: 5_000, id: "P1")
        try d.pipe(topic: "payments", key: "o1", value: ["paid": 99], eventTimeMs: 30_000, id: "P2") // too far apart
        try d.pipe(topic: "payments", key: "o2", value: ["paid": 1], eventTimeMs: 5_000, id: "P3") // other key
        #expect(d.results.count == 1)
        let r = try #require(d.results.first)
        #expect(r.id == "O1+P1")
        #expect(r.value["order"]?["amount"] == 10)
        #expect(r.value["payment"]?["paid"] == 10)
        #expect(r.value["key"] == "o1")
        #expect(r.eventTimeMs == 5_000)
    }

    @Test func leftAndOuterJoinsEmitUnmatchedOnceTheWindowCloses() throws {
        for kind in ["left", "outer"] {
            let spec = try joinSpec("with: r\ntype: \(kind)\nwindow: 10s")
            var d = StatefulTestDriver(op: .join(spec), inputTopics: ["l", "r"])
            try d.pipe(topic: "l", key: "a", value: ["x": 1], eventTimeMs: 0, id: "L1")
            try d.pipe(topic: "r", key: "b", value: ["y": 1], eventTimeMs: 0, id: "R1")
            #expect(d.results.isEmpty)
            // Both sides move past 10 s: both records expire unmatched.
            try d.pipe(topic: "l", key: "z", value: [:], eventTimeMs: 20_000, id: "L2")
            try d.pipe(topic: "r", key: "z2", value: [:], eventTimeMs: 20_000, id: "R2")
            let ids = d.results.map(\.id).sorted()
            #expect(ids == (kind == "left" ? ["L1+"] : ["+R1", "L1+"]))
            let l1 = try #require(d.results.first { $0.id == "L1+" })
            #expect(l1.value["right"] == .null)
        }
    }

    @Test func theSlowerSideHoldsExpiryBack() throws {
        let spec = try joinSpec("with: r\ntype: left\nwindow: 10s\nidle_timeout: 0s")
        var d = StatefulTestDriver(op: .join(spec), inputTopics: ["l", "r"])
        try d.pipe(topic: "l", key: "a", value: [:], eventTimeMs: 0, id: "L1")
        try d.pipe(topic: "l", key: "b", value: [:], eventTimeMs: 100_000, id: "L2") // the right side has said nothing yet
        #expect(d.results.isEmpty)
        try d.pipe(topic: "r", key: "a", value: [:], eventTimeMs: 5_000, id: "R1") // still joins L1
        #expect(d.results.map(\.id) == ["L1+R1"])
    }

    @Test func anIdleSideStopsHoldingBackAfterTheIdleTimeout() throws {
        let spec = try joinSpec("with: r\ntype: left\nwindow: 10s\nidle_timeout: 5s")
        var d = StatefulTestDriver(op: .join(spec), inputTopics: ["l", "r"])
        try d.pipe(topic: "l", key: "a", value: [:], eventTimeMs: 0, id: "L1")
        try d.pipe(topic: "l", key: "a", value: [:], eventTimeMs: 50_000, id: "L2")
        #expect(d.results.isEmpty)
        d.advanceWallClock(by: 6_000) // the right side never spoke and is now idle
        try d.pipe(topic: "l", key: "a", value: [:], eventTimeMs: 50_001, id: "L3")
        #expect(d.results.map(\.id) == ["L1+"])
    }

    /// The same records in any interleaving of the two inputs (each input in its own order) give
    /// the same set of results: what makes join results replayable.
    @Test(arguments: 0..<20) func resultsDoNotDependOnInterleaving(seed: Int) throws {
        var rng = SplitMix64(seed: UInt64(seed + 1))
        var left: [(String, Int64, String)] = []
        var right: [(String, Int64, String)] = []
        var t: Int64 = 0
        for i in 0..<60 {
            t += Int64(rng.below(3_000))
            left.append(("k\(rng.below(4))", t, "L\(i)"))
        }
        t = 0
        for i in 0..<60 {
            t += Int64(rng.below(3_000))
            right.append(("k\(rng.below(4))", t, "R\(i)"))
        }
        func run(_ order: [Bool]) throws -> [String] {
            let spec = try joinSpec("with: r\ntype: outer\nwindow: 4s\ngrace: 1s\nidle_timeout: 0s")
            var d = StatefulTestDriver(op: .join(spec), inputTopics: ["l", "r"])
            var li = 0
            var ri = 0
            for takeLeft in order {
                if takeLeft, li < left.count {
                    try d.pipe(topic: "l", key: left[li].0, value: [:], eventTimeMs: left[li].1, id: left[li].2)
                    li += 1
                } else if ri < right.count {
                    try d.pipe(topic: "r", key: right[ri].0, value: [:], eventTimeMs: right[ri].1, id: right[ri].2)
                    ri += 1
                }
            }
            // Flush: both sides far ahead.
            try d.pipe(topic: "l", key: "end", value: [:], eventTimeMs: 10_000_000, id: "Lend")
            try d.pipe(topic: "r", key: "end", value: [:], eventTimeMs: 10_000_000, id: "Rend")
            return d.results.map(\.id).sorted()
        }
        let leftFirst = try run(Array(repeating: true, count: 60) + Array(repeating: false, count: 60))
        var order: [Bool] = []
        for _ in 0..<120 { order.append(rng.below(2) == 0) }
        order += Array(repeating: true, count: 60) + Array(repeating: false, count: 60)
        #expect(try run(order) == leftFirst)
    }
}

@Suite struct StateTests {
    static let tumbling = "size: 1m\naggregate: { n: count(), s: sum(v) }\nidle_timeout: 0s"

    struct Input {
        var key: String
        var v: Int64
        var t: Int64
    }

    static func inputs(_ n: Int, seed: UInt64, keys: Int = 20) -> [Input] {
        var rng = SplitMix64(seed: seed)
        var t: Int64 = 0
        return (0..<n).map { _ in
            t += Int64(rng.below(2_000))
            return Input(key: "k\(rng.below(keys))", v: Int64(rng.below(100)), t: t)
        }
    }

    static func crashFree(_ inputs: [Input]) throws -> [StatefulResult] {
        var d = StatefulTestDriver(op: .window(try windowSpec(tumbling)), inputTopics: ["in"])
        for i in inputs { try d.pipe(key: i.key, value: ["v": .integer(i.v)], eventTimeMs: i.t) }
        return d.results
    }

    /// Crashes at every kind of moment — after a full commit, between the two phases, before any
    /// of it — and restarts from the changelog: the results (deduplicated by id, as a sink's upsert
    /// does) equal the crash-free run's, with no window counted twice.
    @Test(arguments: [1, 2, 3] as [UInt64]) func crashAndRestoreGiveTheCrashFreeResults(seed: UInt64) throws {
        let inputs = Self.inputs(400, seed: seed)
        let expected = try Self.crashFree(inputs)
        var rng = SplitMix64(seed: seed * 7)
        var d = StatefulTestDriver(op: .window(try windowSpec(Self.tumbling)), inputTopics: ["in"])
        d.autoCommit = false
        var next = 0
        var crashes = 0
        while next < inputs.count {
            let batch = min(inputs.count - next, 1 + Int(rng.below(30)))
            for i in inputs[next..<(next + batch)] { try d.pipe(key: i.key, value: ["v": .integer(i.v)], eventTimeMs: i.t) }
            switch rng.below(4) {
            case 0: // crash before anything of the batch is written
                crashes += 1
            case 1: // crash between the phases
                d.commit(crashBeforeCheckpoint: true)
                crashes += 1
            default:
                d.commit()
                next += batch
                continue
            }
            let resume = try d.restart()
            next = Int(resume[0]?["in"] ?? 0)
        }
        #expect(crashes > 10)
        var byID: [String: StatefulResult] = [:]
        for r in d.results { byID[r.id] = r }
        var expectedByID: [String: StatefulResult] = [:]
        for r in expected { expectedByID[r.id] = r }
        let missing = Set(expectedByID.keys).subtracting(byID.keys).sorted()
        let extra = Set(byID.keys).subtracting(expectedByID.keys).sorted()
        let wrong = expectedByID.keys.filter { byID[$0] != nil && byID[$0] != expectedByID[$0] }.sorted()
        #expect(
            missing.isEmpty && extra.isEmpty && wrong.isEmpty,
            """
            missing \(missing.prefix(5)), extra \(extra.prefix(5)), \
            wrong \(wrong.prefix(3).map { "\($0): \(byID[$0]!.value) vs \(expectedByID[$0]!.value)" })
            """
        )
        #expect(!expected.isEmpty)
    }

    @Test func restoreUsesTheLastCompleteSnapshotWhenTheLogIsTruncated() throws {
        let inputs = Self.inputs(600, seed: 9)
        let expected = try Self.crashFree(inputs)
        var d = StatefulTestDriver(op: .window(try windowSpec(Self.tumbling)), inputTopics: ["in"], snapshotBytes: 2_000)
        for i in inputs[..<300] { try d.pipe(key: i.key, value: ["v": .integer(i.v)], eventTimeMs: i.t) }
        let log = d.changelog[0] ?? []
        let lastBegin = try #require(log.lastIndex { $0.key == Changelog.snapshotBegin })
        d.deleteOldestChangelog(partition: 0, count: lastBegin) // retention deleted everything before it
        try d.restart()
        for i in inputs[300...] { try d.pipe(key: i.key, value: ["v": .integer(i.v)], eventTimeMs: i.t) }
        #expect(d.results.map(\.value) == expected.map(\.value))
        // Deleting into the last snapshot leaves no complete one: a clear error, not wrong state.
        d.deleteOldestChangelog(partition: 0, count: (d.changelog[0]?.count ?? 0) - 1)
        #expect(throws: StateRestoreError.self) { try d.restart() }
    }

    @Test func restoreRefusesStateOfOtherSettings() throws {
        var d = StatefulTestDriver(op: .window(try windowSpec(Self.tumbling)), inputTopics: ["in"])
        try d.pipe(key: "k", value: ["v": 1], eventTimeMs: 1)
        var other = StatefulEngine(
            op: .window(try windowSpec("size: 1m\naggregate: { n: count() }")), inputTopics: ["in"], budgetBytes: 1 << 20)
        #expect(throws: StateRestoreError.self) {
            _ = try other.assign(partition: 0, changelog: d.changelog[0] ?? [], complete: true, nowWallMs: 0)
        }
    }

    /// 100 000 keys through a 500 kB budget: the state never grows past the budget (checked after
    /// every record, as the stage checks after every batch), the oldest windows close early and
    /// are counted, and nothing is lost — every record is in a result or reported late.
    @Test func theMemoryBudgetBoundsStateHoweverManyKeys() throws {
        let budget = 500_000
        let spec = try windowSpec("size: 10s\naggregate: { n: count() }\nidle_timeout: 0s")
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"], budgetBytes: budget)
        var peak = 0
        let n = 100_000
        for i in 0..<n {
            try d.pipe(key: "key-\(i)", value: [:], eventTimeMs: Int64(i))
            d.enforceBudget()
            peak = max(peak, d.engine.stateBytes)
        }
        #expect(peak <= budget + 2_000)
        #expect(d.engine.counters.evictions > 0)
        try d.pipe(key: "flush", value: [:], eventTimeMs: 100 * minute)
        let counted = d.results.reduce(0) { $0 + Int($1.value["n"]?.int64Value ?? 0) }
        #expect(counted + d.late.count == n) // the flush record's own window is still open
        #expect(d.late.count > 0)
    }

    @Test func idlePartitionsCloseTheirWindowsOnTheWallClock() throws {
        let spec = try windowSpec("size: 1m\naggregate: { n: count() }\nidle_timeout: 30s")
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        try d.pipe(key: "a", value: [:], eventTimeMs: 1_000)
        d.advanceWallClock(by: 20_000)
        #expect(d.results.isEmpty)
        d.advanceWallClock(by: 40_000) // idle 60 s: event time has moved on by 60 s
        #expect(d.results.count == 1)
    }
}
