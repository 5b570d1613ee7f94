import Config
import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import StreamCore

/// `type: http` — an HTTP endpoint that takes NDJSON (one record per line) in POST bodies.
///
/// The answer comes after delivery: 200 `{"accepted": N}` once every record of the body is
/// acknowledged by Kafka (at-least-once for the client: retry on anything else); 413 for a body
/// over `max_body_bytes`; 429 with `Retry-After` when the pipeline is overloaded (producer queue
/// over ingest's `max_in_flight`); 503 while the worker stops or Kafka refuses records. An
/// `Idempotency-Key` header makes ids deterministic (`http:<key>:<line>`): a retried request
/// yields the same ids, which sinks upsert by. A W3C `traceparent` (and `tracestate`) header
/// makes the records' traces continue the caller's.
public struct HTTPSource: RecordSource {
    public static let spec = ConnectorSpec(
        type: "http",
        summary: "POST NDJSON bodies; answered after delivery; 413 / 429 / 503 under limits, overload and shutdown.",
        fields: [
            .init("host", "string", default: "127.0.0.1", "listen address (0.0.0.0 to accept other machines, as in a container)"),
            .init("port", "integer", default: "8080", "listen port (0 = any free port)"),
            .init("path", "string", default: "/ingest", "the POST endpoint"),
            .init("max_body_bytes", "integer", default: "10485760", "larger bodies are refused with 413"),
            .init(
                "body_timeout", "duration", default: "30s",
                "a request whose body does not arrive within this is answered 408 (slow clients cannot hold workers)"),
            .init("idle_timeout", "duration", default: "60s", "an idle keep-alive connection is closed after this"),
            .init(
                "auth_token", "string", default: "none",
                "if set, requests need `Authorization: Bearer <token>` (401 otherwise); use ${file:/run/secrets/…}"),
        ],
        examples: ["host: 0.0.0.0\nport: 8080\nauth_token: ${INGEST_TOKEN:-change-me}"])

    public let host: String
    public let port: Int
    public let path: String
    public let maxBodyBytes: Int
    let logger: Logger
    /// Called with the bound port once the server listens (tests use port 0).
    public var onBound: @Sendable (Int) -> Void = { _ in }

    public var name: String { "http" }

    /// Required bearer token, if any.
    public let authToken: String?
    /// How long a request's body may take to arrive; a slower body is answered 408.
    public var bodyTimeout: Duration = .seconds(30)
    /// How long an idle keep-alive connection stays open (whole seconds; a fraction is dropped).
    public var idleTimeout: Duration = .seconds(60)

    public init(
        host: String = "127.0.0.1", port: Int = 8080, path: String = "/ingest", maxBodyBytes: Int = 10 << 20, authToken: String? = nil,
        logger: Logger
    ) {
        self.authToken = authToken
        self.host = host
        self.port = port
        self.path = path.hasPrefix("/") ? path : "/" + path
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
    }

    init(_ m: ConfigMapping, logger: Logger) throws(ConfigError) {
        self.init(
            host: try m.string("host", default: "127.0.0.1"), port: try m.int("port", default: 8080, in: 0...65535),
            path: try m.string("path", default: "/ingest"),
            maxBodyBytes: try m.int("max_body_bytes", default: 10 << 20, in: 1...(1 << 30)),
            authToken: try m.string("auth_token").flatMap { $0.isEmpty ? nil : $0 }, logger: logger)
        bodyTimeout = .milliseconds(try m.duration("body_timeout", defaultMilliseconds: 30_000))
        idleTimeout = .milliseconds(try m.duration("idle_timeout", defaultMilliseconds: 60_000))
    }

    public func run(resumingFrom checkpoint: String?, emitter: any RecordEmitter) async throws {
        let router = Router()
        if let authToken { router.add(middleware: BearerTokenMiddleware(token: authToken)) }
        let maxBody = maxBodyBytes
        let bodyTimeout = self.bodyTimeout
        router.post(RouterPath(path)) { request, _ -> Response in
            let body: ByteBuffer
            switch await Self.collect(request.body, upTo: maxBody, within: bodyTimeout) {
            case .success(let b): body = b
            case .failure(.tooLarge): return Self.json(.contentTooLarge, #"{"error":"body over \#(maxBody) bytes"}"#)
            case .failure(.timedOut): return Self.json(.requestTimeout, #"{"error":"the body did not arrive in time"}"#)
            }
            let key = request.headers.first { $0.name.canonicalName == "idempotency-key" }?.value
            // The caller's trace (W3C Trace Context): ingest's spans continue it.
            let traceParent = request.headers.first { $0.name.canonicalName == "traceparent" }?.value
            let traceState = request.headers.first { $0.name.canonicalName == "tracestate" }?.value
            let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
            var records: [SourceRecord] = []
            var lineNumber = 0
            for line in body.readableBytesView.split(separator: 0x0A, omittingEmptySubsequences: false) {
                lineNumber += 1
                var bytes = Array(line)
                if bytes.last == 0x0D { bytes.removeLast() }
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                records.append(
                    SourceRecord(
                        bytes: bytes, id: key.map { "http:\($0):\(lineNumber)" }, receivedAtMs: now, traceParent: traceParent,
                        traceState: traceState))
            }
            if records.isEmpty { return Self.json(.ok, #"{"accepted":0}"#) }
            do {
                try await emitter.emitAndWait(records)
                return Self.json(.ok, #"{"accepted":\#(records.count)}"#)
            } catch let error as EmitError {
                switch error {
                case .backpressure:
                    var r = Self.json(.tooManyRequests, #"{"error":"overloaded, retry later"}"#)
                    r.headers[.retryAfter] = "1"
                    return r
                case .shuttingDown:
                    return Self.json(.serviceUnavailable, #"{"error":"shutting down"}"#)
                case .deliveryFailed(let reason):
                    return Self.json(.serviceUnavailable, JSONValue.object(["error": .string("delivery failed: \(reason)")]).jsonString)
                }
            }
        }
        let onBound = self.onBound
        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: .nanoseconds(Int64(idleTimeout.components.seconds) * 1_000_000_000))),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in onBound(channel.localAddress?.port ?? 0) }, logger: logger)
        try await app.run()
    }

    enum BodyFailure: Error { case tooLarge, timedOut }

    /// The body, unless it is larger than `limit` or does not arrive within `timeout`.
    // The deadline is there because a slow-loris client would otherwise hold the request, and its records,
    // open forever.
    static func collect(_ body: RequestBody, upTo limit: Int, within timeout: Duration) async -> Result<ByteBuffer, BodyFailure> {
        await withTaskGroup(of: Result<ByteBuffer, BodyFailure>?.self) { group in
            group.addTask {
                do { return .success(try await body.collect(upTo: limit)) } catch { return Task.isCancelled ? nil : .failure(.tooLarge) }
            }
            group.addTask {
                try? await Task.sleep(for: timeout) // the deadline itself
                return Task.isCancelled ? nil : .failure(.timedOut)
            }
            var outcome: Result<ByteBuffer, BodyFailure> = .failure(.timedOut)
            if let first = await group.next(), let result = first { outcome = result }
            group.cancelAll()
            return outcome
        }
    }

    static func json(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body + "\n")))
    }
}
