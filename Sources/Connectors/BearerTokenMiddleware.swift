import Hummingbird
import NIOCore

/// Requires `Authorization: Bearer <token>` on some paths (401 otherwise). The comparison takes the
/// same time whatever the first wrong byte, so the token cannot be guessed byte by byte from timings.
public struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: [UInt8]
    let protectedPaths: Set<String>?

    /// `protectedPaths` nil: every path.
    public init(token: String, protectedPaths: Set<String>? = nil) {
        self.token = Array(token.utf8)
        self.protectedPaths = protectedPaths
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let protectedPaths, !protectedPaths.contains(request.uri.path) { return try await next(request, context) }
        let header = request.headers[.authorization] ?? ""
        guard header.hasPrefix("Bearer "), Self.equal(Array(header.dropFirst("Bearer ".count).utf8), token) else {
            return Response(
                status: .unauthorized, headers: [.contentType: "text/plain", .wwwAuthenticate: "Bearer"],
                body: .init(byteBuffer: ByteBuffer(string: "a bearer token is required\n")))
        }
        return try await next(request, context)
    }

    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return diff == 0
    }
}
