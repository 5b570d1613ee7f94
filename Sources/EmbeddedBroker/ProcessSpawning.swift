import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Starting child processes so that no child holds a sibling's pipes or exit socket.
///
/// Every child of this package, and of its tests, is started by ``start(_:)`` or inside
/// ``serialized(_:)``: its pipes are made, `run()` is called and the parent's copies of the child's
/// ends are closed while no other spawn is between its descriptor scan and its fork. The ends the
/// parent keeps are set close-on-exec there too, so that a spawn outside this lock (a library's
/// own) cannot take them. A child started otherwise, while another thread spawns, can inherit a
/// sibling's pipe and keep that sibling looking alive to its launcher after it was killed.
// Why: Foundation's `Process.run()` on Linux closes in the child every descriptor that is open when it
// builds its spawn actions. A descriptor that another thread opens after that and before the fork
// is inherited all the same: a sibling's stdout pipe, say, or the socket pair through which
// Foundation learns that the sibling exited (measured: 2 of 100 children started from four
// threads at once held another child's pipe or socket). A worker holding a sibling's pipe keeps
// that sibling "running" for its launcher after a SIGKILL, for as long as the worker itself lives:
// the chaos run waited on such a kill until CI's watchdog stopped it.
public enum ProcessSpawning {
    private static let lock = NIOLock()

    /// The ends of a started child's standard streams that this process keeps.
    public struct Streams: Sendable {
        /// Writes to the child's standard input.
        public let input: FileHandle
        /// Reads the child's standard output.
        public let output: FileHandle
        /// Reads the child's standard error.
        public let error: FileHandle
    }

    /// Gives `process` three pipes as its standard streams and runs it, one spawn at a time.
    public static func start(_ process: Process) throws -> Streams {
        try serialized {
            let input = Pipe()
            let output = Pipe()
            let error = Pipe()
            process.standardInput = input
            process.standardOutput = output
            process.standardError = error
            try process.run()
            // The child has its own copies of these ends now.
            try? input.fileHandleForReading.close()
            try? output.fileHandleForWriting.close()
            try? error.fileHandleForWriting.close()
            closeOnExec(input.fileHandleForWriting, output.fileHandleForReading, error.fileHandleForReading)
            return Streams(input: input.fileHandleForWriting, output: output.fileHandleForReading, error: error.fileHandleForReading)
        }
    }

    /// Runs `body` (make the child's pipes, `run()` it, close the child's ends here) while no other
    /// spawn through this type runs.
    public static func serialized<T>(_ body: () throws -> T) rethrows -> T {
        try lock.withLock { try body() }
    }

    /// Marks descriptors this process keeps (a child's stdin write end, its stdout read end)
    /// close-on-exec.
    public static func closeOnExec(_ handles: FileHandle...) {
        for h in handles {
            let fd = h.fileDescriptor
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }
}
