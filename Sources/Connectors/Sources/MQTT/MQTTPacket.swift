import NIOCore

// A small MQTT client codec, written by hand: no MQTT client is among the Swift packages this project
// may use, and Debian's libmosquitto sends the PUBACK of a QoS 1 message from its own packet handler
// before the message callback runs (there is no manual-acknowledgement call in its 2.0 API), so it
// cannot acknowledge a message only after Kafka has it. Only what a subscribing client needs is here:
// CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH (QoS 0 and 1), PUBACK, PINGREQ/PINGRESP and DISCONNECT,
// for MQTT 3.1.1 and 5. Every length read from the network is checked against what is there and
// against the maximum packet size: a malformed packet is an error, never a trap.

/// The protocol level a client speaks.
public enum MQTTVersion: String, Sendable, CaseIterable {
    case v311 = "3.1.1"
    case v5 = "5"

    var level: UInt8 { self == .v5 ? 5 : 4 }
}

/// One PUBLISH as received.
public struct MQTTPublish: Sendable, Equatable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: UInt8
    public var dup: Bool
    public var retain: Bool
    /// Present for QoS 1 and 2.
    public var packetID: UInt16?

    public init(topic: String, payload: [UInt8], qos: UInt8, dup: Bool = false, retain: Bool = false, packetID: UInt16? = nil) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.dup = dup
        self.retain = retain
        self.packetID = packetID
    }
}

/// The packets a subscribing client receives.
public enum MQTTPacket: Sendable, Equatable {
    /// `code`: the 3.1.1 return code or the MQTT 5 reason code; `reason`: an MQTT 5 reason string.
    case connack(sessionPresent: Bool, code: UInt8, reason: String?)
    case publish(MQTTPublish)
    case puback(packetID: UInt16, code: UInt8)
    case suback(packetID: UInt16, codes: [UInt8])
    case unsuback(packetID: UInt16)
    case pingresp
    case disconnect(code: UInt8, reason: String?)
    /// A PUBLISH over the maximum packet size (only from ``MQTTPacketReader``): its payload was skipped.
    case oversizedPublish(topic: String, qos: UInt8, packetID: UInt16?, bytes: Int)
}

/// A packet that breaks the protocol (or this client's limits).
public struct MQTTProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    /// Set when the packet is over the maximum packet size: its total size in bytes.
    public let oversize: Int?
    init(_ description: String, oversize: Int? = nil) {
        self.description = description
        self.oversize = oversize
    }
}

/// One topic filter with the maximum QoS asked for.
public struct MQTTSubscription: Sendable, Equatable {
    public var filter: String
    public var qos: UInt8
    public init(filter: String, qos: UInt8) {
        self.filter = filter
        self.qos = qos
    }
}

/// Settings of a CONNECT packet. Its description never shows the password.
public struct MQTTConnectOptions: Sendable, CustomStringConvertible {
    public var description: String {
        "MQTT \(version.rawValue) client_id=\(clientID) username=\(username ?? "none") password=\(password == nil ? "none" : "<redacted>")"
    }

    public var version: MQTTVersion
    public var clientID: String
    /// False keeps the session (subscriptions and unacknowledged messages) across connections.
    public var cleanStart: Bool
    public var keepAliveSeconds: UInt16
    public var username: String?
    public var password: String?
    /// MQTT 5: how long the broker keeps the session after a disconnect (3.1.1 keeps it until a clean connect).
    public var sessionExpirySeconds: UInt32
    /// MQTT 5: how many QoS 1 messages the broker may have unacknowledged at once. CONNECT carries no
    /// maximum packet size: larger messages arrive and ``MQTTPacketReader`` reports them.
    // A maximum packet size in CONNECT would make a broker drop larger messages without a trace; see
    // docs/decisions/0011-mqtt-source-acks-after-kafka.md.
    public var receiveMaximum: UInt16

    public init(
        version: MQTTVersion, clientID: String, cleanStart: Bool = false, keepAliveSeconds: UInt16 = 30, username: String? = nil,
        password: String? = nil, sessionExpirySeconds: UInt32 = 86_400, receiveMaximum: UInt16 = 1000
    ) {
        self.version = version
        self.clientID = clientID
        self.cleanStart = cleanStart
        self.keepAliveSeconds = keepAliveSeconds
        self.username = username
        self.password = password
        self.sessionExpirySeconds = sessionExpirySeconds
        self.receiveMaximum = receiveMaximum
    }
}

/// Encoding and decoding of MQTT packets.
public enum MQTTCodec {
    /// The largest remaining length the 4-byte variable integer can express.
    static let maxRemainingLength = 268_435_455

    // MARK: Encoding (client → broker)

    public static func connect(_ o: MQTTConnectOptions) -> ByteBuffer {
        var body = ByteBuffer()
        writeString("MQTT", to: &body)
        body.writeInteger(o.version.level)
        var flags: UInt8 = o.cleanStart ? 0x02 : 0
        if o.username != nil { flags |= 0x80 }
        if o.password != nil { flags |= 0x40 }
        body.writeInteger(flags)
        body.writeInteger(o.keepAliveSeconds)
        if o.version == .v5 {
            var props = ByteBuffer()
            props.writeInteger(UInt8(0x11)) // session expiry interval
            props.writeInteger(o.sessionExpirySeconds)
            props.writeInteger(UInt8(0x21)) // receive maximum
            props.writeInteger(max(o.receiveMaximum, 1))
            writeVarInt(props.readableBytes, to: &body)
            body.writeBuffer(&props)
        }
        writeString(o.clientID, to: &body)
        if let u = o.username { writeString(u, to: &body) }
        if let p = o.password { writeBinary(Array(p.utf8), to: &body) }
        return frame(0x10, body)
    }

    public static func subscribe(packetID: UInt16, _ subscriptions: [MQTTSubscription], version: MQTTVersion) -> ByteBuffer {
        var body = ByteBuffer()
        body.writeInteger(packetID)
        if version == .v5 { body.writeInteger(UInt8(0)) } // no properties
        for s in subscriptions {
            writeString(s.filter, to: &body)
            body.writeInteger(s.qos)
        }
        return frame(0x82, body)
    }

    public static func puback(packetID: UInt16) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(UInt8(0x40))
        b.writeInteger(UInt8(2))
        b.writeInteger(packetID)
        return b
    }

    public static func pingreq() -> ByteBuffer { ByteBuffer(bytes: [0xC0, 0x00]) }

    /// A normal disconnect (MQTT 5: reason 0, the session is kept for its expiry interval).
    public static func disconnect() -> ByteBuffer { ByteBuffer(bytes: [0xE0, 0x00]) }

    /// A PUBLISH (the client never publishes; tests use it to feed the decoder).
    public static func publish(_ p: MQTTPublish, version: MQTTVersion) -> ByteBuffer {
        var body = ByteBuffer()
        writeString(p.topic, to: &body)
        if p.qos > 0 { body.writeInteger(p.packetID ?? 1) }
        if version == .v5 { body.writeInteger(UInt8(0)) }
        body.writeBytes(p.payload)
        let flags: UInt8 = (p.dup ? 0x08 : 0) | ((p.qos & 0x03) << 1) | (p.retain ? 0x01 : 0)
        return frame(0x30 | flags, body)
    }

    static func frame(_ first: UInt8, _ body: ByteBuffer) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(body.readableBytes + 5)
        out.writeInteger(first)
        writeVarInt(body.readableBytes, to: &out)
        var body = body
        out.writeBuffer(&body)
        return out
    }

    static func writeVarInt(_ value: Int, to buffer: inout ByteBuffer) {
        var v = value
        repeat {
            var byte = UInt8(v & 0x7F)
            v >>= 7
            if v > 0 { byte |= 0x80 }
            buffer.writeInteger(byte)
        } while v > 0
    }

    static func writeString(_ s: String, to buffer: inout ByteBuffer) { writeBinary(Array(s.utf8), to: &buffer) }

    static func writeBinary(_ bytes: [UInt8], to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(truncatingIfNeeded: bytes.count))
        buffer.writeBytes(bytes.prefix(Int(UInt16.max)))
    }

    // MARK: Decoding (broker → client)

    /// Decodes one packet from the front of `buffer`, consuming it. Nil when the packet is not
    /// complete yet (nothing consumed). Throws on a malformed packet or one over `maxPacketSize`
    /// bytes (checked from the fixed header, before the rest is waited for).
    public static func decode(
        _ buffer: inout ByteBuffer, version: MQTTVersion, maxPacketSize: Int
    ) throws(MQTTProtocolError)
        -> MQTTPacket?
    {
        var peek = buffer
        guard let first: UInt8 = peek.readInteger() else { return nil }
        var remaining = 0
        var multiplier = 1
        var lengthBytes = 0
        while true {
            guard let byte: UInt8 = peek.readInteger() else { return nil }
            lengthBytes += 1
            remaining += Int(byte & 0x7F) * multiplier
            if byte & 0x80 == 0 { break }
            if lengthBytes == 4 { throw MQTTProtocolError("malformed remaining length (more than 4 bytes)") }
            multiplier *= 128
        }
        let total = 1 + lengthBytes + remaining
        if total > maxPacketSize {
            throw MQTTProtocolError("a packet of \(total) bytes is over the maximum packet size \(maxPacketSize)", oversize: total)
        }
        guard var body = peek.readSlice(length: remaining) else { return nil }
        buffer.moveReaderIndex(forwardBy: total)
        let type = first >> 4
        let flags = first & 0x0F
        switch type {
        case 2: return try connack(&body, version: version)
        case 3: return try publish(&body, flags: flags, version: version)
        case 4:
            guard flags == 0 else { throw MQTTProtocolError("PUBACK with flags \(flags)") }
            let (id, code, _) = try ackLike(&body, name: "PUBACK", version: version)
            return .puback(packetID: id, code: code)
        case 9:
            guard flags == 0 else { throw MQTTProtocolError("SUBACK with flags \(flags)") }
            guard let id: UInt16 = body.readInteger() else { throw MQTTProtocolError("SUBACK shorter than its packet id") }
            if version == .v5 { _ = try properties(&body) }
            guard body.readableBytes > 0 else { throw MQTTProtocolError("SUBACK without reason codes") }
            return .suback(packetID: id, codes: body.readBytes(length: body.readableBytes) ?? [])
        case 11:
            guard let id: UInt16 = body.readInteger() else { throw MQTTProtocolError("UNSUBACK shorter than its packet id") }
            return .unsuback(packetID: id)
        case 13:
            guard remaining == 0 else { throw MQTTProtocolError("PINGRESP with a body of \(remaining) bytes") }
            return .pingresp
        case 14:
            guard version == .v5 else { throw MQTTProtocolError("DISCONNECT from the broker in MQTT 3.1.1") }
            var code: UInt8 = 0
            var reason: String?
            if body.readableBytes > 0, let c: UInt8 = body.readInteger() { code = c }
            if body.readableBytes > 0 { reason = try properties(&body).reason }
            return .disconnect(code: code, reason: reason)
        default:
            throw MQTTProtocolError("unexpected packet type \(type) from the broker")
        }
    }

    static func connack(_ body: inout ByteBuffer, version: MQTTVersion) throws(MQTTProtocolError) -> MQTTPacket {
        guard let ack: UInt8 = body.readInteger(), let code: UInt8 = body.readInteger() else {
            throw MQTTProtocolError("CONNACK shorter than 2 bytes")
        }
        guard ack & 0xFE == 0 else { throw MQTTProtocolError("CONNACK with reserved flags set") }
        var reason: String?
        if version == .v5, body.readableBytes > 0 { reason = try properties(&body).reason }
        return .connack(sessionPresent: ack & 0x01 == 1, code: code, reason: reason)
    }

    static func publish(_ body: inout ByteBuffer, flags: UInt8, version: MQTTVersion) throws(MQTTProtocolError) -> MQTTPacket {
        let qos = (flags >> 1) & 0x03
        guard qos < 3 else { throw MQTTProtocolError("PUBLISH with QoS 3") }
        let dup = flags & 0x08 != 0
        if qos == 0 && dup { throw MQTTProtocolError("PUBLISH with QoS 0 and the DUP flag") }
        let topic = try string(&body, what: "PUBLISH topic")
        var packetID: UInt16?
        if qos > 0 {
            guard let id: UInt16 = body.readInteger() else { throw MQTTProtocolError("PUBLISH shorter than its packet id") }
            guard id != 0 else { throw MQTTProtocolError("PUBLISH with packet id 0") }
            packetID = id
        }
        if version == .v5 { _ = try properties(&body) }
        if topic.isEmpty { throw MQTTProtocolError("PUBLISH with an empty topic (topic aliases are not enabled)") }
        let payload = body.readBytes(length: body.readableBytes) ?? []
        return .publish(MQTTPublish(topic: topic, payload: payload, qos: qos, dup: dup, retain: flags & 0x01 != 0, packetID: packetID))
    }

    static func ackLike(
        _ body: inout ByteBuffer, name: String, version: MQTTVersion
    ) throws(MQTTProtocolError)
        -> (UInt16, UInt8, String?)
    {
        guard let id: UInt16 = body.readInteger() else { throw MQTTProtocolError("\(name) shorter than its packet id") }
        var code: UInt8 = 0
        var reason: String?
        if version == .v5, let c: UInt8 = body.readInteger() {
            code = c
            if body.readableBytes > 0 { reason = try properties(&body).reason }
        }
        return (id, code, reason)
    }

    static func string(_ body: inout ByteBuffer, what: String) throws(MQTTProtocolError) -> String {
        guard let length: UInt16 = body.readInteger() else { throw MQTTProtocolError("\(what): no length") }
        guard let bytes = body.readBytes(length: Int(length)) else {
            throw MQTTProtocolError("\(what): length \(length) but \(body.readableBytes) bytes left")
        }
        guard let s = String(validating: bytes, as: UTF8.self) else { throw MQTTProtocolError("\(what) is not UTF-8") }
        return s
    }

    static func readVarInt(_ body: inout ByteBuffer, what: String) throws(MQTTProtocolError) -> Int {
        var value = 0
        var multiplier = 1
        for _ in 0..<4 {
            guard let byte: UInt8 = body.readInteger() else { throw MQTTProtocolError("\(what): truncated variable integer") }
            value += Int(byte & 0x7F) * multiplier
            if byte & 0x80 == 0 { return value }
            multiplier *= 128
        }
        throw MQTTProtocolError("\(what): variable integer longer than 4 bytes")
    }

    /// Reads an MQTT 5 property block; keeps only the reason string, skips the rest by its type's size.
    static func properties(_ body: inout ByteBuffer) throws(MQTTProtocolError) -> (reason: String?, count: Int) {
        let length = try readVarInt(&body, what: "properties length")
        guard var props = body.readSlice(length: length) else {
            throw MQTTProtocolError("properties of \(length) bytes but \(body.readableBytes) left")
        }
        var reason: String?
        var count = 0
        while props.readableBytes > 0 {
            let id = try readVarInt(&props, what: "property id")
            count += 1
            switch id {
            case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A:
                guard props.readSlice(length: 1) != nil else { throw MQTTProtocolError("property \(id) truncated") }
            case 0x13, 0x21, 0x22, 0x23:
                guard props.readSlice(length: 2) != nil else { throw MQTTProtocolError("property \(id) truncated") }
            case 0x02, 0x11, 0x18, 0x27:
                guard props.readSlice(length: 4) != nil else { throw MQTTProtocolError("property \(id) truncated") }
            case 0x0B:
                _ = try readVarInt(&props, what: "subscription identifier")
            case 0x1F:
                reason = try string(&props, what: "reason string")
            case 0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C:
                _ = try string(&props, what: "property \(id)")
            case 0x09, 0x16:
                guard let n: UInt16 = props.readInteger(), props.readSlice(length: Int(n)) != nil else {
                    throw MQTTProtocolError("property \(id) truncated")
                }
            case 0x26:
                _ = try string(&props, what: "user property name")
                _ = try string(&props, what: "user property value")
            default:
                throw MQTTProtocolError("unknown property id \(id)")
            }
        }
        return (reason, count)
    }

    // MARK: Reason codes

    /// Text for a CONNACK code; `authentication` is true for codes that mean bad or missing credentials.
    static func connackText(_ code: UInt8, version: MQTTVersion) -> (text: String, authentication: Bool, retriable: Bool) {
        switch (version, code) {
        case (.v311, 1), (.v5, 0x84): return ("unsupported protocol version", false, false)
        case (.v311, 2), (.v5, 0x85): return ("client identifier not valid", false, false)
        case (.v311, 3), (.v5, 0x88): return ("server unavailable", false, true)
        case (.v5, 0x89): return ("server busy", false, true)
        case (.v311, 4), (.v5, 0x86): return ("bad user name or password", true, false)
        case (.v311, 5), (.v5, 0x87): return ("not authorized", true, false)
        case (.v5, 0x8C): return ("bad authentication method", true, false)
        case (.v5, 0x95): return ("packet too large", false, false)
        case (.v5, 0x97): return ("quota exceeded", false, true)
        case (.v5, 0x9F): return ("connection rate exceeded", false, true)
        default: return ("refused with code \(code)", false, false)
        }
    }
}

/// The stateful packet reader: ``MQTTCodec/decode(_:version:maxPacketSize:)`` plus oversized
/// PUBLISH packets. A PUBLISH over the maximum packet size is not buffered: once its topic and packet
/// id have arrived it is handed on as ``MQTTPacket/oversizedPublish(topic:qos:packetID:bytes:)`` (so
/// the source can dead-letter it and acknowledge it, instead of the broker redelivering it forever),
/// and the rest of it is skipped as it arrives. Any other packet over the limit is an error.
public struct MQTTPacketReader: Sendable {
    public let version: MQTTVersion
    public let maxPacketSize: Int
    private var skipping = 0

    public init(version: MQTTVersion, maxPacketSize: Int) {
        self.version = version
        self.maxPacketSize = maxPacketSize
    }

    /// The next packet from the front of `buffer` (consumed), or nil when more bytes are needed.
    public mutating func next(_ buffer: inout ByteBuffer) throws(MQTTProtocolError) -> MQTTPacket? {
        while skipping > 0 {
            let n = min(skipping, buffer.readableBytes)
            if n == 0 { return nil }
            buffer.moveReaderIndex(forwardBy: n)
            skipping -= n
        }
        do {
            return try MQTTCodec.decode(&buffer, version: version, maxPacketSize: maxPacketSize)
        } catch let error where error.oversize != nil {
            guard let size = error.oversize, let first: UInt8 = buffer.getInteger(at: buffer.readerIndex), first >> 4 == 3 else {
                throw error
            }
            // An oversized PUBLISH: wait for its fixed header, topic and packet id.
            var peek = buffer
            peek.moveReaderIndex(forwardBy: 1)
            while let b: UInt8 = peek.readInteger(), b & 0x80 != 0 {}
            let headerBytes = buffer.readableBytes - peek.readableBytes
            guard let topicLength: UInt16 = peek.getInteger(at: peek.readerIndex) else { return nil }
            let qos = (first >> 1) & 0x03
            guard qos < 3 else { throw MQTTProtocolError("PUBLISH with QoS 3") }
            let needed = 2 + Int(topicLength) + (qos > 0 ? 2 : 0)
            guard needed <= size - headerBytes else { throw MQTTProtocolError("PUBLISH topic longer than the packet") }
            guard peek.readableBytes >= needed else { return nil }
            let topic = try MQTTCodec.string(&peek, what: "PUBLISH topic")
            var packetID: UInt16?
            if qos > 0 { packetID = peek.readInteger() }
            if qos > 0 && packetID == 0 { throw MQTTProtocolError("PUBLISH with packet id 0") }
            let consumed = headerBytes + needed
            buffer.moveReaderIndex(forwardBy: consumed)
            skipping = size - consumed
            return .oversizedPublish(topic: topic, qos: qos, packetID: packetID, bytes: size)
        }
    }
}

/// Splits the byte stream into packets for the channel pipeline.
struct MQTTPacketDecoder: ByteToMessageDecoder {
    typealias InboundOut = MQTTPacket
    var reader: MQTTPacketReader

    init(version: MQTTVersion, maxPacketSize: Int) { reader = MQTTPacketReader(version: version, maxPacketSize: maxPacketSize) }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let packet = try reader.next(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(packet))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}
