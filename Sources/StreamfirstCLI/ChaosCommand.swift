import ArgumentParser
import Foundation
import LocalRun

struct ChaosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "Run a pipeline under load on a 3-broker embedded cluster while killing workers and injecting broker faults; then check that nothing was lost or duplicated.",
        discussion: """
            Starts the embedded broker with three brokers and the pipeline's workers, then, until ingest's \
            generator has produced every record, pauses --interval (±50 %) and either SIGKILLs a random \
            worker and restarts it, or (unless --no-broker-faults) takes a broker down for 2 s, raises a \
            broker's RTT to 300 ms for 2 s, injects Produce request errors, or moves a partition leader. \
            Afterwards it waits for the pipeline to drain and checks: every generated record id is in the \
            sink or the dead-letter topic (not both, none missing), no row is duplicated, every worker is \
            healthy and stops with exit code 0. The fault schedule follows --seed. Exit code 0 when every \
            invariant holds, 1 otherwise. The pipeline needs a generator source with a count and an \
            sqlite sink with a column `from: $id` (pipelines/iot-sensors.yaml has both).
            """)

    @Option(help: "The pipeline file.") var pipeline = "pipelines/iot-sensors.yaml"
    @Option(help: "Records to generate (IOT_COUNT).") var records = 8000
    @Option(help: "Records per second (IOT_RATE).") var rate = 400
    @Option(help: "Mean seconds between faults.") var interval = 2.0
    @Option(help: "Seed of the fault schedule.") var seed: UInt64 = 1
    @Flag(help: "Only kill workers; leave the brokers alone.") var noBrokerFaults = false
    @Option(help: "Work directory (default .streamfirst/chaos, recreated).") var workDirectory = ".streamfirst/chaos"

    func validate() throws {
        if records < 1 { throw ValidationError("--records must be at least 1") }
        if rate < 1 { throw ValidationError("--rate must be at least 1 (the faults need time to happen)") }
        if interval < 0.2 { throw ValidationError("--interval must be at least 0.2 s") }
    }

    func run() async throws {
        try? FileManager.default.removeItem(atPath: workDirectory)
        let options = ChaosRun.Options(
            pipelineFile: pipeline, workDirectory: workDirectory, records: records, rate: rate,
            interval: .milliseconds(Int(interval * 1000)), seed: seed, brokerFaults: !noBrokerFaults)
        let report = try await ChaosRun(options: options).run { line in emit("  " + line) }
        emit(report.text)
        if !report.passed { throw ExitCode(1) }
    }
}
