import Config
import Foundation
import Logging
import StreamCore
import Testing

@testable import Connectors

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Collects what a source emits (the ingest worker's side of the `RecordEmitter` contract).
final class CollectingEmitter: RecordEmitter, @unchecked Sendable {
    // @unchecked: guarded by the lock.
    private let lock = NSLock()
    private var collected: [SourceRecord] = []
    private let onEmit: @Sendable (Int) -> Void
    var failWith: EmitError?

    init(onEmit: @escaping @Sendable (Int) -> Void = { _ in }) { self.onEmit = onEmit }

    func emit(_ records: [SourceRecord]) async throws(EmitError) {
        if let failWith { throw failWith }
        let n = lock.withLock {
            collected += records
            return collected.count
        }
        onEmit(n)
    }

    func emitAndWait(_ records: [SourceRecord]) async throws(EmitError) { try await emit(records) }

    var records: [SourceRecord] { lock.withLock { collected } }
}

func mapping(_ yaml: String) throws -> ConfigMapping {
    try ConfigNode.parse(yaml: yaml, source: ConfigSource(file: "test.yaml", environment: [:])).mapping()
}

func temporaryDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-conn-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

@Suite struct GeneratorSourceTests {
    @Test func theSameSeedGeneratesTheSameRecordsAndResumesExactly() async throws {
        let source = GeneratorSource(count: 1000, seed: 42, malformedRatio: 0.05, invalidRatio: 0.05, batch: 64)
        let a = CollectingEmitter()
        let b = CollectingEmitter()
        try await source.run(resumingFrom: nil, emitter: a)
        try await source.run(resumingFrom: nil, emitter: b)
        #expect(a.records.count == 1000)
        #expect(a.records.map(\.bytes) == b.records.map(\.bytes))
        #expect(a.records.map(\.id) == b.records.map(\.id))
        #expect(Set(a.records.compactMap(\.id)).count == 1000, "ids are unique")

        // Resuming from record 599's checkpoint yields exactly records 600…999.
        let resumed = CollectingEmitter()
        try await source.run(resumingFrom: a.records[599].checkpoint, emitter: resumed)
        #expect(resumed.records.map(\.bytes) == a.records[600...].map(\.bytes))

        let other = CollectingEmitter()
        try await GeneratorSource(count: 1000, seed: 43, batch: 64).run(resumingFrom: nil, emitter: other)
        #expect(other.records.map(\.bytes) != a.records.map(\.bytes))
    }

    @Test func malformedAndInvalidShareFollowTheRatios() async throws {
        let e = CollectingEmitter()
        try await GeneratorSource(count: 4000, seed: 1, malformedRatio: 0.1, invalidRatio: 0.1).run(resumingFrom: nil, emitter: e)
        let malformed = e.records.filter { (try? JSONValue.parse($0.bytes)) == nil }.count
        #expect((250...550).contains(malformed), "malformed \(malformed) of 4000 at ratio 0.1")
    }

    @Test func configErrorsNameTheKey() throws {
        let error = #expect(throws: ConfigError.self) {
            _ = try SourceFactory.make(
                try mapping("type: generator\ncount: 10\nmalformed_ratio: 2"), baseDirectory: "/", logger: Logger(label: "t"))
        }
        #expect(error?.description.contains("malformed_ratio") == true)
        let typo = #expect(throws: ConfigError.self) {
            _ = try SourceFactory.make(try mapping("type: generator\ncuont: 10"), baseDirectory: "/", logger: Logger(label: "t"))
        }
        #expect(typo?.description.contains("count") == true, "did-you-mean: \(typo?.description ?? "")")
    }
}

@Suite struct FileSourceTests {
    @Test func ndjsonLinesWithIdsCheckpointsAndRejections() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let long = "{\"pad\":\"" + String(repeating: "x", count: 200) + "\"}"
        try "{\"a\":1}\r\n\n{not json\n\(long)\n{\"a\":4}".write(
            to: dir.appendingPathComponent("b.ndjson"), atomically: true, encoding: .utf8)
        try "{\"a\":0}\n".write(to: dir.appendingPathComponent("a.ndjson"), atomically: true, encoding: .utf8)
        let source = try SourceFactory.make(
            try mapping("type: file\npaths: [\"*.ndjson\"]\nmax_record_bytes: 100"), baseDirectory: dir.path, logger: Logger(label: "t"))
        let e = CollectingEmitter()
        try await source.run(resumingFrom: nil, emitter: e)
        let texts = e.records.map { String(decoding: $0.bytes, as: UTF8.self) }
        // Name order (a before b), CR stripped, blank lines skipped, the malformed line passed on as it was.
        #expect(texts.first == "{\"a\":0}")
        #expect(texts.contains("{\"a\":1}"))
        #expect(texts.contains("{not json"), "ingest dead-letters it; the source must not drop it")
        #expect(texts.last == "{\"a\":4}", "a last line without a newline is read")
        let rejected = e.records.filter { $0.rejection != nil }
        #expect(rejected.count == 1 && rejected[0].rejection?.contains("100") == true)
        #expect(e.records.allSatisfy { $0.id?.hasPrefix("file:") == true })
        #expect(Set(e.records.compactMap(\.id)).count == e.records.count)

        // Resume after the second record: everything after it, nothing before.
        let resumed = CollectingEmitter()
        try await source.run(resumingFrom: e.records[1].checkpoint, emitter: resumed)
        #expect(resumed.records.map(\.bytes) == e.records.dropFirst(2).map(\.bytes))
        #expect(resumed.records.map(\.id) == e.records.dropFirst(2).map(\.id))
    }

    @Test func csvRowsBecomeObjectsAndBadRowsAreRejectedWithTheRow() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try "id,name,score\n1,\"Smith, J\",9.5\n2,only-two\n3,\"multi\nline\",\n".write(
            to: dir.appendingPathComponent("s.csv"), atomically: true, encoding: .utf8)
        let source = try SourceFactory.make(try mapping("type: file\npaths: [s.csv]"), baseDirectory: dir.path, logger: Logger(label: "t"))
        let e = CollectingEmitter()
        try await source.run(resumingFrom: nil, emitter: e)
        #expect(e.records.count == 3)
        #expect(try JSONValue.parse(e.records[0].bytes) == ["id": 1, "name": "Smith, J", "score": 9.5])
        #expect(e.records[1].rejection != nil)
        #expect(try JSONValue.parse(e.records[2].bytes) == ["id": 3, "name": "multi\nline", "score": nil])
    }

    @Test func aMissingFileFailsAtStart() {
        let error = #expect(throws: ConfigError.self) {
            _ = try SourceFactory.make(try mapping("type: file\npaths: [nope.ndjson]"), baseDirectory: "/tmp", logger: Logger(label: "t"))
        }
        #expect(error?.description.contains("nope.ndjson") == true)
    }
}

@Suite struct HTTPSourceTests {
    struct Reply {
        var status: Int
        var body: String
    }

    static func post(_ port: Int, _ body: String, headers: [String: String] = [:]) async throws -> Reply {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/ingest")!)
        request.httpMethod = "POST"
        request.httpBody = Data(body.utf8)
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        let (data, response) = try await URLSession.shared.data(for: request)
        return Reply(status: (response as? HTTPURLResponse)?.statusCode ?? 0, body: String(decoding: data, as: UTF8.self))
    }

    /// Runs `source` on a free port; returns the port once it listens, what it emits, and its task.
    static func start(_ source: HTTPSource) async throws -> (port: Int, emitter: CollectingEmitter, server: Task<Void, any Error>) {
        var source = source
        let bound = AsyncStream<Int>.makeStream()
        source.onBound = { bound.continuation.yield($0) }
        let emitter = CollectingEmitter()
        let running = source
        let server = Task { try await running.run(resumingFrom: nil, emitter: emitter) }
        var ports = bound.stream.makeAsyncIterator()
        guard let port = await ports.next() else {
            server.cancel()
            throw ConnectorError("the HTTP source never reported its port")
        }
        return (port, emitter, server)
    }

    /// Sends `request` over a plain socket and reads the answer until the server closes or 10 s
    /// pass — on its own thread, so the blocking calls stay off the cooperative pool.
    static func rawExchange(port: Int, request: String) async -> String {
        await withCheckedContinuation { (c: CheckedContinuation<String, Never>) in
            Thread.detachNewThread {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                defer { close(fd) }
                var addr = sockaddr_in()
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_port = in_port_t(UInt16(port).bigEndian)
                addr.sin_addr.s_addr = inet_addr("127.0.0.1")
                var timeout = timeval(tv_sec: 10, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let connected = withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                guard connected == 0 else { return c.resume(returning: "") }
                _ = request.withCString { send(fd, $0, strlen($0), 0) }
                var answer = [UInt8]()
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let n = recv(fd, &buffer, buffer.count, 0)
                    if n <= 0 { break }
                    answer += buffer[0..<n]
                    if String(decoding: answer, as: UTF8.self).contains("\r\n\r\n") { break }
                }
                c.resume(returning: String(decoding: answer, as: UTF8.self))
            }
        }
    }

    @Test func aBodyThatNeverArrivesIsAnswered408() async throws {
        var source = HTTPSource(host: "127.0.0.1", port: 0, logger: Logger(label: "t"))
        source.bodyTimeout = .seconds(1)
        let (port, emitter, server) = try await Self.start(source)
        defer { server.cancel() }
        // Promises 100 bytes, sends 5, then waits: a slow-loris client.
        let answer = await Self.rawExchange(port: port, request: "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
        #expect(answer.hasPrefix("HTTP/1.1 408"), "\(answer.prefix(200))")
        #expect(emitter.records.isEmpty)
    }

    @Test func aConfiguredTokenIsRequired() async throws {
        let source = HTTPSource(host: "127.0.0.1", port: 0, authToken: "s3cret", logger: Logger(label: "t"))
        let (port, emitter, server) = try await Self.start(source)
        defer { server.cancel() }
        #expect(try await Self.post(port, "{\"a\":1}").status == 401)
        #expect(try await Self.post(port, "{\"a\":1}", headers: ["Authorization": "Bearer s3creT"]).status == 401)
        #expect(try await Self.post(port, "{\"a\":1}", headers: ["Authorization": "Bearer s3cret"]).status == 200)
        #expect(emitter.records.count == 1)
    }

    @Test func theRequestsTraceContextTravelsWithItsRecords() async throws {
        let source = HTTPSource(host: "127.0.0.1", port: 0, logger: Logger(label: "t"))
        let (port, emitter, server) = try await Self.start(source)
        defer { server.cancel() }
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let traced = try await Self.post(port, "{\"a\":1}\n{\"a\":2}", headers: ["traceparent": parent, "tracestate": "rojo=1"])
        #expect(traced.status == 200)
        #expect(try await Self.post(port, "{\"a\":3}").status == 200)
        #expect(emitter.records.map(\.traceParent) == [parent, parent, nil])
        #expect(emitter.records.map(\.traceState) == ["rojo=1", "rojo=1", nil])
    }

    @Test func postedLinesAreEmittedAndAnsweredAfterDelivery() async throws {
        let source = HTTPSource(host: "127.0.0.1", port: 0, maxBodyBytes: 256, logger: Logger(label: "t"))
        let (port, emitter, server) = try await Self.start(source)
        defer { server.cancel() }

        let ok = try await Self.post(port, "{\"a\":1}\n{\"a\":2}\n\n", headers: ["Idempotency-Key": "k1"])
        #expect(ok.status == 200)
        #expect(ok.body.contains("\"accepted\":2"))
        #expect(emitter.records.map(\.id) == ["http:k1:1", "http:k1:2"], "a retried POST with the same key gets the same ids")

        let big = try await Self.post(port, String(repeating: "x", count: 300))
        #expect(big.status == 413)

        emitter.failWith = .backpressure
        let busy = try await Self.post(port, "{\"a\":3}")
        #expect(busy.status == 429)
        emitter.failWith = .shuttingDown
        #expect(try await Self.post(port, "{\"a\":3}").status == 503)
        #expect(emitter.records.count == 2)
    }
}

/// Counts emitted records and lets a test await a count (the emission is the event; no sleeps).
final class CountWaiter: @unchecked Sendable {
    // @unchecked: guarded by the lock.
    private let lock = NSLock()
    private var count = 0
    private var waiters: [(Int, CheckedContinuation<Void, Never>)] = []

    func update(_ n: Int) {
        let ready: [CheckedContinuation<Void, Never>] = lock.withLock {
            count = n
            let (done, rest) = (waiters.filter { $0.0 <= n }, waiters.filter { $0.0 > n })
            waiters = rest
            return done.map(\.1)
        }
        for continuation in ready { continuation.resume() }
    }

    func wait(for n: Int) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = lock.withLock { () -> Bool in
                if count >= n { return true }
                waiters.append((n, c))
                return false
            }
            if now { c.resume() }
        }
    }
}

@Suite struct TailSourceTests {
    @Test func followsAppendsAcrossRotationAndTruncation() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("app.log").path
        try "{\"n\":1}\n".write(toFile: path, atomically: false, encoding: .utf8)
        let counter = CountWaiter()
        let emitter = CollectingEmitter { counter.update($0) }
        let source = TailSource(path: path, pollIntervalMs: 20)
        let task = Task { try await source.run(resumingFrom: nil, emitter: emitter) }
        defer { task.cancel() }
        await counter.wait(for: 1)

        // An append, a partial line completed later.
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try h.seekToEnd()
        try h.write(contentsOf: Data("{\"n\":2}\n{\"n\":".utf8))
        await counter.wait(for: 2)
        try h.write(contentsOf: Data("3}\n".utf8))
        try h.close()
        await counter.wait(for: 3)

        // Rotation: the file is moved away and a new one appears at the path.
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        try "{\"n\":4}\n".write(toFile: path, atomically: false, encoding: .utf8)
        await counter.wait(for: 4)

        // Truncation in place (the file is now shorter than what was read): restart at the beginning.
        try "{}\n".write(toFile: path, atomically: false, encoding: .utf8)
        await counter.wait(for: 5)
        let values = emitter.records.map { String(decoding: $0.bytes, as: UTF8.self) }
        #expect(values == ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}", "{\"n\":4}", "{}"])

        // A restart from the last checkpoint re-reads nothing.
        task.cancel()
        _ = try? await task.value
        let counter2 = CountWaiter()
        let resumed = CollectingEmitter { counter2.update($0) }
        let again = Task { try await source.run(resumingFrom: emitter.records.last?.checkpoint, emitter: resumed) }
        let h2 = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try h2.seekToEnd()
        try h2.write(contentsOf: Data("{\"n\":6}\n".utf8))
        try h2.close()
        await counter2.wait(for: 1)
        again.cancel()
        #expect(resumed.records.map { String(decoding: $0.bytes, as: UTF8.self) } == ["{\"n\":6}"])
    }
}
