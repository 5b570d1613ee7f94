/// The Confluent wire format of a record's key or value: a zero magic byte, the schema's registry
/// id as a 4-byte big-endian integer, then the serialised data (Avro binary; for Protobuf, message
/// indexes come first; JSON text for JSON Schema).
public enum ConfluentWireFormat {
    /// The length of the header: magic byte and schema id.
    public static let headerLength = 5

    /// Why bytes are not in the wire format.
    public struct Error: Swift.Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// The schema id and where the data starts, or an error for bytes that are not in the format.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(Error) -> (schemaID: Int32, payload: UnsafeRawBufferPointer) {
        guard bytes.count >= headerLength else {
            throw Error(message: "\(bytes.count) bytes: too short for the wire format (magic byte 0 and a 4-byte schema id)")
        }
        guard bytes[0] == 0 else {
            throw Error(
                message: "the first byte is \(bytes[0]), not the wire format's magic byte 0 (the record was not written with a registry)")
        }
        let id = Int32(bitPattern: UInt32(bytes[1]) << 24 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 8 | UInt32(bytes[4]))
        return (id, UnsafeRawBufferPointer(rebasing: bytes[headerLength...]))
    }

    /// `payload` framed with `schemaID`.
    public static func frame(schemaID: Int32, payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(headerLength + payload.count)
        appendHeader(schemaID: schemaID, to: &out)
        out.append(contentsOf: payload)
        return out
    }

    /// Appends the header (magic byte and id) to `out`.
    public static func appendHeader(schemaID: Int32, to out: inout [UInt8]) {
        let id = UInt32(bitPattern: schemaID)
        out.append(0)
        out.append(UInt8(truncatingIfNeeded: id >> 24))
        out.append(UInt8(truncatingIfNeeded: id >> 16))
        out.append(UInt8(truncatingIfNeeded: id >> 8))
        out.append(UInt8(truncatingIfNeeded: id))
    }
}
