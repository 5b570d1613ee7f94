import NIOCore

/// Splits a byte stream into lines (`\n` or `\r\n`), decoded as UTF-8 (invalid bytes are replaced).
///
/// A line longer than `maximumLength` bytes is an error (`LineTooLongError`): the control channel
/// answers it and closes the connection rather than buffering without bound.
struct LineDecoder: ByteToMessageDecoder {
    typealias InboundOut = String

    struct LineTooLongError: Error, CustomStringConvertible {
        var maximumLength: Int
        var description: String { "line longer than \(maximumLength) bytes" }
    }

    let maximumLength: Int
    /// How far the previous call already looked for a newline, so long partial lines are not rescanned.
    private var scanned = 0

    init(maximumLength: Int = 4096) {
        self.maximumLength = maximumLength
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        let start = view.index(view.startIndex, offsetBy: scanned)
        guard let newline = view[start...].firstIndex(of: UInt8(ascii: "\n")) else {
            scanned = view.count
            if view.count > maximumLength { throw LineTooLongError(maximumLength: maximumLength) }
            return .needMoreData
        }
        scanned = 0
        let length = newline - view.startIndex
        if length > maximumLength { throw LineTooLongError(maximumLength: maximumLength) }
        var line = buffer.readString(length: length) ?? ""
        buffer.moveReaderIndex(forwardBy: 1) // the newline
        if line.hasSuffix("\r") { line.removeLast() }
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A last line without a newline still counts as a command.
        while try decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0, let rest = buffer.readString(length: buffer.readableBytes) {
            scanned = 0
            let line = rest.hasSuffix("\r") ? String(rest.dropLast()) : rest
            context.fireChannelRead(wrapInboundOut(line))
        }
        return .needMoreData
    }
}
