import Config
import StreamCore
import Synchronization

/// A keyed table that an `enrich:` step with `topic:` joins records against: the rows of a
/// compacted topic, one per Kafka key (see docs/EXPRESSIONS.md). `Processing` does not know where
/// the rows come from; the pipeline's process stage supplies a Kafka-fed table (`LiveTable`), its
/// inline tests an ``InMemoryLookupTable``.
///
/// Called from the stage's task for every record that reaches the step, so lookups must be quick
/// and must not block for long (a short, uncontended lock is fine).
public protocol LookupTable: Sendable {
    /// The row stored under `key` (the table topic's Kafka key as UTF-8 text), or nil.
    func row(forKey key: String) -> [String: JSONValue]?

    /// Why a key the table does not hold may nevertheless have a row upstream — e.g. the table
    /// refused new keys because it reached its row bound — or nil when the table is complete.
    /// While this is non-nil an `enrich` step dead-letters records it finds no row for
    /// (`EnrichmentTableIncomplete`) instead of applying its `missing:` policy, so nothing is
    /// dropped or passed on unenriched without a trace.
    var incompleteReason: String? { get }
}

extension LookupTable {
    /// A table is complete unless it says otherwise.
    public var incompleteReason: String? { nil }
}

/// What an `enrich:` step with `topic:` asks its table provider for (see
/// ``StepProcessor/init(steps:baseDirectory:tables:)``).
public struct LookupTableRequest: Sendable {
    /// The logical topic named by `topic:` (a key of the pipeline's `topics:`).
    public var topic: String
    /// The step's `max_rows` bound.
    public var maxRows: Int
    /// The `topic:` value in the pipeline file, for errors that name its line.
    public var node: ConfigNode

    public init(topic: String, maxRows: Int, node: ConfigNode) {
        self.topic = topic
        self.maxRows = maxRows
        self.node = node
    }
}

/// Supplies the table of each `enrich:` step that reads a topic; called once per such step while
/// the steps are compiled. Throw a ``ConfigError`` (e.g. `request.node.error(…)`) to refuse it.
public typealias LookupTableProvider = (LookupTableRequest) throws(ConfigError) -> any LookupTable

/// A ``LookupTable`` held in memory and filled by the caller: for unit tests and a pipeline's
/// broker-free inline tests. Thread-safe.
public final class InMemoryLookupTable: LookupTable {
    private let rows: Mutex<[String: [String: JSONValue]]>

    /// A table with these rows (key → row).
    public init(_ rows: [String: [String: JSONValue]] = [:]) {
        self.rows = Mutex(rows)
    }

    public func row(forKey key: String) -> [String: JSONValue]? {
        rows.withLock { $0[key] }
    }

    /// Stores `row` under `key`; nil deletes the key (like a tombstone).
    public func set(_ row: [String: JSONValue]?, forKey key: String) {
        rows.withLock { $0[key] = row }
    }

    /// Replaces every row.
    public func replaceAll(with newRows: [String: [String: JSONValue]]) {
        rows.withLock { $0 = newRows }
    }

    /// The number of rows.
    public var count: Int { rows.withLock { $0.count } }
}
