import EmbeddedBroker
import Foundation
import Pipeline
import PipelineTools
import StreamCore

#if canImport(Glibc)
import Glibc
#endif

/// A W3C WebDriver client for the browser test, over chromedriver's HTTP API (Debian's
/// `chromium-driver` driving Debian's `chromium`, headless). Written here because it is a handful
/// of HTTP calls: new session, navigate, execute script, screenshot, delete session. (Over
/// `HTTPGet.request`: Foundation's URLSession fails on chromedriver's headers, "Failed writing header".)
struct WebDriver: Sendable {
    static let chromium = "/usr/bin/chromium"
    static let chromedriver = "/usr/bin/chromedriver"

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let driver: ChildProcess
    let port: Int
    let session: String

    /// Starts chromedriver on a free loopback port and opens a headless Chromium session.
    static func start(windowWidth: Int = 1500, windowHeight: Int = 1100) async throws -> WebDriver {
        for path in [chromium, chromedriver] where !FileManager.default.isExecutableFile(atPath: path) {
            throw Failure(
                description:
                    "\(path) is missing: install Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`; "
                    + "`make test` does)"
            )
        }
        let port = try freePort()
        let driver = try ChildProcess(
            executable: URL(fileURLWithPath: chromedriver), arguments: ["--port=\(port)", "--allowed-ips=127.0.0.1"])
        // chromedriver answers /status once it listens.
        let deadline = ContinuousClock.now + .seconds(30)
        var up = false
        while ContinuousClock.now < deadline {
            if driver.exited != nil { throw Failure(description: "chromedriver exited: \(driver.standardError)") }
            if let status = try? await request("GET", port: port, "/status", body: nil), status["value"]?["ready"] == .bool(true) {
                up = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        guard up else { throw Failure(description: "chromedriver did not answer /status within 30 s") }
        let capabilities: JSONValue = [
            "capabilities": [
                "alwaysMatch": [
                    "browserName": "chrome",
                    "goog:chromeOptions": [
                        "binary": .string(chromium),
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            .string("--window-size=\(windowWidth),\(windowHeight)"),
                        ],
                    ],
                ]
            ]
        ]
        let created = try await request("POST", port: port, "/session", body: capabilities)
        guard let session = created["value"]?["sessionId"]?.stringValue else {
            _ = await driver.terminate(timeout: .seconds(5))
            throw Failure(description: "no WebDriver session: \(String(decoding: created.serialized(), as: UTF8.self))")
        }
        return WebDriver(driver: driver, port: port, session: session)
    }

    func navigate(_ url: String) async throws {
        _ = try await call("POST", "/url", ["url": .string(url)])
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    func execute(_ script: String) async throws -> JSONValue {
        try await call("POST", "/execute/sync", ["script": .string(script), "args": []])
    }

    /// The viewport as PNG bytes.
    func screenshot() async throws -> Data {
        guard let base64 = try await call("GET", "/screenshot", nil).stringValue, let png = Data(base64Encoded: base64) else {
            throw Failure(description: "the screenshot was not base64")
        }
        return png
    }

    /// Ends the session (closes Chromium) and stops chromedriver.
    func quit() async {
        _ = try? await call("DELETE", "", nil)
        _ = await driver.terminate(timeout: .seconds(10))
    }

    private func call(_ method: String, _ path: String, _ body: JSONValue?) async throws -> JSONValue {
        let answer = try await Self.request(method, port: port, "/session/\(session)\(path)", body: body)
        if case .object(let error)? = answer["value"], let name = error["error"]?.stringValue {
            throw Failure(description: "WebDriver \(method) \(path): \(name): \(error["message"]?.stringValue ?? "")")
        }
        return answer["value"] ?? .null
    }

    static func request(_ method: String, port: Int, _ path: String, body: JSONValue?) async throws -> JSONValue {
        let response = try await HTTPGet.request(
            method, host: "127.0.0.1", port: port, path: path,
            headers: body == nil ? [:] : ["Content-Type": "application/json"], body: body?.serialized(), timeoutMs: 60_000)
        return try JSONValue.parse(response.body)
    }

    /// A TCP port nobody listens on now (bound to port 0 and released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket() failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw Failure(description: "bind() failed") }
        var out = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &out) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard named == 0 else { throw Failure(description: "getsockname() failed") }
        return Int(UInt16(bigEndian: out.sin_port))
    }
}
