import Config
import Foundation
import Kafka
import StreamCore
import Synchronization

/// `type: stdin` — one NDJSON record per line of standard input (or any file descriptor) until EOF.
/// Not replayable: ids are left to ingest (random), there is no checkpoint.
///
/// The descriptor is read on a dedicated thread, so a read that blocks while the writer is silent
/// never blocks the cooperative pool. At most ``maxChunksAhead`` chunks of `batch` lines wait for
/// ingest: while Kafka is slow the thread stops reading, the pipe fills and the writer is slowed
/// down (backpressure), so memory stays bounded.
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
    /// Chunks read ahead of ingest at most, besides the one ingest is emitting.
    public let maxChunksAhead: Int
    public var name: String { fileDescriptor == 0 ? "stdin" : "fd:\(fileDescriptor)" }

    public init(fileDescriptor: Int32 = 0, maxRecordBytes: Int = 1 << 20, batch: Int = 500, maxChunksAhead: Int = 4) {
        self.fileDescriptor = fileDescriptor
        self.maxRecordBytes = maxRecordBytes
        self.batch = batch
        self.maxChunksAhead = max(1, maxChunksAhead)
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
        // Free places for chunks between the thread and ingest: the thread takes one before it hands
        // a chunk over and ingest gives it back once the chunk is emitted (or when it stops).
        let places = DispatchSemaphore(value: maxChunksAhead)
        let stopped = StdinStopFlag()
        startNamedThread("sf-stdin") {
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            var pending: [UInt8] = []
            var out: [[UInt8]] = []
            reading: while !stopped.isSet {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending.append(contentsOf: buffer[0..<n])
                // Lines are cut in one pass; the consumed prefix is removed once per read.
                var start = 0
                while let nl = pending[start...].firstIndex(of: 0x0A) {
                    var end = nl
                    if end > start && pending[end - 1] == 0x0D { end -= 1 }
                    out.append(Array(pending[start..<end]))
                    start = nl + 1
                }
                pending.removeSubrange(0..<start)
                // Handed over in chunks of at most `batch` lines, each waiting for a free place.
                for chunk in stride(from: 0, to: out.count, by: batch) {
                    places.wait()
                    if stopped.isSet { break reading }
                    continuation.yield(Array(out[chunk..<min(out.count, chunk + batch)]))
                }
                out.removeAll(keepingCapacity: true)
            }
            if !pending.isEmpty && !stopped.isSet { continuation.yield([pending]) }
            continuation.finish()
        }
        defer {
            // Ingest stops (cancelled or failed): a thread waiting for a place must not wait forever.
            stopped.set()
            places.signal()
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
            places.signal()
        }
    }
}

/// Set once ingest stops reading the stdin source's chunks.
private final class StdinStopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .releasing) }
    var isSet: Bool { flag.load(ordering: .acquiring) }
}
