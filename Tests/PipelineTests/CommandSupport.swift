import Foundation

/// What a finished command printed.
struct CommandResult: Sendable {
    var status: Int32
    var stdout: [String]
    var stderr: String
    var output: String { stdout.joined(separator: "\n") }
}

/// Written by one thread, read by another after a semaphore hand-off.
private final class Box: @unchecked Sendable {
    var data = Data()
}

/// Runs a program to completion on threads of its own (its pipes are read with blocking calls,
/// never on the cooperative pool). `environment` is added to this process's environment.
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:], in directory: String? = nil)
    async throws -> CommandResult
{
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<CommandResult, Error>) in
        Thread {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
            if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
            let out = Pipe()
            let err = Pipe()
            process.standardOutput = out
            process.standardError = err
            process.standardInput = FileHandle.nullDevice
            do {
                try process.run()
            } catch {
                continuation.resume(throwing: error)
                return
            }
            let stderrBox = Box()
            let stderrDone = DispatchSemaphore(value: 0)
            Thread {
                stderrBox.data = err.fileHandleForReading.readDataToEndOfFile()
                stderrDone.signal()
            }.start()
            let stdout = out.fileHandleForReading.readDataToEndOfFile()
            stderrDone.wait()
            process.waitUntilExit()
            continuation.resume(returning: CommandResult(
                status: process.terminationStatus,
                stdout: String(decoding: stdout, as: UTF8.self).split(separator: "\n").map(String.init),
                stderr: String(decoding: stderrBox.data, as: UTF8.self)))
        }.start()
    }
}
