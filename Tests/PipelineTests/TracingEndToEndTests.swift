import EmbeddedBroker
import Foundation
import Hummingbird
import Kafka
import LocalRun
import Logging
import NIOCore
import Pipeline
import PipelineModel
import PipelineTools
import ServiceLifecycle
import StreamCore
import Synchronization
import Testing

/// Tracing through the four real workers on the embedded broker: every record in every topic
/// carries a `traceparent`, one trace per record id across the topics with a new span per hop; and
/// with `OTEL_EXPORTER_OTLP_ENDPOINT` set, every stage's spans reach an OTLP/HTTP receiver (the
/// ingest worker exporting protobuf, the others JSON) as one trace across the four stages.
@Suite(.serialized) struct TracingEndToEndTests {
    static let pipelineFile = EndToEndTests.pipelineFile
    static let count = 400

    struct Topics {
        var raw: [KafkaMessage]
        var valid: [KafkaMessage]
        var enriched: [KafkaMessage]
        var alerts: [KafkaMessage]
        var dead: [KafkaMessage]
    }

    /// Runs the demo pipeline over `count` generated readings to the end; returns every topic.
    static func run(
        name: String, environment: [String: String] = [:], stageEnvironment: [PipelineSpec.StageName: [String: String]] = [:]
    )
        async throws -> Topics
    {
        let work = EndToEndTests.workDirectory(name)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let env = ["IOT_COUNT": String(count), "IOT_RATE": "0", "IOT_SEED": "7"].merging(environment) { $1 }
        let local = try await LocalPipeline.launch(.init(pipelineFile: pipelineFile, workDirectory: work, environment: env))
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for stage in [PipelineSpec.StageName.validate, .process, .persist] {
                    group.addTask { try await local.start(stage, extraEnvironment: stageEnvironment[stage] ?? [:]) }
                }
                try await group.waitForAll()
            }
            try await local.start(.ingest, extraEnvironment: stageEnvironment[.ingest] ?? [:])
            if let ingest = local.process(.ingest) {
                let status = await finished(ingest, "ingest")
                #expect(status == .init(code: 0, signaled: false), "ingest: \(ingest.standardError.suffix(2000))")
            }
            try await local.waitUntilDrained(timeout: .seconds(180))
            let topics = Topics(
                raw: try await local.readAll("raw"), valid: try await local.readAll("valid"),
                enriched: try await local.readAll("enriched"), alerts: try await local.readAll("alerts"),
                dead: try await local.readAll("dead"))
            let exits = await local.stop()
            for (stage, status) in exits {
                #expect(status == .init(code: 0, signaled: false), "\(stage.rawValue) should exit 0 on SIGTERM")
            }
            return topics
        } catch {
            for stage in local.stages {
                if let p = local.process(stage) { Issue.record("\(stage.rawValue) stderr:\n\(p.standardError.suffix(3000))") }
            }
            _ = await local.stop()
            throw error
        }
    }

    static func string(_ m: KafkaMessage, _ key: String) -> String? {
        m.header(key)?.value.map { String(decoding: $0, as: UTF8.self) }
    }

    static func traceparent(_ m: KafkaMessage) -> TracingTests.Parsed? {
        TracingTests.parse(string(m, RecordHeader.traceParent))
    }

    /// Each record's parsed traceparent by record id (ids are unique per topic in a crash-free run).
    static func byID(_ messages: [KafkaMessage]) -> [String: TracingTests.Parsed] {
        var out: [String: TracingTests.Parsed] = [:]
        for m in messages {
            if let id = string(m, RecordHeader.id), let p = traceparent(m) { out[id] = p }
        }
        return out
    }

    /// Checks the headers of every topic; returns the raw, valid and enriched contexts by id.
    @discardableResult
    static func checkHeaders(
        _ t: Topics
    ) -> (raw: [String: TracingTests.Parsed], valid: [String: TracingTests.Parsed], enriched: [String: TracingTests.Parsed]) {
        for (name, messages) in [("raw", t.raw), ("valid", t.valid), ("enriched", t.enriched), ("alerts", t.alerts), ("dead", t.dead)] {
            #expect(!messages.isEmpty, "\(name) is empty")
            let missing = messages.filter { traceparent($0) == nil }
            #expect(missing.isEmpty, "\(missing.count) of \(messages.count) records in \(name) have no valid traceparent")
            #expect(
                messages.allSatisfy { $0.headers.filter { $0.key == RecordHeader.traceParent }.count == 1 }, "\(name): one traceparent each"
            )
        }
        let raw = byID(t.raw)
        let valid = byID(t.valid)
        let enriched = byID(t.enriched)
        #expect(enriched.count > count / 2)
        var checked = 0
        for (id, e) in enriched {
            guard let r = raw[id], let v = valid[id] else {
                Issue.record("record \(id) is in enriched but not in raw and valid")
                continue
            }
            #expect(r.traceID == v.traceID && v.traceID == e.traceID, "record \(id): one trace across the topics")
            #expect(Set([r.spanID, v.spanID, e.spanID]).count == 3, "record \(id): a new span per hop")
            checked += 1
        }
        #expect(checked == enriched.count)
        for a in t.alerts {
            guard let id = string(a, RecordHeader.id), let p = traceparent(a) else { continue }
            #expect(p == enriched[id], "an alert is a copy made by the same process span as its enriched record")
        }
        // Dead letters link back: the trace of the record they were made from, the span of the stage that refused it.
        var linked = 0
        for d in t.dead {
            guard let id = string(d, RecordHeader.id), let p = traceparent(d) else { continue }
            let stage = string(d, DeadLetterHeader.stage)
            if stage == "validate", let r = raw[id] {
                #expect(p.traceID == r.traceID && p.spanID != r.spanID, "dead letter \(id)")
                linked += 1
            } else if stage == "process", let v = valid[id] {
                #expect(p.traceID == v.traceID && p.spanID != v.spanID, "dead letter \(id)")
                linked += 1
            }
        }
        #expect(linked > 0, "the generator's invalid readings are dead-lettered by validate")
        return (raw, valid, enriched)
    }

    @Test func everyRecordCarriesATraceparentAndEachRecordIsOneTrace() async throws {
        let topics = try await Self.run(name: "trace")
        Self.checkHeaders(topics)
    }

    @Test func anUnreachableCollectorCostsSpansNotRecords() async throws {
        // Nothing listens on the discard port of loopback: every export is refused.
        let topics = try await Self.run(name: "trace-down", environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"])
        Self.checkHeaders(topics) // run() also expected every worker to exit 0 on SIGTERM
    }

    @Test(arguments: [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")])
    func aWorkerWithBadTracingSettingsRefusesToStartNamingTheVariable(_ key: String, _ value: String) async throws {
        let worker = try ChildProcess(
            executable: try ChildProcess.locate("validate"), arguments: ["--pipeline", Self.pipelineFile, "--check"],
            environment: [key: value])
        let status = await finished(worker, "worker")
        #expect(status == .init(code: 2, signaled: false))
        #expect(worker.standardError.contains(key) && worker.standardError.contains(value), "\(worker.standardError)")
    }

    // MARK: OTLP export

    /// A minimal OTLP/HTTP receiver: keeps every request to `/v1/traces`.
    final class Receiver: Sendable {
        struct Request: Sendable {
            var contentType: String
            var body: [UInt8]
        }
        let requests = Mutex<[Request]>([])
        let boundPort = Mutex<Int?>(nil)
        let group = Mutex<ServiceGroup?>(nil)

        func start() async throws -> Int {
            let router = Router()
            router.post("/v1/traces") { [self] request, _ -> Response in
                let body = try await request.body.collect(upTo: 64 << 20)
                let type = request.headers[.contentType] ?? ""
                self.requests.withLock { $0.append(Request(contentType: type, body: Array(body.readableBytesView))) }
                let json = type.hasPrefix("application/json")
                return Response(
                    status: .ok, headers: [.contentType: json ? "application/json" : "application/x-protobuf"],
                    body: .init(byteBuffer: ByteBuffer(string: json ? "{}" : "")))
            }
            let logger = Logger(label: "otlp-receiver")
            let app = Application(
                router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                onServerRunning: { [self] channel in self.boundPort.withLock { $0 = channel.localAddress?.port } }, logger: logger)
            let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
            self.group.withLock { $0 = group }
            Task { try await group.run() }
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                if let port = boundPort.withLock({ $0 }) { return port }
                try await Task.sleep(for: .milliseconds(20))
            }
            throw LocalRunError("the OTLP receiver did not start")
        }

        func stop() async {
            await group.withLock { $0 }?.triggerGracefulShutdown()
        }
    }

    /// One span of an OTLP/JSON export.
    struct ExportedSpan {
        var service: String
        var name: String
        var kind: Int64
        var traceID: String
        var spanID: String
        var parentSpanID: String
        var attributes: [String: String]
    }

    /// An id as hex: OTLP/JSON specifies hex; protobuf's generic JSON mapping writes base64.
    static func hexID(_ text: String, bytes: Int) -> String {
        if text.count == bytes * 2, text.allSatisfy({ $0.isHexDigit }) { return text.lowercased() }
        guard let data = Data(base64Encoded: text) else { return text }
        return data.map { String(format: "%02x", $0) }.joined()
    }

    static func spans(inJSON body: [UInt8]) throws -> [ExportedSpan] {
        let doc = try JSONValue.parse(body)
        var out: [ExportedSpan] = []
        for rs in doc["resourceSpans"]?.arrayValue ?? [] {
            let service =
                rs["resource"]?["attributes"]?.arrayValue?.first { $0["key"]?.stringValue == "service.name" }?["value"]?["stringValue"]?
                .stringValue ?? ""
            for ss in rs["scopeSpans"]?.arrayValue ?? [] {
                for s in ss["spans"]?.arrayValue ?? [] {
                    var attributes: [String: String] = [:]
                    for a in s["attributes"]?.arrayValue ?? [] {
                        guard let key = a["key"]?.stringValue, let value = a["value"] else { continue }
                        attributes[key] =
                            value["stringValue"]?.stringValue ?? value["intValue"]?.stringValue ?? value["intValue"]?.int64Value.map {
                                String($0)
                            } ?? ""
                    }
                    out.append(
                        ExportedSpan(
                            service: service, name: s["name"]?.stringValue ?? "", kind: s["kind"]?.int64Value ?? -1,
                            traceID: hexID(s["traceId"]?.stringValue ?? "", bytes: 16),
                            spanID: hexID(s["spanId"]?.stringValue ?? "", bytes: 8),
                            parentSpanID: hexID(s["parentSpanId"]?.stringValue ?? "", bytes: 8), attributes: attributes))
                }
            }
        }
        return out
    }

    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex, let j = hex.index(i, offsetBy: 2, limitedBy: hex.endIndex) {
            out.append(UInt8(hex[i..<j], radix: 16) ?? 0)
            i = j
        }
        return out
    }

    @Test func spansOfEveryStageReachAnOTLPReceiverAsOneTrace() async throws {
        let receiver = Receiver()
        let port = try await receiver.start()
        defer { Task { await receiver.stop() } }
        let json = ["OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"]
        let topics = try await Self.run(
            name: "otlp",
            environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:\(port)", "OTEL_BSP_SCHEDULE_DELAY": "200"],
            stageEnvironment: [.ingest: ["OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"], .validate: json, .process: json, .persist: json])
        // Exporting changes nothing about the headers.
        let (raw, valid, enriched) = Self.checkHeaders(topics)

        // The workers flushed their spans on SIGTERM, before they exited (run() waited for that).
        let requests = receiver.requests.withLock { $0 }
        let protobuf = requests.filter { $0.contentType.hasPrefix("application/x-protobuf") }
        let jsonBodies = requests.filter { $0.contentType.hasPrefix("application/json") }
        #expect(!protobuf.isEmpty, "ingest exported over OTLP/HTTP protobuf")
        #expect(protobuf.allSatisfy { !$0.body.isEmpty })
        let spans = try jsonBodies.flatMap { try Self.spans(inJSON: $0.body) }
        let services = Set(spans.map(\.service))
        #expect(services == ["streamfirst-validate", "streamfirst-process", "streamfirst-persist"], "\(services)")
        let names = Set(spans.map(\.name))
        for name in ["validate iot.readings.raw", "process iot.readings.valid", "persist iot.readings.enriched"] {
            #expect(names.contains(name), "no span named \(name) among \(names.sorted())")
        }
        let validateSpans = spans.filter { $0.service == "streamfirst-validate" }
        #expect(validateSpans.count == topics.raw.count, "a span per raw record")
        #expect(validateSpans.allSatisfy { $0.kind == 5 }, "consumer spans (OTLP SPAN_KIND_CONSUMER)")
        #expect(validateSpans.first?.attributes["messaging.system"] == "kafka")
        #expect(validateSpans.first?.attributes["messaging.destination.name"] == "iot.readings.raw")

        // One record along its way: ingest → validate → process → persist, each span the parent of the next.
        let ingestBodies = protobuf.map(\.body)
        var followed = 0
        for (id, e) in enriched.sorted(by: { $0.key < $1.key }).prefix(20) {
            guard let r = raw[id], let v = valid[id] else { continue }
            let trace = spans.filter { $0.traceID == r.traceID }
            let validate = trace.first { $0.service == "streamfirst-validate" }
            let process = trace.first { $0.service == "streamfirst-process" && $0.name.hasPrefix("process ") }
            let persist = trace.first { $0.service == "streamfirst-persist" }
            #expect(validate?.parentSpanID == r.spanID && validate?.spanID == v.spanID, "validate span of \(id)")
            #expect(process?.parentSpanID == v.spanID && process?.spanID == e.spanID, "process span of \(id)")
            #expect(persist?.parentSpanID == e.spanID, "persist span of \(id)")
            #expect(persist?.attributes["streamfirst.outcome"] == "persisted")
            // The ingest span (the raw record's parent) is in a protobuf export: its trace and span id bytes.
            let traceBytes = Self.bytes(hex: r.traceID)
            let spanBytes = Self.bytes(hex: r.spanID)
            #expect(
                ingestBodies.contains {
                    $0.containsBytes(traceBytes) && $0.containsBytes(spanBytes) && $0.containsBytes(Array("streamfirst-ingest".utf8))
                },
                "the ingest span of \(id) was exported")
            followed += 1
        }
        #expect(followed == 20)
    }
}

extension Array where Element == UInt8 {
    /// Whether `needle` occurs in these bytes.
    func containsBytes(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return needle.isEmpty }
        for start in 0...(count - needle.count) where self[start] == needle[0] {
            if self[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}

/// The stateful process stage on the embedded broker: a window result carries a span that is a child
/// of the record that closed the window — its trace id is that record's, its span id new.
@Suite(.serialized) struct StatefulTracingTests {
    @Test func windowResultsContinueTheTraceOfTheRecordThatClosedThem() async throws {
        let inputs = StatefulEndToEndTests.inputs(count: 2_000, seed: 5) + StatefulEndToEndTests.flush()
        var contexts: [String: TracingTests.Parsed] = [:] // input id → its traceparent
        let messages = inputs.map { input -> KafkaProducerMessage in
            var headers = [KafkaHeader(key: RecordHeader.id, value: input.id)]
            TracingTests.tracer().startConsuming(TracingTests.message([])).inject(into: &headers)
            contexts[input.id] = TracingEndToEndTests.traceparent(
                KafkaMessage(topic: "", partition: 0, offset: 0, key: nil, value: nil, headers: headers))
            return KafkaProducerMessage(
                topic: "w.in", partition: input.partition, key: Array(input.key.utf8),
                value: StatefulEndToEndTests.value(input).serialized(), headers: headers)
        }
        let h = try await StatefulEndToEndTests.Harness()
        do {
            try h.startInstance()
            for report in await h.producer.send(messages) where report.error != nil {
                throw LocalRunError("produce failed: \(report.error.map { "\($0)" } ?? "")")
            }
            try await h.waitUntilDrained()
            let results = try await TopicReader.readToEnd(
                topic: "w.out", kafka: KafkaConfiguration(bootstrapServers: h.broker.bootstrapServers))
            #expect(results.count > 50)
            let inputTraces = Set(contexts.values.map(\.traceID))
            let inputSpans = Set(contexts.values.map(\.spanID))
            var resultSpans = Set<String>()
            for r in results {
                guard let p = TracingEndToEndTests.traceparent(r) else {
                    Issue.record("result \(TracingEndToEndTests.string(r, RecordHeader.id) ?? "?") has no traceparent")
                    continue
                }
                #expect(inputTraces.contains(p.traceID), "a result continues the trace of an input record")
                #expect(!inputSpans.contains(p.spanID), "with a span of its own")
                resultSpans.insert(p.spanID)
            }
            #expect(resultSpans.count == results.count, "one span per result")
        } catch {
            Issue.record("\(error)\n\(h.logs())")
        }
        await h.stop()
    }
}
