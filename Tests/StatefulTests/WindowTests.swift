import Config
import Processing
import StreamCore
import Testing

@testable import Stateful

func windowSpec(_ yaml: String) throws -> WindowSpec {
    try WindowSpec(try ConfigNode.parse(yaml: yaml, source: ConfigSource(file: "test.yaml", environment: [:])))
}

let minute: Int64 = 60_000

@Suite struct WindowTests {
    @Test func tumblingCountsPerKeyAndClosesOnStreamTime() throws {
        let spec = try windowSpec(
            """
            type: tumbling
            size: 1m
            aggregate: { n: count(), avg_t: avg(t), max_t: max(t), total: sum(t) }
            """)
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        try d.pipe(key: "a", value: ["t": 10], eventTimeMs: 1_000)
        try d.pipe(key: "a", value: ["t": 20], eventTimeMs: 59_999)
        try d.pipe(key: "b", value: ["t": 5], eventTimeMs: 30_000)
        #expect(d.results.isEmpty)
        try d.pipe(key: "a", value: ["t": 1], eventTimeMs: minute) // stream time reaches 60 s: [0, 60 s) closes
        #expect(d.results.count == 2)
        let a = try #require(d.results.first { $0.key == "a" })
        #expect(a.value["n"] == 2)
        #expect(a.value["avg_t"] == .number(15))
        #expect(a.value["max_t"] == 20)
        #expect(a.value["total"] == 30)
        #expect(a.value["window_start"] == "1970-01-01T00:00:00.000Z")
        #expect(a.value["window_end"] == "1970-01-01T00:01:00.000Z")
        #expect(a.id == "a@0")
        #expect(a.eventTimeMs == minute - 1)
        // Results of one close come in (deadline, key) order.
        #expect(d.results.map(\.key) == ["a", "b"])
    }

    @Test func graceKeepsWindowsOpenAndLateRecordsAreReported() throws {
        let spec = try windowSpec(
            """
            size: 1m
            grace: 10s
            aggregate: { n: count() }
            """)
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        try d.pipe(key: "a", value: [:], eventTimeMs: 50_000)
        try d.pipe(key: "a", value: [:], eventTimeMs: 65_000) // stream time 65 s − grace 10 s = 55 s: still open
        #expect(d.results.isEmpty)
        try d.pipe(key: "a", value: [:], eventTimeMs: 55_000, id: "in-time") // out of order, within grace
        try d.pipe(key: "a", value: [:], eventTimeMs: 70_000) // close mark 60 s: [0, 60 s) closes with 2
        #expect(d.results.count == 1)
        #expect(d.results[0].value["n"] == 2)
        let late = try d.pipe(key: "a", value: [:], eventTimeMs: 59_000, id: "too-late")
        #expect(late.late)
        #expect(d.late == ["too-late"])
        #expect(d.engine.counters.late == 1)
    }

    @Test func hoppingWindowsOverlap() throws {
        let spec = try windowSpec(
            """
            type: hopping
            size: 1m
            advance: 30s
            aggregate: { n: count() }
            """)
        #expect(spec.windows(at: 45_000).map(\.start) == [0, 30_000])
        #expect(spec.windows(at: -1).map(\.start) == [-60_000, -30_000])
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        try d.pipe(key: "k", value: [:], eventTimeMs: 45_000)
        try d.pipe(key: "k", value: [:], eventTimeMs: 75_000)
        try d.pipe(key: "k", value: [:], eventTimeMs: 200_000)
        let counts = d.results.map { "\($0.value["window_start"]!.stringValue!.dropFirst(14).prefix(5)) \($0.value["n"]!)" }
        #expect(counts == ["00:00 1", "00:30 2", "01:00 1"])
    }

    @Test func slidingWindowsCoverTheSizeBeforeEachRecord() throws {
        let spec = try windowSpec(
            """
            type: sliding
            size: 10s
            aggregate: { n: count(), total: sum(v) }
            """)
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        try d.pipe(key: "k", value: ["v": 1], eventTimeMs: 1_000)
        try d.pipe(key: "k", value: ["v": 2], eventTimeMs: 5_000)
        try d.pipe(key: "k", value: ["v": 4], eventTimeMs: 12_000)
        try d.pipe(key: "k", value: ["v": 0], eventTimeMs: 100_000)
        let totals = d.results.map { $0.value["total"]! }
        // [−9 s, 1 s] = 1; [−5 s, 5 s] = 1+2; [2 s, 12 s] = 2+4 (1 s is out of range)
        #expect(totals == [1, 3, 6])
    }

    @Test func sessionsMergeAcrossTheGap() throws {
        let spec = try windowSpec(
            """
            type: session
            gap: 10s
            grace: 30s
            emit: update
            aggregate: { n: count() }
            """)
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        try d.pipe(key: "u", value: [:], eventTimeMs: 0)
        try d.pipe(key: "u", value: [:], eventTimeMs: 18_000) // a second session
        try d.pipe(key: "u", value: [:], eventTimeMs: 9_000) // within the gap of both: one session [0, 18 s]
        let last = d.results.suffix(2)
        #expect(last.first?.value["retracted"] == true)
        #expect(last.first?.id == "u@18000")
        #expect(last.last?.id == "u@0")
        #expect(last.last?.value["n"] == 3)
        #expect(d.engine.stateEntries == 1)
    }

    @Test func updateModeEmitsEveryChangeWithTheSameId() throws {
        let spec = try windowSpec(
            """
            size: 1m
            emit: update
            aggregate: { n: count() }
            """)
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        try d.pipe(key: "a", value: [:], eventTimeMs: 1)
        try d.pipe(key: "a", value: [:], eventTimeMs: 2)
        #expect(d.results.map { $0.value["n"]! } == [1, 2])
        #expect(Set(d.results.map(\.id)) == ["a@0"])
    }

    @Test func percentileAndDistinct() throws {
        let spec = try windowSpec(
            """
            size: 1m
            aggregate: { p50: "percentile(v, 50)", p99: "percentile(v, 99)", kinds: distinct(kind) }
            """)
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        for i in 1...1000 {
            try d.pipe(key: "k", value: ["v": .integer(Int64(i)), "kind": .string("k\(i % 7)")], eventTimeMs: Int64(i))
        }
        try d.pipe(key: "x", value: ["v": 1, "kind": "a"], eventTimeMs: minute)
        let r = try #require(d.results.first)
        let p50 = try #require(r.value["p50"]?.doubleValue)
        let p99 = try #require(r.value["p99"]?.doubleValue)
        #expect(abs(p50 - 500) / 500 <= 0.011)
        #expect(abs(p99 - 990) / 990 <= 0.011)
        #expect(r.value["kinds"] == 7)
    }

    @Test func configErrorsNameTheKey() throws {
        #expect(throws: ConfigError.self) { try windowSpec("size: 1m\naggregate: { n: counts() }") }
        #expect(throws: ConfigError.self) { try windowSpec("type: hopping\nsize: 1m\nadvance: 2m\naggregate: { n: count() }") }
        #expect(throws: ConfigError.self) { try windowSpec("size: 0s\naggregate: { n: count() }") }
        #expect(throws: ConfigError.self) { try windowSpec("size: 1m\naggregate: { window_start: count() }") }
        do {
            _ = try windowSpec("size: 1m\naggregate: { p: \"percentile(v, 120)\" }")
            Issue.record("accepted percentile 120")
        } catch {
            #expect("\(error)".contains("0 to 100"))
        }
    }

    /// An upstream stage that crashed re-sends records with the same ids: each counts once; a copy
    /// that arrives after its window closed is late (reported), not counted.
    @Test func aRecordSentTwiceCountsOnce() throws {
        let spec = try windowSpec("size: 1m\naggregate: { n: count(), s: sum(v) }")
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        try d.pipe(key: "a", value: ["v": 5], eventTimeMs: 1_000, id: "r1")
        try d.pipe(key: "a", value: ["v": 7], eventTimeMs: 2_000, id: "r2")
        let again = try d.pipe(key: "a", value: ["v": 5], eventTimeMs: 1_000, id: "r1")
        #expect(again.duplicate)
        try d.pipe(key: "a", value: ["v": 1], eventTimeMs: 61_000, id: "r3")
        #expect(d.results.first?.value["n"] == 2)
        #expect(d.results.first?.value["s"] == 12)
        let late = try d.pipe(key: "a", value: ["v": 7], eventTimeMs: 2_000, id: "r2")
        #expect(late.late && !late.duplicate)
        #expect(d.engine.counters.duplicates == 1)
        // The ids survive a restart (they are part of the state in the changelog).
        try d.restart()
        #expect(try d.pipe(key: "a", value: ["v": 1], eventTimeMs: 61_000, id: "r3").duplicate)
    }

    @Test func badValuesAreErrorsNotCrashes() throws {
        let spec = try windowSpec("size: 1m\ntime: ts\naggregate: { s: sum(v) }")
        var d = StatefulTestDriver(op: .window(spec), inputTopics: ["in"])
        #expect(throws: ProcessingError.self) { try d.pipe(key: "k", value: ["ts": 1, "v": "x"], eventTimeMs: 0) }
        #expect(throws: ProcessingError.self) { try d.pipe(key: "k", value: ["ts": "yesterday", "v": 1], eventTimeMs: 0) }
        #expect(throws: ProcessingError.self) { try d.pipe(key: nil, value: ["ts": 1, "v": 1], eventTimeMs: 0) }
        try d.pipe(key: "k", value: ["ts": "2026-01-01T00:00:00Z", "v": 1], eventTimeMs: 0)
        #expect(d.engine.stateEntries == 1)
    }
}
