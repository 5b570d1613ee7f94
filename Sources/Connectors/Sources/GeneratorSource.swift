import Config
import Foundation
import StreamCore

/// `type: generator` — deterministic synthetic records for demos, tests and benchmarks.
///
/// Record `n` is a pure function of `(seed, n)`: a restart from checkpoint `n` re-creates
/// byte-identical records with the same ids (`gen:<seed>:<n>`), so a crash never changes the data.
public struct GeneratorSource: RecordSource {
    public static let spec = ConnectorSpec(
        type: "generator",
        summary: "Deterministic synthetic records (profile iot-sensors): some malformed, some schema-invalid on request.",
        fields: [
            .init("profile", "string", default: "iot-sensors", "what to generate; iot-sensors is the only profile so far"),
            .init("count", "integer", default: "0", "records to generate; 0 = unbounded"),
            .init("rate", "integer", default: "0", "records per second; 0 = as fast as the pipeline takes them"),
            .init("seed", "integer", default: "1", "the same seed generates the same records"),
            .init("sensors", "integer", default: "50", "number of distinct sensor ids"),
            .init("malformed_ratio", "number", default: "0", "share of records that are not JSON"),
            .init("invalid_ratio", "number", default: "0", "share of records that are JSON but violate the iot-reading schema"),
            .init("start_time", "ISO-8601", default: "2026-01-01T00:00:00Z", "event time of record 0"),
            .init("interval", "duration", default: "100ms", "event-time spacing between records"),
            .init("batch", "integer", default: "500", "records per hand-over to ingest"),
        ],
        examples: ["count: 1000\nrate: 200\nseed: 42\ninvalid_ratio: 0.03"])

    public let count: Int64
    public let rate: Int
    public let seed: UInt64
    public let sensors: Int
    public let malformedRatio: Double
    public let invalidRatio: Double
    public let startMs: Int64
    public let intervalMs: Int64
    public let batch: Int

    public var name: String { "generator:iot-sensors:\(seed)" }

    public init(
        count: Int64, rate: Int = 0, seed: UInt64 = 1, sensors: Int = 50, malformedRatio: Double = 0,
        invalidRatio: Double = 0, startMs: Int64 = 1_767_225_600_000, intervalMs: Int64 = 100, batch: Int = 500
    ) {
        self.count = count
        self.rate = rate
        self.seed = seed
        self.sensors = sensors
        self.malformedRatio = malformedRatio
        self.invalidRatio = invalidRatio
        self.startMs = startMs
        self.intervalMs = intervalMs
        self.batch = batch
    }

    init(_ m: ConfigMapping) throws(ConfigError) {
        _ = try m.choice("profile", ["iot-sensors"], default: "iot-sensors")
        let startText = try m.string("start_time", default: "2026-01-01T00:00:00Z")
        guard let start = try? Date(startText, strategy: Date.ISO8601FormatStyle()) else {
            throw (m.optional("start_time") ?? m.node).error("expected an ISO-8601 time such as 2026-01-01T00:00:00Z")
        }
        self.init(
            count: Int64(try m.int("count", default: 0, in: 0...Int.max)),
            rate: try m.int("rate", default: 0, in: 0...10_000_000),
            seed: UInt64(try m.int("seed", default: 1, in: 0...Int.max)),
            sensors: try m.int("sensors", default: 50, in: 1...1_000_000),
            malformedRatio: try m.double("malformed_ratio", default: 0, in: 0...1),
            invalidRatio: try m.double("invalid_ratio", default: 0, in: 0...1),
            startMs: Int64(start.timeIntervalSince1970 * 1000),
            intervalMs: try m.duration("interval", defaultMilliseconds: 100),
            batch: try m.int("batch", default: 500, in: 1...100_000))
    }

    public func run(resumingFrom checkpoint: String?, emitter: any RecordEmitter) async throws {
        var n: Int64 = 0
        if let checkpoint, let last = Int64(checkpoint) { n = last + 1 }
        let clock = ContinuousClock()
        let started = clock.now
        let firstN = n
        while (count == 0 || n < count) && !Task.isCancelled {
            var size = Int64(batch)
            if rate > 0 {
                // Pace against a monotonic clock: whatever is due by now, at most one batch.
                let elapsed = clock.now - started
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                let due = firstN + Int64(seconds * Double(rate)) + 1
                if due <= n {
                    let wait = Double(n + 1 - firstN) / Double(rate) - seconds
                    try await Task.sleep(for: .microseconds(Int64(max(wait, 0.0005) * 1_000_000)))
                    continue
                }
                size = min(size, due - n)
            }
            if count > 0 { size = min(size, count - n) }
            let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
            var records: [SourceRecord] = []
            records.reserveCapacity(Int(size))
            for i in n..<(n + size) {
                records.append(
                    SourceRecord(bytes: record(i), id: "gen:\(seed):\(i)", checkpoint: String(i), receivedAtMs: now))
            }
            do {
                try await emitter.emit(records)
            } catch {
                if Self.isShutdown(error) { return }
                throw error
            }
            n += size
        }
    }

    static func isShutdown(_ error: EmitError) -> Bool {
        if case .shuttingDown = error { return true }
        return false
    }

    /// The bytes of record `n`.
    public func record(_ n: Int64) -> [UInt8] {
        var rng = SplitMix64(seed: seed ^ (UInt64(bitPattern: n) &* 0x9E37_79B9_7F4A_7C15))
        let sensor = Int(rng.next() % UInt64(sensors))
        let sensorID = String(format: "sensor-%03d", sensor)
        let ts = TimeText.iso8601(startMs + n * intervalMs)
        // A few sensors run hot; the rest sit around room temperature.
        let base = sensor % 17 == 3 ? 33.0 : 21.0
        let temperature = ((base + rng.normal() * 3.0) * 100).rounded() / 100
        let humidity = ((45.0 + rng.normal() * 8.0).clamped(0, 100) * 10).rounded() / 10
        let battery = ((3.6 + rng.unit() * 0.6) * 100).rounded() / 100
        let site = "plant-\(["a", "b", "c"][sensor % 3])"
        var object: [String: JSONValue] = [
            "sensor_id": .string(sensorID), "seq": .integer(n), "ts": .string(ts),
            "temperature_c": .number(temperature), "humidity_pct": .number(humidity), "battery_v": .number(battery),
            "site": .string(site),
        ]
        let roll = rng.unit()
        if roll < malformedRatio {
            let text = JSONValue.object(object).jsonString
            switch rng.next() % 3 {
            case 0: return Array(text.utf8.prefix(max(1, text.utf8.count / 2))) // truncated
            case 1: return Array(("reading " + text).utf8) // stray text before the object
            default: return Array(text.utf8.prefix(20)) + [0xFF, 0xFE] + Array(text.utf8.dropFirst(20)) // not UTF-8
            }
        }
        if roll < malformedRatio + invalidRatio {
            switch rng.next() % 4 {
            case 0: object["humidity_pct"] = .number(140.0)
            case 1: object["sensor_id"] = nil
            case 2: object["temperature_c"] = .string("hot")
            default: object["firmware"] = .string("1.2.3")
            }
        }
        return JSONValue.object(object).serialized()
    }
}

extension SplitMix64 {
    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }

    /// Standard normal (Box–Muller).
    mutating func normal() -> Double {
        let u1 = max(unit(), 1e-12)
        let u2 = unit()
        return (-2 * Foundation.log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}

extension Double {
    func clamped(_ lo: Double, _ hi: Double) -> Double { Swift.min(Swift.max(self, lo), hi) }
}

/// ISO-8601 text in UTC with milliseconds, e.g. `2026-01-01T00:00:00.100Z`.
enum TimeText {
    static func iso8601(_ ms: Int64) -> String {
        let seconds = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
        let millis = Int(ms - seconds * 1000)
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), millis)
    }
}
