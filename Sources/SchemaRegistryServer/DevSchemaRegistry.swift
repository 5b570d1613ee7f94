import Avro
import Foundation
import Hummingbird
import Logging
import NIOCore
import SchemaRegistry
import StreamCore
import Synchronization

/// A schema registry for development (`streamfirst registry`): the part of the Confluent Schema
/// Registry REST API that serializers, deserializers and this project's client use, so records in
/// the Confluent wire format can be produced and read against the embedded broker.
///
/// - `GET /subjects`, `GET /subjects/{s}/versions`, `GET /subjects/{s}/versions/{n|latest}`
/// - `POST /subjects/{s}/versions` (register; the same schema gets the same id in every subject,
///   and registering it again under a subject returns its existing version)
/// - `POST /subjects/{s}` (look a schema up), `GET /schemas/ids/{id}`, `GET /schemas/types`
/// - `GET` / `PUT /config` and `/config/{s}`: compatibility `BACKWARD` (the default), `FORWARD`,
///   `FULL`, their `_TRANSITIVE` forms, or `NONE`. Avro schemas are checked with the Avro module's
///   schema resolution; other schema types are stored without a check.
///
/// Errors carry Confluent's `error_code`s (40401 subject not found, 40402 version not found, 40403
/// schema not found, 409 incompatible, 42201 invalid schema, 42203 invalid compatibility level).
/// Schemas live in memory and, with a ``KafkaSchemaLog``, in a compacted `_schemas` topic that
/// ``restore(from:)`` reads back at start: a registration is answered only once the topic has it.
public final class DevSchemaRegistry: Sendable {
    struct Version: Sendable {
        var version: Int
        var id: Int32
    }

    struct State: Sendable {
        var schemas: [Int32: RegisteredSchema] = [:]
        var nextID: Int32 = 1
        var subjects: [String: [Version]] = [:]
        var order: [String] = []
        var globalCompatibility = "BACKWARD"
        var compatibility: [String: String] = [:]
    }

    private let state = Mutex(State())
    private let log: KafkaSchemaLog?
    /// Registrations and settings one at a time: each is written to the log before it is answered.
    private let writes = AsyncSerial()

    /// A registry kept in memory only, or also in `log` (start it with ``restore(from:)`` then).
    public init(log: KafkaSchemaLog? = nil) {
        self.log = log
    }

    /// A registry with the schemas and settings `log` holds, which keeps writing to it.
    public static func restore(from log: KafkaSchemaLog) async throws -> DevSchemaRegistry {
        let registry = DevSchemaRegistry(log: log)
        let records = try await log.load()
        registry.state.withLock { s in
            for (key, value) in records {
                switch key["keytype"]?.stringValue {
                case "SCHEMA":
                    guard let subject = key["subject"]?.stringValue, let version = key["version"]?.int64Value, let value,
                        let id = value["id"]?.int64Value.flatMap({ Int32(exactly: $0) }), case .success(let schema) = Self.parse(value)
                    else { continue }
                    s.schemas[id] = schema
                    s.nextID = max(s.nextID, id + 1)
                    if s.subjects[subject] == nil { s.order.append(subject) }
                    var list = s.subjects[subject, default: []].filter { $0.version != Int(version) }
                    list.append(Version(version: Int(version), id: id))
                    s.subjects[subject] = list.sorted { $0.version < $1.version }
                case "CONFIG":
                    guard let level = value?["compatibilityLevel"]?.stringValue, Self.levels.contains(level) else { continue }
                    if let subject = key["subject"]?.stringValue { s.compatibility[subject] = level } else { s.globalCompatibility = level }
                default:
                    continue
                }
            }
        }
        return registry
    }

    static let levels = ["NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"]

    /// An answer: status and JSON body.
    public struct Answer: Sendable {
        public var status: Int
        public var body: JSONValue
    }

    static func error(_ status: Int, _ code: Int, _ message: String) -> Answer {
        Answer(status: status, body: ["error_code": .integer(Int64(code)), "message": .string(message)])
    }

    @Sendable static func respond(_ a: Answer) -> Response {
        Response(
            status: .init(code: a.status), headers: [.contentType: "application/vnd.schemaregistry.v1+json"],
            body: .init(byteBuffer: ByteBuffer(bytes: a.body.serialized())))
    }

    @Sendable static func body(_ request: Request) async -> JSONValue? {
        guard let buffer = try? await request.body.collect(upTo: 4 << 20) else { return nil }
        return try? JSONValue.parse(Array(buffer: buffer))
    }

    // MARK: Operations (broker-free; the HTTP routes call these)

    public func subjects() -> Answer {
        Answer(status: 200, body: .array(state.withLock { $0.order.map { .string($0) } }))
    }

    public func versions(of subject: String) -> Answer {
        state.withLock { s in
            guard let list = s.subjects[subject] else { return Self.error(404, 40401, "Subject '\(subject)' not found.") }
            return Answer(status: 200, body: .array(list.map { .integer(Int64($0.version)) }))
        }
    }

    public func version(_ version: String, of subject: String) -> Answer {
        state.withLock { s in
            guard let list = s.subjects[subject], !list.isEmpty else { return Self.error(404, 40401, "Subject '\(subject)' not found.") }
            let found: Version?
            if version == "latest" || version == "-1" {
                found = list.last
            } else if let n = Int(version) {
                found = list.first { $0.version == n }
            } else {
                return Self.error(422, 42202, "The specified version '\(version)' is not a valid version id.")
            }
            guard let v = found else { return Self.error(404, 40402, "Version \(version) not found.") }
            return Answer(status: 200, body: Self.describe(subject, v, s.schemas[v.id] ?? RegisteredSchema(text: "")))
        }
    }

    public func schema(id: Int32) -> Answer {
        state.withLock { s in
            guard let schema = s.schemas[id] else { return Self.error(404, 40403, "Schema \(id) not found") }
            var o: [String: JSONValue] = ["schema": .string(schema.text)]
            if schema.type != "AVRO" { o["schemaType"] = .string(schema.type) }
            if !schema.references.isEmpty { o["references"] = Self.references(schema) }
            return Answer(status: 200, body: .object(o))
        }
    }

    public func register(subject: String, body: JSONValue) async -> Answer {
        let schema: RegisteredSchema
        switch Self.parse(body) {
        case .failure(let e): return e.answer
        case .success(let s): schema = s
        }
        await writes.acquire()
        defer { Task { await writes.release() } }
        // Decided and applied under the lock; written to the log after, and undone if that fails.
        let decision: (answer: Answer, added: (version: Version, newSchema: Bool)?) = state.withLock { s in
            let existingID = s.schemas.first { $0.value == schema }?.key
            if let existingID, let v = s.subjects[subject]?.first(where: { $0.id == existingID }) {
                return (Answer(status: 200, body: ["id": .integer(Int64(v.id))]), nil)
            }
            let level = s.compatibility[subject] ?? s.globalCompatibility
            let earlier = (s.subjects[subject] ?? []).compactMap { s.schemas[$0.id] }
            if let problem = Self.incompatibility(schema, with: earlier, level: level) {
                return (
                    Self.error(
                        409, 409, "Schema being registered is incompatible with an earlier schema for subject \"\(subject)\": \(problem)"),
                    nil
                )
            }
            let id = existingID ?? s.nextID
            if existingID == nil {
                s.schemas[id] = schema
                s.nextID += 1
            }
            if s.subjects[subject] == nil { s.order.append(subject) }
            let version = Version(version: (s.subjects[subject]?.last?.version ?? 0) + 1, id: id)
            s.subjects[subject, default: []].append(version)
            return (Answer(status: 200, body: ["id": .integer(Int64(id))]), (version, existingID == nil))
        }
        guard let added = decision.added, let log else { return decision.answer }
        let key: JSONValue = [
            "keytype": "SCHEMA", "subject": .string(subject), "version": .integer(Int64(added.version.version)), "magic": 1,
        ]
        var value = Self.describe(subject, added.version, schema)
        if case .object(var o) = value {
            o["deleted"] = .bool(false)
            value = .object(o)
        }
        do {
            try await log.append(key: key, value: value)
        } catch {
            state.withLock { s in
                s.subjects[subject]?.removeAll { $0.version == added.version.version }
                if s.subjects[subject]?.isEmpty == true {
                    s.subjects[subject] = nil
                    s.order.removeAll { $0 == subject }
                }
                if added.newSchema {
                    s.schemas[added.version.id] = nil
                    s.nextID = added.version.id
                }
            }
            return Self.error(500, 50001, "Error while storing the schema in \(log.topic): \(error)")
        }
        return decision.answer
    }

    public func lookup(subject: String, body: JSONValue) -> Answer {
        let schema: RegisteredSchema
        switch Self.parse(body) {
        case .failure(let e): return e.answer
        case .success(let s): schema = s
        }
        return state.withLock { s in
            guard let list = s.subjects[subject] else { return Self.error(404, 40401, "Subject '\(subject)' not found.") }
            guard let id = s.schemas.first(where: { $0.value == schema })?.key, let v = list.first(where: { $0.id == id }) else {
                return Self.error(404, 40403, "Schema not found")
            }
            return Answer(status: 200, body: Self.describe(subject, v, schema))
        }
    }

    public func compatibility(subject: String?) -> Answer {
        state.withLock { s in
            if let subject {
                guard let level = s.compatibility[subject] else {
                    return Self.error(404, 40408, "Subject '\(subject)' does not have subject-level compatibility configured")
                }
                return Answer(status: 200, body: ["compatibilityLevel": .string(level)])
            }
            return Answer(status: 200, body: ["compatibilityLevel": .string(s.globalCompatibility)])
        }
    }

    public func setCompatibility(subject: String?, body: JSONValue) async -> Answer {
        guard let level = body["compatibility"]?.stringValue, Self.levels.contains(level) else {
            return Self.error(422, 42203, "Invalid compatibility level: expected one of \(Self.levels.joined(separator: ", "))")
        }
        await writes.acquire()
        defer { Task { await writes.release() } }
        if let log {
            let key: JSONValue = ["keytype": "CONFIG", "subject": subject.map { .string($0) } ?? .null, "magic": 0]
            do {
                try await log.append(key: key, value: ["compatibilityLevel": .string(level)])
            } catch {
                return Self.error(500, 50001, "Error while storing the setting in \(log.topic): \(error)")
            }
        }
        state.withLock { s in
            if let subject { s.compatibility[subject] = level } else { s.globalCompatibility = level }
        }
        return Answer(status: 200, body: ["compatibility": .string(level)])
    }

    // MARK: Helpers

    static func describe(_ subject: String, _ v: Version, _ schema: RegisteredSchema) -> JSONValue {
        var o: [String: JSONValue] = [
            "subject": .string(subject), "version": .integer(Int64(v.version)), "id": .integer(Int64(v.id)), "schema": .string(schema.text),
        ]
        if schema.type != "AVRO" { o["schemaType"] = .string(schema.type) }
        if !schema.references.isEmpty { o["references"] = references(schema) }
        return .object(o)
    }

    static func references(_ schema: RegisteredSchema) -> JSONValue {
        .array(
            schema.references.map { ["name": .string($0.name), "subject": .string($0.subject), "version": .integer(Int64($0.version))] })
    }

    /// The schema in a request body; an Avro schema is parsed (and kept in its canonical text).
    static func parse(_ body: JSONValue) -> Result<RegisteredSchema, AnswerError> {
        guard let text = body["schema"]?.stringValue else {
            return .failure(AnswerError(error(422, 42201, "Invalid schema: no \"schema\" string")))
        }
        let type = body["schemaType"]?.stringValue ?? "AVRO"
        guard ["AVRO", "PROTOBUF", "JSON"].contains(type) else {
            return .failure(AnswerError(error(422, 42201, "Invalid schema type \(type): expected AVRO, PROTOBUF or JSON")))
        }
        var references: [RegisteredSchema.Reference] = []
        if case .array(let list)? = body["references"] {
            for r in list {
                guard let name = r["name"]?.stringValue, let subject = r["subject"]?.stringValue, let version = r["version"]?.int64Value
                else {
                    return .failure(AnswerError(error(422, 42201, "Invalid schema reference: \(r.jsonString.prefix(100))")))
                }
                references.append(.init(name: name, subject: subject, version: Int(version)))
            }
        }
        var canonical = text
        if type == "AVRO" {
            do {
                let json = try JSONValue.parse(Array(text.utf8))
                _ = try AvroSchema(json)
                canonical = json.jsonString
            } catch {
                return .failure(AnswerError(Self.error(422, 42201, "Invalid schema: \(error)")))
            }
        }
        return .success(RegisteredSchema(type: type, text: canonical, references: references))
    }

    struct AnswerError: Error {
        var answer: Answer
        init(_ answer: Answer) { self.answer = answer }
    }

    /// Why `schema` may not follow `earlier` under `level`, or nil.
    static func incompatibility(_ schema: RegisteredSchema, with earlier: [RegisteredSchema], level: String) -> String? {
        guard level != "NONE", schema.type == "AVRO", let last = earlier.last else { return nil }
        let against = level.hasSuffix("_TRANSITIVE") ? earlier : [last]
        guard let new = try? AvroSchema(json: schema.text) else { return "the schema does not parse" }
        for old in against where old.type == "AVRO" {
            guard let previous = try? AvroSchema(json: old.text) else { continue }
            if level.hasPrefix("BACKWARD") || level.hasPrefix("FULL") {
                do { _ = try AvroReader(writer: previous, reader: new) } catch {
                    return "it cannot read data of an earlier version (\(error))"
                }
            }
            if level.hasPrefix("FORWARD") || level.hasPrefix("FULL") {
                do { _ = try AvroReader(writer: new, reader: previous) } catch {
                    return "an earlier version cannot read its data (\(error))"
                }
            }
        }
        return nil
    }
}

extension DevSchemaRegistry {
    /// The HTTP application serving the registry on `host:port` (0: any free port, reported to `onBound`).
    public func application(host: String, port: Int, logger: Logger, onBound: @escaping @Sendable (Int) -> Void) -> some ApplicationProtocol
    {
        let router = Router()
        let registry = self
        let respond = Self.respond
        let body = Self.body
        let unreadable = Self.error(400, 400, "The request body is not JSON")
        router.get("/subjects") { _, _ in respond(registry.subjects()) }
        router.get("/subjects/:subject/versions") { _, c in respond(registry.versions(of: c.parameters.get("subject") ?? "")) }
        router.get("/subjects/:subject/versions/:version") { _, c in
            respond(registry.version(c.parameters.get("version") ?? "", of: c.parameters.get("subject") ?? ""))
        }
        router.post("/subjects/:subject/versions") { r, c in
            guard let b = await body(r) else { return respond(unreadable) }
            return respond(await registry.register(subject: c.parameters.get("subject") ?? "", body: b))
        }
        router.post("/subjects/:subject") { r, c in
            guard let b = await body(r) else { return respond(unreadable) }
            return respond(registry.lookup(subject: c.parameters.get("subject") ?? "", body: b))
        }
        router.get("/schemas/ids/:id") { _, c in
            guard let id = c.parameters.get("id").flatMap({ Int32($0) }) else { return respond(Self.error(404, 40403, "Schema not found")) }
            return respond(registry.schema(id: id))
        }
        router.get("/schemas/types") { _, _ in respond(Answer(status: 200, body: ["AVRO", "JSON", "PROTOBUF"])) }
        router.get("/config") { _, _ in respond(registry.compatibility(subject: nil)) }
        router.put("/config") { r, _ in
            guard let b = await body(r) else { return respond(unreadable) }
            return respond(await registry.setCompatibility(subject: nil, body: b))
        }
        router.get("/config/:subject") { _, c in respond(registry.compatibility(subject: c.parameters.get("subject"))) }
        router.put("/config/:subject") { r, c in
            guard let b = await body(r) else { return respond(unreadable) }
            return respond(await registry.setCompatibility(subject: c.parameters.get("subject"), body: b))
        }
        return Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in onBound(channel.localAddress?.port ?? port) }, logger: logger)
    }

}

/// One at a time, in arrival order, across suspension points (an actor alone would interleave at
/// each `await`).
actor AsyncSerial {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty {
            busy = false
        } else {
            waiters.removeFirst().resume()
        }
    }
}
