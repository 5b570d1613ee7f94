import Foundation
import Yams

// Yams' `Node` is an immutable value (an enum of strings, marks and arrays of nodes) that is not
// declared Sendable; parsed configuration is handed to stage services on other tasks, so say so here.
// swift-format-ignore: AvoidRetroactiveConformances
extension Node: @retroactive @unchecked Sendable {}

/// A configuration error: names the file, the line, the key path, and what to do about it.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public let file: String
    public let line: Int?
    public let path: String
    public let message: String

    public init(file: String, line: Int?, path: String, message: String) {
        self.file = file
        self.line = line
        self.path = path
        self.message = message
    }

    public var description: String {
        let at = line.map { "\(file):\($0)" } ?? file
        return path.isEmpty ? "\(at): \(message)" : "\(at): \(path): \(message)"
    }
}

/// Where configuration text came from, and the environment its `${VAR}` references read.
public struct ConfigSource: Sendable {
    public let file: String
    public let environment: [String: String]
    /// When set, every key a reader looks up in a mapping of this source is recorded here (by its
    /// full key path), so a test can compare what a component really reads with what it documents.
    public let keyLog: ConfigKeyLog?

    public init(file: String, environment: [String: String], keyLog: ConfigKeyLog? = nil) {
        self.file = file
        self.environment = environment
        self.keyLog = keyLog
    }
}

/// The key paths readers looked up (``ConfigMapping/optional(_:)`` and everything built on it),
/// whether or not the key was present: what a component accepts, as opposed to what it documents.
public final class ConfigKeyLog: @unchecked Sendable {
    // @unchecked: `paths` is guarded by `lock`.
    private let lock = NSLock()
    private var paths: Set<String> = []

    public init() {}

    func record(_ path: String) { lock.withLock { _ = paths.insert(path) } }

    /// Every key path looked up so far, e.g. `persist.sink.table`, `steps[0].route[1].when`.
    public var all: Set<String> { lock.withLock { paths } }
}

/// One node of a YAML configuration document, with its key path and line for error messages.
///
/// Every component reads its settings through a ``ConfigMapping``, which reports the line of a bad
/// value, rejects unknown keys, and expands `${VAR}` / `${VAR:-default}` in every scalar.
// Why this exists rather than `Decodable`: decoding through `YAMLDecoder` neither reports the line of a
// bad value nor rejects unknown keys.
public struct ConfigNode: Sendable {
    public let node: Node
    public let path: String
    public let source: ConfigSource

    public init(node: Node, path: String, source: ConfigSource) {
        self.node = node
        self.path = path
        self.source = source
    }

    /// Parses YAML text into its root node.
    public static func parse(yaml: String, source: ConfigSource) throws(ConfigError) -> ConfigNode {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigError(file: source.file, line: nil, path: "", message: "invalid YAML: \(error)")
        }
        return ConfigNode(node: root ?? .mapping(.init([])), path: "", source: source)
    }

    /// Reads and parses a YAML file.
    public static func load(file: String, environment: [String: String]) throws(ConfigError) -> ConfigNode {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            let reason = FileManager.default.fileExists(atPath: file) ? "cannot read it as UTF-8 text" : "no such file"
            throw ConfigError(file: file, line: nil, path: "", message: reason)
        }
        return try parse(yaml: text, source: ConfigSource(file: file, environment: environment))
    }

    /// The 1-based line of this node in its file.
    public var line: Int? { node.mark?.line }

    /// An error at this node.
    public func error(_ message: String) -> ConfigError {
        ConfigError(file: source.file, line: line, path: path, message: message)
    }

    /// True for an explicit YAML null (`key:` with nothing, `~`, `null`).
    public var isNull: Bool {
        if case .scalar = node { return node.null != nil && node.scalar?.style == .plain }
        return false
    }

    /// This node as a mapping whose keys are tracked (see ``ConfigMapping/finish()``).
    public func mapping() throws(ConfigError) -> ConfigMapping {
        if isNull { return ConfigMapping(entries: [], at: self) }
        guard case .mapping(let m) = node else { throw error("expected a mapping (key: value lines)") }
        var entries: [(key: String, keyNode: Node, value: ConfigNode)] = []
        for (k, v) in m {
            guard let key = k.string else {
                throw ConfigError(file: source.file, line: k.mark?.line, path: path, message: "keys must be strings")
            }
            let childPath = path.isEmpty ? key : "\(path).\(key)"
            entries.append((key, k, ConfigNode(node: v, path: childPath, source: source)))
        }
        return ConfigMapping(entries: entries, at: self)
    }

    /// This node as a sequence.
    public func sequence() throws(ConfigError) -> [ConfigNode] {
        if isNull { return [] }
        guard case .sequence(let s) = node else { throw error("expected a list (lines starting with '- ')") }
        return s.enumerated().map { ConfigNode(node: $1, path: "\(path)[\($0)]", source: source) }
    }

    /// The scalar text with `${VAR}` references expanded.
    public func string() throws(ConfigError) -> String {
        guard case .scalar(let scalar) = node else { throw error("expected a single value, not a list or mapping") }
        do {
            return try Interpolation.expand(scalar.string, environment: source.environment)
        } catch {
            throw self.error(error.message)
        }
    }

    public func int(in range: ClosedRange<Int>? = nil) throws(ConfigError) -> Int {
        let text = try string()
        guard let value = Int(text.replacingOccurrences(of: "_", with: "")) else {
            throw error("expected an integer, got '\(text)'")
        }
        if let range, !range.contains(value) {
            throw error("\(value) is out of range: expected \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    public func double(in range: ClosedRange<Double>? = nil) throws(ConfigError) -> Double {
        let text = try string()
        guard let value = Double(text), value.isFinite else { throw error("expected a number, got '\(text)'") }
        if let range, !range.contains(value) {
            throw error("\(value) is out of range: expected \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    public func bool() throws(ConfigError) -> Bool {
        let text = try string()
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("expected true or false, got '\(text)'")
        }
    }

    /// A duration such as `250ms`, `5s`, `2m`, `1h` (a bare number means milliseconds), as milliseconds.
    public func durationMilliseconds() throws(ConfigError) -> Int64 {
        let text = try string().trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            if let v = Double(number), v >= 0, v.isFinite {
                // Checked before converting: a huge value would trap (found by fuzzing).
                guard v * factor < 9e18 else { throw error("the duration '\(text)' is too long") }
                return Int64(v * factor)
            }
        }
        if let v = Int64(text), v >= 0 { return v }
        throw error("expected a duration such as 500ms, 5s, 2m or 1h, got '\(text)'")
    }

    /// A list of strings (a single string is accepted as a one-element list).
    public func stringList() throws(ConfigError) -> [String] {
        if case .scalar = node { return [try string()] }
        var out: [String] = []
        for item in try sequence() { out.append(try item.string()) }
        return out
    }

    /// A mapping of string to string (values of any scalar type are taken as text).
    public func stringMap() throws(ConfigError) -> [String: String] {
        let m = try mapping()
        var out: [String: String] = [:]
        for key in m.keys { out[key] = try m.required(key).string() }
        try m.finish()
        return out
    }

    /// One of `allowed` values.
    public func choice(_ allowed: [String]) throws(ConfigError) -> String {
        let text = try string()
        guard allowed.contains(text) else {
            throw error("'\(text)' is not one of \(allowed.joined(separator: ", "))")
        }
        return text
    }
}

/// A mapping being read: remembers which keys were read, so ``finish()`` can reject the rest.
public final class ConfigMapping {
    private let entries: [(key: String, keyNode: Node, value: ConfigNode)]
    private var used: Set<String> = []
    /// The mapping node itself.
    public let node: ConfigNode

    init(entries: [(key: String, keyNode: Node, value: ConfigNode)], at node: ConfigNode) {
        self.entries = entries
        self.node = node
    }

    /// The keys in document order.
    public var keys: [String] { entries.map(\.key) }

    public func contains(_ key: String) -> Bool { entries.contains { $0.key == key } }

    /// Marks keys as read by someone else (a shared section reader), so ``finish()`` accepts them.
    public func markUsed(_ keys: [String]) {
        used.formUnion(keys)
        for key in keys { log(key) }
    }

    private func log(_ key: String) {
        node.source.keyLog?.record(node.path.isEmpty ? key : "\(node.path).\(key)")
    }

    /// The value under `key`, or nil when absent or explicitly null.
    public func optional(_ key: String) -> ConfigNode? {
        used.insert(key)
        log(key)
        guard let entry = entries.first(where: { $0.key == key }), !entry.value.isNull else { return nil }
        return entry.value
    }

    /// The value under `key`; absent is an error naming the key.
    public func required(_ key: String, hint: String = "") throws(ConfigError) -> ConfigNode {
        guard let value = optional(key) else {
            let path = node.path.isEmpty ? key : "\(node.path).\(key)"
            throw ConfigError(
                file: node.source.file, line: node.line, path: path,
                message: "missing required key" + (hint.isEmpty ? "" : " (\(hint))"))
        }
        return value
    }

    public func string(_ key: String) throws(ConfigError) -> String? { try optional(key)?.string() }
    public func string(_ key: String, default value: String) throws(ConfigError) -> String {
        try optional(key)?.string() ?? value
    }
    public func int(_ key: String, default value: Int, in range: ClosedRange<Int>? = nil) throws(ConfigError) -> Int {
        try optional(key)?.int(in: range) ?? value
    }
    public func double(
        _ key: String, default value: Double, in range: ClosedRange<Double>? = nil
    ) throws(ConfigError)
        -> Double
    {
        try optional(key)?.double(in: range) ?? value
    }
    public func bool(_ key: String, default value: Bool) throws(ConfigError) -> Bool {
        try optional(key)?.bool() ?? value
    }
    public func duration(_ key: String, defaultMilliseconds value: Int64) throws(ConfigError) -> Int64 {
        try optional(key)?.durationMilliseconds() ?? value
    }
    public func choice(_ key: String, _ allowed: [String], default value: String) throws(ConfigError) -> String {
        try optional(key)?.choice(allowed) ?? value
    }

    /// Rejects every key that was not read, naming it, its line, and the keys that are known here.
    public func finish() throws(ConfigError) {
        for entry in entries where !used.contains(entry.key) {
            let known = used.sorted()
            let suggestion = known.min { editDistance($0, entry.key) < editDistance($1, entry.key) }
            var message = "unknown key"
            if let suggestion, editDistance(suggestion, entry.key) <= 2 {
                message += "; did you mean '\(suggestion)'?"
            } else if !known.isEmpty {
                message += "; known keys here: \(known.joined(separator: ", "))"
            }
            throw ConfigError(
                file: node.source.file, line: entry.keyNode.mark?.line ?? node.line,
                path: entry.value.path, message: message)
        }
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a)
    let b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}

/// `${VAR}` and `${VAR:-default}` expansion, as in shell and docker-compose files, and
/// `${file:/path}` — the contents of a file without its trailing newline, for secrets mounted as
/// files (Docker and Kubernetes secrets), so passwords need not sit in the environment.
public enum Interpolation {
    public struct Failure: Error, Sendable {
        public let message: String
    }

    /// Expands every reference in `text`; an unset variable without a default is an error.
    /// `$$` stands for a literal `$`.
    public static func expand(_ text: String, environment: [String: String]) throws(Failure) -> String {
        guard text.contains("$") else { return text }
        var result = ""
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            result += rest[..<dollar]
            let after = rest.index(after: dollar)
            if after < rest.endIndex, rest[after] == "$" {
                result += "$"
                rest = rest[rest.index(after: after)...]
                continue
            }
            guard after < rest.endIndex, rest[after] == "{" else {
                result += "$"
                rest = rest[after...]
                continue
            }
            let bodyStart = rest.index(after: after)
            guard let close = rest[bodyStart...].firstIndex(of: "}") else {
                throw Failure(message: "unterminated '${' in '\(text)'")
            }
            let body = rest[bodyStart..<close]
            if body.hasPrefix("file:") {
                let path = String(body.dropFirst("file:".count))
                guard !path.isEmpty, let data = FileManager.default.contents(atPath: path) else {
                    throw Failure(message: "cannot read the secret file '\(path)' named by ${file:…}")
                }
                var secret = String(decoding: data, as: UTF8.self)
                while secret.hasSuffix("\n") || secret.hasSuffix("\r") { secret.removeLast() }
                result += secret
                rest = rest[rest.index(after: close)...]
                continue
            }
            let variable: Substring
            let fallback: Substring?
            if let sep = body.range(of: ":-") {
                variable = body[..<sep.lowerBound]
                fallback = body[sep.upperBound...]
            } else {
                variable = body
                fallback = nil
            }
            let validName =
                !variable.isEmpty && variable.first.map { !$0.isNumber } == true
                && variable.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
            guard validName else {
                throw Failure(message: "bad variable reference '${\(body)}': expected ${VAR} or ${VAR:-default}")
            }
            if let value = environment[String(variable)], !(fallback != nil && value.isEmpty) {
                result += value
            } else if let fallback {
                result += fallback
            } else {
                throw Failure(message: "environment variable \(variable) is not set (write ${\(variable):-default} for a default)")
            }
            rest = rest[rest.index(after: close)...]
        }
        result += rest
        return result
    }
}
