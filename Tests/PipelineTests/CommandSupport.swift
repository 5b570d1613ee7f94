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

/// Runs a program to completion (``ChildProcess/run(executable:arguments:environment:directory:timeout:)``:
/// its pipes are read on threads of their own, never on the cooperative pool). `environment` is
/// added to this process's environment. A program still running after `timeout` is SIGKILLed (a
/// hung command fails its test, with a note at the end of its stderr, instead of holding the run).
func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], in directory: String? = nil,
    timeout: Duration = .seconds(300)
) async throws -> CommandResult {
    let r = try await ChildProcess.run(
        executable: URL(fileURLWithPath: executable), arguments: arguments, environment: environment, directory: directory, timeout: timeout
    )
    return CommandResult(
        status: r.status.code, stdout: r.standardOutput.filter { !$0.isEmpty },
        stderr: r.standardError + (r.timedOut ? "\n[runProcess] killed: still running after \(timeout)\n" : ""))
}

/// Waits, at most `limit`, for a child that ends by itself (ingest at the end of its input, a
/// command-line tool). One still running then fails the test with the end of its stderr and is
/// SIGKILLed: a worker logs to its own pipes, so a hang would otherwise hold the run silently.
func finished(_ child: ChildProcess, _ what: String, within limit: Duration = .seconds(240)) async -> ChildProcess.ExitStatus {
    if let status = await child.wait(timeout: limit) { return status }
    Issue.record("\(what) had not exited after \(limit); the end of its stderr:\n\(child.standardError.suffix(3000))")
    return await child.kill()
}
