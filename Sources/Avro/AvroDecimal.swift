/// Avro's `decimal`: an unscaled integer in big-endian two's complement, and a scale from the
/// schema. Values are exchanged as exact decimal strings (`"-12.30"`), so no digit is lost to a
/// Double. Arbitrary width up to ``maxBytes``, by schoolbook arithmetic on the bytes.
enum AvroDecimal {
    /// The widest unscaled value handled (154 decimal digits).
    static let maxBytes = 64

    /// The decimal string of `raw` (two's complement, big-endian) with `scale` fraction digits.
    static func string(twosComplement raw: UnsafeRawBufferPointer, scale: Int, offset: Int) throws(AvroDecodingError) -> String {
        guard raw.count <= maxBytes else {
            throw AvroDecodingError(offset: offset, message: "a decimal wider than \(maxBytes) bytes")
        }
        var magnitude = Array(raw)
        let negative = (magnitude.first ?? 0) & 0x80 != 0
        if negative { negate(&magnitude) }
        // Repeated division by 10 of the big-endian magnitude.
        var digits: [UInt8] = []
        while magnitude.contains(where: { $0 != 0 }) {
            var remainder = 0
            for i in magnitude.indices {
                let current = remainder << 8 | Int(magnitude[i])
                magnitude[i] = UInt8(current / 10)
                remainder = current % 10
            }
            digits.append(UInt8(remainder))
        }
        while digits.count <= scale { digits.append(0) }
        var text = negative ? "-" : ""
        for (n, d) in digits.reversed().enumerated() {
            if n == digits.count - scale { text.append(".") }
            text.append(Character(Unicode.Scalar(UInt8(ascii: "0") + d)))
        }
        return text
    }

    /// The unscaled two's complement bytes of `text` (a decimal number, or an integer) at `scale`,
    /// in the fewest bytes, or exactly `size` bytes when given. Nil when `text` is not a decimal
    /// number, has more fraction digits than `scale` (rounding would change the value), or does not fit.
    static func bytes(_ text: String, scale: Int, size: Int? = nil) -> [UInt8]? {
        var utf8 = Substring(text).utf8[...]
        var negative = false
        if utf8.first == UInt8(ascii: "-") {
            negative = true
            utf8 = utf8.dropFirst()
        } else if utf8.first == UInt8(ascii: "+") {
            utf8 = utf8.dropFirst()
        }
        var digits: [UInt8] = []
        var fraction = -1
        for c in utf8 {
            if c == UInt8(ascii: ".") {
                guard fraction < 0 else { return nil }
                fraction = 0
                continue
            }
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            digits.append(c - UInt8(ascii: "0"))
            if fraction >= 0 { fraction += 1 }
        }
        guard !digits.isEmpty else { return nil }
        var f = max(fraction, 0)
        // Drop trailing fraction zeros beyond the scale; more digits than that would be rounding.
        while f > scale, digits.last == 0 {
            digits.removeLast()
            f -= 1
        }
        guard f <= scale else { return nil }
        digits.append(contentsOf: repeatElement(0, count: scale - f))
        guard digits.count <= 160 else { return nil }
        // Big-endian magnitude: multiply by 10 and add, digit by digit.
        var magnitude: [UInt8] = [0]
        for d in digits {
            var carry = Int(d)
            for i in stride(from: magnitude.count - 1, through: 0, by: -1) {
                let v = Int(magnitude[i]) * 10 + carry
                magnitude[i] = UInt8(v & 0xFF)
                carry = v >> 8
            }
            while carry > 0 {
                magnitude.insert(UInt8(carry & 0xFF), at: 0)
                carry >>= 8
            }
        }
        // A sign bit of its own, then two's complement for negatives.
        if magnitude[0] & 0x80 != 0 { magnitude.insert(0, at: 0) }
        while magnitude.count > 1, magnitude[0] == 0, magnitude[1] & 0x80 == 0 { magnitude.removeFirst() }
        let isZero = !magnitude.contains { $0 != 0 }
        if negative && !isZero {
            negate(&magnitude)
            // -128 needs one byte, not two: drop a redundant leading 0xFF.
            while magnitude.count > 1, magnitude[0] == 0xFF, magnitude[1] & 0x80 != 0 { magnitude.removeFirst() }
        }
        guard magnitude.count <= maxBytes else { return nil }
        if let size {
            guard magnitude.count <= size else { return nil }
            let pad: UInt8 = negative && !isZero ? 0xFF : 0
            return [UInt8](repeating: pad, count: size - magnitude.count) + magnitude
        }
        return magnitude
    }

    /// Two's complement negation of a big-endian number, in place: invert every bit, add one.
    static func negate(_ bytes: inout [UInt8]) {
        for i in bytes.indices { bytes[i] = ~bytes[i] }
        var i = bytes.count - 1
        while i >= 0 {
            let (v, overflow) = bytes[i].addingReportingOverflow(1)
            bytes[i] = v
            if !overflow { break }
            i -= 1
        }
    }
}
