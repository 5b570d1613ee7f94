import EmbeddedBroker
import Foundation

/// Debian's mosquitto broker, started for one test on a free loopback port with a generated config
/// (no systemd, no persistence), and its command-line clients.
final class Mosquitto: Sendable {
    /// The plain MQTT listener.
    let port: Int
    /// The TLS listener (certificate for `localhost`, signed by `directory/ca.crt`), when started with `tls`.
    let tlsPort: Int?
    let directory: URL
    let process: ChildProcess

    private init(port: Int, tlsPort: Int?, directory: URL, process: ChildProcess) {
        self.port = port
        self.tlsPort = tlsPort
        self.directory = directory
        self.process = process
    }

    var caFile: String { directory.appendingPathComponent("ca.crt").path }

    /// A throw-away CA and a server certificate for `localhost` signed by it (Debian's openssl).
    static func makeCertificates(in directory: URL) async throws {
        let d = directory.path
        try "subjectAltName=DNS:localhost\n".write(toFile: "\(d)/san.ext", atomically: true, encoding: .utf8)
        for args in [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(d)/ca.key", "-out", "\(d)/ca.crt", "-days", "2", "-subj",
                "/CN=streamfirst-test-ca",
            ],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(d)/server.key", "-out", "\(d)/server.csr", "-subj", "/CN=localhost"],
            [
                "x509", "-req", "-in", "\(d)/server.csr", "-CA", "\(d)/ca.crt", "-CAkey", "\(d)/ca.key", "-CAcreateserial", "-out",
                "\(d)/server.crt",
                "-days", "2", "-extfile", "\(d)/san.ext",
            ],
        ] {
            let tool = try ChildProcess(executable: try binary("openssl"), arguments: args)
            let status = await finished(tool, "openssl")
            guard status.code == 0 else { throw TestFailure("openssl \(args.first ?? ""): \(tool.standardError)") }
        }
    }

    static func binary(_ name: String) throws -> URL {
        for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
            let url = URL(fileURLWithPath: dir).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw TestFailure("\(name) is not installed (Debian packages mosquitto and mosquitto-clients; `make deps-system`)")
    }

    /// Starts the broker; with `users`, anonymous clients are refused and these name/password pairs accepted.
    /// `debugLog` adds mosquitto's per-packet log lines ("Sending PUBLISH to <client> …").
    /// `port` and `persistence` (a directory for mosquitto.db, saved after every change and kept across
    /// `kill()`) let a test restart the broker where clients expect it, with its sessions.
    static func start(
        users: [String: String] = [:], debugLog: Bool = false, tls: Bool = false, port: Int? = nil, persistence: URL? = nil
    ) async throws -> Mosquitto {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sf-mosquitto-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let port = try port ?? freePort()
        var config = [
            "listener \(port) 127.0.0.1",
            persistence.map { "persistence true\npersistence_location \($0.path)/\nautosave_interval 1\nautosave_on_changes true" }
                ?? "persistence false",
            // The offline queue of a persistent session must hold what devices publish while ingest is down.
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            // Unacknowledged QoS 1 messages out per client (MQTT 3.1.1 clients cannot say; MQTT 5 ones send a receive maximum).
            "max_inflight_messages 100",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            debugLog ? "log_type debug" : "",
            // Started as root, mosquitto would switch to the `mosquitto` user and not read our files.
            "user \(NSUserName())",
        ]
        var tlsPort: Int?
        if tls {
            try await makeCertificates(in: directory)
            let p = try freePort()
            tlsPort = p
            let d = directory.path
            config += ["listener \(p) 127.0.0.1", "cafile \(d)/ca.crt", "certfile \(d)/server.crt", "keyfile \(d)/server.key"]
        }
        if users.isEmpty {
            config.append("allow_anonymous true")
        } else {
            let passwords = directory.appendingPathComponent("passwords")
            for (i, (user, password)) in users.sorted(by: { $0.key < $1.key }).enumerated() {
                let tool = try ChildProcess(
                    executable: try binary("mosquitto_passwd"), arguments: (i == 0 ? ["-c"] : []) + ["-b", passwords.path, user, password])
                let status = await finished(tool, "mosquitto_passwd")
                guard status.code == 0 else { throw TestFailure("mosquitto_passwd: \(tool.standardError)") }
            }
            config += ["allow_anonymous false", "password_file \(passwords.path)"]
        }
        let file = directory.appendingPathComponent("mosquitto.conf")
        try (config.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        let process = try ChildProcess(executable: try binary("mosquitto"), arguments: ["-c", file.path])
        let broker = Mosquitto(port: port, tlsPort: tlsPort, directory: directory, process: process)
        // Ready when it says it is running (polled with a deadline: the log line is the event).
        let deadline = ContinuousClock.now + .seconds(15)
        while !process.standardError.contains(" running") {
            if let exit = process.exited { throw TestFailure("mosquitto exited \(exit): \(process.standardError)") }
            if ContinuousClock.now > deadline { throw TestFailure("mosquitto did not start: \(process.standardError)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        return broker
    }

    /// SIGKILL (a child of the test process inherits its blocked SIGTERM, and mosquitto only takes
    /// signals through the inherited mask, so SIGTERM would wait for the kill anyway).
    func stop() async {
        _ = await process.kill()
        try? FileManager.default.removeItem(at: directory)
    }

    /// The same, without waiting (for `defer`).
    func stopNow() {
        process.signal(SIGKILL)
        try? FileManager.default.removeItem(at: directory)
    }

    /// SIGKILL, keeping the persistence directory (saved on every change, see `start`).
    func kill() async -> ChildProcess.ExitStatus {
        await process.kill()
    }

    /// `mosquitto_pub` for one message (QoS 1 unless told otherwise); returns its exit code.
    func publish(topic: String, message: String, qos: Int = 1, extra: [String] = []) async throws -> Int32 {
        let pub = try ChildProcess(
            executable: try Self.binary("mosquitto_pub"),
            arguments: ["-h", "127.0.0.1", "-p", String(port), "-q", String(qos), "-t", topic, "-m", message] + extra)
        return await finished(pub, "mosquitto_pub").code
    }

    /// A long-running `mosquitto_pub -l`: every line written to it is one QoS 1 message on `topic`.
    func linePublisher(topic: String, clientID: String) throws -> ChildProcess {
        try ChildProcess(
            executable: try Self.binary("mosquitto_pub"),
            arguments: ["-h", "127.0.0.1", "-p", String(port), "-V", "5", "-q", "1", "-t", topic, "-i", clientID, "-l"])
    }

    /// A loopback port nothing listens on right now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw TestFailure("bind: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
