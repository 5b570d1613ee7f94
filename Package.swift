// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Streamfirst",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Kafka", targets: ["Kafka"]),
        .library(name: "EmbeddedBroker", targets: ["EmbeddedBroker"]),
        .executable(name: "streamfirst", targets: ["StreamfirstCLI"]),
        .executable(name: "streamfirst-bench", targets: ["Benchmarks"]),
        .library(name: "Pipeline", targets: ["Pipeline", "PipelineModel", "StageWorker"]),
        .library(name: "Processing", targets: ["Processing"]),
        .library(name: "Validation", targets: ["Validation"]),
        .library(name: "Connectors", targets: ["Connectors"]),
        .executable(name: "ingest", targets: ["IngestWorker"]),
        .executable(name: "validate", targets: ["ValidateWorker"]),
        .executable(name: "process", targets: ["ProcessWorker"]),
        .executable(name: "persist", targets: ["PersistWorker"]),
        .executable(name: "dashboard", targets: ["DashboardWorker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.27.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.21.0"),
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.10.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.0"),
        .package(url: "https://github.com/swift-otel/swift-w3c-trace-context", from: "1.0.0"),
        // OTLP/HTTP only (protobuf and JSON): the gRPC trait would add grpc-swift to every build.
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
    ],
    targets: [
        // The C boundary: librdkafka 2.x from Debian's librdkafka-dev (client + mock cluster headers).
        .systemLibrary(
            name: "CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        // The thin async Swift client. The only target that imports CRdKafka.
        .target(
            name: "Kafka",
            dependencies: [
                "CRdKafka",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The embedded broker: librdkafka's mock cluster in its own process, plus its control channel.
        .target(
            name: "EmbeddedBroker",
            dependencies: [
                "Kafka",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // JSON values, record headers: what every pipeline module shares. Foundation only.
        .target(name: "StreamCore"),
        // Line-aware YAML configuration reading with ${VAR:-default} expansion and unknown-key errors.
        .target(name: "Config", dependencies: [.product(name: "Yams", package: "Yams")]),
        // JSON Schema (draft 2020-12) validation.
        .target(name: "Validation", dependencies: ["StreamCore", "Config", "Processing"]),
        // Avro: schemas, binary decoding with writer → reader resolution, encoding. Written here from the
        // specification (no Swift Avro package is mirrored); values are StreamCore's JSON values.
        .target(name: "Avro", dependencies: ["StreamCore"]),
        // A Confluent Schema Registry client (REST API on AsyncHTTPClient, schemas cached by id) and the
        // Confluent wire format (magic byte, schema id).
        .target(
            name: "SchemaRegistry",
            dependencies: [
                "StreamCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // The development schema registry `streamfirst registry` serves (Confluent's REST API, in memory).
        .target(
            name: "SchemaRegistryServer",
            dependencies: [
                "SchemaRegistry", "Avro", "StreamCore", "Kafka",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Expressions and stateless operators (filter, set, rename, drop, route, enrich); the custom processor protocol.
        .target(name: "Processing", dependencies: ["StreamCore", "Config"]),
        // Event-time windows, aggregations, stream joins and their state (stores, changelog records,
        // memory budget), plus the broker-free test driver. No Kafka: the process stage drives it.
        .target(name: "Stateful", dependencies: ["StreamCore", "Config", "Processing"]),
        // Sources (stdin, files, tail, HTTP, generator) and sinks (SQLite, PostgreSQL, NDJSON, Kafka).
        .target(
            name: "Connectors",
            dependencies: [
                "StreamCore", "Config", "Kafka",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The pipeline file as a model: topics, Kafka settings, stage sections, tracing settings. What the
        // runtime, the operator tools, the dashboard and `streamfirst broker` read; no runtime linked.
        .target(name: "PipelineModel", dependencies: ["Config", "Kafka"]),
        // The stage runtime the four workers share: pipeline files, consume → handle → produce → commit,
        // dead letters, health and metrics endpoints, graceful shutdown.
        .target(
            name: "Pipeline",
            dependencies: [
                "Kafka", "StreamCore", "Config", "Validation", "Processing", "Connectors", "Stateful", "PipelineModel", "Avro",
                "SchemaRegistry",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
            ]
        ),
        // The operator tools built on the runtime: redrive, replay, the inline pipeline tests, reference
        // pages, lag per stage, reading a topic to its end. The CLI, LocalRun and tests use them; the
        // workers do not link them. `package` access only.
        .target(
            name: "PipelineTools",
            dependencies: [
                "Pipeline", "PipelineModel", "Kafka", "StreamCore", "Config", "Processing", "Connectors", "Stateful",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The body of a worker executable: command-line options (ArgumentParser), logging, metrics and
        // tracing bootstrap, the stage and its HTTP endpoints in one ServiceGroup. `Worker.main`.
        .target(
            name: "StageWorker",
            dependencies: [
                "Pipeline", "PipelineModel", "Config", "Processing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The tracing backend the worker executables bootstrap when OTLP export is configured:
        // swift-otel's tracer and OTLP/HTTP exporter. Libraries only use the swift-distributed-tracing API.
        .target(
            name: "TracingBackend",
            dependencies: [
                "Pipeline", "PipelineModel",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Runs a whole pipeline on one machine: the embedded broker and the four workers as processes
        // (`streamfirst run`, `streamfirst demo`, end-to-end tests).
        .target(
            name: "LocalRun",
            dependencies: [
                "Pipeline", "PipelineModel", "PipelineTools", "EmbeddedBroker", "Kafka", "Connectors", "StreamCore", "Config",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
            ]
        ),
        .executableTarget(name: "IngestWorker", dependencies: ["StageWorker", "TracingBackend"]),
        .executableTarget(name: "ValidateWorker", dependencies: ["StageWorker", "TracingBackend"]),
        .executableTarget(name: "ProcessWorker", dependencies: ["StageWorker", "TracingBackend"]),
        .executableTarget(name: "PersistWorker", dependencies: ["StageWorker", "TracingBackend"]),
        // The live dashboard: reads the metrics, data and dead-letter topics and serves a page with
        // Chart.js charts (Debian's libjs-chart.js) updated by Server-Sent Events.
        .target(
            name: "Dashboard",
            dependencies: [
                "Pipeline", "PipelineModel", "Kafka", "Config", "StreamCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(name: "DashboardWorker", dependencies: ["Dashboard"]),
        .executableTarget(
            name: "StreamfirstCLI",
            dependencies: [
                "Kafka",
                "EmbeddedBroker",
                "Pipeline",
                "PipelineModel",
                "PipelineTools",
                "LocalRun",
                "Validation",
                "Connectors",
                "Processing",
                "Dashboard",
                "SchemaRegistryServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // C librdkafka loops: the baseline the benchmark compares the Swift client with.
        .target(
            name: "CBaseline",
            linkerSettings: [.linkedLibrary("rdkafka")]
        ),
        .executableTarget(
            name: "Benchmarks",
            dependencies: [
                "Kafka", "Stateful", "StreamCore", "Config", "Pipeline", "PipelineModel", "PipelineTools", "Connectors", "Avro", "LocalRun",
                "Validation",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                "EmbeddedBroker",
                "CBaseline",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .testTarget(
            name: "KafkaTests",
            dependencies: [
                "Kafka",
                "EmbeddedBroker",
            ]
        ),
        // Launches `streamfirst broker` as a separate process and checks it from outside (kcat, control channel).
        .testTarget(
            name: "EmbeddedBrokerTests",
            dependencies: [
                "EmbeddedBroker",
                "Kafka",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "StreamCoreTests", dependencies: ["StreamCore", "Config"]),
        // What several test targets share: running the Python interop helpers of Tests/Interop.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "AvroTests", dependencies: ["Avro", "StreamCore", "TestSupport"]),
        .testTarget(
            name: "SchemaRegistryTests",
            dependencies: [
                "SchemaRegistry", "SchemaRegistryServer", "Avro", "StreamCore", "Kafka", "EmbeddedBroker", "TestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "ValidationTests", dependencies: ["Validation", "StreamCore", "Config", "Processing"]),
        .testTarget(name: "StatefulTests", dependencies: ["Stateful", "Processing", "StreamCore", "Config"]),
        .testTarget(name: "ProcessingTests", dependencies: ["Processing", "StreamCore", "Config"]),
        .testTarget(name: "ConnectorTests", dependencies: ["Connectors", "StreamCore", "Config", "Kafka", "EmbeddedBroker"]),
        .testTarget(
            name: "PipelineTests",
            dependencies: [
                "Pipeline", "PipelineModel", "PipelineTools", "LocalRun", "StreamCore", "Config", "Kafka", "EmbeddedBroker", "Connectors",
                "Stateful", "Validation", "Avro", "SchemaRegistry", "SchemaRegistryServer", "TestSupport",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "Hummingbird", package: "hummingbird"), // the OTLP/HTTP receiver of the tracing test
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The dashboard: its aggregation and configuration (broker-free) and a real headless
        // Chromium driving the page while a pipeline runs (chromium + chromium-driver from Debian).
        .testTarget(
            name: "DashboardTests",
            dependencies: [
                "Dashboard", "Pipeline", "PipelineModel", "LocalRun", "Kafka", "EmbeddedBroker", "Config", "StreamCore",
            ]
        ),
    ]
)

// Fuzz targets (Sources/Fuzz): only when STREAMFIRST_FUZZ=1, because the executable has no `main`
// of its own (libFuzzer provides it) and must be built with -sanitize=fuzzer. See `make fuzz`.
if Context.environment["STREAMFIRST_FUZZ"] == "1" {
    package.products.append(.executable(name: "streamfirst-fuzz", targets: ["Fuzz"]))
    package.targets.append(.target(name: "CFuzzDriver"))
    package.targets.append(
        .executableTarget(
            name: "Fuzz", dependencies: ["CFuzzDriver", "StreamCore", "Config", "Processing", "Validation", "Avro"],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
}

// `streamfirst-bench alloc` (malloc calls per record): only when STREAMFIRST_BENCH=1, so CI's build does
// not fetch and compile the malloc interposer. Build it in its own folder: `make bench-alloc`.
if Context.environment["STREAMFIRST_BENCH"] == "1" {
    package.dependencies.append(.package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.0"))
    if let bench = package.targets.first(where: { $0.name == "Benchmarks" }) {
        bench.dependencies.append(.product(name: "MallocInterposerSwift", package: "malloc-interposer"))
        // A define, not canImport: the interposer's module stays in .build after a gated build.
        bench.swiftSettings = (bench.swiftSettings ?? []) + [.define("STREAMFIRST_BENCH_ALLOC")]
    }
}
