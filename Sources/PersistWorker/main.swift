// The persist worker: everything lives in the StageWorker and Pipeline libraries; this file only picks the stage and
// plugs in the OTLP span exporter (used when an endpoint is configured).
import StageWorker
import TracingBackend

await Worker.main(stage: .persist, tracing: OTLPTracing.backend)
