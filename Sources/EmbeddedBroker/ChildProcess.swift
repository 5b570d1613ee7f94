import Foundation
import Kafka
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// A child process whose output is read line by line on its own threads: used to run pipeline
/// workers (`ingest`, `validate`, …) from `streamfirst run` / `demo` and from end-to-end tests.
///
/// Standard output lines go to `onLine` (launchers read the `… http_port=N` line from it) and
/// standard error is appended to `logFile` when given (kept in memory otherwise, up to 256 KiB).
/// The child's stdin is a pipe held open by this object; deinit SIGKILLs a child still running.
public final class ChildProcess: Sendable {
    public typealias ExitStatus = EmbeddedBrokerProcess.ExitStatus

    public let processIdentifier: Int32
    public let executable: String
    private let exitStatus: OneShot<ExitStatus>
    private let stdoutDone: OneShot<Void>
    private let stderrDone: OneShot<Void>
    private let stderrText: NIOLockedValueBox<String>
    private let stdin: FileHandle

    /// Starts `executable` with `arguments`; `environment` is added to this process's environment.
    ///
    /// `directory`: the child's working directory (nil: this process's).
    public init(
        executable: URL, arguments: [String], environment: [String: String] = [:], directory: String? = nil,
        logFile: String? = nil, onLine: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let exitStatus = OneShot<ExitStatus>()
        process.terminationHandler = { p in
            exitStatus.set(ExitStatus(code: p.terminationStatus, signaled: p.terminationReason == .uncaughtSignal))
        }
        var log: FileHandle?
        if let logFile {
            let url = URL(fileURLWithPath: logFile)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: logFile) {
                _ = FileManager.default.createFile(atPath: logFile, contents: nil)
            }
            log = try FileHandle(forWritingTo: url)
            _ = try log?.seekToEnd()
        }
        let stderrText = NIOLockedValueBox("")
        let logHandle = log.map { UncheckedFileHandle($0) }
        // One spawn at a time, so that no sibling started meanwhile inherits these pipes (see ProcessSpawning).
        let streams = try ProcessSpawning.start(process)
        self.stdoutDone = EmbeddedBrokerProcess.readLines(streams.output, onLine: onLine)
        self.stderrDone = EmbeddedBrokerProcess.readLines(streams.error) { line in
            if let logHandle {
                logHandle.handle.write(Data((line + "\n").utf8))
            }
            stderrText.withLockedValue { text in
                if text.utf8.count < 256 * 1024 { text += line + "\n" }
            }
        }
        self.processIdentifier = process.processIdentifier
        self.executable = executable.path
        self.exitStatus = exitStatus
        self.stderrText = stderrText
        self.stdin = streams.input
    }

    deinit {
        if exitStatus.value == nil { _ = Glibc.kill(processIdentifier, SIGKILL) }
    }

    /// What the child wrote to stderr so far (up to 256 KiB).
    public var standardError: String { stderrText.withLockedValue { $0 } }

    /// The exit status once the child has exited.
    public var exited: ExitStatus? { exitStatus.value }

    /// What ``wait()`` is still waiting for ("its exit", "end of file on its stdout", …), for errors
    /// about a child that did not finish; empty once it has.
    public var pending: [String] {
        [
            (exitStatus.value == nil, "its exit"), (stdoutDone.value == nil, "end of file on its stdout"),
            (stderrDone.value == nil, "end of file on its stderr"),
        ].filter(\.0).map(\.1)
    }

    /// Sends a signal (SIGTERM, SIGKILL, SIGSTOP, …).
    public func signal(_ signal: Int32) {
        if exitStatus.value == nil { _ = Glibc.kill(processIdentifier, signal) }
    }

    /// Waits for the child to exit and its output to be read.
    public func wait() async -> ExitStatus {
        let status = await exitStatus.wait()
        await stdoutDone.wait()
        await stderrDone.wait()
        return status
    }

    /// Waits up to `timeout` for the child to exit and its output to be read; nil if it is still
    /// running then (it is left running: kill it, or wait again).
    public func wait(timeout: Duration) async -> ExitStatus? {
        let outcome = OneShot<ExitStatus?>()
        let millis = Int(timeout.milliseconds)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(millis)) { _ = outcome.set(nil) }
        Task { _ = outcome.set(await self.wait()) }
        return await outcome.wait()
    }

    /// SIGTERM, then waits up to `timeout`; SIGKILLs after it and reports `timedOut`.
    public func terminate(timeout: Duration) async -> (status: ExitStatus, timedOut: Bool) {
        signal(SIGTERM)
        let timedOut = OneShot<Bool>()
        let pid = processIdentifier
        let exitStatus = self.exitStatus
        let millis = Int(timeout.milliseconds)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(millis)) {
            if exitStatus.value == nil, timedOut.set(true) { _ = Glibc.kill(pid, SIGKILL) }
        }
        let status = await wait()
        return (status, timedOut.value == true)
    }

    /// Writes to the child's standard input (e.g. records for a `stdin` source).
    public func writeToStandardInput(_ data: Data) throws {
        try stdin.write(contentsOf: data)
    }

    /// Closes the child's standard input: it reads end of file.
    public func closeStandardInput() throws {
        try stdin.close()
    }

    /// SIGKILL and wait.
    @discardableResult
    public func kill() async -> ExitStatus {
        signal(SIGKILL)
        return await wait()
    }

    /// How ``run(executable:arguments:environment:directory:timeout:)`` ended.
    public struct Completion: Sendable {
        public var status: ExitStatus
        /// Its standard output, line by line (empty lines too).
        public var standardOutput: [String]
        /// Its standard error (up to 256 KiB).
        public var standardError: String
        /// Whether it was still running after the timeout and was SIGKILLed.
        public var timedOut: Bool
    }

    /// Runs a program to completion (its standard input at end of file), collecting what it prints;
    /// one still running after `timeout` is SIGKILLed. For command-line tools run by tests and
    /// launchers; nothing blocks the caller's executor.
    public static func run(
        executable: URL, arguments: [String], environment: [String: String] = [:], directory: String? = nil,
        timeout: Duration = .seconds(300)
    ) async throws -> Completion {
        let lines = NIOLockedValueBox<[String]>([])
        let child = try ChildProcess(
            executable: executable, arguments: arguments, environment: environment, directory: directory,
            onLine: { line in lines.withLockedValue { $0.append(line) } })
        try? child.closeStandardInput()
        var timedOut = false
        let status: ExitStatus
        if let s = await child.wait(timeout: timeout) {
            status = s
        } else {
            timedOut = true
            status = await child.kill()
        }
        return Completion(
            status: status, standardOutput: lines.withLockedValue { $0 }, standardError: child.standardError, timedOut: timedOut)
    }

    /// Finds an executable built with this package: `$STREAMFIRST_BIN_DIR`, else the directory of the
    /// running binary (tests run from `.build/<triple>/debug/`), else `.build/debug`.
    public static func locate(
        _ name: String, environment: [String: String] = ProcessInfo.processInfo.environment
    )
        throws(EmbeddedBrokerError) -> URL
    {
        var directories: [String] = []
        if let dir = environment["STREAMFIRST_BIN_DIR"], !dir.isEmpty { directories.append(dir) }
        if let exe = Bundle.main.executableURL {
            directories.append(exe.resolvingSymlinksInPath().deletingLastPathComponent().path)
        }
        let cwd = FileManager.default.currentDirectoryPath
        if let arg0 = CommandLine.arguments.first, arg0.contains("/") {
            let url = URL(fileURLWithPath: arg0, relativeTo: URL(fileURLWithPath: cwd, isDirectory: true))
            directories.append(url.standardizedFileURL.resolvingSymlinksInPath().deletingLastPathComponent().path)
        }
        directories.append(URL(fileURLWithPath: cwd).appendingPathComponent(".build/debug").path)
        for dir in directories {
            let path = URL(fileURLWithPath: dir).appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: path) { return URL(fileURLWithPath: path) }
        }
        throw .process(
            "cannot find the '\(name)' executable in \(directories.joined(separator: ", ")); "
                + "run `swift build` first or set STREAMFIRST_BIN_DIR"
        )
    }
}

/// A file handle written from one reader thread only.
private struct UncheckedFileHandle: @unchecked Sendable {
    let handle: FileHandle
    init(_ handle: FileHandle) { self.handle = handle }
}
