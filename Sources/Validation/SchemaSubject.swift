import Config
import Foundation
import Processing
import StreamCore

/// A versioned schema: `schemas/<subject>/v1.json`, `v2.json`, … and `subject.yaml` (compatibility
/// mode, where a record says its version, migrations between versions). See docs/SCHEMAS.md.
///
/// Records carry their version in the `sf.schema.version` header or in a field (`version_field`);
/// records without one are taken to be `default_version` (the latest unless set). A record of an
/// older version is upcast through the declared migrations (v1 → v2 → … → latest) and then validated
/// against the latest version; a version the subject does not know is refused, never guessed.
public struct SchemaSubject: Sendable {
    public enum Compatibility: String, Sendable, CaseIterable {
        case none = "NONE"
        case backward = "BACKWARD"
        case backwardTransitive = "BACKWARD_TRANSITIVE"
        case forward = "FORWARD"
        case forwardTransitive = "FORWARD_TRANSITIVE"
        case full = "FULL"
        case fullTransitive = "FULL_TRANSITIVE"

        var backward: Bool { [.backward, .backwardTransitive, .full, .fullTransitive].contains(self) }
        var forward: Bool { [.forward, .forwardTransitive, .full, .fullTransitive].contains(self) }
        var transitive: Bool { [.backwardTransitive, .forwardTransitive, .fullTransitive].contains(self) }
    }

    /// The header a record's schema version travels in.
    public static let versionHeader = "sf.schema.version"

    public let name: String
    public let directory: String
    /// Version → compiled schema, and its document.
    public let schemas: [Int: JSONSchema]
    public let documents: [Int: JSONValue]
    public let latest: Int
    public let compatibility: Compatibility
    public let versionField: String?
    public let defaultVersion: Int
    /// Migration from version v to v + 1, keyed by v (absent: the record passes unchanged).
    let migrations: [Int: StepProcessor]
    /// The same migrations as field operations, for the structural compatibility check.
    let migrationEdits: [Int: [Edit]]

    enum Edit: Sendable {
        case rename([String], [String])
        case drop([String])
        case keep([[String]])
        case set([String])
    }

    /// Whether `schemas/<name>` is a subject directory (not a single schema file).
    public static func exists(name: String, in schemasDirectory: String) -> Bool {
        var isDirectory: ObjCBool = false
        let path = URL(fileURLWithPath: schemasDirectory).appendingPathComponent(name).path
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// Loads `<schemasDirectory>/<name>/`: every `v<N>.json`, and `subject.yaml` if present. Flat
    /// `*.json` files of `schemasDirectory` are available to `$ref`s of every version.
    public static func load(
        name: String, schemasDirectory: String, formatAssertion: Bool = false, environment: [String: String] = [:]
    )
        throws(ConfigError) -> SchemaSubject
    {
        let dir = URL(fileURLWithPath: schemasDirectory).appendingPathComponent(name).standardizedFileURL
        let subjectFile = dir.appendingPathComponent("subject.yaml").path
        func fail(_ message: String) -> ConfigError { ConfigError(file: dir.path, line: nil, path: "", message: message) }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        var documents: [Int: JSONValue] = [:]
        var schemas: [Int: JSONSchema] = [:]
        for file in names.sorted() where file.hasSuffix(".json") {
            guard file.hasPrefix("v"), let v = Int(file.dropFirst().dropLast(".json".count)), v >= 1 else {
                throw fail("\(file): version files are named v1.json, v2.json, …")
            }
            let path = dir.appendingPathComponent(file).path
            do {
                let registry = try SchemaRegistry.load(directory: schemasDirectory, formatAssertion: formatAssertion)
                guard let data = FileManager.default.contents(atPath: path) else { throw SchemaError("cannot read it") }
                let doc = try JSONValue.parse([UInt8](data))
                schemas[v] = try JSONSchema(doc, baseURI: "file://" + path, registry: registry)
                documents[v] = doc
            } catch let e as SchemaError {
                throw ConfigError(file: path, line: nil, path: "", message: e.description)
            } catch {
                throw ConfigError(file: path, line: nil, path: "", message: "\(error)")
            }
        }
        guard let latest = documents.keys.max() else { throw fail("no version files (v1.json, v2.json, …) in the subject directory") }
        for v in 1...latest where documents[v] == nil {
            throw fail("v\(v).json is missing: versions must be 1…\(latest) without gaps")
        }

        var compatibility = Compatibility.backward
        var versionField: String?
        var defaultVersion = latest
        var migrations: [Int: StepProcessor] = [:]
        var edits: [Int: [Edit]] = [:]
        if FileManager.default.fileExists(atPath: subjectFile) {
            let root = try ConfigNode.load(file: subjectFile, environment: environment)
            let m = try root.mapping()
            let modes = Compatibility.allCases.map(\.rawValue)
            compatibility = Compatibility(rawValue: try m.choice("compatibility", modes, default: "BACKWARD")) ?? .backward
            versionField = try m.string("version_field")
            if let d = m.optional("default_version") { defaultVersion = try d.int(in: 1...latest) }
            if let mig = m.optional("migrations") {
                let mm = try mig.mapping()
                for key in mm.keys {
                    let node = try mm.required(key)
                    guard let from = Int(key), (1..<latest).contains(from) else {
                        throw node.error(
                            "migrations are keyed by the version they start from: 1…\(latest - 1) (each goes to the next version)")
                    }
                    edits[from] = try Self.edits(node)
                    migrations[from] = try StepProcessor(steps: node, baseDirectory: dir.path)
                }
                try mm.finish()
            }
            try m.finish()
        }
        return SchemaSubject(
            name: name, directory: dir.path, schemas: schemas, documents: documents, latest: latest, compatibility: compatibility,
            versionField: versionField, defaultVersion: defaultVersion, migrations: migrations, migrationEdits: edits)
    }

    /// The field operations of a migration; only set, rename, drop and keep are allowed there.
    static func edits(_ node: ConfigNode) throws(ConfigError) -> [Edit] {
        var out: [Edit] = []
        for item in try node.sequence() {
            let m = try item.mapping()
            guard let kind = m.keys.first else { continue }
            let body = try m.required(kind)
            switch kind {
            case "rename":
                let pairs = try body.mapping()
                for old in pairs.keys { out.append(.rename(path(old), path(try pairs.required(old).string()))) }
                pairs.markUsed(pairs.keys)
            case "drop": out += try body.stringList().map { .drop(path($0)) }
            case "keep": out.append(.keep(try body.stringList().map(path)))
            case "set":
                let fields = try body.mapping()
                out += fields.keys.map { .set(path($0)) }
                fields.markUsed(fields.keys)
            default:
                throw item.error("a migration may only set, rename, drop and keep fields ('\(kind)' would change which records exist)")
            }
            m.markUsed(m.keys)
        }
        return out
    }

    static func path(_ s: String) -> [String] { s.split(separator: ".").map(String.init) }

    /// The version a record declares (header first, then `version_field`), or `defaultVersion`.
    /// Nil when it declares something that is not a positive integer.
    public func version(of value: JSONValue, header: String?) -> Int? {
        if let header { return Int(header).flatMap { $0 >= 1 ? $0 : nil } }
        if let versionField, let v = value[versionField], v != .null {
            return v.int64Value.flatMap { $0 >= 1 ? Int($0) : nil }
        }
        return defaultVersion
    }

    /// `value` (of `version`) brought to the latest version through the migrations.
    public func upcast(_ value: JSONValue, from version: Int, context: RecordContext) throws(ProcessingError) -> JSONValue {
        try upcast(value, from: version, to: latest, context: context)
    }

    func upcast(_ value: JSONValue, from version: Int, to target: Int, context: RecordContext) throws(ProcessingError) -> JSONValue {
        var v = value
        var at = version
        while at < target {
            if let migration = migrations[at] {
                let out = try migration.process(v, context: context)
                guard out.count == 1 else {
                    throw ProcessingError(
                        step: "migrations.\(at)", errorClass: .upcastFailed, message: "the migration from v\(at) did not yield one record")
                }
                v = out[0].value
            }
            at += 1
        }
        // The version field, where records carry one, names the version they now have.
        if let versionField, value[versionField] != nil, case .object(var o) = v {
            o[versionField] = .integer(Int64(target))
            v = .object(o)
        }
        return v
    }

    // MARK: - Compatibility

    /// Every rule a version breaks under the subject's compatibility mode, as readable lines
    /// ("v3 → v2 (FORWARD): /properties/total: type number is no longer accepted …"). Empty: all good.
    public func compatibilityProblems() -> [String] {
        guard compatibility != .none, latest > 1 else { return [] }
        var out: [String] = []
        for new in 2...latest {
            let olds = compatibility.transitive ? Array(1..<new) : [new - 1]
            for old in olds {
                guard let newDoc = documents[new], let oldDoc = documents[old] else { continue }
                if compatibility.backward {
                    // New readers, old data: old data upcast through the migrations must fit the new schema.
                    var writer = oldDoc
                    for step in old..<new { writer = Self.apply(migrationEdits[step] ?? [], to: writer) }
                    if let versionField, Self.property(writer, [versionField]) != nil {
                        writer = Self.apply([.set([versionField])], to: writer) // upcasting rewrites it
                    }
                    for p in SchemaCompatibility.problems(reader: newDoc, writer: writer) {
                        out.append(
                            "v\(old) → v\(new) (BACKWARD: new readers, old "
                                + "records\(new - old > 1 || migrationEdits[old] != nil ? " after migration" : "")): \(p)"
                        )
                    }
                    out += exampleProblems(from: old, to: new)
                }
                if compatibility.forward {
                    for p in SchemaCompatibility.problems(reader: oldDoc, writer: newDoc) {
                        out.append("v\(new) → v\(old) (FORWARD: old readers, new records): \(p)")
                    }
                }
            }
        }
        return out
    }

    /// The `examples` of version `old`, upcast to `new`, must be valid at `new`.
    func exampleProblems(from old: Int, to new: Int) -> [String] {
        guard let examples = documents[old]?["examples"]?.arrayValue, let oldSchema = schemas[old], let newSchema = schemas[new] else {
            return []
        }
        var out: [String] = []
        for (i, example) in examples.enumerated() {
            if !oldSchema.isValid(example) {
                out.append("v\(old) example \(i) is not valid under v\(old) itself")
                continue
            }
            let v: JSONValue
            do {
                v = try upcast(example, from: old, to: new, context: .none)
            } catch {
                out.append("v\(old) example \(i): the migration fails: \(error)")
                continue
            }
            let violations = newSchema.validate(v)
            if !violations.isEmpty {
                out.append("v\(old) example \(i) upcast to v\(new) is invalid: \(violations.map(\.description).joined(separator: "; "))")
            }
        }
        return out
    }

    /// A writer schema after a migration's field operations (for the structural check).
    static func apply(_ edits: [Edit], to schema: JSONValue) -> JSONValue {
        var s = schema
        for edit in edits {
            switch edit {
            case .rename(let from, let to):
                let moved = property(s, from)
                s = removing(s, from)
                if let moved { s = setting(s, to, moved.schema, required: moved.required) }
            case .drop(let p):
                s = removing(s, p)
            case .keep(let paths):
                var kept = JSONValue.object(["type": "object", "additionalProperties": false])
                for p in paths { if let found = property(s, p) { kept = setting(kept, p, found.schema, required: found.required) } }
                s = kept
            case .set(let p):
                s = setting(s, p, [SchemaCompatibility.computedMarker: true], required: true)
            }
        }
        return s
    }

    static func property(_ s: JSONValue, _ path: [String]) -> (schema: JSONValue, required: Bool)? {
        guard let first = path.first, let props = s["properties"]?.objectValue, let child = props[first] else { return nil }
        if path.count == 1 {
            let required = s["required"]?.arrayValue?.contains(.string(first)) ?? false
            return (child, required)
        }
        return property(child, Array(path.dropFirst()))
    }

    static func removing(_ s: JSONValue, _ path: [String]) -> JSONValue {
        guard let first = path.first, case .object(var o) = s else { return s }
        var props = o["properties"]?.objectValue ?? [:]
        if path.count == 1 {
            props[first] = nil
            o["properties"] = .object(props)
            if let req = o["required"]?.arrayValue { o["required"] = .array(req.filter { $0 != .string(first) }) }
        } else if let child = props[first] {
            props[first] = removing(child, Array(path.dropFirst()))
            o["properties"] = .object(props)
        }
        return .object(o)
    }

    static func setting(_ s: JSONValue, _ path: [String], _ value: JSONValue, required: Bool) -> JSONValue {
        guard let first = path.first else { return s }
        var o = s.objectValue ?? [:]
        var props = o["properties"]?.objectValue ?? [:]
        if path.count == 1 {
            props[first] = value
            if required {
                var req = o["required"]?.arrayValue ?? []
                if !req.contains(.string(first)) { req.append(.string(first)) }
                o["required"] = .array(req)
            }
        } else {
            props[first] = setting(props[first] ?? ["type": "object"], Array(path.dropFirst()), value, required: required)
        }
        o["properties"] = .object(props)
        return .object(o)
    }
}
