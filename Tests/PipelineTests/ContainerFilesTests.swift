import Foundation
import Pipeline
import PipelineModel
import Testing
import Yams

/// No Docker engine runs here, so the container files are checked by reading them: the compose file
/// must describe Kafka in KRaft mode, PostgreSQL and four scalable workers that run the pipeline file
/// it names; the Dockerfile must be a multi-stage build to a slim, non-root runtime with librdkafka.
@Suite struct ContainerFilesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func compose() throws -> [String: Any] {
        let text = try String(contentsOf: Self.root.appendingPathComponent("docker-compose.yml"), encoding: .utf8)
        return try #require(try Yams.load(yaml: text) as? [String: Any])
    }

    @Test func composeHasKRaftKafkaPostgresAndFourScalableWorkers() throws {
        let services = try #require(try compose()["services"] as? [String: Any])
        let kafka = try #require(services["kafka"] as? [String: Any])
        #expect((kafka["image"] as? String)?.hasPrefix("apache/kafka:") == true)
        let kafkaEnv = try #require(kafka["environment"] as? [String: Any])
        #expect((kafkaEnv["KAFKA_PROCESS_ROLES"] as? String)?.contains("controller") == true, "KRaft: the broker is its own controller")
        #expect(kafkaEnv["KAFKA_ZOOKEEPER_CONNECT"] == nil)
        let postgres = try #require(services["postgres"] as? [String: Any])
        #expect((postgres["image"] as? String)?.hasPrefix("postgres:") == true)

        for stage in PipelineSpec.StageName.allCases {
            let worker = try #require(services[stage.rawValue] as? [String: Any], "service \(stage.rawValue)")
            #expect(worker["command"] as? [String] == [stage.rawValue])
            #expect(worker["container_name"] == nil, "\(stage.rawValue): a fixed container name prevents --scale")
            #expect(worker["ports"] == nil, "\(stage.rawValue): a fixed host port prevents --scale")
            let env = try #require(worker["environment"] as? [String: Any])
            #expect(env["KAFKA_BROKERS"] as? String == "kafka:29092")
            // The pipeline file the image carries (pipelines/ is copied to /etc/streamfirst/pipelines).
            let pipeline = try #require(env["PIPELINE"] as? String)
            #expect(pipeline.hasPrefix("/etc/streamfirst/pipelines/"))
            let local = Self.root.appendingPathComponent("pipelines").appendingPathComponent(
                String(pipeline.dropFirst("/etc/streamfirst/pipelines/".count))
            ).path
            var environment: [String: String] = [:]
            for (k, v) in env { environment[k] = "\(v)" }
            let spec = try PipelineSpec.load(file: local, environment: environment)
            #expect(spec.kafka.bootstrapServers == "kafka:29092")
            _ = try BuiltStage.build(stage, spec: spec, logger: .init(label: "test"))
            let depends = try #require(worker["depends_on"] as? [String: Any])
            for name in depends.keys { #expect(services[name] != nil, "\(stage.rawValue) depends on unknown service \(name)") }
        }
        let topics = try #require(services["topics"] as? [String: Any])
        let command = try #require(topics["command"] as? [String])
        #expect(Array(command.prefix(3)) == ["streamfirst", "topics", "create"])
    }

    @Test func dockerfileIsMultiStageSlimAndNonRoot() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("Dockerfile"), encoding: .utf8)
        let froms = text.split(separator: "\n").filter { $0.hasPrefix("FROM ") }
        #expect(froms.count == 2)
        #expect(froms.first?.contains("swift:") == true)
        #expect(froms.last?.contains("-slim") == true)
        #expect(text.contains("librdkafka1"))
        #expect(text.contains("librdkafka-dev"))
        #expect(text.contains("USER streamfirst"))
        for product in ["ingest", "validate", "process", "persist", "streamfirst"] {
            #expect(text.contains("--product \(product)"))
        }
        #expect(text.contains("streamfirst\", \"probe\""))
    }
}
