import Kafka

/// One command of the embedded broker's control channel.
///
/// The protocol is line based: the client sends one command per line (words separated by spaces),
/// the broker answers each with exactly one line, `ok [DETAILS]` or `error REASON`, in order.
public enum ControlCommand: Sendable, Hashable {
    case createTopic(TopicSpec)
    case brokerDown(Int32)
    case brokerUp(Int32)
    case roundTripTime(broker: Int32, milliseconds: Int)
    /// Errors are librdkafka codes, resolved from names or numbers while parsing.
    case requestErrors(apiKey: Int16, errors: [Int32])
    case clearRequestErrors(apiKey: Int16)
    case topicError(topic: String, error: Int32)
    case leader(topic: String, partition: Int32, broker: Int32)
    case coordinator(kind: String, key: String, broker: Int32)
    case info
    case ping
    case help
    case shutdown

    /// The syntax of every command, as `help` prints it and error replies quote it.
    public static let syntax: [String: String] = [
        "create-topic": "create-topic NAME PARTITIONS [REPLICATION]",
        "broker-down": "broker-down ID",
        "broker-up": "broker-up ID",
        "rtt": "rtt ID MS",
        "request-errors": "request-errors API ERR[,ERR...]",
        "clear-request-errors": "clear-request-errors API",
        "topic-error": "topic-error TOPIC ERR",
        "leader": "leader TOPIC PARTITION BROKER",
        "coordinator": "coordinator group|transaction KEY BROKER",
        "info": "info",
        "ping": "ping",
        "help": "help",
        "shutdown": "shutdown",
    ]

    /// Command names in the order `help` lists them.
    public static let names = [
        "create-topic", "broker-down", "broker-up", "rtt", "request-errors", "clear-request-errors",
        "topic-error", "leader", "coordinator", "info", "ping", "help", "shutdown",
    ]

    /// Parses one line. Errors name the problem and quote the expected syntax.
    public static func parse(_ line: String) throws(EmbeddedBrokerError) -> ControlCommand {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let name = words.first else {
            throw .invalidArgument("empty command; commands: \(names.joined(separator: ", "))")
        }
        guard let usage = syntax[name] else {
            throw .invalidArgument("unknown command '\(name)'; commands: \(names.joined(separator: ", "))")
        }
        let args = Array(words.dropFirst())
        func arity(_ counts: ClosedRange<Int>) throws(EmbeddedBrokerError) {
            guard counts.contains(args.count) else {
                let wanted =
                    counts.lowerBound == counts.upperBound
                    ? "\(counts.lowerBound)" : "\(counts.lowerBound) to \(counts.upperBound)"
                throw .invalidArgument(
                    "\(name) takes \(wanted) argument\(counts.upperBound == 1 ? "" : "s"), got \(args.count); usage: \(usage)")
            }
        }
        func int<T: FixedWidthInteger>(_ text: String, _ what: String, min: T) throws(EmbeddedBrokerError) -> T {
            guard let v = T(text), v >= min else {
                throw .invalidArgument("bad \(what) '\(text)': an integer >= \(min); usage: \(usage)")
            }
            return v
        }
        func api(_ text: String) throws(EmbeddedBrokerError) -> Int16 {
            guard let key = KafkaAPIKey.key(named: text), key >= 0 else {
                let known = KafkaAPIKey.byName.sorted { $0.value < $1.value }.map(\.key).joined(separator: ", ")
                throw .invalidArgument("unknown API '\(text)': a number or one of \(known); usage: \(usage)")
            }
            return key
        }
        func errorCode(_ text: String) throws(EmbeddedBrokerError) -> Int32 {
            guard let code = KafkaError.code(named: text) else {
                throw .invalidArgument(
                    "unknown error '\(text)': a librdkafka error name such as NOT_LEADER_FOR_PARTITION or a number; usage: \(usage)")
            }
            return code
        }
        func topic(_ text: String) throws(EmbeddedBrokerError) -> String {
            do {
                try TopicSpec.validateName(text)
            } catch {
                throw .invalidArgument("\(error); usage: \(usage)")
            }
            return text
        }

        switch name {
        case "create-topic":
            try arity(2...3)
            let spec = TopicSpec(
                name: try topic(args[0]),
                partitions: try int(args[1], "partition count", min: 1),
                replicationFactor: args.count == 3 ? try int(args[2], "replication factor", min: 1) : 1)
            return .createTopic(spec)
        case "broker-down":
            try arity(1...1)
            return .brokerDown(try int(args[0], "broker id", min: 1))
        case "broker-up":
            try arity(1...1)
            return .brokerUp(try int(args[0], "broker id", min: 1))
        case "rtt":
            try arity(2...2)
            return .roundTripTime(broker: try int(args[0], "broker id", min: 1), milliseconds: try int(args[1], "round-trip time", min: 0))
        case "request-errors":
            try arity(2...2)
            let key = try api(args[0])
            var codes: [Int32] = []
            for part in args[1].split(separator: ",", omittingEmptySubsequences: false) {
                codes.append(try errorCode(String(part)))
            }
            return .requestErrors(apiKey: key, errors: codes)
        case "clear-request-errors":
            try arity(1...1)
            return .clearRequestErrors(apiKey: try api(args[0]))
        case "topic-error":
            try arity(2...2)
            return .topicError(topic: try topic(args[0]), error: try errorCode(args[1]))
        case "leader":
            try arity(3...3)
            return .leader(
                topic: try topic(args[0]), partition: try int(args[1], "partition", min: 0),
                broker: try int(args[2], "broker id (-1 for no leader)", min: -1))
        case "coordinator":
            try arity(3...3)
            guard args[0] == "group" || args[0] == "transaction" else {
                throw .invalidArgument("bad coordinator type '\(args[0])': group or transaction; usage: \(usage)")
            }
            return .coordinator(kind: args[0], key: args[1], broker: try int(args[2], "broker id", min: 1))
        case "info":
            try arity(0...0)
            return .info
        case "ping":
            try arity(0...0)
            return .ping
        case "help":
            try arity(0...0)
            return .help
        default: // "shutdown"; `syntax` has no other names
            try arity(0...0)
            return .shutdown
        }
    }
}
