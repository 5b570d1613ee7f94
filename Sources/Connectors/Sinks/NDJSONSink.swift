import Config
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import StreamCore

/// `type: ndjson` — appends one JSON line per record to a file.
///
/// Exactly once per consumed offset without upserts: after a batch is written and fsynced, a sidecar
/// `<path>.offsets.json` (written to a temporary file and renamed) records the offsets and the data
/// file's length. `open()` truncates the data file to that length, dropping a batch whose offsets were
/// never recorded — which the consumer then reads again from the recorded offsets. A record that
/// reached the input topic twice (same `sf.id`, different offsets) is written twice: deduplicate by id
/// downstream, or use a database sink.
public final class NDJSONSink: RecordSink, Sendable {
    public static let spec = ConnectorSpec(
        type: "ndjson",
        summary: "Appends JSON lines to a file; offsets and length in a sidecar file, a torn tail is cut on open.",
        fields: [
            .init("path", "string", "the output file (parent directories are created)"),
            .init(
                "envelope", "bool", default: "false", "write {id, key, event_time, topic, partition, offset, value} instead of the value"),
        ],
        examples: ["path: out/readings.ndjson\nenvelope: true"])

    struct Sidecar: Codable {
        var length: UInt64
        /// "group|topic|partition" → next offset
        var offsets: [String: Int64]
    }

    public let path: String
    public let envelope: Bool
    private let state = NIOLockedValueBox<(handle: FileHandle?, sidecar: Sidecar, written: Int)>((nil, Sidecar(length: 0, offsets: [:]), 0))

    public var name: String { "ndjson" }
    public var storesOffsets: Bool { true }

    public init(path: String, envelope: Bool = false) {
        self.path = path
        self.envelope = envelope
    }

    convenience init(_ m: ConfigMapping) throws(ConfigError) {
        self.init(path: try m.required("path").string(), envelope: try m.bool("envelope", default: false))
    }

    var sidecarPath: String { path + ".offsets.json" }

    public func open() async throws {
        let path = self.path
        let sidecarPath = self.sidecarPath
        let (handle, sidecar) = try await NIOThreadPool.singleton.runIfActive { () throws -> (FileHandle, Sidecar) in
            try FileManager.default.createDirectory(
                at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
            var sidecar = Sidecar(length: 0, offsets: [:])
            if let data = FileManager.default.contents(atPath: sidecarPath) {
                sidecar = try JSONDecoder().decode(Sidecar.self, from: data)
            }
            if !FileManager.default.fileExists(atPath: path) {
                _ = FileManager.default.createFile(atPath: path, contents: nil)
            }
            let h = try FileHandle(forUpdating: URL(fileURLWithPath: path))
            try h.truncate(atOffset: sidecar.length) // drop a tail whose offsets were never recorded
            try h.seekToEnd()
            return (h, sidecar)
        }
        state.withLockedValue { $0 = (handle, sidecar, 0) }
    }

    public func storedOffsets(consumerGroup: String, topic: String) async throws -> [Int32: Int64] {
        let sidecar = state.withLockedValue { $0.sidecar }
        var out: [Int32: Int64] = [:]
        for (k, v) in sidecar.offsets {
            let parts = k.split(separator: "|", omittingEmptySubsequences: false)
            if parts.count == 3, parts[0] == consumerGroup, parts[1] == topic, let p = Int32(parts[2]) { out[p] = v }
        }
        return out
    }

    public func write(_ batch: [SinkRecord], offsets: [SinkOffset], consumerGroup: String) async throws -> [SinkRejection] {
        var data: [UInt8] = []
        for r in batch {
            if envelope {
                let object: [String: JSONValue] = [
                    "id": .string(r.id), "key": r.key.map { .string(String(decoding: $0, as: UTF8.self)) } ?? .null,
                    "event_time": r.eventTimeMs.map { .integer($0) } ?? .null, "topic": .string(r.topic),
                    "partition": .integer(Int64(r.partition)), "offset": .integer(r.offset), "value": r.value,
                ]
                JSONValue.object(object).write(to: &data)
            } else {
                r.value.write(to: &data)
            }
            data.append(0x0A)
        }
        let (handleOpt, current) = state.withLockedValue { ($0.handle, $0.sidecar) }
        guard let handle = handleOpt else { throw ConnectorError("the NDJSON sink is not open") }
        var updated = current
        for o in offsets { updated.offsets["\(consumerGroup)|\(o.topic)|\(o.partition)"] = o.nextOffset }
        let sidecar = updated
        let sidecarPath = self.sidecarPath
        let bytes = data
        let newSidecar = try await NIOThreadPool.singleton.runIfActive { () throws -> Sidecar in
            var s = sidecar
            handle.write(Data(bytes))
            try handle.synchronize()
            s.length = try handle.offset()
            let encoded = try JSONEncoder().encode(s)
            let temp = sidecarPath + ".tmp"
            try encoded.write(to: URL(fileURLWithPath: temp))
            guard rename(temp, sidecarPath) == 0 else { throw ConnectorError("rename \(temp): errno \(errno)") }
            return s
        }
        state.withLockedValue {
            $0.sidecar = newSidecar
            $0.written += batch.count
        }
        return []
    }

    /// Lines in the file (up to the recorded length).
    public func count() async throws -> Int {
        let path = self.path
        let length = state.withLockedValue { $0.sidecar.length }
        return try await NIOThreadPool.singleton.runIfActive {
            guard let data = FileManager.default.contents(atPath: path) else { return 0 }
            return data.prefix(Int(length)).reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        }
    }

    public func close() async {
        let h = state.withLockedValue { s -> FileHandle? in
            defer { s.handle = nil }
            return s.handle
        }
        try? h?.close()
    }
}
