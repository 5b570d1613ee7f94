import ArgumentParser
import Foundation
import Pipeline
import PipelineModel
import PipelineTools

struct TestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract:
            "Run the inline `tests:` of pipeline files without a broker: input records through validate and process, "
            + "outputs and dead letters compared with `expect`.",
        discussion: "Exit code 0 when every test passes, 1 when one fails, 2 when a file is invalid. See docs/PIPELINES.md#tests.")

    @Argument(help: "Pipeline files.") var files: [String]

    func run() throws {
        var failed = 0
        var passed = 0
        var invalid = false
        for file in files {
            do {
                let spec = try PipelineSpec.load(file: file)
                let results = try PipelineTestRunner(spec: spec).run()
                if results.isEmpty { print("\(file): no tests") }
                for r in results {
                    if r.passed {
                        passed += 1
                        print("PASS \(file)\(r.line.map { ":\($0)" } ?? ""): \(r.name)")
                    } else {
                        failed += 1
                        print("FAIL \(file)\(r.line.map { ":\($0)" } ?? ""): \(r.name)")
                        for failure in r.failures { print("     \(failure)") }
                    }
                }
            } catch {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                invalid = true
            }
        }
        print("\(passed) passed, \(failed) failed")
        if invalid { throw ExitCode(2) }
        if failed > 0 { throw ExitCode(1) }
    }
}
