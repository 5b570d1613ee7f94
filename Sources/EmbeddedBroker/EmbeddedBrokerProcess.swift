import Foundation
import Kafka
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private func sendSignal(_ pid: Int32, _ signal: Int32) {
    #if canImport(Glibc)
    _ = Glibc.kill(pid, signal)
    #elseif canImport(Darwin)
    _ = Darwin.kill(pid, signal)
    #endif
}

/// `streamfirst broker` running as a separate process, for tests and demos.
///
/// ``launch(arguments:environment:executable:readyTimeout:)`` starts the executable, reads its
/// stdout until the `ready` line and exposes the addresses it printed.
/// The broker is started with `--exit-on-stdin-eof` and this object holds its stdin open, so the
/// broker exits by itself if the launching process dies; deinit also SIGKILLs a broker still running.
public final class EmbeddedBrokerProcess: Sendable {
    /// How a process ended.
    public struct ExitStatus: Sendable, Hashable, CustomStringConvertible {
        /// The exit code, or the signal number when `signaled`.
        public var code: Int32
        public var signaled: Bool
        public init(code: Int32, signaled: Bool) {
            self.code = code
            self.signaled = signaled
        }
        public var description: String { signaled ? "killed by signal \(code)" : "exit code \(code)" }
    }

    /// `bootstrap.servers` for clients (the fixed `--port` forwarder if one was asked for).
    public let bootstrapServers: String
    /// The brokers' own listeners.
    public let clusterBootstrapServers: String
    /// `HOST:PORT` of the control channel.
    public let controlAddress: String
    /// A client of the control channel.
    public let control: EmbeddedBrokerControl
    /// The `key=value` lines printed before `ready`.
    public let readyFields: [String: String]
    /// The broker's process id.
    public let processIdentifier: Int32

    private let process: Process
    private let stdin: FileHandle
    private let exitStatus: OneShot<ExitStatus>
    private let stderrText: NIOLockedValueBox<String>
    private let stdoutDone: OneShot<Void>
    private let stderrDone: OneShot<Void>

    private init(
        process: Process, stdin: FileHandle, fields: [String: String], exitStatus: OneShot<ExitStatus>,
        stderrText: NIOLockedValueBox<String>, stdoutDone: OneShot<Void>, stderrDone: OneShot<Void>
    ) throws {
        guard let bootstrap = fields["bootstrap.servers"], let controlAddress = fields["control"] else {
            throw EmbeddedBrokerError.process("the broker's ready lines lack bootstrap.servers or control: \(fields)")
        }
        self.process = process
        self.stdin = stdin
        self.readyFields = fields
        self.bootstrapServers = bootstrap
        self.clusterBootstrapServers = fields["cluster.bootstrap.servers"] ?? bootstrap
        self.controlAddress = controlAddress
        self.control = try EmbeddedBrokerControl(address: controlAddress)
        self.processIdentifier = process.processIdentifier
        self.exitStatus = exitStatus
        self.stderrText = stderrText
        self.stdoutDone = stdoutDone
        self.stderrDone = stderrDone
    }

    deinit {
        if exitStatus.value == nil {
            sendSignal(processIdentifier, SIGKILL)
        }
        try? stdin.close()
    }

    /// Starts `streamfirst broker ARGUMENTS... --exit-on-stdin-eof` and waits for its `ready` line.
    ///
    /// - Parameters:
    ///   - arguments: arguments after `broker`, e.g. `["--topic", "orders:3"]`.
    ///   - environment: variables added to (or replacing) this process's environment.
    ///   - executable: the `streamfirst` binary; nil: ``locateExecutable(environment:)``.
    ///   - readyTimeout: how long the broker may take to print `ready` before it is killed.
    public static func launch(
        arguments: [String] = [], environment: [String: String] = [:], executable: URL? = nil,
        readyTimeout: Duration = .seconds(30)
    ) async throws -> EmbeddedBrokerProcess {
        let binary = try executable ?? locateExecutable()
        let process = Process()
        process.executableURL = binary
        process.arguments = ["broker"] + arguments + ["--exit-on-stdin-eof"]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let exitStatus = OneShot<ExitStatus>()
        process.terminationHandler = { p in
            exitStatus.set(ExitStatus(code: p.terminationStatus, signaled: p.terminationReason == .uncaughtSignal))
        }

        // One spawn at a time, so that no sibling started meanwhile inherits these pipes (see ProcessSpawning).
        let streams: ProcessSpawning.Streams
        do {
            streams = try ProcessSpawning.start(process)
        } catch {
            throw EmbeddedBrokerError.process("cannot start \(binary.path): \(error)")
        }

        // Readiness: the stdout reader sets it at `ready` (success) or EOF (failure); a timer fails it.
        let ready = OneShot<Result<[String: String], EmbeddedBrokerError>>()
        let fields = NIOLockedValueBox<[String: String]>([:])
        let stdoutDone = readLines(streams.output) { line in
            if line == "ready" {
                ready.set(.success(fields.withLockedValue { $0 }))
            } else if ready.value == nil, let eq = line.firstIndex(of: "=") {
                fields.withLockedValue { $0[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
            }
        }
        let stderrText = NIOLockedValueBox("")
        let stderrDone = readLines(streams.error) { line in
            stderrText.withLockedValue { text in
                if text.utf8.count < 64 * 1024 { text += line + "\n" }
            }
        }

        let pid = process.processIdentifier
        Task {
            await stdoutDone.wait()
            ready.set(.failure(.process("the broker closed stdout before printing 'ready'")))
        }
        let timeoutMillis = Int(readyTimeout.milliseconds)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(timeoutMillis)) {
            if ready.set(.failure(.process("the broker printed no 'ready' line within \(readyTimeout)"))) {
                sendSignal(pid, SIGKILL)
            }
        }

        switch await ready.wait() {
        case .success(let fields):
            return try EmbeddedBrokerProcess(
                process: process, stdin: streams.input, fields: fields, exitStatus: exitStatus,
                stderrText: stderrText, stdoutDone: stdoutDone, stderrDone: stderrDone)
        case .failure(let error):
            sendSignal(pid, SIGKILL)
            let status = await exitStatus.wait()
            await stderrDone.wait()
            let stderr = stderrText.withLockedValue { $0 }.trimmingCharacters(in: .whitespacesAndNewlines)
            throw EmbeddedBrokerError.process(
                "\(binary.path) broker \(arguments.joined(separator: " ")): \(error) (\(status)); stderr: "
                    + "\(stderr.isEmpty ? "(empty)" : stderr)"
            )
        }
    }

    /// Everything the broker wrote to stderr so far (up to 64 KiB).
    public var standardError: String { stderrText.withLockedValue { $0 } }

    /// Whether the broker process has exited.
    public var hasExited: Bool { exitStatus.value != nil }

    /// Sends SIGTERM and waits for the process to exit. If it has not exited within `timeout`, it is
    /// SIGKILLed and this throws.
    @discardableResult
    public func terminate(timeout: Duration = .seconds(15)) async throws -> ExitStatus {
        try await stop(signal: SIGTERM, timeout: timeout)
    }

    /// Sends SIGKILL and waits for the process to exit.
    @discardableResult
    public func kill() async -> ExitStatus {
        if exitStatus.value == nil { sendSignal(processIdentifier, SIGKILL) }
        return await exitStatus.wait()
    }

    /// Waits for the process to exit by itself (for example after a `shutdown` command); SIGKILLs it
    /// and throws if that takes longer than `timeout`.
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(15)) async throws -> ExitStatus {
        try await stop(signal: nil, timeout: timeout)
    }

    private func stop(signal: Int32?, timeout: Duration) async throws -> ExitStatus {
        if let signal, exitStatus.value == nil { sendSignal(processIdentifier, signal) }
        let timedOut = OneShot<Bool>()
        let pid = processIdentifier
        let exitStatus = self.exitStatus
        let millis = Int(timeout.milliseconds)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(millis)) {
            if exitStatus.value == nil, timedOut.set(true) { sendSignal(pid, SIGKILL) }
        }
        let status = await exitStatus.wait()
        await stdoutDone.wait()
        await stderrDone.wait()
        if timedOut.value == true {
            throw EmbeddedBrokerError.process(
                "the broker (pid \(pid)) did not exit within \(timeout)\(signal.map { " of signal \($0)" } ?? ""); killed it (\(status))")
        }
        return status
    }

    /// Finds the `streamfirst` executable: `$STREAMFIRST_BIN_DIR` if set; else the directory of the
    /// running binary (`swift test` runs the test bundle from `.build/<triple>/debug/`, where
    /// `streamfirst` is built too); else `.build/debug` under the current directory.
    public static func locateExecutable(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(EmbeddedBrokerError) -> URL {
        let name = "streamfirst"
        var directories: [String] = []
        if let dir = environment["STREAMFIRST_BIN_DIR"], !dir.isEmpty {
            directories = [dir]
        } else {
            let cwd = FileManager.default.currentDirectoryPath
            if let arg0 = CommandLine.arguments.first, arg0.contains("/") {
                let url = URL(fileURLWithPath: arg0, relativeTo: URL(fileURLWithPath: cwd, isDirectory: true))
                directories.append(url.standardizedFileURL.resolvingSymlinksInPath().deletingLastPathComponent().path)
            }
            if let exe = Bundle.main.executableURL {
                directories.append(exe.resolvingSymlinksInPath().deletingLastPathComponent().path)
            }
            directories.append(URL(fileURLWithPath: cwd).appendingPathComponent(".build/debug").path)
        }
        for dir in directories {
            let path = URL(fileURLWithPath: dir).appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: path) {
                return URL(fileURLWithPath: path)
            }
        }
        throw .process(
            "cannot find the \(name) executable (run `swift build` first, or set STREAMFIRST_BIN_DIR); looked in: "
                + directories.joined(separator: ", "))
    }

    /// Reads `handle` on a thread of its own until EOF, calling `onLine` per line; the result is set at EOF.
    static func readLines(_ handle: FileHandle, onLine: @escaping @Sendable (String) -> Void) -> OneShot<Void> {
        let done = OneShot<Void>()
        let thread = Thread {
            var pending = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                    pending.removeSubrange(pending.startIndex...newline)
                    onLine(line.hasSuffix("\r") ? String(line.dropLast()) : line)
                }
            }
            if !pending.isEmpty { onLine(String(decoding: pending, as: UTF8.self)) }
            try? handle.close()
            done.set(())
        }
        thread.start()
        return done
    }
}
