import ArgumentParser
import Foundation

/// `--json` and `--no-progress`, for the commands that print data or run long.
///
/// With `--json` a command prints exactly one JSON document on standard output (`tail`: one JSON
/// object per line), keys in snake_case, nothing else; messages and progress go to standard error.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print one JSON document on standard output instead of text.") var json = false
    @Flag(help: "No progress bar (it is drawn on standard error only when that is a terminal, and never with --json).")
    var noProgress = false

    func progressBar() -> ProgressBar { ProgressBar(enabled: !json && !noProgress && isatty(STDERR_FILENO) == 1) }
}

/// A one-line progress bar on standard error, redrawn at most ten times a second:
/// `reading iot.dead-letter [########------------] 40% 4000/10000`.
// Written by hand: none of the mirrored packages draws terminal progress.
final class ProgressBar: @unchecked Sendable {
    // @unchecked: the mutable state is guarded by `lock`.
    private let lock = NSLock()
    let enabled: Bool
    private var lastDraw: ContinuousClock.Instant?
    private var lastPhase = ""
    private var drawn = false

    init(enabled: Bool) {
        self.enabled = enabled
    }

    /// The handler to pass to a long operation.
    var handler: @Sendable (String, Int, Int) -> Void { { [self] phase, done, total in update(phase, done, total) } }

    func update(_ phase: String, _ done: Int, _ total: Int) {
        guard enabled else { return }
        lock.withLock {
            let now = ContinuousClock.now
            // Always draw a new phase and the end of one; otherwise at most every 100 ms.
            if phase == lastPhase, done < total, let last = lastDraw, now - last < .milliseconds(100) { return }
            lastDraw = now
            lastPhase = phase
            drawn = true
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + Self.line(phase, done, total)).utf8))
        }
    }

    /// The bar's text (without the carriage return).
    static func line(_ phase: String, _ done: Int, _ total: Int, width: Int = 24) -> String {
        guard total > 0 else { return "\(phase) \(done)" }
        let fraction = min(1, max(0, Double(done) / Double(total)))
        let filled = Int((fraction * Double(width)).rounded(.down))
        return
            "\(phase) [\(String(repeating: "#", count: filled))\(String(repeating: "-", count: width - filled))] "
            + "\(Int(fraction * 100))% \(done)/\(total)"
    }

    /// Ends the bar's line, so what follows starts on a line of its own.
    func finish() {
        guard enabled else { return }
        lock.withLock {
            if drawn { FileHandle.standardError.write(Data("\n".utf8)) }
            drawn = false
        }
    }
}

/// `streamfirst completion bash|zsh|fish`: the completion script swift-argument-parser generates
/// (the same as `streamfirst --generate-completion-script SHELL`).
struct CompletionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "completion",
        abstract: "Print a shell completion script for streamfirst (bash, zsh or fish).",
        discussion: """
            bash:  streamfirst completion bash > /etc/bash_completion.d/streamfirst   (or: source <(streamfirst completion bash))
            zsh:   streamfirst completion zsh > "${fpath[1]}/_streamfirst"
            fish:  streamfirst completion fish > ~/.config/fish/completions/streamfirst.fish
            """)

    @Argument(help: "bash, zsh or fish.") var shell: String

    func validate() throws {
        guard CompletionShell(rawValue: shell) != nil else {
            throw ValidationError("unknown shell '\(shell)': expected bash, zsh or fish")
        }
    }

    func run() throws {
        guard let s = CompletionShell(rawValue: shell) else { throw ExitCode.validationFailure }
        print(Streamfirst.completionScript(for: s), terminator: "")
    }
}
