import EmbeddedBroker
import Foundation
import Testing

@testable import Kafka

/// The `streamfirst` executable's data commands against the embedded broker (each in its own
/// process): tail from an offset without following, lag per pipeline stage, --json documents,
/// progress bars only on a terminal, and shell completion.
@Suite("streamfirst CLI", .serialized, .timeLimit(.minutes(3)))
struct CLITests {
    let exe: String

    init() throws {
        exe = try streamfirstExecutable().path
    }

    func output(_ r: (status: Int32, stdout: [String], stderr: String)) -> String { r.stdout.joined(separator: "\n") }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    /// A pipeline file whose topics are prefixed (`PREFIX`), for lag, digests and redrive.
    func pipelineFile(name: String, prefix: String) throws -> String {
        let yaml = """
            name: \(name)
            topics:
              raw:   { name: \(prefix).raw, partitions: 2 }
              valid: { name: \(prefix).valid, partitions: 2 }
              out:   { name: \(prefix).out, partitions: 2 }
              dead:  { name: \(prefix).dead, partitions: 1 }
            dead_letter: dead
            ingest: { output: raw, source: { type: stdin } }
            validate: { input: raw, output: valid, schema: none }
            process: { input: valid, output: out, steps: [] }
            persist: { input: out, sink: { type: ndjson, path: out.ndjson } }
            """
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sf-cli-\(prefix).yaml").path
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    func produce(_ broker: EmbeddedBrokerProcess, _ messages: [KafkaProducerMessage]) async throws {
        let producer = try KafkaProducer(configuration: producerConfig(broker.bootstrapServers))
        let reports = await producer.send(messages)
        await producer.shutdown()
        #expect(reports.allSatisfy { $0.error == nil })
    }

    @Test("tail --from offset:N --no-follow reads each partition from N to its end and exits; --partition; pretty records with headers")
    func tailFromOffset() async throws {
        let topic = uniqueName("tail")
        let broker = try await launchBroker(topics: [topic: 2])
        try await produce(
            broker,
            (0..<20).map {
                KafkaProducerMessage(
                    topic: topic, partition: Int32($0 % 2), key: bytes("k\($0)"), value: bytes(#"{"n": \#($0), "name": "r\#($0)"}"#),
                    headers: [KafkaHeader(key: "sf.id", value: "id-\($0)")])
            })
        let all = try await runProcess(exe, ["tail", topic, "-b", broker.bootstrapServers, "--from", "offset:7", "--no-follow", "--json"])
        #expect(all.status == 0, "\(all.stderr)")
        let records = try all.stdout.map { try json($0) }.filter { $0["event"] == nil }
        // Each partition holds offsets 0…9: from 7 that is 7, 8, 9 in both.
        #expect(Set(records.map { "\($0["partition"] ?? "")/\($0["offset"] ?? "")" }) == ["0/7", "0/8", "0/9", "1/7", "1/8", "1/9"])
        #expect(records.count == 6)

        let one = try await runProcess(
            exe, ["tail", topic, "-b", broker.bootstrapServers, "--partition", "1", "--from", "offset:9", "--no-follow"])
        #expect(one.status == 0, "\(one.stderr)")
        // Partition 1 holds the odd records: offset 9 is record 19.
        #expect(one.stdout.first?.hasPrefix("\(topic)[1]@9  ") == true, "\(one.stdout)")
        #expect(one.stdout.first?.hasSuffix("key=k19") == true)
        #expect(one.stdout.contains("  sf.id: id-19"))
        #expect(one.stdout.contains("    \"name\" : \"r19\""), "the value is indented JSON: \(one.stdout)")
        #expect(!one.stdout.contains { $0.contains("[0]@") })

        let bad = try await runProcess(exe, ["tail", topic, "-b", broker.bootstrapServers, "--partition", "5", "--no-follow"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--partition 5"))
        _ = try await broker.terminate()
    }

    @Test("lag --pipeline: every consuming stage's group <pipeline>.<stage>, per partition, as text and JSON")
    func lagPerStage() async throws {
        let prefix = uniqueName("lag")
        let name = "lagp"
        let broker = try await launchBroker(topics: ["\(prefix).raw": 2, "\(prefix).valid": 2, "\(prefix).out": 2, "\(prefix).dead": 1])
        try await produce(
            broker, (0..<30).map { KafkaProducerMessage(topic: "\(prefix).raw", partition: Int32($0 % 2), value: bytes("v\($0)")) })
        // The validate group has processed (committed) 12 of the 30 raw records.
        var config = consumerConfig(broker.bootstrapServers, group: "\(name).validate")
        config.autoCommit = false
        let consumer = try KafkaConsumer(configuration: config)
        try await consumer.subscribe(topics: ["\(prefix).raw"])
        _ = try await collect(consumer, count: 12, store: true)
        try await consumer.commit()
        await consumer.close()

        let file = try pipelineFile(name: name, prefix: prefix)
        let result = try await runProcess(exe, ["lag", "--pipeline", file, "-b", broker.bootstrapServers, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let doc = try json(output(result))
        #expect(doc["pipeline"] as? String == name)
        #expect(doc["total"] as? Int == 18)
        let stages = try #require(doc["stages"] as? [[String: Any]])
        #expect(stages.map { $0["stage"] as? String } == ["validate", "process", "persist"])
        #expect(stages.map { $0["group"] as? String } == ["\(name).validate", "\(name).process", "\(name).persist"])
        #expect(stages.map { $0["total"] as? Int } == [18, 0, 0])
        let partitions = try #require(stages.first?["partitions"] as? [[String: Any]])
        #expect(partitions.count == 2)
        #expect(partitions.allSatisfy { $0["topic"] as? String == "\(prefix).raw" && $0["high"] as? Int == 15 })
        #expect(partitions.reduce(0) { $0 + ($1["lag"] as? Int ?? 0) } == 18)

        let text = try await runProcess(exe, ["lag", "--pipeline", file, "-b", broker.bootstrapServers])
        #expect(text.stdout.first == "validate (group \(name).validate): lag 18")
        #expect(text.stdout.last == "total lag: 18")
        let both = try await runProcess(exe, ["lag", "--pipeline", file, "--group", "g"])
        #expect(both.status != 0)
        _ = try await broker.terminate()
    }

    @Test("--json documents: topics list, check, redrive --dry-run, replay rewind and digest; progress bars only on a terminal")
    func jsonAndProgress() async throws {
        let prefix = uniqueName("js")
        let broker = try await launchBroker(topics: ["\(prefix).raw": 2, "\(prefix).valid": 2, "\(prefix).out": 2, "\(prefix).dead": 1])
        try await produce(
            broker,
            (0..<40).map {
                KafkaProducerMessage(
                    topic: "\(prefix).raw", partition: Int32($0 % 2), value: bytes("v\($0)"),
                    headers: [KafkaHeader(key: "sf.id", value: "r\($0)")])
            } + (0..<3).map { KafkaProducerMessage(topic: "\(prefix).dead", value: bytes("bad\($0)")) })
        let file = try pipelineFile(name: "jsp", prefix: prefix)

        let list = try await runProcess(exe, ["topics", "list", "-b", broker.bootstrapServers, "--json"])
        #expect(((try json(output(list)))["topics"] as? [String])?.contains("\(prefix).raw") == true)

        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("sf-cli-bad-\(prefix).yaml").path
        try "name: x\ntopics: {}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let check = try await runProcess(exe, ["check", bad, "--json"])
        #expect(check.status == 2)
        let checked = try json(output(check))
        #expect(checked["ok"] as? Bool == false)
        let entry = try #require((checked["files"] as? [[String: Any]])?.first)
        #expect((entry["error"] as? String)?.contains("dead_letter") == true, "\(entry)")

        // Dead letters without error headers have no original topic: read, none selected.
        let redrive = try await runProcess(
            exe, ["redrive", "--pipeline", file, "--bootstrap", broker.bootstrapServers, "--dry-run", "--json"])
        #expect(redrive.status == 0, "\(redrive.stderr)")
        let r = try json(output(redrive))
        #expect(r["read"] as? Int == 3)
        #expect(r["redriven"] as? Int == 0)
        #expect((r["skipped"] as? [String: Any])?["not_selected"] as? Int == 3)
        #expect(!redrive.stderr.contains("%"), "no progress bar in --json mode")

        let digest = try await runProcess(
            exe, ["replay", "digest", "--pipeline", file, "--topic", "raw", "--bootstrap", broker.bootstrapServers, "--json"])
        #expect(digest.status == 0, "\(digest.stderr)")
        let d = try json(output(digest))
        #expect(d["ids"] as? Int == 40)
        #expect((d["digests"] as? [String: String])?.count == 40)

        let rewind = try await runProcess(
            exe,
            [
                "replay", "rewind", "--pipeline", file, "--stage", "validate", "--to-offset", "3", "--dry-run", "--bootstrap",
                broker.bootstrapServers, "--json",
            ])
        #expect(rewind.status == 0, "\(rewind.stderr)")
        let w = try json(output(rewind))
        #expect(w["dry_run"] as? Bool == true)
        #expect(w["group"] as? String == "jsp.validate")
        let offsets = (w["offsets"] as? [[String: Any]] ?? []).map { "\($0["topic"] ?? "")/\($0["partition"] ?? "")/\($0["offset"] ?? "")" }
        #expect(offsets.sorted() == ["\(prefix).raw/0/3", "\(prefix).raw/1/3"])

        // Not a terminal (a pipe): no bar. A terminal (script(1) gives the command a pty): the bar, to 100 %.
        let piped = try await runProcess(
            exe, ["replay", "digest", "--pipeline", file, "--topic", "raw", "--bootstrap", broker.bootstrapServers, "--save", "/dev/null"])
        #expect(piped.status == 0)
        #expect(!piped.stderr.contains("reading \(prefix).raw ["), "\(piped.stderr)")
        let command = [
            exe, "replay", "digest", "--pipeline", file, "--topic", "raw", "--bootstrap", broker.bootstrapServers, "--save", "/dev/null",
        ]
        .map { "'\($0)'" }.joined(separator: " ")
        let tty = try await runProcess("/usr/bin/script", ["-qefc", command, "/dev/null"])
        #expect(tty.status == 0, "\(tty.stdout) \(tty.stderr)")
        #expect(output(tty).contains("reading \(prefix).raw [########################] 100% 40/40"), "\(output(tty))")
        let quiet = try await runProcess("/usr/bin/script", ["-qefc", command + " --no-progress", "/dev/null"])
        #expect(!output(quiet).contains("reading \(prefix).raw ["), "\(output(quiet))")
        _ = try await broker.terminate()
    }

    @Test(
        """
        topics create --pipeline --control: every declared topic and the redrive ledger on the embedded broker, once; \
        a progress bar on a pty
        """
    )
    func createPipelineTopics() async throws {
        let prefix = uniqueName("mk")
        let broker = try await launchBroker()
        let file = try pipelineFile(name: "mk", prefix: prefix)
        let names = ["raw", "valid", "out", "dead", "dead.redrive-ledger"].map { "\(prefix).\($0)" }.sorted()
        let command = [exe, "topics", "create", "--pipeline", file, "--control", broker.controlAddress, "-b", broker.bootstrapServers]
            .map { "'\($0)'" }.joined(separator: " ")
        let tty = try await runProcess("/usr/bin/script", ["-qefc", command, "/dev/null"])
        #expect(tty.status == 0, "\(output(tty))")
        #expect(output(tty).contains("creating topics [########################] 100% 5/5"), "\(output(tty))")
        #expect(output(tty).contains("created 5 of 5 topics of \(file)"))

        let again = try await runProcess(
            exe, ["topics", "create", "--pipeline", file, "--control", broker.controlAddress, "-b", broker.bootstrapServers, "--json"])
        #expect(again.status == 0, "\(again.stderr)")
        let doc = try json(output(again))
        #expect(doc["created"] as? [String] == [])
        #expect(doc["existing"] as? [String] == names)
        let describe = try await runProcess(exe, ["topics", "describe", "\(prefix).raw", "-b", broker.bootstrapServers, "--json"])
        #expect(((try json(output(describe)))["partitions"] as? [Any])?.count == 2)
        _ = try await broker.terminate()
    }

    @Test("conformance: prints the pass rate with the suite's origin; a missing suite says how to get it")
    func conformance() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let suite =
            ProcessInfo.processInfo.environment["STREAMFIRST_JSON_SCHEMA_SUITE"]
            ?? root.appendingPathComponent(".build/json-schema-test-suite").path
        let run = try await runProcess(exe, ["conformance", "--suite", suite])
        #expect(run.status == 0, "\(run.stderr)")
        let text = output(run)
        #expect(text.contains("suite: \(suite) (PyPI jsonschema=="), "no origin in:\n\(text)")
        #expect(text.contains("; 0 failed,"), "\(text)")

        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("sf-conformance-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let missing = try await runProcess(
            exe, ["conformance"], environment: ["STREAMFIRST_JSON_SCHEMA_SUITE": empty.path], directory: empty.path)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("scripts/fetch-json-schema-suite.sh"), "\(missing.stderr)")
    }

    @Test("shell completion: streamfirst completion bash|zsh|fish is argument-parser's script and names every subcommand")
    func completion() async throws {
        let bash = try await runProcess(exe, ["completion", "bash"])
        #expect(bash.status == 0)
        let script = output(bash)
        for sub in ["broker", "run", "check", "test", "tail", "produce", "topics", "lag", "redrive", "replay", "reference", "completion"] {
            #expect(script.contains(sub), "the bash completion does not offer \(sub)")
        }
        for option in ["--pipeline", "--from", "--no-follow", "--json"] {
            #expect(script.contains(option), "the bash completion does not offer \(option)")
        }
        let builtIn = try await runProcess(exe, ["--generate-completion-script", "bash"])
        #expect(output(builtIn) == script)
        for shell in ["zsh", "fish"] {
            let s = try await runProcess(exe, ["completion", shell])
            #expect(s.status == 0 && output(s).contains("redrive"), "\(shell): \(s.stderr)")
        }
        let unknown = try await runProcess(exe, ["completion", "tcsh"])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("expected bash, zsh or fish"))
    }
}
