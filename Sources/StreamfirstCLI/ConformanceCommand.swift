import ArgumentParser
import Foundation
import Validation

struct ConformanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Run the official JSON-Schema-Test-Suite (draft 2020-12) against the validator and print the pass rate.",
        discussion: "Required tests run with format as an annotation; --formats also runs the optional format tests with format assertion on.")

    @Option(help: "The suite's root directory (holding tests/ and remotes/).")
    var suite = "../shared/json-schema-test-suite"
    @Flag(help: "Also run the optional format tests (format assertion on).") var formats = false
    @Flag(help: "Print every failing test.") var verbose = false

    func run() throws {
        let runner = try JSONSchemaTestSuite(directory: suite)
        guard !runner.requiredFiles.isEmpty else {
            throw ValidationError("no tests under \(suite)/tests/draft2020-12 (pass --suite DIR)")
        }
        var passed = 0, failed = 0, skipped = 0
        for file in runner.requiredFiles {
            let o = try runner.run(file: file, formatAssertion: false)
            passed += o.passed
            failed += o.failed.count
            skipped += o.skippedTests
            if verbose { o.failed.forEach { print("  FAIL \($0)") } }
            o.skipped.forEach { print("  gap  \($0)") }
        }
        let total = passed + failed + skipped
        print(String(format: "required: %d of %d tests pass (%.2f %%); %d failed, %d in known gaps", passed, total, 100 * Double(passed) / Double(max(total, 1)), failed, skipped))
        if formats {
            for file in runner.formatFiles {
                let o = try runner.run(file: file, formatAssertion: true)
                let name = String(file.split(separator: "/").last ?? "")
                print("  format \(name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(o.passed) / \(o.total)")
                if verbose { o.failed.forEach { print("    FAIL \($0)") } }
            }
        }
    }
}
