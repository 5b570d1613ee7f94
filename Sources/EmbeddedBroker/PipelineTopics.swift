import Config
import Foundation
import Yams

/// Reads the topics a pipeline file declares, so `streamfirst broker --pipeline FILE` can create them.
///
/// Only the top-level `topics:` mapping is read (other sections are ignored):
///
/// ```yaml
/// topics:
///   orders:                                  # logical name, used by the rest of the pipeline
///     name: ${ENV:-dev}.orders               # the Kafka topic; ${VAR} and ${VAR:-default} are expanded
///     partitions: 6
///     replication_factor: 1                  # optional, default 1
/// ```
///
/// `partitions` and `replication_factor` are expanded the same way (quote them in a flow mapping:
/// `{ name: t, partitions: "${PARTITIONS:-6}" }`).
///
/// Errors name the file, the line (as Yams reports it) and the key path, e.g.
/// `pipeline.yaml:4: topics.orders.partitions: ...`.
public enum PipelineTopics {
    /// Reads and parses the pipeline file at `path`.
    public static func load(
        path: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(EmbeddedBrokerError) -> [TopicSpec] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot read it as UTF-8 text" : "no such file"
            throw .pipeline("\(path): \(reason)")
        }
        return try parse(yaml: text, file: path, environment: environment)
    }

    /// Parses pipeline YAML text; `file` is only used in error messages.
    public static func parse(
        yaml: String, file: String = "<pipeline>", environment: [String: String] = [:]
    ) throws(EmbeddedBrokerError) -> [TopicSpec] {
        func fail(_ node: Node?, _ path: String, _ message: String) -> EmbeddedBrokerError {
            let line = node?.mark.map { ":\($0.line)" } ?? ""
            return .pipeline("\(file)\(line): \(path): \(message)")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw .pipeline("\(file): invalid YAML: \(error)")
        }
        guard let root else { return [] } // an empty document declares nothing
        guard case .mapping(let top) = root else {
            throw fail(root, "(top level)", "expected a mapping with a 'topics:' section")
        }
        guard let topicsNode = top["topics"] else { return [] }
        if case .scalar = topicsNode, topicsNode.null != nil { return [] } // `topics:` with nothing under it
        guard case .mapping(let topics) = topicsNode else {
            throw fail(topicsNode, "topics", "expected a mapping of logical name to { name, partitions, replication_factor }")
        }

        var specs: [TopicSpec] = []
        var declared: [String: String] = [:] // topic name -> logical name
        for (keyNode, value) in topics {
            guard let logical = keyNode.string else {
                throw fail(keyNode, "topics", "a logical topic name must be a string")
            }
            let path = "topics.\(logical)"
            guard case .mapping(let entry) = value else {
                throw fail(value, path, "expected a mapping with name, partitions and optionally replication_factor")
            }
            guard let nameNode = entry["name"] else {
                throw fail(value, path, "missing 'name' (the Kafka topic name)")
            }
            guard case .scalar = nameNode, let rawName = nameNode.string, nameNode.null == nil else {
                throw fail(nameNode, "\(path).name", "expected a string")
            }
            let name: String
            do {
                name = try interpolate(rawName, environment: environment)
                try TopicSpec.validateName(name)
            } catch {
                throw fail(nameNode, "\(path).name", "\(error)")
            }
            guard let partitionsNode = entry["partitions"] else {
                throw fail(value, path, "missing 'partitions' (a positive integer)")
            }
            // Counts may come from the environment too: `partitions: "${PARTITIONS:-6}"`.
            func positive(_ node: Node) -> Int? {
                guard let text = node.string, let expanded = try? interpolate(text, environment: environment), let n = Int(expanded), n >= 1
                else { return nil }
                return n
            }
            guard let partitions = positive(partitionsNode) else {
                throw fail(
                    partitionsNode, "\(path).partitions",
                    "expected a positive integer, got '\(partitionsNode.string ?? "?")'")
            }
            var replication = 1
            if let rfNode = entry["replication_factor"] {
                guard let rf = positive(rfNode) else {
                    throw fail(
                        rfNode, "\(path).replication_factor",
                        "expected a positive integer, got '\(rfNode.string ?? "?")'")
                }
                replication = rf
            }
            if let other = declared[name] {
                throw fail(nameNode, "\(path).name", "topic '\(name)' is already declared by topics.\(other)")
            }
            declared[name] = logical
            specs.append(TopicSpec(name: name, partitions: partitions, replicationFactor: replication))
        }
        return specs
    }

    /// Expands `${VAR}` (an error if VAR is unset), `${VAR:-default}` (default if VAR is unset or
    /// empty) and `$$` (a literal `$`) exactly as the workers read the same pipeline file
    /// (`Config.Interpolation`). Other `$` characters are kept as they are.
    public static func interpolate(_ text: String, environment: [String: String]) throws(EmbeddedBrokerError) -> String {
        do {
            return try Interpolation.expand(text, environment: environment)
        } catch {
            throw .invalidArgument(error.message)
        }
    }
}
