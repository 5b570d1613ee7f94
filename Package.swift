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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
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
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .executableTarget(
            name: "StreamfirstCLI",
            dependencies: [
                "Kafka",
                "EmbeddedBroker",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
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
                "Kafka",
                "EmbeddedBroker",
                "CBaseline",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
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
            ]
        ),
    ]
)
