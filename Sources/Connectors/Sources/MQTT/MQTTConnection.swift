import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// One TCP connection to an MQTT broker: decoded packets arrive on ``packets`` (which ends when the
/// connection closes, with the error if a packet was malformed); ``send(_:)`` writes raw packets.
final class MQTTConnection: Sendable {
    let channel: any Channel
    let packets: AsyncThrowingStream<MQTTPacket, any Error>

    private init(channel: any Channel, packets: AsyncThrowingStream<MQTTPacket, any Error>) {
        self.channel = channel
        self.packets = packets
    }

    /// Connects over TCP, or TLS when `tls` is given (`serverName`: the name the broker's certificate
    /// must carry, also sent as SNI; nil checks the certificate against the address). Throws NIO's
    /// connect error (refused, unreachable, timeout) or the TLS handshake's.
    static func open(
        host: String, port: Int, version: MQTTVersion, maxPacketSize: Int, connectTimeout: TimeAmount,
        tls: NIOSSLContext? = nil, serverName: String? = nil
    ) async throws -> MQTTConnection {
        let (packets, continuation) = AsyncThrowingStream<MQTTPacket, any Error>.makeStream()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(MQTTPacketDecoder(version: version, maxPacketSize: maxPacketSize)))
                    try channel.pipeline.syncOperations.addHandler(PacketForwarder(continuation))
                }
            }
            .connect(host: host, port: port).get()
        return MQTTConnection(channel: channel, packets: packets)
    }

    func send(_ buffer: ByteBuffer) async throws {
        try await channel.writeAndFlush(buffer)
    }

    func close() async {
        try? await channel.close()
    }
}

/// Hands decoded packets to the connection's stream; ends it when the channel goes away.
final class PacketForwarder: ChannelInboundHandler {
    typealias InboundIn = MQTTPacket
    let continuation: AsyncThrowingStream<MQTTPacket, any Error>.Continuation

    init(_ continuation: AsyncThrowingStream<MQTTPacket, any Error>.Continuation) { self.continuation = continuation }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        continuation.yield(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        continuation.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        continuation.finish(throwing: error)
        context.close(promise: nil)
    }
}
