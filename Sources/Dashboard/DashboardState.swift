import Foundation
import Pipeline
import StreamCore

/// What the dashboard knows, built from the records it reads; it needs no broker. The dashboard's
/// consumer feeds it (``apply(metrics:)``, ``apply(record:topic:key:nowMs:)``, ``apply(deadLetter:)``)
/// and every update interval ``frame(nowMs:)`` turns it into what the page draws.
///
/// Memory is bounded: at most `maxDevices` devices (a new device beyond it is counted in
/// ``Frame/devicesRefused`` and not shown), `maxPoints` samples per device and field for the
/// windowed average, `maxPoints` frames of stage history, ``maxInstances`` worker instances and the
/// ``recentDeadLetters`` latest dead letters.
// Broker-free so that the aggregation is tested without Kafka.
package struct DashboardState: Sendable {
    /// The settings the aggregation uses (from ``DashboardConfig``).
    package struct Limits: Sendable {
        /// The field naming the device; nil: the record's Kafka key.
        package var keyField: String?
        package var valueFields: [String]
        package var windowMs: Int64
        package var maxDevices: Int
        package var maxPoints: Int
        package var stages: [String]

        package init(keyField: String?, valueFields: [String], windowMs: Int64, maxDevices: Int, maxPoints: Int, stages: [String]) {
            self.keyField = keyField
            self.valueFields = valueFields
            self.windowMs = windowMs
            self.maxDevices = maxDevices
            self.maxPoints = maxPoints
            self.stages = stages
        }
    }

    /// One update of the page (sent as a Server-Sent Event, JSON).
    package struct Frame: Sendable, Codable, Equatable {
        package var timeMs: Int64
        package var stages: [StagePoint]
        package var devices: [Device]
        package var devicesRefused: Int
        /// Records read per data topic, since the dashboard started.
        package var records: [String: Int]
        /// Data records that were not JSON objects with the key field.
        package var unusable: Int
        package var deadLetters: DeadLetters
        /// The average of each value field over all devices' samples in the window.
        package var fieldAverages: [String: Double]
        package var fields: [String]
    }

    /// A stage's numbers at one moment (summed over its live instances).
    package struct StagePoint: Sendable, Codable, Equatable {
        package var stage: String
        /// Records per second in, out and dead-lettered (from the last two snapshots of each instance).
        package var inRate: Double
        package var outRate: Double
        package var deadRate: Double
        /// Records behind the input topic's end; nil when no instance has measured it (ingest).
        package var lag: Int?
        package var recordsIn: Int
        package var recordsOut: Int
        package var deadLettered: Int
        package var filtered: Int
        /// Instances that published a snapshot within the last three intervals.
        package var instances: Int
        /// The largest p99 end-to-end latency of the live instances, milliseconds.
        package var p99EndToEndMs: Double?
    }

    /// A device's latest reading and averages, per value field.
    package struct Device: Sendable, Codable, Equatable {
        package var id: String
        package var latest: [String: Double]
        /// Over every reading since the dashboard started.
        package var average: [String: Double]
        /// Over the readings of the last `window`.
        package var windowAverage: [String: Double]
        package var count: Int
        package var lastMs: Int64
    }

    /// Dead letters read from the dead-letter topic since the dashboard started.
    package struct DeadLetters: Sendable, Codable, Equatable {
        package var total: Int
        package var byStage: [String: Int]
        package var byClass: [String: Int]
        package var recent: [DeadLetter]
    }

    /// One dead letter, from its headers.
    package struct DeadLetter: Sendable, Codable, Equatable {
        package var stage: String
        package var errorClass: String
        package var message: String
        package var timeMs: Int64
    }

    /// The stages' numbers at one moment (the page's history when it connects).
    package struct HistoryPoint: Sendable, Codable, Equatable {
        package var timeMs: Int64
        package var stages: [StagePoint]
    }

    struct Instance: Sendable {
        var last: WorkerMetricsSnapshot
        var previous: WorkerMetricsSnapshot?
    }

    struct FieldStats: Sendable {
        var latest: Double
        var sum: Double = 0
        var count = 0
        /// (time, value) of the latest readings, oldest first; at most `maxPoints`.
        var samples: Ring<Sample>
    }

    struct Sample: Sendable {
        var timeMs: Int64
        var value: Double
    }

    struct DeviceState: Sendable {
        var fields: [String: FieldStats] = [:]
        var count = 0
        var lastMs: Int64 = 0
    }

    /// Worker instances kept (the one heard from longest ago is forgotten first).
    package static let maxInstances = 200
    /// Dead letters listed on the page.
    package static let recentDeadLetters = 10

    /// The bounds and fields in use.
    package let limits: Limits
    private var instances: [String: Instance] = [:]
    private var devices: [String: DeviceState] = [:]
    private(set) var devicesRefused = 0
    private var records: [String: Int] = [:]
    private var unusable = 0
    private var deadTotal = 0
    private var deadByStage: [String: Int] = [:]
    private var deadByClass: [String: Int] = [:]
    private var recent = Ring<DeadLetter>(capacity: DashboardState.recentDeadLetters)
    private var history: Ring<HistoryPoint>

    package init(limits: Limits) {
        self.limits = limits
        self.history = Ring(capacity: limits.maxPoints)
    }

    // MARK: - Feeding

    /// A worker's metrics snapshot. Out-of-order or repeated snapshots of an instance are ignored.
    package mutating func apply(metrics snapshot: WorkerMetricsSnapshot) {
        let key = snapshot.key
        if var i = instances[key] {
            guard snapshot.timeMs > i.last.timeMs else { return }
            i.previous = i.last
            i.last = snapshot
            instances[key] = i
        } else {
            if instances.count >= Self.maxInstances, let oldest = instances.min(by: { $0.value.last.timeMs < $1.value.last.timeMs }) {
                instances[oldest.key] = nil
            }
            instances[key] = Instance(last: snapshot, previous: nil)
        }
    }

    /// A data record (the JSON bytes of its value). `key` is the record's Kafka key, used when no
    /// key field is configured. Returns false if the record could not be used (not a JSON object,
    /// no device id), which is counted.
    @discardableResult
    package mutating func apply(record value: [UInt8]?, topic: String, key: [UInt8]?, nowMs: Int64) -> Bool {
        records[topic, default: 0] += 1
        guard let value, let json = try? JSONValue.parse(value), case .object(let object) = json else {
            unusable += 1
            return false
        }
        let device: String?
        if let field = limits.keyField {
            switch object[field] {
            case .string(let s)?: device = s
            case .integer(let i)?: device = String(i)
            default: device = nil
            }
        } else {
            device = key.map { String(decoding: $0, as: UTF8.self) }
        }
        guard let device, !device.isEmpty else {
            unusable += 1
            return false
        }
        var state: DeviceState
        if let existing = devices[device] {
            state = existing
        } else {
            guard devices.count < limits.maxDevices else {
                devicesRefused += 1
                return false
            }
            state = DeviceState()
        }
        state.count += 1
        state.lastMs = nowMs
        for field in limits.valueFields {
            guard let v = object[field]?.doubleValue, v.isFinite else { continue }
            var f = state.fields[field] ?? FieldStats(latest: v, samples: Ring(capacity: limits.maxPoints))
            f.latest = v
            f.sum += v
            f.count += 1
            f.samples.append(Sample(timeMs: nowMs, value: v))
            state.fields[field] = f
        }
        devices[device] = state
        return true
    }

    /// A record of the dead-letter topic, by its headers (stage, error class, message, time).
    package mutating func apply(deadLetter headers: [String: String], nowMs: Int64) {
        let stage = headers[DeadLetterHeader.stage] ?? "?"
        let cls = headers[DeadLetterHeader.exceptionClass] ?? "?"
        deadTotal += 1
        deadByStage[stage, default: 0] += 1
        deadByClass[cls, default: 0] += 1
        recent.append(
            DeadLetter(
                stage: stage, errorClass: cls, message: String((headers[DeadLetterHeader.exceptionMessage] ?? "").prefix(200)),
                timeMs: headers[DeadLetterHeader.time].flatMap { Int64($0) } ?? nowMs))
    }

    // MARK: - Reading

    /// The stages' numbers now (also kept in the history).
    package func stagePoints(nowMs: Int64) -> [StagePoint] {
        var byStage: [String: [Instance]] = [:]
        for i in instances.values { byStage[i.last.stats.stage, default: []].append(i) }
        let order = limits.stages + byStage.keys.filter { !limits.stages.contains($0) }.sorted()
        return order.map { stage in
            let all = byStage[stage] ?? []
            var point = StagePoint(
                stage: stage, inRate: 0, outRate: 0, deadRate: 0, lag: nil, recordsIn: 0, recordsOut: 0, deadLettered: 0, filtered: 0,
                instances: 0, p99EndToEndMs: nil)
            for i in all {
                let s = i.last.stats
                point.recordsIn += s.recordsIn
                point.recordsOut += s.recordsOut
                point.deadLettered += s.deadLettered
                point.filtered += s.filtered
                // Live: not stopped and heard from within three intervals.
                let live = !i.last.final && nowMs - i.last.timeMs <= 3 * max(i.last.intervalMs, 100)
                guard live else { continue }
                point.instances += 1
                if s.consumerLag >= 0 { point.lag = (point.lag ?? 0) + s.consumerLag }
                if s.endToEndMicros.count > 0 {
                    point.p99EndToEndMs = max(point.p99EndToEndMs ?? 0, Double(s.endToEndMicros.p99) / 1000)
                }
                if let p = i.previous, i.last.timeMs > p.timeMs {
                    let seconds = Double(i.last.timeMs - p.timeMs) / 1000
                    // A counter never goes down within an instance; max(0, …) guards against a reset.
                    point.inRate += Double(max(0, s.recordsIn - p.stats.recordsIn)) / seconds
                    point.outRate += Double(max(0, s.recordsOut - p.stats.recordsOut)) / seconds
                    point.deadRate += Double(max(0, s.deadLettered - p.stats.deadLettered)) / seconds
                }
            }
            return point
        }
    }

    /// Takes the stage numbers into the history and returns the frame the page gets now.
    package mutating func frame(nowMs: Int64) -> Frame {
        let points = stagePoints(nowMs: nowMs)
        history.append(HistoryPoint(timeMs: nowMs, stages: points))
        let windowStart = nowMs - limits.windowMs
        var windowSums: [String: (sum: Double, n: Int)] = [:]
        var list: [Device] = []
        list.reserveCapacity(devices.count)
        for (id, d) in devices {
            var latest: [String: Double] = [:]
            var average: [String: Double] = [:]
            var windowAverage: [String: Double] = [:]
            for (field, f) in d.fields {
                latest[field] = f.latest
                if f.count > 0 { average[field] = f.sum / Double(f.count) }
                var sum = 0.0
                var n = 0
                for s in f.samples.elements where s.timeMs >= windowStart {
                    sum += s.value
                    n += 1
                }
                if n > 0 {
                    windowAverage[field] = sum / Double(n)
                    windowSums[field, default: (0, 0)].sum += sum
                    windowSums[field, default: (0, 0)].n += n
                }
            }
            list.append(Device(id: id, latest: latest, average: average, windowAverage: windowAverage, count: d.count, lastMs: d.lastMs))
        }
        list.sort { $0.id < $1.id }
        var fieldAverages: [String: Double] = [:]
        for (field, s) in windowSums where s.n > 0 { fieldAverages[field] = s.sum / Double(s.n) }
        return Frame(
            timeMs: nowMs, stages: points, devices: list, devicesRefused: devicesRefused, records: records, unusable: unusable,
            deadLetters: DeadLetters(total: deadTotal, byStage: deadByStage, byClass: deadByClass, recent: recent.elements.reversed()),
            fieldAverages: fieldAverages, fields: limits.valueFields)
    }

    /// The stage numbers of the last `maxPoints` frames, oldest first (sent to a page when it connects).
    package var stageHistory: [HistoryPoint] { history.elements }

    /// Devices currently held.
    package var deviceCount: Int { devices.count }
}

/// A fixed-capacity ring buffer: appending beyond the capacity drops the oldest element.
struct Ring<Element: Sendable>: Sendable {
    private var storage: [Element] = []
    private var head = 0
    let capacity: Int

    init(capacity: Int) { self.capacity = max(1, capacity) }

    mutating func append(_ e: Element) {
        if storage.count < capacity {
            storage.append(e)
        } else {
            storage[head] = e
            head = (head + 1) % capacity
        }
    }

    /// Oldest first.
    var elements: [Element] {
        storage.count < capacity ? storage : Array(storage[head...] + storage[..<head])
    }

    var count: Int { storage.count }
}
