import Foundation
import StreamCore

// JSON Schema draft 2020-12, written by hand: none of the Swift packages available here validates
// JSON Schema. The validator interprets the schema document directly (a schema is a JSONValue) with
// $ref / $dynamicRef resolution through a registry, collects every violation with its JSON Pointer,
// and tracks the annotations that unevaluatedProperties / unevaluatedItems need.

/// One way an instance fails its schema.
public struct SchemaViolation: Sendable, Equatable, CustomStringConvertible {
    /// JSON Pointer (RFC 6901) to the offending value; "" is the whole instance.
    public var instancePath: String
    /// Where the failing keyword is, relative to the schema root, e.g. `/properties/humidity_pct/maximum`.
    public var keywordLocation: String
    public var message: String

    public init(instancePath: String, keywordLocation: String, message: String) {
        self.instancePath = instancePath
        self.keywordLocation = keywordLocation
        self.message = message
    }

    public var description: String { "\(instancePath.isEmpty ? "/" : instancePath): \(message)" }
}

/// A schema that cannot be used: not JSON, an unresolvable `$ref`, a bad regex.
public struct SchemaError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A compiled schema, ready to validate instances. Thread-safe.
public final class JSONSchema: Sendable {
    let root: JSONValue
    let baseURI: String
    let registry: SchemaRegistry

    /// A schema document. `baseURI` names it for relative `$ref`s; `registry` holds the documents
    /// its `$ref`s may point to (the schema itself is added to it).
    public init(_ schema: JSONValue, baseURI: String = "urn:streamfirst:schema", registry: SchemaRegistry = SchemaRegistry())
        throws(SchemaError)
    {
        let base = (schema["$id"]?.stringValue).map { URIs.resolve($0, against: baseURI) } ?? baseURI
        try registry.register(schema, uri: base)
        self.root = schema
        self.baseURI = URIs.stripFragment(base)
        self.registry = registry
        try registry.check(schema, base: self.baseURI)
    }

    init(resolved schema: JSONValue, base: String, registry: SchemaRegistry) {
        self.root = schema
        self.baseURI = base
        self.registry = registry
    }

    /// Every violation (empty when the instance is valid).
    public func validate(_ instance: JSONValue) -> [SchemaViolation] {
        var errors: [SchemaViolation] = []
        var v = Validator(registry: registry)
        _ = v.validate(root, base: baseURI, instance: instance, path: "", keyword: "", dynamic: [baseURI], idApplied: true, errors: &errors)
        // A stable order (objects are unordered, so evaluation order varies between processes):
        // the same record always gets the same dead-letter message.
        return errors.sorted { ($0.instancePath, $0.keywordLocation, $0.message) < ($1.instancePath, $1.keywordLocation, $1.message) }
    }

    public func isValid(_ instance: JSONValue) -> Bool { validate(instance).isEmpty }
}

/// What a successful (sub)schema evaluated: for unevaluatedProperties / unevaluatedItems.
struct Evaluated {
    var properties: Set<String> = []
    var items: Set<Int> = []

    mutating func merge(_ other: Evaluated) {
        properties.formUnion(other.properties)
        items.formUnion(other.items)
    }
}

struct Validator {
    let registry: SchemaRegistry
    var depth = 0
    /// Nested evaluations allowed (schema recursion through `$ref`, or deep instances). Bounded so
    /// that validation can never exhaust a thread's stack: one level takes ~5 KB of stack, ~43 KB
    /// under AddressSanitizer (where 200 levels overflowed an 8 MB stack). Deeper input is a violation.
    static let maxDepth = 100

    /// A JSON Pointer reference token (RFC 6901): `~` becomes `~0`, `/` becomes `~1`. It runs for
    /// every property of every record validated, so a token with neither (nearly all) is returned as
    /// is and the rest is one pass over the bytes — Foundation's `replacingOccurrences` here took 55 %
    /// of a validate worker's CPU (BENCHMARKS.md, `streamfirst-bench stage`).
    static func escape(_ token: String) -> String {
        let tilde = UInt8(ascii: "~")
        let slash = UInt8(ascii: "/")
        guard token.utf8.contains(where: { $0 == tilde || $0 == slash }) else { return token }
        var out: [UInt8] = []
        out.reserveCapacity(token.utf8.count + 4)
        for b in token.utf8 {
            switch b {
            case tilde: out.append(contentsOf: [tilde, UInt8(ascii: "0")])
            case slash: out.append(contentsOf: [tilde, UInt8(ascii: "1")])
            default: out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Validates `instance` against `schema`, appending violations; returns the annotations.
    mutating func validate(
        _ schema: JSONValue, base parentBase: String, instance: JSONValue, path: String, keyword: String, dynamic: [String],
        idApplied: Bool = false, errors: inout [SchemaViolation]
    ) -> Evaluated {
        var evaluated = Evaluated()
        switch schema {
        case .bool(true): return evaluated
        case .bool(false):
            errors.append(SchemaViolation(instancePath: path, keywordLocation: keyword, message: "no value is allowed here"))
            return evaluated
        case .object: break
        default: return evaluated
        }
        depth += 1
        defer { depth -= 1 }
        if depth > Self.maxDepth {
            errors.append(SchemaViolation(instancePath: path, keywordLocation: keyword, message: "schema recursion deeper than \(Self.maxDepth) levels"))
            return evaluated
        }
        var base = parentBase
        var dynamic = dynamic
        // A schema reached through a reference (or the root) comes with its own `$id` already applied.
        if !idApplied, let id = schema["$id"]?.stringValue {
            base = URIs.stripFragment(URIs.resolve(id, against: parentBase))
            dynamic.append(base)
        }
        func fail(_ kw: String, _ message: String, at p: String? = nil) {
            errors.append(SchemaViolation(instancePath: p ?? path, keywordLocation: keyword + "/" + kw, message: message))
        }
        func sub(_ s: JSONValue, _ inst: JSONValue, _ p: String, _ kw: String, _ errs: inout [SchemaViolation]) -> Evaluated {
            validate(s, base: base, instance: inst, path: p, keyword: keyword + kw, dynamic: dynamic, errors: &errs)
        }

        // References.
        if let ref = schema["$ref"]?.stringValue {
            if let (target, targetBase) = registry.resolve(ref, base: base) {
                var d = dynamic
                if d.last != targetBase { d.append(targetBase) }
                evaluated.merge(validate(target, base: targetBase, instance: instance, path: path, keyword: keyword + "/$ref", dynamic: d, idApplied: true, errors: &errors))
            } else {
                fail("$ref", "cannot resolve $ref '\(ref)'")
            }
        }
        if let ref = schema["$dynamicRef"]?.stringValue {
            if let (target, targetBase) = registry.resolveDynamic(ref, base: base, dynamicScope: dynamic) {
                var d = dynamic
                if d.last != targetBase { d.append(targetBase) }
                evaluated.merge(validate(target, base: targetBase, instance: instance, path: path, keyword: keyword + "/$dynamicRef", dynamic: d, idApplied: true, errors: &errors))
            } else {
                fail("$dynamicRef", "cannot resolve $dynamicRef '\(ref)'")
            }
        }

        // Any instance type.
        if let t = schema["type"] {
            let names = t.arrayValue?.compactMap(\.stringValue) ?? [t.stringValue].compactMap { $0 }
            let actual = instance.typeName
            let ok = names.contains { $0 == actual || ($0 == "number" && (actual == "integer")) }
            if !ok { fail("type", "expected \(names.joined(separator: " or ")), got \(actual)") }
        }
        if let e = schema["enum"]?.arrayValue, !e.contains(where: { $0.jsonEquals(instance) }) {
            fail("enum", "\(Self.short(instance)) is not one of \(Self.short(.array(e)))")
        }
        if let c = schema["const"], !c.jsonEquals(instance) {
            fail("const", "expected \(Self.short(c)), got \(Self.short(instance))")
        }

        // Numbers.
        if let x = instance.doubleValue, instance.typeName == "integer" || instance.typeName == "number" {
            if let m = schema["multipleOf"]?.doubleValue, m > 0 {
                let isMultiple: Bool
                if let xi = instance.int64Value, let mi = schema["multipleOf"]?.int64Value, mi != 0 {
                    isMultiple = xi % mi == 0
                } else {
                    let q = x / m
                    isMultiple = q.isFinite ? abs(q - q.rounded()) < 1e-9 * max(1, abs(q)) : false
                }
                if !isMultiple { fail("multipleOf", "\(Self.short(instance)) is not a multiple of \(Self.short(schema["multipleOf"] ?? .null))") }
            }
            if let m = schema["maximum"], let limit = m.doubleValue, Self.compare(instance, m, x, limit) > 0 {
                fail("maximum", "\(Self.short(instance)) is greater than the maximum \(Self.short(m))")
            }
            if let m = schema["exclusiveMaximum"], let limit = m.doubleValue, Self.compare(instance, m, x, limit) >= 0 {
                fail("exclusiveMaximum", "\(Self.short(instance)) is not less than \(Self.short(m))")
            }
            if let m = schema["minimum"], let limit = m.doubleValue, Self.compare(instance, m, x, limit) < 0 {
                fail("minimum", "\(Self.short(instance)) is less than the minimum \(Self.short(m))")
            }
            if let m = schema["exclusiveMinimum"], let limit = m.doubleValue, Self.compare(instance, m, x, limit) <= 0 {
                fail("exclusiveMinimum", "\(Self.short(instance)) is not greater than \(Self.short(m))")
            }
        }

        // Strings.
        if case .string(let s) = instance {
            let length = s.unicodeScalars.count
            if let m = schema["maxLength"]?.int64Value, length > m { fail("maxLength", "\(length) characters, more than \(m)") }
            if let m = schema["minLength"]?.int64Value, length < m { fail("minLength", "\(length) characters, fewer than \(m)") }
            if let p = schema["pattern"]?.stringValue, let regex = registry.regex(p), !regex.matches(s) {
                fail("pattern", "\(Self.short(instance)) does not match \(p)")
            }
            if registry.formatAssertion, let f = schema["format"]?.stringValue, !Formats.check(f, s) {
                fail("format", "\(Self.short(instance)) is not a valid \(f)")
            }
        }

        // Arrays.
        if case .array(let items) = instance {
            if let m = schema["maxItems"]?.int64Value, items.count > m { fail("maxItems", "\(items.count) items, more than \(m)") }
            if let m = schema["minItems"]?.int64Value, items.count < m { fail("minItems", "\(items.count) items, fewer than \(m)") }
            if schema["uniqueItems"] == .bool(true) {
                outer: for i in items.indices {
                    for j in items.indices where j > i && items[i].jsonEquals(items[j]) {
                        fail("uniqueItems", "items \(i) and \(j) are equal")
                        break outer
                    }
                }
            }
            var prefix = 0
            if let prefixItems = schema["prefixItems"]?.arrayValue {
                for (i, s) in prefixItems.enumerated() where i < items.count {
                    _ = sub(s, items[i], path + "/\(i)", "/prefixItems/\(i)", &errors)
                    evaluated.items.insert(i)
                }
                prefix = prefixItems.count
            }
            if let itemSchema = schema["items"] {
                for i in items.indices where i >= prefix {
                    _ = sub(itemSchema, items[i], path + "/\(i)", "/items", &errors)
                    evaluated.items.insert(i)
                }
            }
            if let contains = schema["contains"] {
                var matched: [Int] = []
                for (i, item) in items.enumerated() {
                    var scratch: [SchemaViolation] = []
                    _ = sub(contains, item, path + "/\(i)", "/contains", &scratch)
                    if scratch.isEmpty { matched.append(i) }
                }
                evaluated.items.formUnion(matched)
                let minContains = schema["minContains"]?.int64Value ?? 1
                if Int64(matched.count) < minContains {
                    fail(schema["minContains"] == nil ? "contains" : "minContains", "\(matched.count) items match 'contains', at least \(minContains) must")
                }
                if let maxContains = schema["maxContains"]?.int64Value, Int64(matched.count) > maxContains {
                    fail("maxContains", "\(matched.count) items match 'contains', at most \(maxContains) may")
                }
            }
        }

        // Objects.
        if case .object(let members) = instance {
            if let m = schema["maxProperties"]?.int64Value, members.count > m { fail("maxProperties", "\(members.count) properties, more than \(m)") }
            if let m = schema["minProperties"]?.int64Value, members.count < m { fail("minProperties", "\(members.count) properties, fewer than \(m)") }
            if let required = schema["required"]?.arrayValue {
                for r in required.compactMap(\.stringValue) where members[r] == nil {
                    fail("required", "missing required property '\(r)'", at: path + "/" + Self.escape(r))
                }
            }
            if let dependent = schema["dependentRequired"]?.objectValue {
                for (k, needs) in dependent where members[k] != nil {
                    for n in needs.arrayValue?.compactMap(\.stringValue) ?? [] where members[n] == nil {
                        fail("dependentRequired/\(Self.escape(k))", "property '\(n)' is required when '\(k)' is present")
                    }
                }
            }
            var matchedByProperties: Set<String> = []
            if let props = schema["properties"]?.objectValue {
                for (k, s) in props {
                    guard let v = members[k] else { continue }
                    _ = sub(s, v, path + "/" + Self.escape(k), "/properties/" + Self.escape(k), &errors)
                    matchedByProperties.insert(k)
                }
            }
            if let patterns = schema["patternProperties"]?.objectValue {
                for (p, s) in patterns {
                    guard let regex = registry.regex(p) else { continue }
                    for (k, v) in members where regex.matches(k) {
                        _ = sub(s, v, path + "/" + Self.escape(k), "/patternProperties/" + Self.escape(p), &errors)
                        matchedByProperties.insert(k)
                    }
                }
            }
            evaluated.properties.formUnion(matchedByProperties)
            if let additional = schema["additionalProperties"] {
                for (k, v) in members where !matchedByProperties.contains(k) {
                    if additional == .bool(false) {
                        fail("additionalProperties", "property '\(k)' is not allowed", at: path + "/" + Self.escape(k))
                    } else {
                        _ = sub(additional, v, path + "/" + Self.escape(k), "/additionalProperties", &errors)
                    }
                    evaluated.properties.insert(k)
                }
            }
            if let names = schema["propertyNames"] {
                for k in members.keys {
                    var scratch: [SchemaViolation] = []
                    _ = sub(names, .string(k), path, "/propertyNames", &scratch)
                    if !scratch.isEmpty { fail("propertyNames", "property name '\(k)' is not allowed: \(scratch[0].message)") }
                }
            }
            if let dependent = schema["dependentSchemas"]?.objectValue {
                for (k, s) in dependent where members[k] != nil {
                    var errs: [SchemaViolation] = []
                    let e = sub(s, instance, path, "/dependentSchemas/" + Self.escape(k), &errs)
                    if errs.isEmpty { evaluated.merge(e) } else { errors += errs }
                }
            }
        }

        // Applicators.
        if let all = schema["allOf"]?.arrayValue {
            for (i, s) in all.enumerated() {
                var errs: [SchemaViolation] = []
                let e = sub(s, instance, path, "/allOf/\(i)", &errs)
                if errs.isEmpty { evaluated.merge(e) } else { errors += errs }
            }
        }
        if let any = schema["anyOf"]?.arrayValue {
            var matched = false
            var firstErrors: [SchemaViolation] = []
            for (i, s) in any.enumerated() {
                var errs: [SchemaViolation] = []
                let e = sub(s, instance, path, "/anyOf/\(i)", &errs)
                if errs.isEmpty {
                    matched = true
                    evaluated.merge(e)
                } else if firstErrors.isEmpty {
                    firstErrors = errs
                }
            }
            if !matched {
                fail("anyOf", "matches none of the \(any.count) alternatives" + (firstErrors.first.map { " (first: \($0.message))" } ?? ""))
            }
        }
        if let one = schema["oneOf"]?.arrayValue {
            var matches: [Int] = []
            var merged = Evaluated()
            for (i, s) in one.enumerated() {
                var errs: [SchemaViolation] = []
                let e = sub(s, instance, path, "/oneOf/\(i)", &errs)
                if errs.isEmpty {
                    matches.append(i)
                    merged.merge(e)
                }
            }
            if matches.count == 1 {
                evaluated.merge(merged)
            } else {
                fail("oneOf", matches.isEmpty ? "matches none of the \(one.count) alternatives" : "matches alternatives \(matches.map(String.init).joined(separator: " and ")), exactly one may match")
            }
        }
        if let not = schema["not"] {
            var errs: [SchemaViolation] = []
            _ = sub(not, instance, path, "/not", &errs)
            if errs.isEmpty { fail("not", "must not match the 'not' schema") }
        }
        if let condition = schema["if"] {
            var errs: [SchemaViolation] = []
            let e = sub(condition, instance, path, "/if", &errs)
            if errs.isEmpty {
                evaluated.merge(e)
                if let then = schema["then"] {
                    var thenErrs: [SchemaViolation] = []
                    let t = sub(then, instance, path, "/then", &thenErrs)
                    if thenErrs.isEmpty { evaluated.merge(t) } else { errors += thenErrs }
                }
            } else if let otherwise = schema["else"] {
                var elseErrs: [SchemaViolation] = []
                let t = sub(otherwise, instance, path, "/else", &elseErrs)
                if elseErrs.isEmpty { evaluated.merge(t) } else { errors += elseErrs }
            }
        }

        // Unevaluated (after every other applicator, using their annotations).
        if let unevaluated = schema["unevaluatedItems"], case .array(let items) = instance {
            for i in items.indices where !evaluated.items.contains(i) {
                if unevaluated == .bool(false) {
                    fail("unevaluatedItems", "item \(i) is not allowed", at: path + "/\(i)")
                } else {
                    _ = sub(unevaluated, items[i], path + "/\(i)", "/unevaluatedItems", &errors)
                }
                evaluated.items.insert(i)
            }
        }
        if let unevaluated = schema["unevaluatedProperties"], case .object(let members) = instance {
            for (k, v) in members where !evaluated.properties.contains(k) {
                if unevaluated == .bool(false) {
                    fail("unevaluatedProperties", "property '\(k)' is not allowed", at: path + "/" + Self.escape(k))
                } else {
                    _ = sub(unevaluated, v, path + "/" + Self.escape(k), "/unevaluatedProperties", &errors)
                }
                evaluated.properties.insert(k)
            }
        }
        return evaluated
    }

    /// Compares numbers exactly when both are integers.
    static func compare(_ a: JSONValue, _ b: JSONValue, _ x: Double, _ y: Double) -> Int {
        if case .integer(let i) = a, case .integer(let j) = b { return i < j ? -1 : i > j ? 1 : 0 }
        return x < y ? -1 : x > y ? 1 : 0
    }

    static func short(_ v: JSONValue) -> String {
        let s = v.jsonString
        return s.count > 60 ? String(s.prefix(57)) + "..." : s
    }
}
