import Foundation
import Testing

@testable import Connectors

#if canImport(Glibc)
import Glibc
#endif

/// An emitter whose `emit` waits until the test opens it: Kafka being slow, as the source sees it.
final class GatedEmitter: RecordEmitter, @unchecked Sendable {
    // @unchecked: guarded by the lock.
    private let lock = NSLock()
    private var isOpen = false
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private var collected: [SourceRecord] = []

    func emit(_ records: [SourceRecord]) async throws(EmitError) {
        await withCheckedContinuation { c in
            let go = lock.withLock {
                if !isOpen { waiting.append(c) }
                return isOpen
            }
            if go { c.resume() }
        }
        lock.withLock { collected += records }
    }

    func emitAndWait(_ records: [SourceRecord]) async throws(EmitError) { try await emit(records) }

    func open() {
        let waiters = lock.withLock {
            isOpen = true
            defer { waiting = [] }
            return waiting
        }
        for c in waiters { c.resume() }
    }

    var records: [SourceRecord] { lock.withLock { collected } }
}

@Suite struct StdinSourceTests {
    /// Runs `body` on a thread of its own (it blocks) and returns its result.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in Thread { c.resume(returning: body()) }.start() }
    }

    @Test func linesInOrderWithCRLFBlankAndTooLongLinesAndALastLineWithoutNewline() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let text = "{\"a\":1}\r\n\n  \n{\"a\":2}\n" + String(repeating: "x", count: 40) + "\n{\"a\":3}"
        let writer = fds[1]
        _ = await Self.onThread {
            let n = Array(text.utf8).withUnsafeBytes { write(writer, $0.baseAddress, $0.count) }
            close(writer)
            return n
        }
        let emitter = CollectingEmitter()
        try await StdinSource(fileDescriptor: fds[0], maxRecordBytes: 32, batch: 2).run(resumingFrom: nil, emitter: emitter)
        close(fds[0])
        let lines = emitter.records.map { String(decoding: $0.bytes, as: UTF8.self) }
        #expect(lines == [#"{"a":1}"#, #"{"a":2}"#, String(repeating: "x", count: 32), #"{"a":3}"#])
        #expect(emitter.records.map { $0.rejection != nil } == [false, false, true, false])
    }

    /// While ingest cannot emit, the source stops reading: the pipe fills and the writer blocks,
    /// having written far less than it wanted to. Once ingest emits again, every line arrives.
    @Test func aSlowIngestSlowsTheWriterDown() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let (reader, writer) = (fds[0], fds[1])
        #expect(fcntl(writer, F_SETFL, fcntl(writer, F_GETFL) | O_NONBLOCK) == 0)
        let emitter = GatedEmitter()
        let source = StdinSource(fileDescriptor: reader, batch: 10, maxChunksAhead: 2)
        let running = Task { try await source.run(resumingFrom: nil, emitter: emitter) }

        // 100-byte lines (atomic pipe writes) until the pipe stays full for 2 s, or 20 MB.
        let line = Array((String(repeating: "x", count: 99) + "\n").utf8)
        let wanted = 20 << 20
        let written = await Self.onThread { () -> Int in
            var total = 0
            while total < wanted {
                let n = line.withUnsafeBytes { write(writer, $0.baseAddress, $0.count) }
                if n > 0 {
                    total += n
                    continue
                }
                guard errno == EAGAIN else { return -1 }
                var p = pollfd(fd: writer, events: Int16(POLLOUT), revents: 0)
                if poll(&p, 1, 2000) == 0 { break } // the reader stopped taking lines
            }
            return total
        }
        // What may be in flight: the chunks ahead and the one being emitted (3 × 10 lines), the
        // 64 KiB read buffer, a partial line, and the pipe (64 KiB on Linux unless resized).
        #expect(written > 0 && written < 1 << 20, "the writer was not slowed down: \(written) bytes written")

        close(writer)
        emitter.open()
        try await running.value
        close(reader)
        #expect(emitter.records.count == written / line.count)
    }
}
