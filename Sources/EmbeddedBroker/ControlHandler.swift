import NIOCore

/// Serves one control-channel connection: each line is executed by the server (off the event
/// loop), and replies are written in the order the commands arrived.
final class ControlHandler: ChannelInboundHandler {
    typealias InboundIn = String
    typealias OutboundOut = ByteBuffer

    private let core: BrokerCore
    /// Completes when the reply to the latest command has been written.
    private var lastReply: EventLoopFuture<Void>?

    init(core: BrokerCore) {
        self.core = core
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = unwrapInboundIn(data)
        let channel = context.channel
        let loop = context.eventLoop
        let core = self.core
        let previous = lastReply ?? loop.makeSucceededVoidFuture()
        lastReply = previous.flatMap { () -> EventLoopFuture<ControlReply> in
            let promise = loop.makePromise(of: ControlReply.self)
            promise.completeWithTask { await core.execute(line) }
            return promise.futureResult
        }.flatMap { reply -> EventLoopFuture<Void> in
            let written = channel.writeAndFlush(channel.allocator.buffer(string: reply.line + "\n"))
            if reply.requestsShutdown {
                written.whenComplete { _ in core.requestShutdown() }
            }
            return written
        }.recover { _ in } // the client went away; later replies are dropped the same way
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // The client finished sending (half-close, e.g. `echo ping | nc`): answer, then close.
            let channel = context.channel
            (lastReply ?? context.eventLoop.makeSucceededVoidFuture()).whenComplete { _ in
                channel.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let channel = context.channel
        let reason = ControlReply.error("\(error)").line
        (lastReply ?? context.eventLoop.makeSucceededVoidFuture()).whenComplete { _ in
            channel.writeAndFlush(channel.allocator.buffer(string: reason + "\n")).whenComplete { _ in
                channel.close(promise: nil)
            }
        }
    }
}

/// One reply line of the control channel.
public struct ControlReply: Sendable, Hashable {
    /// The whole line, without its newline: `ok ...` or `error ...`.
    public var line: String
    /// The server should stop once this reply has been sent.
    var requestsShutdown = false

    public var isOK: Bool { line == "ok" || line.hasPrefix("ok ") }

    static func ok(_ details: String = "") -> ControlReply {
        ControlReply(line: details.isEmpty ? "ok" : "ok \(oneLine(details))")
    }

    static func error(_ reason: String) -> ControlReply {
        ControlReply(line: "error \(oneLine(reason))")
    }

    private static func oneLine(_ text: String) -> String {
        String(text.map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}
