import Foundation

/// Runs the tests' Python helpers (Tests/Interop/*.py) with the interpreter of the tests' `.venv`
/// (`make test` creates it, with confluent-kafka, fastavro and their registry serializers), or
/// `STREAMFIRST_PYTHON`.
public enum PythonScript {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The interpreter, or an error saying how to get one.
    public static func interpreter() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let candidates = [env["STREAMFIRST_PYTHON"], FileManager.default.currentDirectoryPath + "/.venv/bin/python"].compactMap { $0 }
        guard let p = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw Failure(description: "no Python for the interop helpers: run `make test` (it creates .venv) or set STREAMFIRST_PYTHON")
        }
        return p
    }

    /// The path of `Tests/Interop/<name>`.
    public static func path(_ name: String, file: String = #filePath) -> String {
        URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Interop/\(name)").path
    }

    /// Runs `Tests/Interop/<script>` with `arguments`, feeding `lines` on standard input; returns
    /// its output lines, or throws with its standard error when it fails. The wait happens on a
    /// dispatch thread, never on the cooperative pool: the script may be talking to a server (the
    /// development registry) whose handlers need that pool.
    public static func run(_ script: String, _ arguments: [String], lines: [String]) async throws -> [String] {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try runBlocking(script, arguments, lines: lines) })
            }
        }
    }

    static func runBlocking(_ script: String, _ arguments: [String], lines: [String]) throws -> [String] {
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("py-input-\(UUID().uuidString).txt")
        try Data(lines.joined(separator: "\n").utf8).write(to: input)
        defer { try? FileManager.default.removeItem(at: input) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try interpreter())
        process.arguments = [path(script)] + arguments
        process.standardInput = try FileHandle(forReadingFrom: input)
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Small outputs: read both to the end, then wait.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(
                description:
                    "\(script) \(arguments.first ?? "") failed (\(process.terminationStatus)): \(String(decoding: stderr, as: UTF8.self))")
        }
        return String(decoding: stdout, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// Lowercase hex of `bytes` (how the helpers pass binary records).
    public static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// The bytes of lowercase hex text.
    public static func unhex(_ text: some StringProtocol) -> [UInt8] {
        var out: [UInt8] = []
        var it = text.utf8.makeIterator()
        while let hi = it.next(), let lo = it.next() {
            func v(_ c: UInt8) -> UInt8 { c <= UInt8(ascii: "9") ? c - UInt8(ascii: "0") : c - UInt8(ascii: "a") + 10 }
            out.append(v(hi) << 4 | v(lo))
        }
        return out
    }
}
