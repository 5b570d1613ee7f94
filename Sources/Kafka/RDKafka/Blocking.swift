import Foundation
import NIOPosix

/// Starts a dedicated thread called `name` running `body`. The name is visible to the kernel
/// (`top -H`, `perf`, `/proc`); Linux keeps its first 15 bytes.
// The thread names itself by writing `/proc/thread-self/comm`: Foundation's `Thread.name` does not
// reach the kernel on Linux, and Glibc's `pthread_setname_np` is not visible to Swift. `package`: the
// connectors' own threads (stdin) use it too.
package func startNamedThread(_ name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread {
        if let comm = fopen("/proc/thread-self/comm", "w") {
            fputs(name, comm)
            fclose(comm)
        }
        body()
    }
    thread.name = name
    thread.start()
}

/// Runs a blocking librdkafka call (flush, commit, metadata, close, destroy, …) on NIO's
/// blocking-I/O thread pool, never on Swift's cooperative pool.
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await NIOThreadPool.singleton.runIfActive(body)
}

/// Wraps a value that is not `Sendable` but whose use is confined by the caller's protocol
/// (for example a C pointer handed from one thread to the next, never shared). Use sparingly.
struct UncheckedSendable<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}
