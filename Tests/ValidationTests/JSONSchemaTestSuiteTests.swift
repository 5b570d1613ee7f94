import Foundation
import StreamCore
import Testing
import Validation

/// The official JSON-Schema-Test-Suite (draft 2020-12), fetched from PyPI (python-jsonschema's
/// source distribution) into `.build/json-schema-test-suite` by `make test`, or read from
/// `STREAMFIRST_JSON_SCHEMA_SUITE`, through the same runner as `streamfirst conformance`.
/// Required tests must all pass except the groups in ``JSONSchemaTestSuite/knownGaps``. A missing
/// suite fails the tests (with how to get it); it is never skipped.
@Suite struct JSONSchemaTestSuiteTests {
    static let suiteDirectory = JSONSchemaTestSuite.defaultDirectory(
        root: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path)

    static let runner: JSONSchemaTestSuite? = try? JSONSchemaTestSuite(directory: suiteDirectory)
    static var requiredFiles: [String] { runner?.requiredFiles ?? [] }
    static var origin: String { runner?.origin ?? "unknown origin (no ORIGIN.txt)" }

    @Test func suiteIsPresent() {
        #expect(
            Self.requiredFiles.count >= 40,
            "the JSON-Schema-Test-Suite was not found at \(Self.suiteDirectory): \(JSONSchemaTestSuite.howToFetch)")
    }

    @Test(arguments: requiredFiles) func requiredTests(file: String) throws {
        let runner = try #require(Self.runner)
        let outcome = try runner.run(file: file, formatAssertion: false)
        #expect(
            outcome.failed.isEmpty, "\(outcome.failed.count) failed, \(outcome.passed) passed:\n\(outcome.failed.joined(separator: "\n"))")
        #expect(outcome.passed > 0 || !outcome.skipped.isEmpty, "no test ran from \(file)")
    }

    @Test func passRateIsAtLeast98Percent() throws {
        let runner = try #require(Self.runner)
        var passed = 0
        var total = 0
        for file in runner.requiredFiles {
            let o = try runner.run(file: file, formatAssertion: false)
            passed += o.passed
            total += o.total + o.skippedTests
        }
        #expect(total > 1000, "\(total) tests in \(Self.suiteDirectory): \(JSONSchemaTestSuite.howToFetch)")
        #expect(Double(passed) / Double(total) >= 0.98, "\(passed) of \(total) (suite: \(Self.origin))")
        print("JSON-Schema-Test-Suite (\(Self.origin)): \(passed) of \(total) required tests pass")
    }
}

/// The optional `format` tests, run with format assertion on (`format_assertion: true` in a
/// validate stage). Formats the validator checks must pass completely; the others are listed.
@Suite struct JSONSchemaFormatTests {
    /// Formats checked only in part (docs/SCHEMAS.md lists them): IDNA rules for A-labels and
    /// internationalised names, IRIs, URI templates. For these the test demands that nothing valid
    /// is rejected.
    static let partial: Set<String> = ["hostname", "idn-email", "idn-hostname", "iri", "iri-reference", "uri-template"]

    // ecmascript-regex.json is not run: `pattern` and `format: regex` use ICU syntax, which
    // differs from ECMA-262 (variable-width lookbehind, empty classes, \c escapes).
    static var files: [String] { (JSONSchemaTestSuiteTests.runner?.formatFiles ?? []).filter { !$0.hasSuffix("ecmascript-regex.json") } }

    @Test(arguments: files) func formatAssertion(file: String) throws {
        let runner = try #require(JSONSchemaTestSuiteTests.runner)
        let name = String(file.split(separator: "/").last?.dropLast(".json".count) ?? "")
        let outcome = try runner.run(file: file, formatAssertion: true)
        if Self.partial.contains(name) {
            let rejectedValid = outcome.failed.filter { $0.contains("expected valid") }
            #expect(rejectedValid.isEmpty, "valid strings rejected:\n\(rejectedValid.joined(separator: "\n"))")
        } else {
            #expect(outcome.failed.isEmpty, "\(outcome.failed.count) failed:\n\(outcome.failed.joined(separator: "\n"))")
        }
    }
}
