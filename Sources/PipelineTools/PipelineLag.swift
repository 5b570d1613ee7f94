import Config
import Pipeline
import PipelineModel

/// The consuming stages of a pipeline with their consumer groups and input topics: what
/// `streamfirst lag --pipeline` reports and what lag-based autoscaling (KEDA) watches.
package enum PipelineLag {
    package struct Stage: Sendable, Equatable {
        package var name: PipelineSpec.StageName
        /// The stage's consumer group: `<pipeline>.<stage>` unless the file sets `group:`.
        package var group: String
        /// The Kafka topics the group reads (a stateful join: both inputs).
        package var topics: [String]
    }

    /// validate, process and persist, as far as the file has them, in pipeline order.
    package static func consumingStages(of spec: PipelineSpec) throws(ConfigError) -> [Stage] {
        var out: [Stage] = []
        for name in PipelineSpec.StageName.allCases where name != .ingest {
            guard let common = spec.stages[name], let input = common.input else { continue }
            var topics = [input.name]
            if name == .process && StatefulProcessConfig.isStateful(common) {
                topics = try StatefulProcessConfig.make(spec: spec, common: common).inputTopics
            }
            out.append(Stage(name: name, group: common.group, topics: topics))
        }
        return out
    }
}
