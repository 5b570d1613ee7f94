import Config
import Foundation
import NIOPosix
import StreamCore

/// `type: tail` — follows one growing file like `tail -F`: new complete lines become records; a
/// truncated file is read again from the start, a rotated one (new inode at the path) is finished
/// and the new file read from its start.
///
/// Ids are `tail:<path>:<inode>:<byte offset>`; the checkpoint is `<inode>:<offset after the line>`,
/// so a restart resumes after the last delivered line if the file is still the same inode.
public struct TailSource: RecordSource {
    public static let spec = ConnectorSpec(
        type: "tail",
        summary: "Follows a growing NDJSON file (tail -F): truncation and rotation handled; resumable.",
        fields: [
            .init("path", "string", "the file to follow, relative to the pipeline file"),
            .init("from", "beginning | end", default: "beginning", "where to start when there is no checkpoint"),
            .init("poll_interval", "duration", default: "250ms", "how often to look for new data"),
            .init("max_record_bytes", "integer", default: "1048576", "longer lines are dead-lettered (SourceRejected)"),
        ],
        examples: ["path: logs/app.ndjson\nfrom: end"])

    public let path: String
    public let fromEnd: Bool
    public let pollIntervalMs: Int64
    public let maxRecordBytes: Int
    public var name: String { "tail:\(path)" }

    public init(path: String, fromEnd: Bool = false, pollIntervalMs: Int64 = 250, maxRecordBytes: Int = 1 << 20) {
        self.path = path
        self.fromEnd = fromEnd
        self.pollIntervalMs = pollIntervalMs
        self.maxRecordBytes = maxRecordBytes
    }

    init(_ m: ConfigMapping, baseDirectory: String) throws(ConfigError) {
        let p = try m.required("path").string()
        self.init(
            path: p.hasPrefix("/") ? p : URL(fileURLWithPath: baseDirectory).appendingPathComponent(p).path,
            fromEnd: try m.choice("from", ["beginning", "end"], default: "beginning") == "end",
            pollIntervalMs: try m.duration("poll_interval", defaultMilliseconds: 250),
            maxRecordBytes: try m.int("max_record_bytes", default: 1 << 20, in: 1...(64 << 20)))
    }

    struct FileState {
        var inode: UInt64
        var offset: UInt64
    }

    static func fileInfo(_ path: String) -> (inode: UInt64, size: UInt64)? {
        var s = stat()
        guard stat(path, &s) == 0 else { return nil }
        return (UInt64(s.st_ino), UInt64(s.st_size))
    }

    public func run(resumingFrom checkpoint: String?, emitter: any RecordEmitter) async throws {
        var state: FileState?
        if let checkpoint {
            let parts = checkpoint.split(separator: ":")
            if parts.count == 2, let inode = UInt64(parts[0]), let offset = UInt64(parts[1]) {
                state = FileState(inode: inode, offset: offset)
            }
        }
        var partial: [UInt8] = []
        var first = true
        while !Task.isCancelled {
            if let current = Self.fileInfo(path) {
                if state == nil || state?.inode != current.inode {
                    if let old = state, old.inode != current.inode {
                        // Rotated: what was left unread in the old file is gone with it unless it is
                        // still open elsewhere; we start the new file from its beginning.
                        _ = old
                    }
                    let startAtEnd = first && fromEnd && state == nil
                    state = FileState(inode: current.inode, offset: startAtEnd ? current.size : 0)
                    partial = []
                } else if let s = state, current.size < s.offset {
                    state = FileState(inode: current.inode, offset: 0) // truncated
                    partial = []
                }
                first = false
                if var s = state, current.size > s.offset {
                    let path = self.path
                    let from = s.offset
                    let length = Int(min(current.size - from, 4 << 20))
                    let data: [UInt8] = try await NIOThreadPool.singleton.runIfActive {
                        guard let h = FileHandle(forReadingAtPath: path) else { return [] }
                        defer { try? h.close() }
                        try h.seek(toOffset: from)
                        return [UInt8](h.readData(ofLength: length))
                    }
                    if !data.isEmpty {
                        let lineStart = s.offset - UInt64(partial.count)
                        partial.append(contentsOf: data)
                        s.offset += UInt64(data.count)
                        var records: [SourceRecord] = []
                        var consumed = 0
                        var cursor = lineStart
                        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
                        while let nl = partial[consumed...].firstIndex(of: 0x0A) {
                            var line = Array(partial[consumed..<nl])
                            let lineOffset = cursor
                            cursor += UInt64(nl - consumed + 1)
                            consumed = nl + 1
                            if line.last == 0x0D { line.removeLast() }
                            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                            let id = "tail:\(path):\(s.inode):\(lineOffset)"
                            let checkpoint = "\(s.inode):\(cursor)"
                            if line.count > maxRecordBytes {
                                records.append(
                                    SourceRecord(
                                        bytes: Array(line.prefix(maxRecordBytes)), id: id, checkpoint: checkpoint, receivedAtMs: now,
                                        rejection:
                                            "a line of \(line.count) bytes is over max_record_bytes \(maxRecordBytes) (truncated here)"))
                            } else {
                                records.append(SourceRecord(bytes: line, id: id, checkpoint: checkpoint, receivedAtMs: now))
                            }
                        }
                        partial.removeFirst(consumed)
                        state = s
                        if !records.isEmpty { try await emitter.emit(records) }
                        continue // more may be there already
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(pollIntervalMs))
        }
    }
}
