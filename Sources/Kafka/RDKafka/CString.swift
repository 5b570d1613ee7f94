/// Reads a NUL-terminated C string out of a `[CChar]` buffer filled by a librdkafka call (`errstr`).
func stringFromCBuffer(_ buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
