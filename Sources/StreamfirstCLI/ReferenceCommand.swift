import ArgumentParser
import Foundation
import Pipeline
import PipelineTools

struct ReferenceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reference",
        abstract: "Write the reference page of every source, sink and processor (docs/reference/ is its output).",
        discussion:
            "Pages are rendered from the components' own specs; with --check nothing is written and the exit code is 1 when a page is "
            + "missing, stale or left over."
    )

    @Option(help: "The reference directory.") var output = "docs/reference"
    @Flag(help: "Compare instead of writing: exit 1 when the directory differs from the output.") var check = false

    func run() throws {
        let pages = ReferenceDocs.pages()
        let fm = FileManager.default
        var differences: [String] = []
        for (path, text) in pages.sorted(by: { $0.key < $1.key }) {
            let file = URL(fileURLWithPath: output).appendingPathComponent(path)
            let current = try? String(contentsOf: file, encoding: .utf8)
            guard current != text else { continue }
            differences.append(current == nil ? "missing: \(path)" : "stale: \(path)")
            if !check {
                try fm.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
                try text.write(to: file, atomically: true, encoding: .utf8)
            }
        }
        let existing = (fm.enumerator(atPath: output)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".md") }
        for path in existing.sorted() where pages[path] == nil {
            differences.append("left over: \(path)")
            if !check { try fm.removeItem(atPath: URL(fileURLWithPath: output).appendingPathComponent(path).path) }
        }
        if check {
            for difference in differences { print(difference) }
            if !differences.isEmpty { throw ExitCode(1) }
            print("\(pages.count) pages up to date in \(output)")
        } else {
            print("\(pages.count) pages in \(output) (\(differences.count) written or removed)")
        }
    }
}
