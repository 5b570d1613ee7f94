import Config
import Logging
import PipelineModel

/// What every stage is built with, made in one place (``BuiltStage/build(_:spec:logger:processor:)``):
/// the pipeline and the stage's section, its metrics, health, logger, dead-letter writer and record
/// tracer. The per-record paths of all stages take their dead letters and spans from here, so they
/// are named the same way everywhere.
public struct StageContext: Sendable {
    public let spec: PipelineSpec
    public let common: PipelineSpec.StageCommon
    public let metrics: StageMetrics
    public let health: StageHealth
    public let logger: Logger
    /// Refused records, to the pipeline's `dead_letter` topic, attributed to this stage.
    public let deadLetters: DeadLetterWriter
    /// A span per record: `<stage> <input topic>` in consuming stages (in the stage's consumer
    /// group), `ingest <output topic>` in ingest.
    public let tracer: RecordTracer

    public init(spec: PipelineSpec, common: PipelineSpec.StageCommon, metrics: StageMetrics, health: StageHealth, logger: Logger) {
        self.spec = spec
        self.common = common
        self.metrics = metrics
        self.health = health
        self.logger = logger
        let stage = common.name.rawValue
        self.deadLetters = DeadLetterWriter(pipeline: spec.name, stage: stage, topic: spec.deadLetter.name)
        if common.name == .ingest {
            self.tracer = RecordTracer(stage: stage, pipeline: spec.name, topic: common.output?.name ?? "")
        } else {
            self.tracer = RecordTracer(stage: stage, pipeline: spec.name, topic: common.input?.name ?? "", group: common.group)
        }
    }

    /// A context for `stage` of `spec`, with fresh metrics and health.
    public init(stage: PipelineSpec.StageName, spec: PipelineSpec, logger: Logger) throws(ConfigError) {
        let common = try spec.stage(stage)
        self.init(
            spec: spec, common: common, metrics: StageMetrics(pipeline: spec.name, stage: stage.rawValue), health: StageHealth(),
            logger: logger)
    }
}

/// A stage service built from a ``StageContext``: its parts, read from the context.
protocol ContextualStage {
    var context: StageContext { get }
}

extension ContextualStage {
    var spec: PipelineSpec { context.spec }
    var common: PipelineSpec.StageCommon { context.common }
    var metrics: StageMetrics { context.metrics }
    var health: StageHealth { context.health }
    var logger: Logger { context.logger }
    var deadLetters: DeadLetterWriter { context.deadLetters }
    var tracer: RecordTracer { context.tracer }
}
