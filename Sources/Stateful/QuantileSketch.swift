import Foundation
import StreamCore

/// An approximate quantile sketch with bounded relative error: values are counted in logarithmic
/// buckets (bucket `i` holds values in (γ^(i-1), γ^i] with γ = (1+α)/(1−α), α = 1 %), so any quantile
/// it answers is within 1 % of a value of the true rank. Mergeable and deterministic (the same values
/// give the same buckets in any order), which windows need for session merges and replay.
// Written here because none of the packages this project uses offers a mergeable, serialisable
// sketch for doubles (HdrHistogram needs integer values in a range fixed up front). The bucketing
// follows the published DDSketch idea; the code is this project's own.
public struct QuantileSketch: Sendable, Equatable {
    public static let relativeAccuracy = 0.01
    static let gamma = (1 + relativeAccuracy) / (1 - relativeAccuracy)
    static let logGamma = Foundation.log(gamma)
    /// Values closer to zero than this count as zero.
    static let minIndexable = 1e-9

    private(set) var positive: [Int32: Int64] = [:]
    private(set) var negative: [Int32: Int64] = [:]
    private(set) var zeros: Int64 = 0
    public private(set) var count: Int64 = 0

    public init() {}

    public var bucketCount: Int { positive.count + negative.count + 1 }

    static func index(_ magnitude: Double) -> Int32 {
        let i = (Foundation.log(magnitude) / logGamma).rounded(.up)
        return Int32(clamping: Int64(Swift.max(Swift.min(i, 1e9), -1e9)))
    }

    static func value(_ index: Int32) -> Double {
        2 * Foundation.pow(gamma, Double(index)) / (gamma + 1)
    }

    public mutating func add(_ x: Double) {
        guard x.isFinite else { return }
        count += 1
        if x > Self.minIndexable {
            positive[Self.index(x), default: 0] += 1
        } else if x < -Self.minIndexable {
            negative[Self.index(-x), default: 0] += 1
        } else {
            zeros += 1
        }
    }

    public mutating func merge(_ other: QuantileSketch) {
        for (i, n) in other.positive { positive[i, default: 0] += n }
        for (i, n) in other.negative { negative[i, default: 0] += n }
        zeros += other.zeros
        count += other.count
    }

    /// The value at quantile `q` (0…1), nil when empty.
    public func quantile(_ q: Double) -> Double? {
        guard count > 0 else { return nil }
        let rank = Int64((Swift.max(0, Swift.min(1, q)) * Double(count - 1)).rounded(.down))
        var seen: Int64 = 0
        for i in negative.keys.sorted(by: >) {
            seen += negative[i] ?? 0
            if seen > rank { return -Self.value(i) }
        }
        seen += zeros
        if seen > rank { return 0 }
        for i in positive.keys.sorted() {
            seen += positive[i] ?? 0
            if seen > rank { return Self.value(i) }
        }
        return positive.keys.max().map(Self.value) ?? 0
    }

    /// `[zeros, [[index, count]…positive], [[index, count]…negative]]`, indices sorted.
    public var json: JSONValue {
        func pairs(_ d: [Int32: Int64]) -> JSONValue {
            .array(d.keys.sorted().map { .array([.integer(Int64($0)), .integer(d[$0] ?? 0)]) })
        }
        return .array([.integer(zeros), pairs(positive), pairs(negative)])
    }

    public init?(json: JSONValue) {
        guard case .array(let a) = json, a.count == 3, let z = a[0].int64Value, z >= 0 else { return nil }
        func read(_ v: JSONValue) -> [Int32: Int64]? {
            guard case .array(let items) = v else { return nil }
            var d: [Int32: Int64] = [:]
            for item in items {
                guard case .array(let p) = item, p.count == 2, let i = p[0].int64Value, let n = p[1].int64Value,
                    let i32 = Int32(exactly: i), n > 0
                else { return nil }
                d[i32] = n
            }
            return d
        }
        guard let pos = read(a[1]), let neg = read(a[2]) else { return nil }
        positive = pos
        negative = neg
        zeros = z
        count = z + pos.values.reduce(0, +) + neg.values.reduce(0, +)
    }
}
