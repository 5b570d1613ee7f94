/// A header whose value — at most ``capacity`` bytes — is kept inside this value rather than in a
/// heap array, so adding it to a forwarded record allocates nothing in Swift: for a header every
/// record gets a fresh value of, such as a W3C `traceparent` (55 bytes). Give it a short key
/// (15 UTF-8 bytes or fewer, which Swift also keeps inline).
public struct KafkaInlineHeader: Sendable, Hashable {
    /// The most bytes a value may have.
    public static let capacity = 64

    public let key: String
    /// The value's bytes, in the first `count` bytes of eight words.
    private var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var length: UInt8 = 0

    /// A header named `key` whose value `write` puts into the buffer it is given (``capacity`` bytes),
    /// returning how many it wrote (clamped to the buffer).
    public init(key: String, writing write: (UnsafeMutableRawBufferPointer) -> Int) {
        self.key = key
        let n = withUnsafeMutableBytes(of: &words) { write($0) }
        length = UInt8(clamping: min(max(n, 0), Self.capacity))
    }

    /// A header named `key` with `value`; nil when the value is longer than ``capacity``.
    public init?(key: String, value: some Collection<UInt8>) {
        guard value.count <= Self.capacity else { return nil }
        self.init(key: key) { buffer in
            buffer.copyBytes(from: value)
            return value.count
        }
    }

    /// The value's byte count.
    public var count: Int { Int(length) }

    /// Calls `body` with the value's bytes (valid only during the call).
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: words) { try body(UnsafeRawBufferPointer(rebasing: $0.prefix(Int(length)))) }
    }

    /// The value, copied.
    public var value: [UInt8] { withUnsafeBytes { Array($0) } }

    /// As an ordinary header (the value copied).
    public var header: KafkaHeader { KafkaHeader(key: key, value: value) }

    public static func == (a: Self, b: Self) -> Bool {
        a.key == b.key && a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.elementsEqual(y) } }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(key)
        withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}
