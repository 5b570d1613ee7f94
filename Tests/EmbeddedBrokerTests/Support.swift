import EmbeddedBroker
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a finished command printed.
struct ToolResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program to completion (``ChildProcess/run(executable:arguments:environment:directory:timeout:)``),
/// never blocking the test's executor.
func runTool(_ executable: String, _ arguments: [String]) async throws -> ToolResult {
    let r = try await ChildProcess.run(executable: URL(fileURLWithPath: executable), arguments: arguments)
    return ToolResult(
        status: r.status.code, stdout: r.standardOutput.map { $0 + "\n" }.joined(),
        stderr: r.standardError + (r.timedOut ? "\n[runTool] killed: still running after 300 s\n" : ""))
}

/// Topic metadata as kcat reports it.
struct KcatMetadata: Sendable {
    struct Topic: Sendable {
        var partitions: Int
        /// Replica count of each partition.
        var replicas: [Int]
    }
    var originatingBroker: String
    var brokers: [Int: String]
    var topics: [String: Topic]
}

/// `kcat -L -b BOOTSTRAP -J` (all topics: naming one would make the mock auto-create it).
func kcatMetadata(_ bootstrap: String) async throws -> KcatMetadata {
    let result = try await runTool("/usr/bin/kcat", ["-L", "-b", bootstrap, "-J", "-m", "15"])
    try #require(result.status == 0, "kcat -L -b \(bootstrap) failed: \(result.stderr)")
    let json = try #require(
        try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "kcat printed: \(result.stdout)")
    let origin = (json["originating_broker"] as? [String: Any])?["name"] as? String ?? ""
    var brokers: [Int: String] = [:]
    for broker in json["brokers"] as? [[String: Any]] ?? [] {
        if let id = broker["id"] as? Int, let name = broker["name"] as? String { brokers[id] = name }
    }
    var topics: [String: KcatMetadata.Topic] = [:]
    for topic in json["topics"] as? [[String: Any]] ?? [] {
        guard let name = topic["topic"] as? String else { continue }
        let partitions = topic["partitions"] as? [[String: Any]] ?? []
        topics[name] = KcatMetadata.Topic(
            partitions: partitions.count,
            replicas: partitions.map { ($0["replicas"] as? [Any])?.count ?? 0 })
    }
    return KcatMetadata(originatingBroker: origin, brokers: brokers, topics: topics)
}

/// A loopback TCP port that was free a moment ago (bound to port 0, read back, closed).
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(fd >= 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    try #require(bound == 0, "bind failed: errno \(errno)")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    try #require(named == 0)
    return Int(UInt16(bigEndian: address.sin_port))
}
