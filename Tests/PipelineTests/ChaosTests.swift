import Foundation
import LocalRun
import Testing

/// A CI-sized chaos run (`streamfirst chaos`): workers SIGKILLed and restarted, brokers taken down,
/// slowed, erroring and moving leaders, while 6000 readings flow; every record must end in the sink
/// or the dead-letter topic exactly once, and every worker must end healthy and exit 0.
@Suite(.serialized) struct ChaosTests {
    static let pipelineFile = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("pipelines/iot-sensors.yaml").path

    @Test func killsAndBrokerFaultsLoseAndDuplicateNothing() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-chaos-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        let run = ChaosRun(options: .init(pipelineFile: Self.pipelineFile, workDirectory: work, records: 6000, rate: 400, interval: .seconds(2), seed: 11))
        let report = try await run.run()
        print(report.text)
        #expect(report.passed, "\(report.text)")
        #expect(report.kills.count + report.brokerFaults.count >= 4, "the schedule injected too few faults: \(report.text)")
        #expect(report.lost.isEmpty)
        #expect(report.duplicatedRows == 0)
    }

    static let windowsFile = URL(fileURLWithPath: pipelineFile).deletingLastPathComponent().appendingPathComponent("iot-windows.yaml").path

    /// `streamfirst chaos pipelines/iot-windows.yaml`: the same faults against the stateful window
    /// stage (state restored from its changelog after every kill). The windows in the output topic
    /// and the sink's rows must equal what the broker-free engine computes from the same generated
    /// records; no window id may carry two values (a reading counted twice); every generated record
    /// reaches the window stage or the dead-letter topic, and the dead letters are the oracle's.
    @Test func statefulWindowsUnderKillsAndBrokerFaultsEqualTheBrokerFreeEngine() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("sf-chaosw-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        let run = ChaosRun(options: .init(pipelineFile: Self.windowsFile, workDirectory: work, records: 6000, rate: 400, interval: .seconds(2), seed: 18))
        let report = try await run.run()
        print(report.text)
        #expect(report.stateful)
        #expect(report.passed, "\(report.text)")
        // Seed 18's schedule starts by killing the window stage (and kills it twice more if time allows).
        #expect(report.kills.contains("process"), "the window stage was never killed: \(report.text)")
        #expect(report.windows > 100, "too few windows to compare: \(report.text)")
        #expect(report.sinkRows == report.windows)
        #expect(report.doubleCounted.isEmpty && report.windowMismatches.isEmpty)
        #expect(report.lost.isEmpty && report.rows + report.deadLettered == report.records)
    }
}
