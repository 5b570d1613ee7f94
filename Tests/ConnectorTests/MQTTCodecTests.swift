import Config
import Logging
import NIOCore
import Testing

@testable import Connectors

/// The hand-written MQTT codec: packets round-trip, and malformed, truncated and oversized input from
/// the network gives errors (or "need more bytes"), never a trap.
@Suite struct MQTTCodecTests {
    static func decode(_ bytes: [UInt8], _ version: MQTTVersion = .v311, max: Int = 1 << 20) throws(MQTTProtocolError) -> MQTTPacket? {
        var b = ByteBuffer(bytes: bytes)
        return try MQTTCodec.decode(&b, version: version, maxPacketSize: max)
    }

    @Test(arguments: MQTTVersion.allCases) func publishRoundTripsAndPartialInputWaits(version: MQTTVersion) throws {
        let p = MQTTPublish(topic: "sensors/dev-1/reading", payload: Array(#"{"t":21.5}"#.utf8), qos: 1, dup: true, packetID: 4711)
        let bytes = Array(buffer: MQTTCodec.publish(p, version: version))
        #expect(try Self.decode(bytes, version) == .publish(p))
        // Every proper prefix is "not complete yet", with nothing consumed.
        for n in 0..<bytes.count {
            var b = ByteBuffer(bytes: bytes.prefix(n))
            #expect(try MQTTCodec.decode(&b, version: version, maxPacketSize: 1 << 20) == nil)
            #expect(b.readableBytes == n)
        }
        // Two packets back to back come out one at a time.
        var two = ByteBuffer(bytes: bytes + [0xD0, 0x00])
        #expect(try MQTTCodec.decode(&two, version: version, maxPacketSize: 1 << 20) == .publish(p))
        #expect(try MQTTCodec.decode(&two, version: version, maxPacketSize: 1 << 20) == .pingresp)
        #expect(two.readableBytes == 0)
    }

    @Test func connectAndSubscribeEncodeTheSpecLayout() {
        let o = MQTTConnectOptions(version: .v311, clientID: "c1", keepAliveSeconds: 30, username: "u", password: "p")
        let connect = Array(buffer: MQTTCodec.connect(o))
        // 0x10, remaining length, "MQTT", level 4, flags (user, password, clean session off), keepalive 30.
        #expect(Array(connect.prefix(12)) == [0x10, UInt8(connect.count - 2), 0, 4, 0x4D, 0x51, 0x54, 0x54, 4, 0xC0, 0, 30])
        #expect(Array(connect.suffix(10)) == [0, 2, 0x63, 0x31, 0, 1, 0x75, 0, 1, 0x70])
        let v5 = Array(
            buffer: MQTTCodec.connect(MQTTConnectOptions(version: .v5, clientID: "c", sessionExpirySeconds: 60, receiveMaximum: 7)))
        // Level 5, then after keepalive the properties: session expiry 60, receive maximum 7 (no
        // maximum packet size: a broker drops larger messages silently, this client dead-letters them).
        #expect(v5[8] == 5)
        #expect(Array(v5[12..<21]) == [8, 0x11, 0, 0, 0, 60, 0x21, 0, 7])
        #expect(Array(v5[21...]) == [0, 1, 0x63])
        let sub = Array(buffer: MQTTCodec.subscribe(packetID: 1, [MQTTSubscription(filter: "a/+", qos: 1)], version: .v311))
        #expect(sub == [0x82, 8, 0, 1, 0, 3, 0x61, 0x2F, 0x2B, 1])
        #expect(Array(buffer: MQTTCodec.puback(packetID: 0x1234)) == [0x40, 2, 0x12, 0x34])
        #expect(!o.description.contains("password=p") && o.description.contains("password=<redacted>"))
    }

    @Test func brokerPacketsDecode() throws {
        #expect(try Self.decode([0x20, 2, 1, 0]) == .connack(sessionPresent: true, code: 0, reason: nil))
        #expect(try Self.decode([0x20, 2, 0, 4]) == .connack(sessionPresent: false, code: 4, reason: nil))
        // MQTT 5 CONNACK with a reason string property.
        #expect(
            try Self.decode([0x20, 8, 0, 0x86, 5, 0x1F, 0, 2, 0x6E, 0x6F], .v5) == .connack(sessionPresent: false, code: 0x86, reason: "no")
        )
        #expect(try Self.decode([0x90, 4, 0, 1, 1, 0x80]) == .suback(packetID: 1, codes: [1, 0x80]))
        #expect(try Self.decode([0x90, 4, 0, 1, 0, 1], .v5) == .suback(packetID: 1, codes: [1]))
        #expect(try Self.decode([0xE0, 1, 0x8E], .v5) == .disconnect(code: 0x8E, reason: nil))
        #expect(try Self.decode([0x40, 2, 0, 9]) == .puback(packetID: 9, code: 0))
    }

    @Test(
        arguments: [
            ([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], "more than 4 bytes"), // remaining length of 5 bytes
            ([0x36, 5, 0, 1, 0x61, 0, 1], "QoS 3"),
            ([0x38, 4, 0, 1, 0x61, 0x62], "DUP"), // QoS 0 with DUP
            ([0x32, 5, 0, 1, 0x61, 0, 0], "packet id 0"),
            ([0x30, 3, 0, 9, 0x61], "length 9"), // topic longer than the packet
            ([0x32, 3, 0, 1, 0x61], "packet id"), // QoS 1 without its id
            ([0x30, 4, 0, 2, 0xC3, 0x28], "UTF-8"),
            ([0x30, 2, 0, 0], "empty topic"),
            ([0x20, 1, 0], "CONNACK shorter"),
            ([0x20, 2, 0x02, 0], "reserved"),
            ([0xD0, 1, 0], "PINGRESP with a body"),
            ([0x90, 2, 0, 1], "without reason codes"),
            ([0x10, 0], "unexpected packet type 1"),
            ([0xF0, 0], "unexpected packet type 15"),
            ([0xE0, 0], "3.1.1"),
            ([0x42, 2, 0, 1], "flags"),
        ] as [([UInt8], String)])
    func malformedPacketsAreErrors(bytes: [UInt8], expected: String) {
        let error = #expect(throws: MQTTProtocolError.self) { _ = try Self.decode(bytes) }
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "no error")")
    }

    @Test func malformedMQTT5PropertiesAreErrors() {
        for bytes: [UInt8] in [
            [0x20, 4, 0, 0, 9, 0x11], // properties longer than the packet
            [0x20, 5, 0, 0, 2, 0x7F, 0], // unknown property
            [0x20, 6, 0, 0, 3, 0x1F, 0, 5], // reason string longer than its block
            [0x20, 5, 0, 0, 2, 0x11, 0], // 4-byte property cut short
        ] {
            #expect(throws: MQTTProtocolError.self, "\(bytes)") { _ = try Self.decode(bytes, .v5) }
        }
    }

    /// Random bytes and random cuts of valid packets: decoding ends in a packet, nil or an error.
    @Test func randomInputNeverTraps() {
        var rng = SystemRandomNumberGenerator()
        let valid = Array(buffer: MQTTCodec.publish(MQTTPublish(topic: "a/b", payload: [1, 2, 3], qos: 1, packetID: 3), version: .v5))
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                bytes = valid
                for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            }
            for version in MQTTVersion.allCases {
                var reader = MQTTPacketReader(version: version, maxPacketSize: 32)
                var b = ByteBuffer(bytes: bytes)
                for _ in 0..<50 {
                    do {
                        guard try reader.next(&b) != nil else { break }
                    } catch {
                        break
                    }
                }
            }
        }
    }

    @Test func anOversizedPublishIsReportedAndSkippedAsItArrives() throws {
        let big = MQTTPublish(topic: "big", payload: [UInt8](repeating: 0x41, count: 5000), qos: 1, packetID: 77)
        let small = MQTTPublish(topic: "s", payload: Array("{}".utf8), qos: 1, packetID: 78)
        let stream = Array(buffer: MQTTCodec.publish(big, version: .v311)) + Array(buffer: MQTTCodec.publish(small, version: .v311))
        var reader = MQTTPacketReader(version: .v311, maxPacketSize: 1024)
        var packets: [MQTTPacket] = []
        var buffer = ByteBuffer()
        // Fed in chunks of 100 bytes, like a socket would: nothing near 5000 bytes is ever buffered.
        for chunk in stride(from: 0, to: stream.count, by: 100) {
            buffer.writeBytes(stream[chunk..<min(stream.count, chunk + 100)])
            while let p = try reader.next(&buffer) { packets.append(p) }
            #expect(buffer.readableBytes <= 200)
        }
        #expect(packets == [.oversizedPublish(topic: "big", qos: 1, packetID: 77, bytes: 5010), .publish(small)])
        // Other packet types over the limit are errors.
        var pingresp = MQTTPacketReader(version: .v311, maxPacketSize: 4)
        var suback = ByteBuffer(bytes: [0x90, 5, 0, 1, 1, 1, 1])
        #expect(throws: MQTTProtocolError.self) { _ = try pingresp.next(&suback) }
    }

    @Test func configIsCheckedAndTheSpecDocumentsEveryKey() throws {
        let source = try SourceFactory.make(
            try mapping(
                "type: mqtt\nhost: broker\nport: 1884\nclient_id: ingest-1\ntopics: [\"a/+/b\", { filter: \"c/#\", qos: 0 }]\n"
                    + "password: s3cret\nusername: u"
            ),
            baseDirectory: "/", logger: Logger(label: "t"))
        let mqtt = try #require(source as? MQTTSource)
        #expect(mqtt.subscriptions == [MQTTSubscription(filter: "a/+/b", qos: 1), MQTTSubscription(filter: "c/#", qos: 0)])
        #expect(mqtt.options.version == .v5 && !mqtt.options.cleanStart && mqtt.options.password == "s3cret")
        #expect(!"\(mqtt.options)".contains("s3cret"))
        for (yaml, key) in [
            ("type: mqtt\ntopics: [a]", "client_id"),
            ("type: mqtt\nclient_id: c", "topics"),
            ("type: mqtt\nclient_id: c\ntopics: [\"a/#/b\"]", "a/#/b"),
            ("type: mqtt\nclient_id: c\ntopics: [\"a/x+\"]", "a/x+"),
            ("type: mqtt\nclient_id: c\ntopics: [{ filter: a, qos: 2 }]", "qos"),
            ("type: mqtt\nclient_id: c\ntopics: [a]\nprotocol: 4", "protocol"),
            ("type: mqtt\nclient_id: c\ntopics: [a]\nmax_in_flight: 0", "max_in_flight"),
            ("type: mqtt\nclient_id: c\ntopics: [a]\nkeepalive: 0s", "keepalive"),
            ("type: mqtt\nclient_id: c\ntopics: [a]\nprotocol: \"3.1.1\"\npassword: x", "password"),
            ("type: mqtt\nclient_id: c\ntopics: [a]\nhots: x", "host"),
        ] {
            let error = #expect(throws: ConfigError.self, "\(yaml)") {
                _ = try SourceFactory.make(try mapping(yaml), baseDirectory: "/", logger: Logger(label: "t"))
            }
            #expect(error?.description.contains(key) == true, "\(yaml): \(error?.description ?? "")")
        }
        let documented = Set(MQTTSource.spec.fields.map(\.name))
        #expect(
            documented.isSuperset(of: [
                "host", "port", "topics", "client_id", "username", "password", "keepalive", "max_in_flight", "id_field",
            ]))
    }
}
