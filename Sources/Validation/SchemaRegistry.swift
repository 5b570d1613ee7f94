import Foundation
import StreamCore
import Synchronization

/// Schema documents by URI, for `$ref` resolution across files, plus compiled regexes.
///
/// Every registered document is indexed: each embedded `$id` becomes a resource of its own, and
/// `$anchor` / `$dynamicAnchor` names become `resource#name`.
public final class SchemaRegistry: @unchecked Sendable {
    // @unchecked: all mutable state is behind `lock`.
    private let lock = NSLock()
    /// Resource URI (no fragment) → (schema, its base URI).
    private var resources: [String: JSONValue] = [:]
    /// "uri#anchor" → schema.
    private var anchors: [String: JSONValue] = [:]
    private var dynamicAnchors: Set<String> = []
    /// Short names ("reading" for reading.json) → resource URI.
    private var names: [String: String] = [:]
    /// Retrieval URI → the `$id` of the document registered under it (when they differ).
    private var aliases: [String: String] = [:]
    private var regexes: [String: CompiledRegex?] = [:]
    /// Compiled `$ref` / `$dynamicRef` targets by the absolute URI they were reached through.
    private var compiled: [String: SchemaNode] = [:]
    /// Bumped by every ``register(_:uri:)``: a schema node's cached `$ref` target is only used while
    /// this is the generation it was resolved in (a new document can change what a reference means).
    let generation = Atomic<Int>(0)
    /// Whether `format` asserts (2020-12 default: it only annotates).
    public let formatAssertion: Bool

    public init(formatAssertion: Bool = false) {
        self.formatAssertion = formatAssertion
    }

    /// Adds a document under `uri` (and under its own `$id` and every embedded one).
    public func register(_ document: JSONValue, uri: String) throws(SchemaError) {
        lock.lock()
        defer { lock.unlock() }
        let retrieval = URIs.stripFragment(uri)
        compiled.removeAll() // a new document can change what a reference resolves to
        generation.add(1, ordering: .releasing)
        index(document, base: retrieval, isRoot: true)
        if let id = document["$id"]?.stringValue {
            let canonical = URIs.stripFragment(URIs.resolve(id, against: retrieval))
            if canonical != retrieval { aliases[retrieval] = canonical }
        }
    }

    /// Gives a registered resource a short name for ``schema(named:)``.
    public func name(_ name: String, uri: String) {
        lock.withLock { names[name] = URIs.stripFragment(uri) }
    }

    private func index(_ schema: JSONValue, base: String, isRoot: Bool) {
        guard case .object(let o) = schema else { return }
        var base = base
        if let id = o["$id"]?.stringValue {
            base = URIs.stripFragment(URIs.resolve(id, against: base))
            resources[base] = schema
        } else if isRoot {
            resources[base] = schema
        }
        if let a = o["$anchor"]?.stringValue { anchors["\(base)#\(a)"] = schema }
        if let a = o["$dynamicAnchor"]?.stringValue {
            anchors["\(base)#\(a)"] = schema
            dynamicAnchors.insert("\(base)#\(a)")
        }
        for (k, v) in o {
            switch k {
            case "enum", "const", "examples", "default": continue // data, not schemas
            case "properties", "patternProperties", "$defs", "definitions", "dependentSchemas":
                for (_, s) in v.objectValue ?? [:] { index(s, base: base, isRoot: false) }
            case "prefixItems", "allOf", "anyOf", "oneOf":
                for s in v.arrayValue ?? [] { index(s, base: base, isRoot: false) }
            case "items", "additionalProperties", "contains", "propertyNames", "not", "if", "then", "else",
                "unevaluatedItems", "unevaluatedProperties":
                if case .array(let a) = v {
                    for item in a { index(item, base: base, isRoot: false) }
                } else {
                    index(v, base: base, isRoot: false)
                }
            default: continue
            }
        }
    }

    /// Resolves a `$ref` against `base`: the target schema and its base URI.
    func resolve(_ ref: String, base: String) -> (JSONValue, String)? {
        let absolute = URIs.resolve(ref, against: base)
        let (named, fragment) = URIs.split(absolute)
        return lock.withLock { () -> (JSONValue, String)? in
            let resource = aliases[named] ?? named
            if fragment.isEmpty {
                guard let doc = resources[resource] else { return nil }
                return (doc, resource)
            }
            if fragment.hasPrefix("/") {
                guard let doc = resources[resource], let target = Self.pointer(doc, fragment) else { return nil }
                return (target, Self.baseOf(target, within: doc, fragment: fragment, resource: resource))
            }
            guard let target = anchors["\(resource)#\(fragment)"] else { return nil }
            return (target, resource)
        }
    }

    /// `$dynamicRef`: resolves like `$ref`; if the target is a `$dynamicAnchor`, the outermost
    /// resource in the dynamic scope that has the same dynamic anchor wins.
    /// Returns the target, its base URI and the absolute URI of the schema chosen.
    func resolveDynamic(_ ref: String, base: String, dynamicScope: [String]) -> (JSONValue, String, String)? {
        guard let initial = resolve(ref, base: base) else { return nil }
        let absolute = URIs.resolve(ref, against: base)
        let (resource, fragment) = URIs.split(absolute)
        let isDynamic = lock.withLock { dynamicAnchors.contains("\(resource)#\(fragment)") }
        guard !fragment.isEmpty, !fragment.hasPrefix("/"), isDynamic else { return (initial.0, initial.1, absolute) }
        for scope in dynamicScope {
            let key = "\(scope)#\(fragment)"
            if let target = lock.withLock({ dynamicAnchors.contains(key) ? anchors[key] : nil }) {
                return (target, scope, key)
            }
        }
        return (initial.0, initial.1, absolute)
    }

    /// The compiled target of a `$ref` (compiled once, then shared by every schema that reaches it
    /// through the same absolute URI).
    func compiledTarget(of ref: String, base: String) -> SchemaNode? {
        let absolute = URIs.resolve(ref, against: base)
        if let hit = lock.withLock({ compiled[absolute] }) { return hit }
        guard let (target, targetBase) = resolve(ref, base: base) else { return nil }
        return remember(SchemaNode(target, base: targetBase, idApplied: true, registry: self), as: absolute)
    }

    /// The compiled target of a `$dynamicRef` in `dynamicScope` (resolved on every use: the scope
    /// decides; the compiled schema is shared).
    func compiledDynamicTarget(of ref: String, base: String, dynamicScope: [String]) -> SchemaNode? {
        guard let (target, targetBase, key) = resolveDynamic(ref, base: base, dynamicScope: dynamicScope) else { return nil }
        if let hit = lock.withLock({ compiled[key] }) { return hit }
        return remember(SchemaNode(target, base: targetBase, idApplied: true, registry: self), as: key)
    }

    /// Compiled outside the lock (compiling takes it for regexes); the first one stored wins.
    private func remember(_ node: SchemaNode, as key: String) -> SchemaNode {
        lock.withLock {
            if let existing = compiled[key] { return existing }
            compiled[key] = node
            return node
        }
    }

    /// JSON Pointer into a document (fragment form, percent-decoded).
    static func pointer(_ doc: JSONValue, _ fragment: String) -> JSONValue? {
        var current = doc
        let decoded = fragment.removingPercentEncoding ?? fragment
        for raw in decoded.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
            let token = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            switch current {
            case .object(let o):
                guard let next = o[token] else { return nil }
                current = next
            case .array(let a):
                guard let i = Int(token), a.indices.contains(i) else { return nil }
                current = a[i]
            default: return nil
            }
        }
        return current
    }

    /// The base URI in effect at a pointer target: the innermost `$id` on the way.
    static func baseOf(_ target: JSONValue, within doc: JSONValue, fragment: String, resource: String) -> String {
        var base = resource
        var current = doc
        let decoded = fragment.removingPercentEncoding ?? fragment
        for raw in decoded.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
            let token = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            switch current {
            case .object(let o): current = o[token] ?? .null
            case .array(let a): current = Int(token).flatMap { a.indices.contains($0) ? a[$0] : nil } ?? .null
            default: return base
            }
            // Including the target's own $id: the validator enters it with its base already applied.
            if case .object(let o) = current, let id = o["$id"]?.stringValue {
                base = URIs.stripFragment(URIs.resolve(id, against: base))
            }
        }
        return base
    }

    /// A compiled regex (cached); nil for a pattern ICU cannot compile.
    func regex(_ pattern: String) -> CompiledRegex? {
        if let cached = lock.withLock({ regexes[pattern] }) { return cached }
        let compiled = CompiledRegex(pattern)
        lock.withLock { regexes[pattern] = compiled }
        return compiled
    }

    /// Checks a schema before use: every `$ref` resolves and every pattern compiles.
    func check(_ schema: JSONValue, base: String) throws(SchemaError) {
        var problems: [String] = []
        func walk(_ s: JSONValue, _ base: String, _ pointer: String) {
            guard case .object(let o) = s else { return }
            var base = base
            // `base` already includes the root's own $id.
            if !pointer.isEmpty, let id = o["$id"]?.stringValue { base = URIs.stripFragment(URIs.resolve(id, against: base)) }
            if let ref = o["$ref"]?.stringValue, resolve(ref, base: base) == nil {
                problems.append("\(pointer.isEmpty ? "/" : pointer): $ref '\(ref)' does not resolve")
            }
            if let p = o["pattern"]?.stringValue, regex(p) == nil {
                problems.append("\(pointer): pattern '\(p)' is not a valid regular expression")
            }
            for (k, v) in o where !["enum", "const", "examples", "default"].contains(k) {
                switch v {
                case .object(let m) where ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"].contains(k):
                    for (name, sub) in m { walk(sub, base, "\(pointer)/\(k)/\(name)") }
                case .array(let a) where ["prefixItems", "allOf", "anyOf", "oneOf"].contains(k):
                    for (i, sub) in a.enumerated() { walk(sub, base, "\(pointer)/\(k)/\(i)") }
                case .object:
                    walk(v, base, "\(pointer)/\(k)")
                default: continue
                }
            }
        }
        walk(schema, base, "")
        if !problems.isEmpty { throw SchemaError(problems.joined(separator: "; ")) }
    }

    /// Loads every `*.json` file of a directory. Each is registered under `file://<path>` and its
    /// `$id`, and named by its file name without `.json`.
    public static func load(directory: String, formatAssertion: Bool = false) throws(SchemaError) -> SchemaRegistry {
        let registry = SchemaRegistry(formatAssertion: formatAssertion)
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }.sorted()
        } catch {
            throw SchemaError("cannot read the schemas directory \(directory)")
        }
        let dirURL = URL(fileURLWithPath: directory).standardizedFileURL
        var documents: [(String, JSONValue)] = []
        for file in files {
            let path = dirURL.appendingPathComponent(file).path
            guard let data = FileManager.default.contents(atPath: path) else { throw SchemaError("\(path): cannot read it") }
            let doc: JSONValue
            do {
                doc = try JSONValue.parse([UInt8](data))
            } catch {
                throw SchemaError("\(path): \(error)")
            }
            let uri = "file://" + path
            try registry.register(doc, uri: uri)
            let name = String(file.dropLast(".json".count))
            let id = doc["$id"]?.stringValue.map { URIs.stripFragment(URIs.resolve($0, against: uri)) } ?? uri
            registry.name(name, uri: id)
            documents.append((path, doc))
        }
        for (path, doc) in documents {
            let uri = doc["$id"]?.stringValue.map { URIs.stripFragment(URIs.resolve($0, against: "file://" + path)) } ?? "file://" + path
            do {
                try registry.check(doc, base: uri)
            } catch {
                throw SchemaError("\(path): \(error.description)")
            }
        }
        return registry
    }

    /// The schema a short name (file name without `.json`) stands for.
    public func schema(named name: String) throws(SchemaError) -> JSONSchema {
        let found: (String, JSONValue)? = lock.withLock {
            guard let uri = names[name], let doc = resources[uri] else { return nil }
            return (uri, doc)
        }
        guard let (uri, doc) = found else {
            let known = lock.withLock { names.keys.sorted() }
            throw SchemaError("no schema named '\(name)' (known: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
        }
        return JSONSchema(resolved: doc, base: uri, registry: self)
    }
}

/// An ICU regular expression (ECMA-262 close enough for JSON Schema patterns), searched, not anchored.
final class CompiledRegex: @unchecked Sendable {
    // @unchecked: NSRegularExpression is immutable and documented thread-safe.
    let regex: NSRegularExpression

    init?(_ pattern: String) {
        guard let r = try? NSRegularExpression(pattern: pattern) else { return nil }
        regex = r
    }

    func matches(_ s: String) -> Bool {
        regex.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
    }
}

/// RFC 3986 reference resolution, enough for schema ids (http(s), file and urn bases).
enum URIs {
    static func stripFragment(_ uri: String) -> String {
        guard let hash = uri.firstIndex(of: "#") else { return uri }
        return String(uri[..<hash])
    }

    static func split(_ uri: String) -> (String, String) {
        guard let hash = uri.firstIndex(of: "#") else { return (uri, "") }
        return (String(uri[..<hash]), String(uri[uri.index(after: hash)...]))
    }

    static func resolve(_ ref: String, against base: String) -> String {
        if ref.isEmpty { return base }
        if ref.hasPrefix("#") { return stripFragment(base) + ref }
        if let colon = ref.firstIndex(of: ":"), ref[..<colon].allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) }),
            ref.first?.isLetter == true
        {
            return ref // absolute
        }
        let baseNoFragment = stripFragment(base)
        if let b = URL(string: baseNoFragment), b.scheme != nil, b.host != nil || baseNoFragment.hasPrefix("file:"),
            let resolved = URL(string: ref, relativeTo: b)
        {
            return resolved.absoluteString
        }
        // A base without hierarchy (urn:…): replace everything after the last '/' or ':'.
        if let cut = baseNoFragment.lastIndex(where: { $0 == "/" || $0 == ":" }) {
            return String(baseNoFragment[...cut]) + ref
        }
        return ref
    }
}
