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
}
