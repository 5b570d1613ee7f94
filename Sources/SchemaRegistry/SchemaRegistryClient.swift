import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import StreamCore
import Synchronization

/// A schema as a registry holds it.
public struct RegisteredSchema: Sendable, Hashable {
    /// `AVRO`, `PROTOBUF` or `JSON` (a registry leaves it out for Avro).
    public var type: String
    /// The schema's text (Avro: its JSON; Protobuf: the `.proto` source; JSON Schema: its JSON).
    public var text: String
    public var references: [Reference]

    public struct Reference: Sendable, Hashable {
        public var name: String
        public var subject: String
        public var version: Int

        public init(name: String, subject: String, version: Int) {
            self.name = name
            self.subject = subject
            self.version = version
        }
    }

    public init(type: String = "AVRO", text: String, references: [Reference] = []) {
        self.type = type
        self.text = text
        self.references = references
    }
}

/// A subject's version: its number, the schema's id and the schema.
public struct SubjectVersion: Sendable, Hashable {
    public var subject: String
    public var version: Int
    public var id: Int32
    public var schema: RegisteredSchema
}

/// What went wrong talking to a registry: its own error (`error_code` and message, e.g. 40401
/// "Subject not found", 409 incompatible), or no answer at all.
public struct SchemaRegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The registry's `error_code` (HTTP status × 100 + detail, or the status), nil when it did not answer.
    public var code: Int?
    public var message: String
    public var description: String { code.map { "schema registry error \($0): \(message)" } ?? "schema registry: \(message)" }

    public init(code: Int?, message: String) {
        self.code = code
        self.message = message
    }

    /// A registry that did not answer (down, unreachable, timed out): worth retrying.
    public var isUnavailable: Bool { code == nil || (code ?? 0) / 100 >= 500 || (code ?? 0) >= 50000 }
}

/// A client of the Confluent Schema Registry REST API (subjects, versions, ids, compatibility), on
/// AsyncHTTPClient. Schemas by id are cached for the life of the client: an id never changes its
/// schema, so after the first record of an id the hot path never waits on HTTP.
public final class SchemaRegistryClient: Sendable {
    public let baseURL: String
    let authorization: String?
    let timeout: TimeAmount
    let client: HTTPClient
    private let byID = Mutex<[Int32: RegisteredSchema]>([:])

    /// `url` is the registry's base URL (`http://registry:8081`); `username` and `password` give
    /// basic authentication (Confluent Cloud: the API key and secret).
    public init(url: String, username: String? = nil, password: String? = nil, timeout: Duration = .seconds(10)) {
        self.baseURL = url.hasSuffix("/") ? String(url.dropLast()) : url
        if let username {
            let token = Data("\(username):\(password ?? "")".utf8).base64EncodedString()
            self.authorization = "Basic \(token)"
        } else {
            self.authorization = nil
        }
        self.timeout = .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        self.client = HTTPClient.shared
    }

    /// The schema registered under `id` (cached).
    public func schema(id: Int32) async throws(SchemaRegistryError) -> RegisteredSchema {
        if let cached = byID.withLock({ $0[id] }) { return cached }
        let object = try await request(.GET, "/schemas/ids/\(id)")
        let schema = try Self.registeredSchema(object)
        byID.withLock { $0[id] = schema }
        return schema
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id.
    public func register(subject: String, schema: RegisteredSchema) async throws(SchemaRegistryError) -> Int32 {
        let object = try await request(.POST, "/subjects/\(Self.escape(subject))/versions", body: Self.body(schema))
        guard case .integer(let id)? = object["id"], let id32 = Int32(exactly: id) else {
            throw SchemaRegistryError(code: nil, message: "the registry's answer has no schema id: \(object.jsonString.prefix(200))")
        }
        byID.withLock { $0[id32] = schema }
        return id32
    }

    /// The latest version of `subject`.
    public func latest(subject: String) async throws(SchemaRegistryError) -> SubjectVersion {
        try Self.subjectVersion(try await request(.GET, "/subjects/\(Self.escape(subject))/versions/latest"))
    }

    /// Version `version` of `subject`.
    public func version(_ version: Int, of subject: String) async throws(SchemaRegistryError) -> SubjectVersion {
        try Self.subjectVersion(try await request(.GET, "/subjects/\(Self.escape(subject))/versions/\(version)"))
    }

    /// The subjects the registry knows.
    public func subjects() async throws(SchemaRegistryError) -> [String] {
        guard case .array(let items) = try await request(.GET, "/subjects") else { return [] }
        return items.compactMap(\.stringValue)
    }

    /// Sets the compatibility level (`BACKWARD`, `FORWARD`, `FULL`, their `_TRANSITIVE` forms, or
    /// `NONE`) of `subject`, or the registry's default when `subject` is nil.
    public func setCompatibility(_ level: String, subject: String? = nil) async throws(SchemaRegistryError) {
        _ = try await request(.PUT, subject.map { "/config/\(Self.escape($0))" } ?? "/config", body: ["compatibility": .string(level)])
    }

    /// Sends a request and returns its JSON answer, or the registry's error.
    func request(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil) async throws(SchemaRegistryError) -> JSONValue {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Accept", value: "application/vnd.schemaregistry.v1+json, application/json")
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/vnd.schemaregistry.v1+json")
            request.body = .bytes(ByteBuffer(bytes: body.serialized()))
        }
        let status: Int
        let bytes: ByteBuffer
        do {
            let response = try await client.execute(request, timeout: timeout)
            status = Int(response.status.code)
            bytes = try await response.body.collect(upTo: 8 << 20)
        } catch {
            throw SchemaRegistryError(code: nil, message: "\(method) \(baseURL)\(path): \(error)")
        }
        let value = try? JSONValue.parse(Array(buffer: bytes))
        guard (200..<300).contains(status) else {
            let code = value?["error_code"].flatMap { $0.int64Value }.map { Int($0) } ?? status
            let message = value?["message"]?.stringValue ?? String(buffer: bytes).prefix(200).description
            throw SchemaRegistryError(code: code, message: message)
        }
        guard let value else {
            throw SchemaRegistryError(code: nil, message: "\(method) \(path): the answer is not JSON")
        }
        return value
    }

    static func escape(_ subject: String) -> String {
        subject.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? subject
    }

    static func body(_ schema: RegisteredSchema) -> JSONValue {
        var o: [String: JSONValue] = ["schema": .string(schema.text)]
        if schema.type != "AVRO" { o["schemaType"] = .string(schema.type) }
        if !schema.references.isEmpty {
            o["references"] = .array(
                schema.references.map {
                    ["name": .string($0.name), "subject": .string($0.subject), "version": .integer(Int64($0.version))]
                })
        }
        return .object(o)
    }

    static func registeredSchema(_ o: JSONValue) throws(SchemaRegistryError) -> RegisteredSchema {
        guard let text = o["schema"]?.stringValue else {
            throw SchemaRegistryError(code: nil, message: "the registry's answer has no schema: \(o.jsonString.prefix(200))")
        }
        var references: [RegisteredSchema.Reference] = []
        if case .array(let list)? = o["references"] {
            for r in list {
                guard let name = r["name"]?.stringValue, let subject = r["subject"]?.stringValue, let version = r["version"]?.int64Value
                else { continue }
                references.append(.init(name: name, subject: subject, version: Int(version)))
            }
        }
        return RegisteredSchema(type: o["schemaType"]?.stringValue ?? "AVRO", text: text, references: references)
    }

    static func subjectVersion(_ o: JSONValue) throws(SchemaRegistryError) -> SubjectVersion {
        guard let subject = o["subject"]?.stringValue, let version = o["version"]?.int64Value, let id = o["id"]?.int64Value,
            let id32 = Int32(exactly: id)
        else {
            throw SchemaRegistryError(code: nil, message: "the registry's answer is not a subject version: \(o.jsonString.prefix(200))")
        }
        return SubjectVersion(subject: subject, version: Int(version), id: id32, schema: try registeredSchema(o))
    }
}
