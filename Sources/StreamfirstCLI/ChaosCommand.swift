import ArgumentParser
import Foundation
import LocalRun

struct ChaosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract:
            "Run a pipeline under load on a 3-broker embedded cluster while killing workers and injecting broker faults; "
            + "then check that nothing was lost or duplicated.",
        discussion: """
            Starts the embedded broker with three brokers and the pipeline's workers, then, until ingest's \
            generator has produced every record, pauses --interval (±50 %) and either SIGKILLs a random \
            worker and restarts it, or (unless --no-broker-faults) takes a broker down for 2 s, raises a \
            broker's RTT to 300 ms for 2 s, injects Produce request errors, or moves a partition leader. \
            Afterwards it waits for the pipeline to drain and checks: every generated record id is in the \
            sink or the dead-letter topic (not both, none missing), no row is duplicated, every worker is \
            healthy and stops with exit code 0. The fault schedule follows --seed. Exit code 0 when every \
            invariant holds, 1 otherwise. The pipeline needs a generator source with a count and an \
            sqlite sink with a column `from: $id` (pipelines/iot-sensors.yaml has both). With a stateful \
            window stage (pipelines/iot-windows.yaml) the sink holds windows instead: the window results \
            and the sink's rows must equal the broker-free engine's for the same generated records, and \
            no window id may be written with two values.
            """)

    @Option(help: "The pipeline file.") var pipeline = "pipelines/iot-sensors.yaml"
    @Option(help: "Records to generate (IOT_COUNT).") var records = 8000
    @Option(help: "Records per second (IOT_RATE).") var rate = 400
    @Option(help: "Mean seconds between faults.") var interval = 2.0
    @Option(help: "Seed of the fault schedule.") var seed: UInt64 = 1
    @Flag(help: "Only kill workers; leave the brokers alone.") var noBrokerFaults = false
    @Option(
        help:
            """
            Partitions of the data topics (IOT_PARTITIONS; dead letters get a quarter, at least 3). The embedded broker keeps 5 MiB \
            per partition: long runs need many.
            """
    )
    var partitions: Int?
    @Option(help: "The workers' session.timeout.ms (KAFKA_SESSION_TIMEOUT_MS); recovery after a kill is about two of these.")
    var sessionTimeoutMs = 6000
    @Option(help: "Seconds the pipeline may take to drain after the generator is done.") var drainTimeout = 240.0
    @Option(help: "Work directory (default .streamfirst/chaos, recreated).") var workDirectory = ".streamfirst/chaos"

    func validate() throws {
        if records < 1 { throw ValidationError("--records must be at least 1") }
        if rate < 1 { throw ValidationError("--rate must be at least 1 (the faults need time to happen)") }
        if interval < 0.2 { throw ValidationError("--interval must be at least 0.2 s") }
        if let partitions, !(1...1000).contains(partitions) { throw ValidationError("--partitions must be between 1 and 1000") }
        if sessionTimeoutMs < 1000 { throw ValidationError("--session-timeout-ms must be at least 1000 (heartbeats go at a tenth of it)") }
        if drainTimeout < 1 { throw ValidationError("--drain-timeout must be at least 1 s") }
    }

    func run() async throws {
        try? FileManager.default.removeItem(atPath: workDirectory)
        let options = ChaosRun.Options(
            pipelineFile: pipeline, workDirectory: workDirectory, records: records, rate: rate,
            interval: .milliseconds(Int(interval * 1000)), seed: seed, brokerFaults: !noBrokerFaults,
            partitions: partitions, sessionTimeoutMs: sessionTimeoutMs, drainTimeout: .milliseconds(Int(drainTimeout * 1000)))
        let report = try await ChaosRun(options: options).run { line in emit("  " + line) }
        emit(report.text)
        if !report.passed { throw ExitCode(1) }
    }
}
