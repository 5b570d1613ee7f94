import Config
import Foundation
import Pipeline
import PipelineTools
import StreamCore
import Testing

/// docs/reference/ is `streamfirst reference`'s output, and each page's keys are the keys the
/// component's real reader accepts: every documented key is fed through the reader (it must be
/// looked up and not refused as unknown), and every key the reader looks up must be documented.
@Suite struct ReferenceDocsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let reference = root.appendingPathComponent("docs/reference")
    /// Examples name files relative to a pipeline file in pipelines/ (tables/sensors.csv, data/*.csv).
    static let baseDirectory = root.appendingPathComponent("pipelines").path

    @Test func everyPageIsUpToDateAndNoneIsLeftOver() throws {
        let pages = ReferenceDocs.pages()
        #expect(pages.count == ReferenceDocs.components.count + 1)
        for (path, text) in pages {
            let current = try? String(contentsOf: Self.reference.appendingPathComponent(path), encoding: .utf8)
            #expect(
                current == text, "docs/reference/\(path) is \(current == nil ? "missing" : "stale"): run `swift run streamfirst reference`")
        }
        let files = (FileManager.default.enumerator(atPath: Self.reference.path)?.allObjects as? [String] ?? []).filter {
            $0.hasSuffix(".md")
        }
        for f in files { #expect(pages[f] != nil, "docs/reference/\(f) documents no component: run `swift run streamfirst reference`") }
        // Every kind has pages, and the processors include the steps and both stateful operators.
        let names = Set(ReferenceDocs.components.map { "\($0.kind.rawValue)/\($0.name)" })
        for n in [
            "source/file", "source/generator", "sink/postgres", "sink/sqlite", "processor/filter", "processor/set",
            "processor/rename", "processor/drop", "processor/keep", "processor/enrich", "processor/route",
            "processor/window", "processor/join",
        ] {
            #expect(names.contains(n), "no reference page for \(n)")
        }
    }

    /// The direct keys of the component that `log` saw looked up (nested settings such as a
    /// column's `type` or a rule list's items' keys count as their parent's).
    static func keys(_ log: ConfigKeyLog, under prefix: String) -> Set<String> {
        var out: Set<String> = []
        for path in log.all where path.hasPrefix(prefix + ".") || path.hasPrefix(prefix + "[") {
            var rel = String(path.dropFirst(prefix.count))
            rel = rel.replacingOccurrences(of: #"\[[0-9]+\]"#, with: "", options: .regularExpression)
            if rel.hasPrefix(".") { rel.removeFirst() }
            if !rel.isEmpty && !rel.contains(".") { out.insert(rel) }
        }
        return out
    }

    static func mentions(_ example: String, key: String) -> Bool {
        example.split(separator: "\n").contains { line in
            var t = line.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("- ") { t.removeFirst(2) }
            return t.hasPrefix("\(key):")
        }
    }

    @Test func everyDocumentedKeyIsReadAndEveryReadKeyIsDocumented() throws {
        for c in ReferenceDocs.components {
            var seen: Set<String> = []
            for example in c.examples {
                let log = ConfigKeyLog()
                do {
                    try c.read(example, baseDirectory: Self.baseDirectory, keyLog: log)
                } catch {
                    Issue.record("\(c.pagePath): the example is refused by the reader: \(error)\n\(c.snippet(example))")
                }
                seen.formUnion(Self.keys(log, under: c.keyPath))
            }
            for field in c.fields {
                var accepted = false
                var why = "no example is a mapping to add it to"
                for example in c.examples {
                    let mapping = !example.hasPrefix("- ") && example.contains(":")
                    guard mapping || Self.mentions(example, key: field.name) else { continue }
                    let body = Self.mentions(example, key: field.name) ? example : example + "\n\(field.name): \(field.defaultValue ?? "x")"
                    let log = ConfigKeyLog()
                    var refused = false
                    do {
                        try c.read(body, baseDirectory: Self.baseDirectory, keyLog: log)
                    } catch {
                        refused = error.message.hasPrefix("unknown key") && error.path.hasSuffix(".\(field.name)")
                        if refused { why = "\(error)" }
                    }
                    let read = Self.keys(log, under: c.keyPath)
                    seen.formUnion(read)
                    if !refused && read.contains(field.name) {
                        accepted = true
                        break
                    }
                    if !refused { why = "the reader never looks it up" }
                }
                #expect(accepted, "\(c.pagePath) documents `\(field.name)`, which the \(c.kind.rawValue)'s reader does not accept: \(why)")
            }
            if c.hasKeys {
                let documented = Set(c.fields.map(\.name)).union(c.kind == .processor ? [] : ["type"])
                let undocumented = seen.subtracting(documented)
                #expect(undocumented.isEmpty, "\(c.pagePath): the reader accepts keys its spec does not list: \(undocumented.sorted())")
            } // value-shaped processors (filter, set, …): their mapping keys are the user's field names
        }
    }

    /// The check can fail: a key no reader knows is refused, and a spec field with no reader shows.
    @Test func theKeyCheckCatchesAnUndocumentedOrUnreadKey() throws {
        let file = try #require(ReferenceDocs.components.first { $0.kind == .source && $0.name == "file" })
        let log = ConfigKeyLog()
        #expect(throws: ConfigError.self) {
            try file.read("paths: [data/*.csv]\nno_such_key: 1", baseDirectory: Self.baseDirectory, keyLog: log)
        }
        #expect(!Self.keys(log, under: file.keyPath).contains("no_such_key"))
        #expect(Self.keys(log, under: file.keyPath).isSuperset(of: ["paths", "format", "infer_types"]))
    }

    /// docs/PIPELINES.md's table of dead-letter classes has a row for every class the stages use,
    /// and no row for one they do not.
    @Test func theManualListsEveryDeadLetterClass() throws {
        let manual = try String(contentsOf: Self.root.appendingPathComponent("docs/PIPELINES.md"), encoding: .utf8)
        let section = try #require(manual.range(of: "## Dead letters")).upperBound
        let table = manual[section...].split(separator: "\n").drop { !$0.hasPrefix("| class |") }.prefix { $0.hasPrefix("|") }
        let rows = Set(
            table.compactMap { line -> String? in
                guard line.hasPrefix("| `"), let end = line.dropFirst(3).firstIndex(of: "`") else { return nil }
                return String(line[line.index(line.startIndex, offsetBy: 3)..<end])
            })
        #expect(rows == Set(DeadLetterClass.builtIn.map(\.rawValue)))
    }
}
