import ArgumentParser
import Foundation
import Validation

struct ConformanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract:
            "Run the official JSON-Schema-Test-Suite (draft 2020-12) against the validator and print the pass rate.",
        discussion: """
            Required tests run with format as an annotation; --formats also runs the optional format tests with \
            format assertion on. The suite is looked for in --suite, then STREAMFIRST_JSON_SCHEMA_SUITE, then \
            .build/json-schema-test-suite; in a repository checkout a missing suite is fetched there from PyPI \
            (python-jsonschema's source distribution, pinned) by scripts/fetch-json-schema-suite.sh.
            """)

    @Option(help: "The suite's root directory (holding tests/draft2020-12 and remotes/).")
    var suite: String?
    @Flag(help: "Also run the optional format tests (format assertion on).") var formats = false
    @Flag(help: "Print every failing test.") var verbose = false

    func run() throws {
        let directory = try suite ?? Self.locateOrFetch()
        let runner = try JSONSchemaTestSuite(directory: directory)
        guard !runner.requiredFiles.isEmpty else {
            throw ValidationError(
                "no tests under \(directory)/tests/draft2020-12: \(JSONSchemaTestSuite.howToFetch), or pass --suite DIR")
        }
        print("suite: \(directory) (\(runner.origin ?? "origin unknown: no ORIGIN.txt"))")
        var passed = 0
        var failed = 0
        var skipped = 0
        for file in runner.requiredFiles {
            let o = try runner.run(file: file, formatAssertion: false)
            passed += o.passed
            failed += o.failed.count
            skipped += o.skippedTests
            if verbose { for failure in o.failed { print("  FAIL \(failure)") } }
            for gap in o.skipped { print("  gap  \(gap)") }
        }
        let total = passed + failed + skipped
        print(
            String(
                format: "required: %d of %d tests pass (%.2f %%); %d failed, %d in known gaps", passed, total,
                100 * Double(passed) / Double(max(total, 1)), failed, skipped))
        if formats {
            for file in runner.formatFiles {
                let o = try runner.run(file: file, formatAssertion: true)
                let name = String(file.split(separator: "/").last ?? "")
                print("  format \(name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(o.passed) / \(o.total)")
                if verbose { for failure in o.failed { print("    FAIL \(failure)") } }
            }
        }
    }

    /// The default suite directory; when it is missing and the working directory is a repository
    /// checkout, runs the fetch script there first.
    static func locateOrFetch() throws -> String {
        let cwd = FileManager.default.currentDirectoryPath
        let directory = JSONSchemaTestSuite.defaultDirectory(root: cwd)
        let script = URL(fileURLWithPath: cwd).appendingPathComponent("scripts/fetch-json-schema-suite.sh").path
        // Only the script's own folder is fetched into, never a directory the environment names.
        guard directory == JSONSchemaTestSuite.fetchedDirectory(root: cwd),
            !FileManager.default.fileExists(atPath: directory + "/tests/draft2020-12"),
            FileManager.default.fileExists(atPath: script)
        else { return directory }
        let fetch = Process()
        fetch.executableURL = URL(fileURLWithPath: "/bin/bash")
        fetch.arguments = [script, directory]
        try fetch.run()
        fetch.waitUntilExit()
        guard fetch.terminationStatus == 0 else {
            throw ValidationError("\(script) failed (exit \(fetch.terminationStatus)): \(JSONSchemaTestSuite.howToFetch)")
        }
        return directory
    }
}
