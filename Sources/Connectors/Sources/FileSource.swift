import Config
import Foundation
import NIOPosix
import StreamCore

/// `type: file` — NDJSON or CSV files, read once in name order.
///
/// Ids are `file:<path>:<line>` and the checkpoint names the file and line, so a restarted ingest
/// resumes after the last delivered line and re-reads nothing else. Reads happen on NIO's thread
/// pool in 1 MiB chunks; the cooperative pool never blocks on the disk.
public struct FileSource: RecordSource {
    public static let spec = ConnectorSpec(
        type: "file",
        summary: "NDJSON or CSV files (globs), each line / row one record; resumable.",
        fields: [
            .init("paths", "list of globs", "files to read, relative to the pipeline file; sorted by name"),
            .init("format", "ndjson | csv", default: "from the extension", "how to split records"),
            .init("infer_types", "bool", default: "true", "CSV: integers, decimals, true/false and empty → null"),
            .init("max_record_bytes", "integer", default: "1048576", "longer records are dead-lettered (SourceRejected)"),
            .init("batch", "integer", default: "500", "records per hand-over to ingest"),
        ],
        examples: ["paths: [data/*.csv]\nformat: csv", "paths: [data/orders.ndjson]"])

    public enum Format: String, Sendable { case ndjson, csv }

    public let files: [String]
    public let format: Format?
    public let inferTypes: Bool
    public let maxRecordBytes: Int
    public let batch: Int
    public let patterns: [String]

    public var name: String { "file:\(patterns.joined(separator: ","))" }

    public init(files: [String], format: Format?, inferTypes: Bool = true, maxRecordBytes: Int = 1 << 20, batch: Int = 500) {
        self.files = files
        self.patterns = files
        self.format = format
        self.inferTypes = inferTypes
        self.maxRecordBytes = maxRecordBytes
        self.batch = batch
    }

    init(_ m: ConfigMapping, baseDirectory: String) throws(ConfigError) {
        let pathsNode = try m.required("paths", hint: "files or globs, e.g. [data/*.ndjson]")
        let patterns = try pathsNode.stringList()
        var files: [String] = []
        for p in patterns {
            let full = p.hasPrefix("/") ? p : URL(fileURLWithPath: baseDirectory).appendingPathComponent(p).path
            files += Glob.expand(full)
        }
        let formatText = try m.optional("format")?.choice(["ndjson", "csv"])
        let format = formatText.flatMap { Format(rawValue: $0) }
        self.init(
            files: files, format: format, inferTypes: try m.bool("infer_types", default: true),
            maxRecordBytes: try m.int("max_record_bytes", default: 1 << 20, in: 1...(64 << 20)),
            batch: try m.int("batch", default: 500, in: 1...100_000))
        if files.isEmpty && !patterns.contains(where: { $0.contains("*") }) {
            throw pathsNode.error("no such file: \(patterns.joined(separator: ", "))")
        }
    }

    func format(of path: String) -> Format { format ?? (path.hasSuffix(".csv") ? .csv : .ndjson) }

    public func run(resumingFrom checkpoint: String?, emitter: any RecordEmitter) async throws {
        var resume: (path: String, line: Int)?
        if let checkpoint, let sep = checkpoint.lastIndex(of: ":"), let line = Int(checkpoint[checkpoint.index(after: sep)...]) {
            resume = (String(checkpoint[..<sep]), line)
        }
        var skipping = resume != nil
        for path in files.sorted() {
            if Task.isCancelled { return }
            var skipThrough = 0
            if skipping, let resume {
                if path < resume.path { continue }
                if path == resume.path { skipThrough = resume.line }
                skipping = false
            }
            try await read(path, skipThrough: skipThrough, emitter: emitter)
        }
    }

    func read(_ path: String, skipThrough: Int, emitter: any RecordEmitter) async throws {
        let reader = try ChunkedLines(path: path, quoteAware: format(of: path) == .csv)
        defer { reader.close() }
        var header: [String]?
        var pending: [SourceRecord] = []
        let csv = format(of: path) == .csv
        while let lines = try await reader.nextLines() {
            let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
            for (lineNumber, bytes) in lines {
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
                if csv && header == nil {
                    header = (try? CSVRow.fields(bytes)) ?? []
                    continue
                }
                if lineNumber <= skipThrough { continue }
                let id = "file:\(path):\(lineNumber)"
                let checkpoint = "\(path):\(lineNumber)"
                if bytes.count > maxRecordBytes {
                    pending.append(
                        SourceRecord(
                            bytes: Array(bytes.prefix(maxRecordBytes)), id: id, checkpoint: checkpoint, receivedAtMs: now,
                            rejection:
                                "line \(lineNumber) is \(bytes.count) bytes, over max_record_bytes \(maxRecordBytes) (truncated here)"))
                } else if csv, let header {
                    switch CSVRow.object(bytes, header: header, infer: inferTypes) {
                    case .success(let object):
                        pending.append(SourceRecord(bytes: object.serialized(), id: id, checkpoint: checkpoint, receivedAtMs: now))
                    case .failure(let reason):
                        pending.append(
                            SourceRecord(
                                bytes: bytes, id: id, checkpoint: checkpoint, receivedAtMs: now,
                                rejection: "line \(lineNumber): \(reason.description)"))
                    }
                } else {
                    pending.append(SourceRecord(bytes: bytes, id: id, checkpoint: checkpoint, receivedAtMs: now))
                }
                if pending.count >= batch {
                    try await emitter.emit(pending)
                    pending.removeAll(keepingCapacity: true)
                }
            }
        }
        if !pending.isEmpty { try await emitter.emit(pending) }
    }
}

/// Reads a file's lines in chunks on NIO's thread pool, with their 1-based line numbers.
/// `quoteAware`: a line break inside double quotes continues the record (CSV).
final class ChunkedLines: @unchecked Sendable {
    // @unchecked: used by one task at a time (the source's run loop); the handle is only touched
    // inside the thread-pool closure that task awaits.
    let handle: FileHandle
    let quoteAware: Bool
    var buffer: [UInt8] = []
    var line = 0
    var eof = false

    init(path: String, quoteAware: Bool) throws {
        guard let h = FileHandle(forReadingAtPath: path) else {
            throw ConnectorError("cannot open \(path)")
        }
        handle = h
        self.quoteAware = quoteAware
    }

    func close() { try? handle.close() }

    /// The next complete lines, or nil at the end of the file.
    func nextLines() async throws -> [(Int, [UInt8])]? {
        while true {
            if eof && buffer.isEmpty { return nil }
            if !eof {
                let h = handle
                let chunk = try await NIOThreadPool.singleton.runIfActive { h.readData(ofLength: 1 << 20) }
                if chunk.isEmpty { eof = true } else { buffer.append(contentsOf: chunk) }
            }
            var out: [(Int, [UInt8])] = []
            var start = 0
            var inQuotes = false
            var i = 0
            var linesInRecord = 1
            while i < buffer.count {
                let b = buffer[i]
                if quoteAware && b == 0x22 { inQuotes.toggle() }
                if b == 0x0A {
                    if inQuotes {
                        linesInRecord += 1
                    } else {
                        var end = i
                        if end > start && buffer[end - 1] == 0x0D { end -= 1 }
                        line += linesInRecord
                        out.append((line - linesInRecord + 1, Array(buffer[start..<end])))
                        linesInRecord = 1
                        start = i + 1
                    }
                }
                i += 1
            }
            buffer.removeFirst(start)
            if eof && !buffer.isEmpty {
                var rest = buffer
                if rest.last == 0x0D { rest.removeLast() }
                line += 1
                out.append((line, rest))
                buffer = []
            }
            if !out.isEmpty { return out }
            if eof { return nil }
        }
    }
}

/// A connector's runtime error.
public struct ConnectorError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// CSV rows (RFC 4180) to JSON objects.
enum CSVRow {
    struct Failure: Error, CustomStringConvertible { let description: String }

    static func fields(_ bytes: [UInt8]) throws(Failure) -> [String] {
        var fields: [String] = []
        var field: [UInt8] = []
        var inQuotes = false
        var i = 0
        var quotedField = false
        while i < bytes.count {
            let b = bytes[i]
            if inQuotes {
                if b == 0x22 {
                    if i + 1 < bytes.count && bytes[i + 1] == 0x22 {
                        field.append(0x22)
                        i += 1
                    } else {
                        inQuotes = false
                    }
                } else {
                    field.append(b)
                }
            } else if b == 0x22 && field.isEmpty && !quotedField {
                inQuotes = true
                quotedField = true
            } else if b == 0x2C {
                fields.append(String(decoding: field, as: UTF8.self))
                field = []
                quotedField = false
            } else {
                field.append(b)
            }
            i += 1
        }
        if inQuotes { throw Failure(description: "unterminated quoted field") }
        fields.append(String(decoding: field, as: UTF8.self))
        return fields
    }

    static func object(_ bytes: [UInt8], header: [String], infer: Bool) -> Result<JSONValue, Failure> {
        let values: [String]
        do {
            values = try fields(bytes)
        } catch {
            return .failure(error)
        }
        guard values.count == header.count else {
            return .failure(Failure(description: "\(values.count) fields, the header has \(header.count)"))
        }
        var object: [String: JSONValue] = [:]
        for (k, v) in zip(header, values) { object[k] = infer ? inferValue(v) : .string(v) }
        return .success(.object(object))
    }

    static func inferValue(_ s: String) -> JSONValue {
        if s.isEmpty { return .null }
        if let i = Int64(s) { return .integer(i) }
        if s.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), let d = Double(s), d.isFinite, s.first != "+", s.first != "." {
            return .number(d)
        }
        if s == "true" { return .bool(true) }
        if s == "false" { return .bool(false) }
        return .string(s)
    }
}

/// Glob expansion (`*`, `?`, `[...]` per path component) with POSIX glob(3).
enum Glob {
    static func expand(_ pattern: String) -> [String] {
        guard pattern.contains(where: { "*?[".contains($0) }) else {
            return FileManager.default.fileExists(atPath: pattern) ? [pattern] : []
        }
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(pattern, 0, nil, &g) == 0 else { return [] }
        var out: [String] = []
        for i in 0..<Int(g.gl_pathc) {
            if let p = g.gl_pathv[i] { out.append(String(cString: p)) }
        }
        return out.sorted()
    }
}
