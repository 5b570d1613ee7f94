import NIOPosix

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
