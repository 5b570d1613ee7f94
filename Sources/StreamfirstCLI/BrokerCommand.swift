import ArgumentParser
import EmbeddedBroker
import Foundation
import PipelineModel

struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Run an embedded Kafka broker (librdkafka's mock cluster) for development and tests.",
        discussion: """
            Starts librdkafka 2.0.2's mock cluster with N brokers on 127.0.0.1, creates the topics given \
            with --topic and --pipeline, opens a control channel, prints its addresses and runs until \
            SIGTERM, SIGINT or a `shutdown` control command; then it destroys the cluster and exits 0.

            On start it prints, and flushes, these lines to stdout (or one JSON object with --json):
              bootstrap.servers=HOST:PORT[,...]        what clients use
              cluster.bootstrap.servers=HOST:PORT,...  the brokers' own listeners
              control=HOST:PORT                        the control channel
              ready

            FIXED PORT: the mock cluster listens on ports the operating system chooses. --port P runs a \
            small TCP forwarder on 127.0.0.1:P to broker 1's listener (the first broker not taken down \
            with broker-down). Clients bootstrap through it, then connect to the brokers' advertised \
            (OS-chosen) addresses for everything else.

            CONTROL CHANNEL: a line-based TCP protocol; send one command per line, read one reply line \
            (`ok ...` or `error REASON`). Commands: create-topic NAME PARTITIONS [REPLICATION] | \
            broker-down ID | broker-up ID | rtt ID MS | request-errors API ERR[,ERR...] | \
            clear-request-errors API | topic-error TOPIC ERR | leader TOPIC PARTITION BROKER | \
            coordinator group|transaction KEY BROKER | info | ping | help | shutdown. \
            Use `streamfirst broker-ctl --control HOST:PORT COMMAND...` to send one.

            LIMITS (this is librdkafka 2.0.2's mock cluster, not Apache Kafka):
            - At most 5 MiB or 100,000 batches are retained per partition; older data is evicted \
            silently (a consumer that falls behind gets OFFSET_OUT_OF_RANGE and loses data).
            - No transactional semantics: commit/abort markers are not written, read_committed \
            consumers see aborted data, and offsets sent in a transaction are not stored.
            - No CreateTopics API: create topics with --topic, --pipeline or the control channel. \
            Unknown topics are auto-created with 4 partitions by metadata requests.
            - The replication factor of --topic/create-topic is checked (1...brokers) but not applied: \
            every partition gets min(3, brokers) replicas.
            - A `leader` command for an unknown topic auto-creates it (4 partitions), as metadata requests do.
            - offsetsForTimes answers the end offset for every timestamp.
            - No ListGroups API: listing groups answers _UNSUPPORTED_FEATURE (group offsets and lag work).
            - Delivery reports carry a LogAppendTime of 1234 (the mock's placeholder), not the record's timestamp.
            - The cooperative-sticky assignor is broken; use range or roundrobin.
            - Fetches wait the full fetch.wait.max.ms even when data arrives; lower it for latency.
            - In memory only: all data is gone when the process exits.
            """
    )

    @Option(name: .long, help: "Number of brokers (ids 1...N).")
    var brokers: Int = 1

    @Option(name: .long, help: "Fixed bootstrap port, served by a forwarder to broker 1 (default: the brokers' own OS-chosen ports).")
    var port: Int?

    @Option(name: .customLong("control-port"), help: "Control channel port (default: chosen by the OS).")
    var controlPort: Int = 0

    @Option(
        name: .customLong("topic"),
        help: ArgumentHelp("Create a topic (repeatable).", valueName: "NAME:PARTITIONS[:RF]"),
        transform: { try TopicSpec.parse($0) })
    var topics: [TopicSpec] = []

    @Option(name: .long, help: ArgumentHelp("Create the topics declared in a pipeline file's `topics:` section.", valueName: "FILE"))
    var pipeline: String?

    @Flag(name: .long, help: "Print the ready information as one JSON object instead of key=value lines.")
    var json = false

    @Flag(
        name: .customLong("exit-on-stdin-eof"),
        help: "Shut down when stdin reaches end of file (for supervisors: the broker stops if its parent dies).")
    var exitOnStdinEOF = false

    func validate() throws {
        guard (1...64).contains(brokers) else { throw ValidationError("--brokers must be between 1 and 64, got \(brokers)") }
        if let port, !(1...65535).contains(port) { throw ValidationError("--port must be between 1 and 65535, got \(port)") }
        guard (0...65535).contains(controlPort) else {
            throw ValidationError("--control-port must be between 0 and 65535, got \(controlPort)")
        }
        if let port, port == controlPort { throw ValidationError("--port and --control-port must differ") }
    }

    func run() async throws {
        var allTopics = topics
        if let pipeline {
            // The same reader as the workers' (only its `topics:` section), so the two cannot drift.
            allTopics += try PipelineSpec.declaredTopics(file: pipeline).map {
                TopicSpec(name: $0.name, partitions: $0.partitions, replicationFactor: $0.replicationFactor)
            }
        }
        let server = try await EmbeddedBrokerServer.start(
            EmbeddedBrokerConfiguration(brokers: brokers, bootstrapPort: port, controlPort: controlPort, topics: allTopics))

        // Signals become a shutdown request; the default action (dying without cleanup) is disabled.
        let signalSources = [SIGTERM, SIGINT].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { server.requestShutdown() }
            source.resume()
            return source
        }
        if exitOnStdinEOF {
            Thread {
                while !FileHandle.standardInput.availableData.isEmpty {}
                server.requestShutdown()
            }.start()
        }

        FileHandle.standardOutput.write(Data(readyText(server).utf8))

        await server.waitUntilShutdownRequested()
        await server.shutdown()
        for source in signalSources { source.cancel() }
        FileHandle.standardError.write(Data("streamfirst broker: stopped\n".utf8))
    }

    private func readyText(_ server: EmbeddedBrokerServer) -> String {
        if json {
            let object: [String: Any] = [
                "bootstrap_servers": server.bootstrapServers,
                "cluster_bootstrap_servers": server.clusterBootstrapServers,
                "control": server.controlAddress,
                "brokers": server.brokerCount,
                "topics": server.topics.map {
                    ["name": $0.name, "partitions": $0.partitions, "replication_factor": $0.replicationFactor] as [String: Any]
                },
                "ready": true,
            ]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
            return String(decoding: data, as: UTF8.self) + "\n"
        }
        return """
            bootstrap.servers=\(server.bootstrapServers)
            cluster.bootstrap.servers=\(server.clusterBootstrapServers)
            control=\(server.controlAddress)
            ready

            """
    }
}

struct BrokerCtlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker-ctl",
        abstract: "Send one command to a running `streamfirst broker`'s control channel and print the reply.",
        discussion: """
            Example: streamfirst broker-ctl --control 127.0.0.1:9093 create-topic orders 6
            Exits 0 on an `ok` reply, 1 on an `error` reply or when the broker cannot be reached. \
            Send `help` for the list of commands.
            """
    )

    @Option(name: .long, help: ArgumentHelp("The control channel address printed by `streamfirst broker`.", valueName: "HOST:PORT"))
    var control: String

    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments, e.g. `broker-down 2`.")
    var command: [String] = []

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("missing COMMAND (try `help`)") }
    }

    func run() async throws {
        let client = try EmbeddedBrokerControl(address: control)
        let reply: String
        do {
            reply = try await client.sendRaw(command.joined(separator: " "))
        } catch {
            FileHandle.standardError.write(Data("streamfirst broker-ctl: \(error)\n".utf8))
            throw ExitCode(1)
        }
        print(reply)
        if !(reply == "ok" || reply.hasPrefix("ok ")) { throw ExitCode(1) }
    }
}
