import EmbeddedBroker
import Foundation
import Testing

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

/// Claimed once: by the timer that kills a child which outlived its time limit, or by the reader
/// that saw it exit first (then the timer leaves the pid alone).
private final class Claim: @unchecked Sendable {
    // `@unchecked`: guarded by `lock`.
    private let lock = NSLock()
    private var taken = false
    func take() -> Bool {
        lock.withLock {
            defer { taken = true }
            return !taken
        }
    }
}

/// Runs a program to completion on threads of its own (its pipes are read with blocking calls,
/// never on the cooperative pool). `environment` is added to this process's environment. A program
/// still running after `timeout` is SIGKILLed (a hung command fails its test, with a note at the end
/// of its stderr, instead of holding the whole run).
func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], in directory: String? = nil,
    timeout: Duration = .seconds(300)
) async throws -> CommandResult {
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
            let claim = Claim()
            let pid = process.processIdentifier
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(timeout.components.seconds) * 1000)) {
                if claim.take() { kill(pid, SIGKILL) }
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
            let killed = !claim.take()
            continuation.resume(returning: CommandResult(
                status: process.terminationStatus,
                stdout: String(decoding: stdout, as: UTF8.self).split(separator: "\n").map(String.init),
                stderr: String(decoding: stderrBox.data, as: UTF8.self)
                    + (killed ? "\n[runProcess] killed: still running after \(timeout)\n" : "")))
        }.start()
    }
}

/// Waits, at most `limit`, for a child that ends by itself (ingest at the end of its input, a
/// command-line tool). One still running then fails the test with the end of its stderr and is
/// SIGKILLed: a worker logs to its own pipes, so a hang would otherwise hold the run silently.
func finished(_ child: ChildProcess, _ what: String, within limit: Duration = .seconds(240)) async -> ChildProcess.ExitStatus {
    if let status = await child.wait(timeout: limit) { return status }
    Issue.record("\(what) had not exited after \(limit); the end of its stderr:\n\(child.standardError.suffix(3000))")
    return await child.kill()
}
