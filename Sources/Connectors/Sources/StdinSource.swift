import Config
import Foundation
import Kafka
import StreamCore

/// `type: stdin` — one NDJSON record per line of standard input (or any file descriptor) until EOF.
/// Not replayable: ids are left to ingest (random), there is no checkpoint.
///
/// The descriptor is read on a dedicated thread, so a read that blocks while the writer is silent
/// never blocks the cooperative pool. That thread reads as fast as the descriptor delivers: while
/// Kafka is slow, lines wait in memory without bound (the writer is not slowed down).
// The thread hands batches to the source's task through an unbounded `AsyncStream`.
public struct StdinSource: RecordSource {
    public static let spec = ConnectorSpec(
        type: "stdin",
        summary: "NDJSON lines from standard input until EOF.",
        fields: [
            .init("max_record_bytes", "integer", default: "1048576", "longer lines are dead-lettered (SourceRejected), truncated"),
            .init("batch", "integer", default: "500", "records per hand-over to ingest"),
        ],
        examples: ["batch: 500"])

    public let fileDescriptor: Int32
    public let maxRecordBytes: Int
    public let batch: Int
    public var name: String { fileDescriptor == 0 ? "stdin" : "fd:\(fileDescriptor)" }

    public init(fileDescriptor: Int32 = 0, maxRecordBytes: Int = 1 << 20, batch: Int = 500) {
        self.fileDescriptor = fileDescriptor
        self.maxRecordBytes = maxRecordBytes
        self.batch = batch
    }

    init(_ m: ConfigMapping) throws(ConfigError) {
        self.init(
            maxRecordBytes: try m.int("max_record_bytes", default: 1 << 20, in: 1...(64 << 20)),
            batch: try m.int("batch", default: 500, in: 1...100_000))
    }

    public func run(resumingFrom checkpoint: String?, emitter: any RecordEmitter) async throws {
        let (lines, continuation) = AsyncStream<[[UInt8]]>.makeStream(bufferingPolicy: .unbounded)
        let fd = fileDescriptor
        let batch = self.batch
        startNamedThread("sf-stdin") {
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            var pending: [UInt8] = []
            var out: [[UInt8]] = []
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending.append(contentsOf: buffer[0..<n])
                while let nl = pending.firstIndex(of: 0x0A) {
                    var line = Array(pending[..<nl])
                    if line.last == 0x0D { line.removeLast() }
                    pending.removeSubrange(...nl)
                    out.append(line)
                }
                if !out.isEmpty {
                    // Handed over in chunks of at most `batch` lines; the stream buffers them without bound
                    // (the thread does not wait for ingest).
                    for chunk in stride(from: 0, to: out.count, by: batch) {
                        continuation.yield(Array(out[chunk..<min(out.count, chunk + batch)]))
                    }
                    out.removeAll()
                }
            }
            if !pending.isEmpty { continuation.yield([pending]) }
            continuation.finish()
        }
        for await chunk in lines {
            if Task.isCancelled { return }
            let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
            let records = chunk.filter { !$0.allSatisfy { $0 == 0x20 || $0 == 0x09 } }.map { bytes in
                bytes.count > maxRecordBytes
                    ? SourceRecord(
                        bytes: Array(bytes.prefix(maxRecordBytes)), receivedAtMs: now,
                        rejection: "a line of \(bytes.count) bytes is over max_record_bytes \(maxRecordBytes) (truncated here)")
                    : SourceRecord(bytes: bytes, receivedAtMs: now)
            }
            if !records.isEmpty { try await emitter.emit(records) }
        }
    }
}
