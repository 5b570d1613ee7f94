import ArgumentParser
import Foundation
import Kafka

/// Connection options shared by the client subcommands.
struct ConnectionOptions: ParsableArguments {
    @Option(
        name: [.customLong("bootstrap"), .customShort("b")],
        help: "Kafka bootstrap servers (default: $KAFKA_BROKERS, else 127.0.0.1:9092).")
    var bootstrap: String?

    @Option(
        name: [.customLong("property"), .customShort("X")],
        help: "Any librdkafka property, KEY=VALUE (repeatable), e.g. -X security.protocol=sasl_ssl.")
    var properties: [String] = []

    func kafkaConfiguration() throws -> KafkaConfiguration {
        let servers = bootstrap ?? ProcessInfo.processInfo.environment["KAFKA_BROKERS"] ?? "127.0.0.1:9092"
        var props: [String: String] = [:]
        for p in properties {
            guard let eq = p.firstIndex(of: "="), eq != p.startIndex else {
                throw ValidationError("--property '\(p)': expected KEY=VALUE, e.g. -X linger.ms=10")
            }
            props[String(p[..<eq])] = String(p[p.index(after: eq)...])
        }
        return KafkaConfiguration(bootstrapServers: servers, clientID: "streamfirst-cli", properties: props)
    }
}

/// Parses a start position: beginning | end | committed | offset:N | time:MILLIS | time:ISO-8601.
func parseStartPosition(_ text: String, topics: [String]) throws -> KafkaStartPosition {
    switch text {
    case "beginning", "earliest": return .beginning
    case "end", "latest": return .end
    case "committed": return .committed
    default: break
    }
    if text.hasPrefix("time:") {
        let value = String(text.dropFirst(5))
        if let ms = Int64(value) { return .timestamp(ms) }
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = iso.date(from: value) ?? ISO8601DateFormatter().date(from: value) {
            return .timestamp(Int64(d.timeIntervalSince1970 * 1000))
        }
        throw ValidationError("--from '\(text)': the time must be milliseconds since the epoch or ISO-8601 (2026-11-25T10:00:00Z)")
    }
    throw ValidationError("--from '\(text)': expected beginning, end, committed, offset:N, time:MILLIS or time:ISO-8601")
}

/// One JSON line for a record: what `tail --json` prints.
func jsonLine(_ m: KafkaMessage) -> String {
    func text(_ b: [UInt8]?) -> Any { b.map { String(decoding: $0, as: UTF8.self) } ?? NSNull() }
    var object: [String: Any] = [
        "topic": m.topic, "partition": Int(m.partition), "offset": m.offset,
        "key": text(m.key), "value": text(m.value),
        "headers": m.headers.map { [$0.key, text($0.value)] },
    ]
    object["timestamp"] = m.timestamp.map { $0.milliseconds } ?? NSNull()
    return jsonString(object)
}

func jsonString(_ object: Any) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "{}" }
    return String(decoding: data, as: UTF8.self)
}

/// Writes a line to stdout and flushes, so that a reading process sees it at once.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
