// The ingest worker: everything lives in the Pipeline library; this file only picks the stage.
import Pipeline

await Worker.main(stage: .ingest)
