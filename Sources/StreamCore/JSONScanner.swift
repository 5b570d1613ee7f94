// A stage that forwards records unchanged (`process` with `steps: []`) must still refuse what is not
// JSON, but it has no use for a tree: building one costs a dictionary, an array and a String per
// member. This scanner walks the bytes in place and allocates nothing. It is deliberately
// conservative: whatever it cannot decide cheaply (keys with escapes or non-ASCII bytes, which the
// parser compares as Swift Strings under canonical equivalence; numbers that might not fit a
// Double) makes it answer "not sure", and the caller parses. So the parser stays the one definition
// of what is JSON, and the scanner only ever says yes where the parser would.

extension JSONValue {
    /// Whether `bytes` is certainly one JSON text that ``parse(_:maxDepth:)`` accepts, decided
    /// without building a value or allocating.
    ///
    /// `true` guarantees that `parse` succeeds on the same bytes with the same `maxDepth`. `false`
    /// means "malformed, or not decided here": parse the bytes to find out (and to get the error).
    public static func isCertainlyWellFormed(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = defaultMaxDepth) -> Bool {
        var scanner = JSONScanner(bytes: bytes, maxDepth: maxDepth)
        return scanner.scanDocument()
    }
}

/// The scanner behind ``JSONValue/isCertainlyWellFormed(_:maxDepth:)``. Every `scan…` method
/// returns false as soon as the input is malformed or undecided.
private struct JSONScanner {
    let bytes: UnsafeRawBufferPointer
    let maxDepth: Int
    var index = 0

    /// Objects with more members than this are left to the parser (duplicate keys are found here by
    /// comparing each key with the object's earlier ones).
    static let maxMembersChecked = 32

    init(bytes: UnsafeRawBufferPointer, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    mutating func scanDocument() -> Bool {
        skipWhitespace()
        guard scanValue(depth: 0) else { return false }
        skipWhitespace()
        return index == bytes.count
    }

    @inline(__always) mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    mutating func scanValue(depth: Int) -> Bool {
        guard index < bytes.count else { return false }
        switch bytes[index] {
        case UInt8(ascii: "{"): return scanObject(depth: depth + 1)
        case UInt8(ascii: "["): return scanArray(depth: depth + 1)
        case UInt8(ascii: "\""): return scanString() != nil
        case UInt8(ascii: "t"): return literal("true")
        case UInt8(ascii: "f"): return literal("false")
        case UInt8(ascii: "n"): return literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return scanNumber()
        default: return false
        }
    }

    mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        let expected = UnsafeBufferPointer(start: word.utf8Start, count: count)
        for i in 0..<count where bytes[index + i] != expected[i] { return false }
        index += count
        return true
    }

    mutating func scanObject(depth: Int) -> Bool {
        guard depth <= maxDepth else { return false }
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return true
        }
        // The key ranges of this object, on the stack: a duplicate key makes the parser refuse.
        return withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: Self.maxMembersChecked) { keys in
            var count = 0
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return false }
                // A key with escapes or non-ASCII bytes is compared as a Swift String by the parser.
                guard let key = scanString(), case .plainASCII(let range) = key, count < Self.maxMembersChecked else { return false }
                for i in 0..<count where equal(keys[i], range) { return false }
                keys[count] = range
                count += 1
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return false }
                index += 1
                skipWhitespace()
                guard scanValue(depth: depth) else { return false }
                skipWhitespace()
                guard index < bytes.count else { return false }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    return true
                } else {
                    return false
                }
            }
        }
    }

    func equal(_ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where bytes[a.lowerBound + i] != bytes[b.lowerBound + i] { return false }
        return true
    }

    mutating func scanArray(depth: Int) -> Bool {
        guard depth <= maxDepth else { return false }
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return true
        }
        while true {
            skipWhitespace()
            guard scanValue(depth: depth) else { return false }
            skipWhitespace()
            guard index < bytes.count else { return false }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return true
            } else {
                return false
            }
        }
    }

    enum ScannedString {
        /// Only ASCII bytes and no escapes: the range of its bytes (without the quotes).
        case plainASCII(Range<Int>)
        /// Escapes or non-ASCII bytes (valid UTF-8).
        case other
    }

    /// Scans a string (at its opening quote); nil if it is malformed.
    mutating func scanString() -> ScannedString? {
        index += 1
        let start = index
        var plain = true
        while index < bytes.count {
            let b = bytes[index]
            switch b {
            case UInt8(ascii: "\""):
                index += 1
                return plain ? .plainASCII(start..<index - 1) : .other
            case UInt8(ascii: "\\"):
                plain = false
                guard scanEscape() else { return nil }
            case 0..<0x20:
                return nil
            case 0x80...:
                plain = false
                guard scanUTF8Sequence() else { return nil }
            default:
                index += 1
            }
        }
        return nil
    }

    /// An escape (at its backslash), with the parser's rule for UTF-16 surrogate pairs.
    mutating func scanEscape() -> Bool {
        index += 1
        guard index < bytes.count else { return false }
        let e = bytes[index]
        index += 1
        switch e {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"), UInt8(ascii: "n"),
            UInt8(ascii: "r"), UInt8(ascii: "t"):
            return true
        case UInt8(ascii: "u"):
            guard let code = hex4() else { return false }
            if (0xD800...0xDBFF).contains(code) {
                guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                    return false
                }
                index += 2
                guard let low = hex4() else { return false }
                return (0xDC00...0xDFFF).contains(low)
            }
            return !(0xDC00...0xDFFF).contains(code)
        default:
            return false
        }
    }

    mutating func hex4() -> UInt32? {
        guard index + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let digit = hexDigitValue(bytes[index]) else { return nil }
            value = value * 16 + digit
            index += 1
        }
        return value
    }

    /// One multi-byte UTF-8 sequence (at its lead byte), valid as Swift's validation defines it:
    /// no overlong forms, no encoded surrogates, nothing above U+10FFFF (RFC 3629, table 3-7 of the
    /// Unicode standard).
    mutating func scanUTF8Sequence() -> Bool {
        let lead = bytes[index]
        let length: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0:
            length = 3
            low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED:
            length = 3
            high = 0x9F
        case 0xF0:
            length = 4
            low = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4:
            length = 4
            high = 0x8F
        default: return false
        }
        guard index + length <= bytes.count else { return false }
        let second = bytes[index + 1]
        guard second >= low && second <= high else { return false }
        for i in 2..<length where bytes[index + i] & 0xC0 != 0x80 { return false }
        index += length
        return true
    }

    /// A number by the parser's grammar, and certainly finite as a Double (the parser refuses one
    /// beyond ±1.8e308): its integer digits plus a positive exponent stay at or below 307, and the
    /// whole number is shorter than 300 bytes. Anything larger is left undecided.
    mutating func scanNumber() -> Bool {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, isDigit(bytes[index]) else { return false }
        var integerDigits = 0
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if index < bytes.count, isDigit(bytes[index]) { return false }
        } else {
            while index < bytes.count, isDigit(bytes[index]) {
                index += 1
                integerDigits += 1
            }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { return false }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            var negative = false
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                negative = bytes[index] == UInt8(ascii: "-")
                index += 1
            }
            guard index < bytes.count, isDigit(bytes[index]) else { return false }
            var exponent = 0
            while index < bytes.count, isDigit(bytes[index]) {
                exponent = min(exponent * 10 + Int(bytes[index] - UInt8(ascii: "0")), 100_000)
                index += 1
            }
            // A negative exponent can only underflow towards zero, which is finite.
            if !negative && integerDigits + exponent > 307 { return false }
        }
        return index - start < 300
    }

    @inline(__always) func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
}
