import EmbeddedBroker
import Foundation
import Kafka
import Logging
import Synchronization
import Testing

/// Starts `streamfirst broker` in its own process with these topics (name: partitions).
func launchBroker(topics: [String: Int] = [:], brokers: Int = 1) async throws -> EmbeddedBrokerProcess {
    var args = ["--brokers", String(brokers)]
    for (name, partitions) in topics.sorted(by: { $0.key < $1.key }) {
        args += ["--topic", "\(name):\(partitions)"]
    }
    return try await EmbeddedBrokerProcess.launch(arguments: args)
}

/// A broker with one new topic (`prefix` plus a unique suffix) and a producer whose first record,
/// to partition 0, was acknowledged: the cluster and the partition's leader are known.
func brokerWithWarmProducer(
    _ prefix: String, partitions: Int = 1
) async throws -> (
    broker: EmbeddedBrokerProcess, producer: KafkaProducer, topic: String
) {
    let topic = uniqueName(prefix)
    let broker = try await launchBroker(topics: [topic: partitions])
    let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
    _ = try await producer.send(KafkaProducerMessage(topic: topic, partition: 0, value: bytes("warm-up")))
    return (broker, producer, topic)
}

/// Waits until `condition` holds, bounded: for a state that no event announces. Records an issue
/// when the bound passes.
func waitUntil(
    _ condition: @autoclosure () -> Bool, within limit: Duration = .seconds(10), sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    let deadline = ContinuousClock.now + limit
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("the condition did not hold within \(limit)", sourceLocation: sourceLocation)
            return
        }
        try await Task.sleep(for: .milliseconds(1))
    }
}

func uniqueName(_ prefix: String) -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}

func producerConfig(_ servers: String) -> KafkaProducerConfiguration {
    var c = KafkaProducerConfiguration(kafka: KafkaConfiguration(bootstrapServers: servers))
    c.linger = .milliseconds(1)
    return c
}

/// Group settings the embedded broker rebalances quickly with (see docs: ~session.timeout.ms - 1 s per change).
func consumerConfig(_ servers: String, group: String?) -> KafkaConsumerConfiguration {
    var c = KafkaConsumerConfiguration(kafka: KafkaConfiguration(bootstrapServers: servers), groupID: group)
    c.sessionTimeout = .seconds(6)
    c.heartbeatInterval = .milliseconds(500)
    c.fetchWaitMax = .milliseconds(20)
    return c
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
func text(_ b: [UInt8]?) -> String? { b.map { String(decoding: $0, as: UTF8.self) } }

/// Reads records until `count` have arrived (or the consumer's sequence ends).
func collect(_ consumer: KafkaConsumer, count: Int, store: Bool = false) async throws -> [KafkaMessage] {
    var got: [KafkaMessage] = []
    if count == 0 { return got }
    for try await m in consumer.messages {
        got.append(m)
        if store { try consumer.storeOffset(for: m) }
        if got.count >= count { break }
    }
    return got
}

/// The task's value, or nil if it has not finished within `limit`. For a test whose failure mode is
/// a wait that never ends: the bound turns a hang into a failed expectation. A task still stuck is
/// cancelled and left behind (a structured child awaiting it would hold the caller too).
func value<T: Sendable>(of task: Task<T, Error>, within limit: Duration) async throws -> T? {
    let once = Once()
    let result: Result<T, Error>? = await withCheckedContinuation { c in
        @Sendable func resumeOnce(_ r: Result<T, Error>?) {
            if once.first() { c.resume(returning: r) }
        }
        Task { resumeOnce(await task.result) }
        Task {
            try? await Task.sleep(for: limit)
            resumeOnce(nil)
        }
    }
    guard let result else {
        task.cancel()
        return nil
    }
    return try result.get()
}

/// True for the first caller of ``first()`` only.
final class Once: Sendable {
    private let done = Mutex(false)
    func first() -> Bool {
        done.withLock { d in
            defer { d = true }
            return !d
        }
    }
}

/// A swift-log handler that keeps what it is given, for asserting on logs.
final class CapturingLogHandler: LogHandler, @unchecked Sendable {
    // `@unchecked`: `entries` is guarded by `lock`; the rest is set before use.
    struct Entry: Sendable {
        var level: Logger.Level
        var message: String
        var source: String
    }
    private let lock = NSLock()
    private var entries: [Entry] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lock.withLock { entries.append(Entry(level: event.level, message: event.message.description, source: event.source)) }
    }

    var all: [Entry] { lock.withLock { entries } }
}

/// Runs a child process to completion (``ChildProcess/run(executable:arguments:environment:directory:timeout:)``),
/// returning its exit status and standard output lines. A child still running after `timeout` is
/// SIGKILLed, so that a hung command fails its test instead of holding the run.
func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], directory: String? = nil,
    timeout: Duration = .seconds(300)
) async throws -> (status: Int32, stdout: [String], stderr: String) {
    let r = try await ChildProcess.run(
        executable: URL(fileURLWithPath: executable), arguments: arguments, environment: environment, directory: directory,
        timeout: timeout)
    let note = r.timedOut ? "\n[runProcess] killed: still running after \(timeout)\n" : ""
    return (r.status.code, r.standardOutput.filter { !$0.isEmpty }, r.standardError + note)
}

/// A child process whose standard output is read line by line as it arrives.
final class LineProcess: Sendable {
    let child: ChildProcess
    let lines: AsyncStream<String>

    init(_ executable: URL, _ arguments: [String], environment: [String: String] = [:]) throws {
        let (lines, continuation) = AsyncStream<String>.makeStream()
        self.lines = lines
        let child = try ChildProcess(executable: executable, arguments: arguments, environment: environment) { continuation.yield($0) }
        self.child = child
        Task {
            _ = await child.wait()
            continuation.finish()
        }
    }

    func kill() async { await child.kill() }

    func terminate() async { _ = await child.terminate(timeout: .seconds(30)) }
}

func streamfirstExecutable() throws -> URL {
    try EmbeddedBrokerProcess.locateExecutable()
}

func jsonObject(_ line: String) -> [String: Any]? {
    try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
}
