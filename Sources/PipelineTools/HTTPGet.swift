import Foundation
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP GET (HTTP/1.0; other requests with ``request(_:host:port:path:headers:body:timeoutMs:)``, HTTP/1.1)
/// over a loopback or LAN TCP socket, for probes (`streamfirst probe`, the container HEALTHCHECK) and for
/// launchers reading a worker's `/stats`.
///
/// The blocking socket calls run on NIO's thread pool, never on the cooperative pool.
// Written by hand because the slim runtime image has no curl and Foundation's URLSession needs
// libcurl; async-http-client would do it but adds a large dependency for one request.
package enum HTTPGet {
    package struct Response: Sendable {
        package var status: Int
        package var body: [UInt8]
    }

    package struct Failure: Error, CustomStringConvertible, Sendable {
        package let description: String
    }

    /// GETs `path` from `host:port` (IPv4 dotted address or `localhost`), waiting at most `timeoutMs`
    /// for each socket operation.
    package static func get(
        host: String, port: Int, path: String, headers: [String: String] = [:], timeoutMs: Int = 2000
    ) async throws -> Response {
        try await NIOThreadPool.singleton.runIfActive {
            try blockingGet(host: host, port: port, path: path, headers: headers, timeoutMs: timeoutMs)
        }
    }

    /// Sends any request (`method`, optional `body`) the same way as ``get(host:port:path:headers:timeoutMs:)``,
    /// as HTTP/1.1. Accepts response headers without a space after the colon.
    // The browser test drives chromedriver with it: Foundation's URLSession rejects chromedriver's
    // headers, which have no space after the colon.
    package static func request(
        _ method: String, host: String, port: Int, path: String, headers: [String: String] = [:], body: [UInt8]? = nil,
        timeoutMs: Int = 2000
    ) async throws -> Response {
        try await NIOThreadPool.singleton.runIfActive {
            try blockingGet(
                host: host, port: port, path: path, headers: headers, timeoutMs: timeoutMs, method: method, body: body, version: "1.1")
        }
    }

    /// Parses `http://host:port/path`.
    package static func parse(url: String) -> (host: String, port: Int, path: String)? {
        guard url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst("http://".count)
        let hostPort = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(hostPort.count)
        let parts = hostPort.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { return nil }
        return (String(parts[0]), port, path.isEmpty ? "/" : String(path))
    }

    static func blockingGet(
        host: String, port: Int, path: String, headers: [String: String] = [:], timeoutMs: Int, method: String = "GET",
        body: [UInt8]? = nil, version: String = "1.0"
    ) throws -> Response {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutMs / 1000, tv_usec: (timeoutMs % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let dotted = host == "localhost" ? "127.0.0.1" : host
        guard inet_pton(AF_INET, dotted, &address.sin_addr) == 1 else {
            throw Failure(description: "not an IPv4 address: \(host)")
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure(description: "connect \(host):\(port): errno \(errno)") }
        let extra = headers.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)\r\n" }.joined()
        let length = body.map { "Content-Length: \($0.count)\r\n" } ?? ""
        let request =
            Array("\(method) \(path) HTTP/\(version)\r\nHost: \(host)\r\n\(extra)\(length)Connection: close\r\n\r\n".utf8) + (body ?? [])
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw Failure(description: "send: errno \(errno)") }
            sent += n
        }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while data.count < 16 * 1024 * 1024 {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw Failure(description: "recv: errno \(errno)") }
            data.append(contentsOf: buffer[0..<n])
            // A server that keeps the connection open (chromedriver does, despite `Connection: close`)
            // is done once the body has its Content-Length.
            if let end = findHeaderEnd(data), let length = contentLength(data[0..<end]), data.count >= end + 4 + length { break }
        }
        // Status line, headers, blank line, body.
        guard let headerEnd = findHeaderEnd(data) else { throw Failure(description: "no HTTP response") }
        let head = String(decoding: data[0..<headerEnd], as: UTF8.self)
        let statusParts = head.split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
            throw Failure(description: "bad status line: \(head.prefix(80))")
        }
        return Response(status: status, body: Array(data[(headerEnd + 4)...]))
    }

    static func contentLength(_ head: ArraySlice<UInt8>) -> Int? {
        for line in String(decoding: head, as: UTF8.self).split(separator: "\r\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "content-length" {
                return Int(parts[1].trimmingCharacters(in: .whitespaces))
            }
        }
        return nil
    }

    static func findHeaderEnd(_ data: [UInt8]) -> Int? {
        guard data.count >= 4 else { return nil }
        for i in 0...(data.count - 4) where data[i] == 13 && data[i + 1] == 10 && data[i + 2] == 13 && data[i + 3] == 10 {
            return i
        }
        return nil
    }
}
