import Foundation
import Hummingbird
import Logging
import NIOCore
import Pipeline

/// The dashboard's HTTP endpoints:
/// - `GET /` — the page (``DashboardPage``);
/// - `GET /events` — Server-Sent Events: `history` (the stages' last points) once, then a `frame`
///   every update interval (``DashboardState/Frame`` as JSON);
/// - `GET /frame` — the latest frame as JSON (for scripts and curl);
/// - `GET /chart.js` — Chart.js, read at start from Debian's `libjs-chart.js` (`chart_js`);
/// - `GET /healthz`, `GET /readyz` — liveness, and readiness once the consumer is assigned.
package enum DashboardHTTP {
    /// The application; `onBound` receives the bound port (useful with port 0).
    package static func application(
        host: String, port: Int, service: DashboardService, chartJS: ByteBuffer, logger: Logger,
        onBound: @escaping @Sendable (Int) -> Void
    ) -> some ApplicationProtocol {
        let router = Router()
        let page = ByteBuffer(string: DashboardPage.html(config: service.config))
        router.get("/") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"], body: .init(byteBuffer: page))
        }
        router.get("chart.js") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "application/javascript; charset=utf-8", .cacheControl: "max-age=3600"],
                body: .init(byteBuffer: chartJS))
        }
        router.get("events") { _, _ -> Response in
            let stream = service.hub.subscribe(initial: service.initialEvents())
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-store", .init("X-Accel-Buffering")!: "no"],
                body: .init(asyncSequence: stream))
        }
        router.get("frame") { _, _ -> Response in
            let data = (try? DashboardService.encoder.encode(service.latestFrame)) ?? Data("null".utf8)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        router.get("healthz") { _, _ -> Response in
            service.health.isLive ? text(.ok, "ok\n") : text(.serviceUnavailable, "stalled\n")
        }
        router.get("readyz") { _, _ -> Response in
            service.health.isReady ? text(.ok, "ready\n") : text(.serviceUnavailable, "not ready\n")
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in onBound(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
