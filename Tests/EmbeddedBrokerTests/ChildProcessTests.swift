import EmbeddedBroker
import Foundation
import NIOConcurrencyHelpers
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("child processes")
struct ChildProcessTests {
    /// The chaos run's CI hang: workers started at the same moment from several threads. Without
    /// one-spawn-at-a-time, a child could inherit a sibling's pipes (and Foundation's exit socket),
    /// so a SIGKILLed sibling was never seen to end while the holder ran. Here 6 threads start 20
    /// `cat`s each; no child may hold a pipe of another, and each one SIGKILLed (first started
    /// first, its siblings still running) must be seen dead — exit reported, output at end of file.
    /// Without the lock in `ProcessSpawning` it failed 5 runs of 5 (children holding siblings' pipes
    /// in every run, a SIGKILLed child never seen to exit in 4); with it, 8 of 8 passed.
    @Test("children started at once hold none of each other's pipes, and each is seen dead after SIGKILL")
    func concurrentSpawnsLeakNothing() async throws {
        let cat = URL(fileURLWithPath: "/bin/cat")
        let started = NIOLockedValueBox<[ChildProcess]>([])
        let failures = NIOLockedValueBox<[String]>([])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let group = DispatchGroup()
            for _ in 0..<6 {
                group.enter()
                Thread {
                    for _ in 0..<20 {
                        do {
                            let child = try ChildProcess(executable: cat, arguments: [])
                            started.withLockedValue { $0.append(child) }
                        } catch {
                            failures.withLockedValue { $0.append("\(error)") }
                        }
                    }
                    group.leave()
                }.start()
            }
            group.notify(queue: .global()) { done.resume() }
        }
        let children = started.withLockedValue { $0 }.sorted { $0.processIdentifier < $1.processIdentifier }
        #expect(failures.withLockedValue { $0 }.isEmpty)
        #expect(children.count == 120)

        // The pipes behind each child's stdin, stdout and stderr.
        func link(_ pid: Int32, _ fd: Int) -> String? {
            try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")
        }
        var owner: [String: Int32] = [:]
        for c in children {
            for fd in 0...2 { if let l = link(c.processIdentifier, fd), l.hasPrefix("pipe:") { owner[l] = c.processIdentifier } }
        }
        var held: [String] = []
        for c in children {
            let pid = c.processIdentifier
            let fds = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).compactMap { Int($0) }
            for fd in fds where fd > 2 {
                if let l = link(pid, fd), let other = owner[l], other != pid { held.append("\(pid) holds \(other)'s \(l) as fd \(fd)") }
            }
        }
        #expect(held.isEmpty, "children hold their siblings' pipes: \(held.prefix(5))")

        var stuck: [String] = []
        for c in children {
            c.signal(SIGKILL)
            if await c.wait(timeout: .seconds(10)) == nil { stuck.append("\(c.processIdentifier) still waits for \(c.pending)") }
        }
        #expect(stuck.isEmpty, "SIGKILLed children not seen dead while their siblings ran: \(stuck.prefix(5))")
        for c in children where c.exited == nil { await c.kill() }
    }

    /// `ChildProcess.run`: a tool run to completion reads end of file on stdin, in its directory.
    @Test("run collects stdout lines, stderr and the status; stdin is at end of file")
    func runToCompletion() async throws {
        let dir = FileManager.default.temporaryDirectory.path
        let r = try await ChildProcess.run(
            executable: URL(fileURLWithPath: "/bin/sh"), arguments: ["-c", "pwd; cat; echo two; echo oops >&2; exit 3"], directory: dir)
        #expect(r.status == .init(code: 3, signaled: false))
        #expect(r.standardOutput == [URL(fileURLWithPath: dir).resolvingSymlinksInPath().path, "two"])
        #expect(r.standardError == "oops\n")
        #expect(!r.timedOut)
        let slow = try await ChildProcess.run(
            executable: URL(fileURLWithPath: "/bin/sleep"), arguments: ["30"], timeout: .milliseconds(200))
        #expect(slow.timedOut && slow.status.signaled && slow.status.code == SIGKILL)
    }
}
