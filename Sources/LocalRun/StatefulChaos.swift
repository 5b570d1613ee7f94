import Connectors
import Foundation
import Kafka
import Logging
import NIOConcurrencyHelpers
import Pipeline
import PipelineModel
import PipelineTools
import SQLiteNIO
import StreamCore

/// The oracle of a stateful chaos run: the records the generator makes, driven through the
/// pipeline's own validate and process handlers without a broker (``PipelineTestRunner/drive(_:partition:)``),
/// each placed in the partition librdkafka's default partitioner gives its key. What the workers
/// wrote under faults must equal what this computes.
struct WindowOracle {
    /// Results of the stateful stage by `sf.id` (`<key>@<window start>`).
    var results: [String: JSONValue] = [:]
    /// Generated ids the oracle's validate or process stage dead-lettered.
    var deadLettered: Set<String> = []

    init(spec: PipelineSpec) throws {
        let ingest = try spec.stage(.ingest).mapping()
        let source = try SourceFactory.make(
            try ingest.required("source").mapping(), baseDirectory: spec.baseDirectory, logger: Logger(label: "chaos"))
        guard let generator = source as? GeneratorSource else { throw LocalRunError("chaos needs an ingest source of type generator") }
        let raw = try ingest.required("output").string()
        guard let rawTopic = spec.topics[raw] else { throw LocalRunError("ingest writes to \(raw), which is not in topics:") }
        let partitions = Dictionary(spec.topics.values.map { ($0.name, $0.partitions) }, uniquingKeysWith: { a, _ in a })
        var inputs: [KafkaMessage] = []
        inputs.reserveCapacity(Int(generator.count))
        for n in 0..<generator.count {
            let bytes = generator.record(n)
            // Ingest's `key: sensor_id`; records without one are dead-lettered by validate anyway.
            var key: [UInt8]?
            if case .object(let o) = try? JSONValue.parse(bytes), case .string(let s) = o["sensor_id"] { key = Array(s.utf8) }
            inputs.append(
                KafkaMessage(
                    topic: rawTopic.name, partition: KeyPartitioner.partition(key, of: rawTopic.partitions), offset: n, key: key,
                    value: bytes, headers: [KafkaHeader(key: RecordHeader.id, value: "gen:\(generator.seed):\(n)")]))
        }
        let driven = try PipelineTestRunner(spec: spec).drive(inputs) { topic, key in
            KeyPartitioner.partition(key, of: partitions[topic] ?? 1)
        }
        let output = try spec.stage(.process).output?.name ?? ""
        for m in driven.outputs[output] ?? [] {
            guard let id = m.idHeader, let v = m.value else { continue }
            results[id] = try JSONValue.parse(v)
        }
        for d in driven.deadLetters { if let id = d.message.idHeader { deadLettered.insert(id) } }
    }
}

/// librdkafka's default partitioner (`consistent_random`): CRC-32 (IEEE, as zlib) of the key modulo
/// the partition count.
// Written by hand: no listed package exposes CRC-32. A chaos run checks it against the partitions the
// records really landed in.
enum KeyPartitioner {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    static func partition(_ key: [UInt8]?, of partitions: Int) -> Int32 {
        guard let key, !key.isEmpty, partitions > 0 else { return 0 }
        return Int32(crc32(key) % UInt32(partitions))
    }
}

extension ChaosRun {
    /// The stateful invariants: the process stage's input and the dead letters account for every
    /// generated record; every result id in the output topic carries one value (a window counted
    /// twice would carry two), and those values and the sink's rows equal the oracle's.
    static func checkWindows(
        _ local: LocalPipeline, seed: UInt64, count: Int, dead: [KafkaMessage], input inputMessages: [KafkaMessage],
        output outputMessages: [KafkaMessage], report: inout Report
    ) async throws {
        let spec = local.spec
        let common = try spec.stage(.process)
        guard let input = common.input, common.output != nil else { throw LocalRunError("the process stage needs input and output") }
        let oracle = try WindowOracle(spec: spec)

        var misplaced = 0
        for m in inputMessages where KeyPartitioner.partition(m.key, of: input.partitions) != m.partition { misplaced += 1 }
        if misplaced > 0 { report.windowMismatches.append("\(misplaced) input records not in the partition the oracle puts them in") }
        let inputIDs = Set(inputMessages.compactMap { $0.idHeader })
        let deadIDs = Set(dead.compactMap { $0.idHeader })
        report.rows = inputIDs.count
        report.deadLettered = deadIDs.count
        report.deadLettersWritten = dead.count
        report.inBoth = Array(inputIDs.intersection(deadIDs)).sorted()
        for n in 0..<count {
            let id = "gen:\(seed):\(n)"
            if !inputIDs.contains(id) && !deadIDs.contains(id) { report.lost.append(id) }
        }
        if deadIDs != oracle.deadLettered {
            report.windowMismatches.append(
                "dead letters: \(deadIDs.subtracting(oracle.deadLettered).count) not in the oracle's, "
                    + "\(oracle.deadLettered.subtracting(deadIDs).count) of the oracle's missing"
            )
        }

        // The output topic: one value per window id, the oracle's.
        var values: [String: JSONValue] = [:]
        for m in outputMessages {
            guard let id = m.idHeader, let v = m.value else { continue }
            let value = try JSONValue.parse(v)
            if let seen = values[id], seen != value { report.doubleCounted.append(id) }
            values[id] = values[id] ?? value
            report.windowResultsWritten += 1
        }
        report.windows = oracle.results.count
        let missing = Set(oracle.results.keys).subtracting(values.keys)
        let extra = Set(values.keys).subtracting(oracle.results.keys)
        let wrong = oracle.results.filter { values[$0.key] != nil && values[$0.key] != $0.value }.map(\.key)
        if !missing.isEmpty { report.windowMismatches.append("\(missing.count) windows missing, e.g. \(missing.sorted().prefix(3))") }
        if !extra.isEmpty { report.windowMismatches.append("\(extra.count) windows the oracle has not, e.g. \(extra.sorted().prefix(3))") }
        if !wrong.isEmpty { report.windowMismatches.append("\(wrong.count) windows with other values, e.g. \(wrong.sorted().prefix(3))") }

        // The sink: one row per window, its count the oracle's.
        let mapping = try sinkMapping(spec)
        let (keyField, countField) = try windowFields(spec)
        let path = local.workerEnvironment["SQLITE_PATH"] ?? ""
        let rows = try await sinkRows(path: path, table: mapping.table, key: keyField, count: countField)
        report.sinkRows = rows.count
        var expectedRows: [String: Int64] = [:]
        for v in oracle.results.values {
            guard case .object(let o) = v, case .string(let k) = o[keyField], case .string(let start) = o["window_start"],
                let ms = isoMilliseconds(start), case .integer(let n) = o[countField] ?? .null
            else { continue }
            expectedRows["\(k)@\(ms)"] = n
        }
        if rows != expectedRows {
            let differing =
                Set(rows.keys).symmetricDifference(expectedRows.keys).count
                + rows.filter { expectedRows[$0.key] != nil && expectedRows[$0.key] != $0.value }.count
            report.windowMismatches.append("sink: \(rows.count) rows, \(expectedRows.count) expected, \(differing) differ")
        }
    }

    /// Milliseconds of an ISO-8601 time with or without fractional seconds.
    static func isoMilliseconds(_ text: String) -> Int64? {
        let date =
            (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
            ?? (try? Date(text, strategy: Date.ISO8601FormatStyle()))
        return date.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
    }

    /// The window's key field in its results and the name of its `count()` aggregate (the sink
    /// must have columns of both names and `window_start`).
    static func windowFields(_ spec: PipelineSpec) throws -> (key: String, count: String) {
        let window = try spec.stage(.process).mapping().required("window").mapping()
        let aggregate = try window.required("aggregate").mapping()
        guard let count = aggregate.keys.first(where: { (try? aggregate.string($0)) == "count()" }) else {
            throw LocalRunError("stateful chaos needs a count() aggregate (e.g. readings: count()) to compare the sink's rows with")
        }
        return (try window.string("key_field") ?? "key", count)
    }

    /// `<key>@<window start ms>` → the count column of each row.
    static func sinkRows(path: String, table: String, key: String, count: String) async throws -> [String: Int64] {
        let connection = try await SQLiteConnection.open(storage: .file(path: path))
        let out = NIOLockedValueBox<[String: Int64]>([:]) // sqlite-nio calls back on its own thread
        try await connection.query("SELECT \(key), window_start, \(count) FROM \(table)", []) { row in
            let c = row.columns
            guard c.count == 3, let k = c[0].data.string else { return }
            let start: Int64? = c[1].data.integer.map(Int64.init) ?? c[1].data.string.flatMap(ChaosRun.isoMilliseconds)
            guard let start, let n = c[2].data.integer else { return }
            out.withLockedValue { $0["\(k)@\(start)"] = Int64(n) }
        }
        try await connection.close()
        return out.withLockedValue { $0 }
    }
}

extension KafkaMessage {
    /// The record's `sf.id`.
    var idHeader: String? { header(RecordHeader.id)?.value.map { String(decoding: $0, as: UTF8.self) } }
}
