import NIOCore
import NIOPosix

/// A TCP forwarder from a fixed local port to one of the mock cluster's brokers.
///
/// For a fixed `bootstrap.servers` address, this forwarder listens on it and relays each connection
/// to the listener of the first broker that the control channel has not taken down (broker 1 unless
/// it is down). Clients only bootstrap through it: the metadata they receive advertises the brokers'
/// own addresses, and they connect to those for everything else.
// Needed because librdkafka 2.0.2's mock cluster listens on ports the operating system chooses; see
// docs/decisions/0001-embedded-broker-in-its-own-process.md.
final class BootstrapForwarder: Sendable {
    let channel: Channel

    private init(channel: Channel) {
        self.channel = channel
    }

    /// Listens on `host:port`; `target` answers the broker address for each new connection.
    static func start(
        host: String, port: Int, group: EventLoopGroup,
        target: @escaping @Sendable () -> (host: String, port: Int)
    ) async throws -> BootstrapForwarder {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                let destination = target()
                return ClientBootstrap(group: inbound.eventLoop)
                    .connect(host: destination.host, port: destination.port)
                    .flatMapThrowing { outbound in
                        // Both channels live on the inbound channel's event loop, where this runs.
                        // Either side closing closes the other.
                        inbound.closeFuture.whenComplete { _ in outbound.close(promise: nil) }
                        outbound.closeFuture.whenComplete { _ in inbound.close(promise: nil) }
                        do {
                            try outbound.pipeline.syncOperations.addHandler(RelayHandler(peer: inbound))
                            try inbound.pipeline.syncOperations.addHandler(RelayHandler(peer: outbound))
                        } catch {
                            outbound.close(promise: nil)
                            throw error
                        }
                        inbound.setOption(.autoRead, value: true).whenComplete { _ in }
                    }
                    .flatMapError { error in
                        // Broker unreachable: refuse this client the way a down broker would.
                        inbound.close(promise: nil)
                        return inbound.eventLoop.makeFailedFuture(error)
                    }
            }
            .bind(host: host, port: port)
            .get()
        return BootstrapForwarder(channel: channel)
    }

    var port: Int { channel.localAddress?.port ?? 0 }

    func close() async {
        try? await channel.close()
    }
}

/// Relays what one channel reads to its peer; pauses reading
/// while the peer cannot take more (so a slow side does not make the forwarder buffer without bound).
private final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer

    private let peer: Channel

    init(peer: Channel) {
        self.peer = peer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        peer.write(unwrapInboundIn(data), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        peer.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        peer.setOption(.autoRead, value: context.channel.isWritable).whenComplete { _ in }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
