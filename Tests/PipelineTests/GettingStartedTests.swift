import EmbeddedBroker
import Foundation
import Testing

/// docs/GETTING-STARTED.md, command for command: `streamfirst check`, `streamfirst test` and
/// `streamfirst run` on pipelines/csv-to-postgres.yaml as the guide writes them, against the real
/// PostgreSQL of the test suite (STREAMFIRST_POSTGRES_URL; without it the suite is reported as
/// skipped), then the rows read back with psql — the five good rows of data/measurements.csv, the
/// other two dead-lettered.
@Suite(
    .serialized,
    .enabled(
        if: ProcessInfo.processInfo.environment["STREAMFIRST_POSTGRES_URL"] != nil, "needs STREAMFIRST_POSTGRES_URL (make test sets it)"))
struct GettingStartedTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let pipeline = "pipelines/csv-to-postgres.yaml"

    func psql(_ url: String, _ sql: String) async throws -> CommandResult {
        try await runProcess("/usr/bin/psql", [url, "-v", "ON_ERROR_STOP=1", "-At", "-F", "|", "-c", sql])
    }

    @Test func theGuidesPipelineLoadsTheCSVIntoPostgreSQL() async throws {
        let url = try #require(ProcessInfo.processInfo.environment["STREAMFIRST_POSTGRES_URL"])
        let exe = try EmbeddedBrokerProcess.locateExecutable().path
        let guide = try String(contentsOf: Self.root.appendingPathComponent("docs/GETTING-STARTED.md"), encoding: .utf8)
        for command in ["streamfirst check \(Self.pipeline)", "streamfirst test \(Self.pipeline)", "streamfirst run \(Self.pipeline)"] {
            #expect(guide.contains(command), "the guide no longer says `\(command)`")
        }

        let check = try await runProcess(exe, ["check", Self.pipeline], in: Self.root.path)
        #expect(check.status == 0, "\(check.output) \(check.stderr)")
        let tests = try await runProcess(exe, ["test", Self.pipeline], in: Self.root.path)
        #expect(tests.status == 0, "\(tests.output) \(tests.stderr)")
        #expect(tests.stdout.last == "2 passed, 0 failed")

        let table = "measurements_\(UUID().uuidString.prefix(8).lowercased())"
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-guide-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        let run = try await runProcess(
            exe, ["run", Self.pipeline, "--work-directory", work, "--timeout", "120"],
            environment: ["POSTGRES_URL": url, "MEASUREMENTS_TABLE": table], in: Self.root.path)
        #expect(run.status == 0, "streamfirst run: \(run.output.suffix(3000)) \(run.stderr.suffix(2000))")

        let rows = try await psql(
            url,
            """
            SELECT station, (extract(epoch from measured_at) * 1000)::bigint, temperature_c, temperature_f, humidity_pct, freezing
            FROM \(table) ORDER BY station, measured_at
            """)
        _ = try? await psql(url, "DROP TABLE IF EXISTS \(table)")
        #expect(rows.status == 0, "\(rows.stderr)")
        #expect(
            rows.stdout == [
                "bergen-2|1772352000000|4|39.2|92|f",
                "lillehammer-4|1772352000000|-7|19.4|65|t",
                "oslo-1|1772352000000|-3.5|25.7|81|t",
                "oslo-1|1772355600000|-1.25|29.8|78|t",
                "tromso-3|1772352000000|-11.75|10.9|70|t",
            ])
        // The two bad rows are the run's dead letters, and the counts reconcile.
        #expect(run.output.contains("ingested 7 = persisted 5 + dead-lettered 2 + filtered 0"), "\(run.output)")
    }
}
