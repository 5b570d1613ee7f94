import ArgumentParser
import Foundation
import Logging
import Pipeline
import PipelineModel
import PipelineTools
import Processing

struct RedriveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redrive",
        abstract: "Send dead letters back to the topic they were refused from, after a fix.",
        discussion: """
            Reads the pipeline's dead-letter topic to its current end, selects records by stage, error \
            class and dead-letter time, and re-publishes each to its original topic (ingest's own dead \
            letters: to ingest's output) with its key, value and lineage headers; error headers are \
            removed, sf.redrive.of / .time / .count added. A ledger topic (<dead-letter>.redrive-ledger) \
            records what was sent, so running it again sends nothing twice. Records redriven \
            --max-count times are left alone. Use --dry-run first to see what would go where.
            """)

    @Option(name: .long, help: "The pipeline file.") var pipeline: String
    @Option(help: "Kafka bootstrap servers (default: the pipeline's, or $KAFKA_BROKERS).") var bootstrap: String?
    @Option(name: .customLong("stage"), help: "Only dead letters of this stage (repeatable): ingest, validate, process, persist.")
    var stages: [String] = []
    @Option(name: .customLong("reason"), help: "Only this error class (repeatable), e.g. SchemaViolation, EnrichmentMissing.")
    var reasons: [String] = []
    @Option(help: "Only dead letters written at or after this time (ISO-8601 or ms since the epoch).") var since: String?
    @Option(help: "Only dead letters written before this time (ISO-8601 or ms since the epoch).") var until: String?
    @Option(help: "Leave records already redriven this many times.") var maxCount = 5
    @Flag(help: "Print what would be sent, send nothing.") var dryRun = false
    @OptionGroup var output: OutputOptions

    func validate() throws {
        for s in stages where !["ingest", "validate", "process", "persist"].contains(s) {
            throw ValidationError("--stage \(s): expected ingest, validate, process or persist")
        }
        for (name, value) in [("--since", since), ("--until", until)] {
            if let value, Self.time(value) == nil {
                throw ValidationError("\(name) \(value): expected ISO-8601 (2026-11-25T09:00:00Z) or milliseconds since the epoch")
            }
        }
        if maxCount < 1 { throw ValidationError("--max-count must be at least 1") }
    }

    static func time(_ s: String) -> Int64? { Int64(s) ?? TimeFormat.parse(s) }

    func run() async throws {
        var environment = ProcessInfo.processInfo.environment
        if let bootstrap { environment["KAFKA_BROKERS"] = bootstrap }
        let spec = try PipelineSpec.load(file: pipeline, environment: environment)
        var logger = Logger(label: "streamfirst.redrive")
        logger.logLevel = .warning
        let filter = Redrive.Filter(
            stages: Set(stages), errorClasses: Set(reasons), sinceMs: since.flatMap(Self.time), untilMs: until.flatMap(Self.time))
        var redrive = Redrive(spec: spec, filter: filter, dryRun: dryRun, maxCount: maxCount, logger: logger)
        let bar = output.progressBar()
        redrive.progress = bar.handler
        let report: Redrive.Report
        do {
            report = try await redrive.run()
            bar.finish()
        } catch {
            bar.finish()
            throw error
        }
        if output.json {
            emit(
                jsonString([
                    "dry_run": dryRun, "dead_letter_topic": spec.deadLetter.name, "read": report.read,
                    "redriven": report.redrivenTotal, "by_route": report.redriven,
                    "skipped": [
                        "already_redriven": report.alreadyRedriven, "not_selected": report.filteredOut, "exhausted": report.exhausted,
                    ],
                ]))
            return
        }
        print("\(dryRun ? "would redrive" : "redriven") \(report.redrivenTotal) of \(report.read) dead letters in \(spec.deadLetter.name)")
        for (what, n) in report.redriven.sorted(by: { $0.key < $1.key }) {
            print("  \(what.padding(toLength: 60, withPad: " ", startingAt: 0)) \(n)")
        }
        print(
            "  skipped: \(report.alreadyRedriven) already redriven, \(report.filteredOut) not selected, "
                + "\(report.exhausted) redriven \(maxCount) times"
        )
    }
}
