/// A topic the embedded broker creates: name, partition count and replication factor.
///
/// The embedded broker checks the replication factor but does not apply it: every partition gets
/// min(3, brokers) replicas in metadata.
// A limitation of librdkafka 2.0.2's mock cluster.
public struct TopicSpec: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var partitions: Int
    public var replicationFactor: Int

    public init(name: String, partitions: Int, replicationFactor: Int = 1) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
    }

    /// `NAME:PARTITIONS:REPLICATION`, the syntax `parse(_:)` reads.
    public var description: String { "\(name):\(partitions):\(replicationFactor)" }

    /// Parses `NAME:PARTITIONS[:REPLICATION]` (the `--topic` syntax of `streamfirst broker`).
    public static func parse(_ text: String) throws(EmbeddedBrokerError) -> TopicSpec {
        let syntax = "expected NAME:PARTITIONS[:REPLICATION], for example orders:6 or orders:6:3"
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3 else {
            throw .invalidArgument("bad topic '\(text)': \(syntax)")
        }
        try validateName(parts[0])
        guard let partitions = Int(parts[1]), partitions >= 1 else {
            throw .invalidArgument("bad partition count '\(parts[1])' in topic '\(text)': a positive integer, \(syntax)")
        }
        var replication = 1
        if parts.count == 3 {
            guard let rf = Int(parts[2]), rf >= 1 else {
                throw .invalidArgument(
                    "bad replication factor '\(parts[2])' in topic '\(text)': a positive integer, \(syntax)")
            }
            replication = rf
        }
        return TopicSpec(name: parts[0], partitions: partitions, replicationFactor: replication)
    }

    /// Kafka's rule for topic names: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
    public static func validateName(_ name: String) throws(EmbeddedBrokerError) {
        guard !name.isEmpty else { throw .invalidArgument("empty topic name") }
        guard name.utf8.count <= 249 else {
            throw .invalidArgument("topic name '\(name.prefix(40))...' is longer than 249 characters")
        }
        guard name != ".", name != ".." else { throw .invalidArgument("topic name '\(name)' is not allowed") }
        let legal = name.unicodeScalars.allSatisfy { s in
            (s >= "a" && s <= "z") || (s >= "A" && s <= "Z") || (s >= "0" && s <= "9") || s == "." || s == "_" || s == "-"
        }
        guard legal else {
            throw .invalidArgument("topic name '\(name)' has characters outside [a-zA-Z0-9._-]")
        }
    }
}

/// Errors of the embedded broker, its control channel and its configuration.
public enum EmbeddedBrokerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A command-line argument, control command or configuration value is wrong.
    case invalidArgument(String)
    /// The broker replied `error <reason>` to a control command.
    case rejected(command: String, reason: String)
    /// The control channel could not be reached or closed before replying.
    case connection(String)
    /// The `streamfirst` executable could not be found, started, or did not become ready.
    case process(String)

    public var description: String {
        switch self {
        case .invalidArgument(let m): return m
        case .rejected(let command, let reason): return "the broker rejected '\(command)': \(reason)"
        case .connection(let m): return "control channel: \(m)"
        case .process(let m): return m
        }
    }
}
