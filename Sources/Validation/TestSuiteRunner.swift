import Foundation
import StreamCore

/// Runs the official JSON-Schema-Test-Suite (draft 2020-12 layout: `tests/draft2020-12/*.json`,
/// `remotes/`) against this validator: `streamfirst conformance` prints the pass rate and the test
/// suite asserts it.
public struct JSONSchemaTestSuite: Sendable {
    /// One file's outcome.
    public struct Outcome: Sendable {
        public var file: String
        public var passed = 0
        public var failed: [String] = []
        /// Groups not run, with the reason (``knownGaps``), and how many tests they hold (these
        /// count as not passed in the pass rate).
        public var skipped: [String] = []
        public var skippedTests = 0
        public var total: Int { passed + failed.count }
    }

    /// Cases (file / case description) the validator deliberately does not handle, and why.
    public static let knownGaps: [String: String] = [
        "defs.json / validate definition against metaschema":
            "needs the 2020-12 meta-schema, which is not bundled (schemas are validated for $ref and pattern errors instead)",
        "ref.json / remote ref, containing refs itself": "needs the 2020-12 meta-schema, which is not bundled",
        "vocabulary.json / schema that uses custom metaschema with with no validation vocabulary":
            "$vocabulary is not interpreted: every 2020-12 vocabulary is always on",
    ]

    public let directory: String
    private let remotes: [(String, JSONValue)]

    /// `directory` is the suite's root (holding `tests/` and `remotes/`).
    public init(directory: String) throws(SchemaError) {
        self.directory = directory
        let root = URL(fileURLWithPath: directory).appendingPathComponent("remotes")
        var remotes: [(String, JSONValue)] = []
        if let e = FileManager.default.enumerator(atPath: root.path) {
            for case let rel as String in e where rel.hasSuffix(".json") {
                guard let data = FileManager.default.contents(atPath: root.appendingPathComponent(rel).path) else { continue }
                do {
                    remotes.append(("http://localhost:1234/\(rel)", try JSONValue.parse([UInt8](data))))
                } catch {
                    throw SchemaError("\(rel): \(error)")
                }
            }
        }
        self.remotes = remotes
    }

    /// Where the suite came from: the first line of `ORIGIN.txt` in ``directory`` (written by
    /// `scripts/fetch-json-schema-suite.sh`: package, version and hash), or `nil` if there is none.
    public var origin: String? {
        let path = URL(fileURLWithPath: directory).appendingPathComponent("ORIGIN.txt").path
        guard let data = FileManager.default.contents(atPath: path),
            let line = String(decoding: data, as: UTF8.self).split(separator: "\n").first
        else { return nil }
        return String(line)
    }

    /// The suite's directory when nothing else is said: `STREAMFIRST_JSON_SCHEMA_SUITE` if set,
    /// otherwise `.build/json-schema-test-suite` under `root` (a repository checkout), where
    /// `scripts/fetch-json-schema-suite.sh` puts it.
    public static func defaultDirectory(root: String) -> String {
        if let dir = ProcessInfo.processInfo.environment["STREAMFIRST_JSON_SCHEMA_SUITE"], !dir.isEmpty { return dir }
        return fetchedDirectory(root: root)
    }

    /// Where `scripts/fetch-json-schema-suite.sh` puts the suite in the checkout at `root`.
    public static func fetchedDirectory(root: String) -> String {
        URL(fileURLWithPath: root).appendingPathComponent(".build/json-schema-test-suite").standardizedFileURL.path
    }

    /// How to get the suite, for messages that say it is missing.
    public static let howToFetch =
        "fetch it from PyPI with `scripts/fetch-json-schema-suite.sh` in the repository (`make test` runs it), "
        + "or set STREAMFIRST_JSON_SCHEMA_SUITE to a directory holding tests/draft2020-12 and remotes/"

    /// The required test files (`tests/draft2020-12/*.json`), sorted.
    public var requiredFiles: [String] { files(in: "tests/draft2020-12") }

    /// The optional format files (`tests/draft2020-12/optional/format/*.json`), sorted.
    public var formatFiles: [String] { files(in: "tests/draft2020-12/optional/format").map { "optional/format/\($0)" } }

    private func files(in sub: String) -> [String] {
        let dir = URL(fileURLWithPath: directory).appendingPathComponent(sub).path
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
    }

    /// Runs one file (relative to `tests/draft2020-12/`).
    public func run(file: String, formatAssertion: Bool) throws(SchemaError) -> Outcome {
        let path = URL(fileURLWithPath: directory).appendingPathComponent("tests/draft2020-12/\(file)").path
        guard let data = FileManager.default.contents(atPath: path) else { throw SchemaError("cannot read \(path)") }
        let groups: [JSONValue]
        do {
            groups = try JSONValue.parse([UInt8](data)).arrayValue ?? []
        } catch {
            throw SchemaError("\(path): \(error)")
        }
        var outcome = Outcome(file: file)
        for group in groups {
            let key = "\(file) / \(group["description"]?.stringValue ?? "?")"
            if let why = Self.knownGaps[key] {
                outcome.skipped.append("\(key): \(why)")
                outcome.skippedTests += group["tests"]?.arrayValue?.count ?? 0
                continue
            }
            let registry = SchemaRegistry(formatAssertion: formatAssertion)
            for (uri, doc) in remotes { try registry.register(doc, uri: uri) }
            let schema: JSONSchema
            do {
                schema = try JSONSchema(group["schema"] ?? .null, baseURI: "urn:streamfirst:test", registry: registry)
            } catch {
                for test in group["tests"]?.arrayValue ?? [] {
                    outcome.failed.append("\(key) / \(test["description"]?.stringValue ?? "?"): schema rejected: \(error)")
                }
                continue
            }
            for test in group["tests"]?.arrayValue ?? [] {
                let expected = test["valid"]?.boolValue ?? false
                let violations = schema.validate(test["data"] ?? .null)
                if violations.isEmpty == expected {
                    outcome.passed += 1
                } else {
                    let got = violations.isEmpty ? "valid" : violations.map(\.description).joined(separator: "; ")
                    outcome.failed.append(
                        "\(key) / \(test["description"]?.stringValue ?? "?"): expected \(expected ? "valid" : "invalid"), got \(got)")
                }
            }
        }
        return outcome
    }
}
