import Connectors
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus

/// The HTTP endpoints of a worker:
/// - `GET /healthz` — 200 while the stage loop is turning (liveness), else 503;
/// - `GET /readyz` — 200 once the stage is consuming / producing, 503 while it starts, stops, or
///   cannot write its sink (readiness: take it out of a load balancer);
/// - `GET /metrics` — Prometheus text format (records in / out / dead-lettered / filtered, latency
///   histograms, consumer lag, and anything else recorded through swift-metrics);
/// - `GET /stats` — the same counts and latency quantiles as JSON (``StageStats``).
///
/// With a `token` (env `HTTP_TOKEN`, e.g. `${file:/run/secrets/metrics-token}`), `/metrics` and
/// `/stats` answer 401 unless the request carries `Authorization: Bearer <token>`; the health
/// checks stay open for orchestrators.
public enum WorkerHTTP {
    /// The application serving the endpoints; a `Service` to run in the worker's group.
    /// `onBound` receives the bound port (useful with port 0).
    public static func application(
        host: String, port: Int, metrics: StageMetrics, health: StageHealth, registry: PrometheusCollectorRegistry,
        token: String? = nil, logger: Logger, onBound: @escaping @Sendable (Int) -> Void
    ) -> some ApplicationProtocol {
        let router = Router()
        if let token {
            router.add(middleware: BearerTokenMiddleware(token: token, protectedPaths: ["/metrics", "/stats"]))
        }
        router.get("healthz") { _, _ -> Response in
            health.isLive ? text(.ok, "ok\n") : text(.serviceUnavailable, "stalled\n")
        }
        router.get("readyz") { _, _ -> Response in
            health.isReady ? text(.ok, "ready\n") : text(.serviceUnavailable, "not ready\n")
        }
        router.get("metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            buffer.reserveCapacity(4096)
            registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        router.get("stats") { _, _ -> Response in
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let data = (try? encoder.encode(metrics.snapshot())) ?? Data("{}".utf8)
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                onBound(channel.localAddress?.port ?? port)
            },
            logger: logger)
    }

    static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
