import Foundation
import StreamCore

// JSON Schema draft 2020-12, written by hand: none of the Swift packages available here validates
// JSON Schema. A schema document (a JSONValue) is compiled once into SchemaNodes; the validator walks
// them with $ref / $dynamicRef resolution through a registry, collects every violation with its JSON
// Pointer, and tracks the annotations that unevaluatedProperties / unevaluatedItems need.

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
    let root: SchemaNode
    let baseURI: String
    let registry: SchemaRegistry

    /// A schema document. `baseURI` names it for relative `$ref`s; `registry` holds the documents
    /// its `$ref`s may point to (the schema itself is added to it).
    public init(
        _ schema: JSONValue, baseURI: String = "urn:streamfirst:schema", registry: SchemaRegistry = SchemaRegistry()
    )
        throws(SchemaError)
    {
        let base = (schema["$id"]?.stringValue).map { URIs.resolve($0, against: baseURI) } ?? baseURI
        try registry.register(schema, uri: base)
        self.baseURI = URIs.stripFragment(base)
        self.registry = registry
        try registry.check(schema, base: self.baseURI)
        self.root = SchemaNode(schema, base: self.baseURI, idApplied: true, registry: registry)
    }

    init(resolved schema: JSONValue, base: String, registry: SchemaRegistry) {
        self.root = SchemaNode(schema, base: base, idApplied: true, registry: registry)
        self.baseURI = base
        self.registry = registry
    }

    /// Every violation (empty when the instance is valid).
    public func validate(_ instance: JSONValue) -> [SchemaViolation] {
        var errors: [SchemaViolation] = []
        var v = Validator(registry: registry, scope: [baseURI])
        _ = v.validate(root, instance, collect: false, errors: &errors)
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

/// One schema object with its keywords read out once, when the schema is loaded.
///
/// A node holds each keyword as a field (a type as a bit set, patterns compiled, property schemas in
/// a dictionary with their keyword locations escaped), so a record costs one lookup per member it
/// has. `$ref` targets are compiled on first use and shared through the registry (recursive schemas
/// stay finite).
// Replaces interpreting the schema document per record; see
// docs/decisions/0010-hand-written-schema-validator-and-expressions.md.
final class SchemaNode: Sendable {
    enum Shape { case anything, nothing, keywords }

    struct Property: Sendable {
        let node: SchemaNode
        /// `/properties/<escaped name>`.
        let keyword: String
        let isRequired: Bool
    }

    struct PatternProperty: Sendable {
        let regex: CompiledRegex
        let node: SchemaNode
        /// `/patternProperties/<escaped pattern>`.
        let keyword: String
    }

    /// A `type` keyword: the accepted kinds as bits, and the names for messages.
    struct Types: Sendable {
        let mask: UInt8
        let names: [String]
    }

    static let nullBit: UInt8 = 1, booleanBit: UInt8 = 2, integerBit: UInt8 = 4, numberBit: UInt8 = 8
    static let stringBit: UInt8 = 16, arrayBit: UInt8 = 32, objectBit: UInt8 = 64

    let shape: Shape
    /// The base URI in effect inside this schema (its own `$id` applied).
    let base: String
    /// Whether entering this schema adds `base` to the dynamic scope (it has an `$id` of its own).
    let pushesScope: Bool
    /// Whether this schema has `unevaluatedProperties` / `unevaluatedItems`, so that the schemas
    /// applied in place must report what they evaluated.
    let needsAnnotations: Bool

    let ref: Reference?
    let dynamicRef: String?

    let types: Types?
    let enumValues: [JSONValue]?
    let constValue: JSONValue?

    let hasNumberKeywords: Bool
    let multipleOf: JSONValue?
    let maximum: JSONValue?
    let exclusiveMaximum: JSONValue?
    let minimum: JSONValue?
    let exclusiveMinimum: JSONValue?

    let hasStringKeywords: Bool
    let maxLength: Int64?
    let minLength: Int64?
    let pattern: (source: String, regex: CompiledRegex)?
    /// Only when the registry asserts formats.
    let format: String?

    let hasArrayKeywords: Bool
    let maxItems: Int64?
    let minItems: Int64?
    let uniqueItems: Bool
    let prefixItems: [SchemaNode]?
    let items: SchemaNode?
    let contains: SchemaNode?
    let minContains: Int64
    let hasMinContains: Bool
    let maxContains: Int64?
    let unevaluatedItems: SchemaNode?

    let hasObjectKeywords: Bool
    let maxProperties: Int64?
    let minProperties: Int64?
    let required: [String]?
    /// Every required name is also a key of `properties`: a member scan can count them instead of
    /// looking each one up.
    let requiredByCount: Int?
    let dependentRequired: [(name: String, needs: [String])]?
    let properties: [String: Property]?
    let patternProperties: [PatternProperty]?
    let additionalProperties: SchemaNode?
    let propertyNames: SchemaNode?
    let dependentSchemas: [(name: String, node: SchemaNode, keyword: String)]?
    let unevaluatedProperties: SchemaNode?

    let allOf: [SchemaNode]?
    let anyOf: [SchemaNode]?
    let oneOf: [SchemaNode]?
    let not: SchemaNode?
    let ifSchema: SchemaNode?
    let thenSchema: SchemaNode?
    let elseSchema: SchemaNode?

    /// Compiles `schema`, whose enclosing base URI is `parentBase`. `idApplied`: the schema's own
    /// `$id` is already part of `parentBase` (the root, or a `$ref` target).
    init(_ schema: JSONValue, base parentBase: String, idApplied: Bool, registry: SchemaRegistry) {
        let o: [String: JSONValue]
        switch schema {
        case .bool(false):
            shape = .nothing
            o = [:]
        case .object(let members):
            shape = .keywords
            o = members
        default:
            shape = .anything
            o = [:] // true, and (leniently) any non-schema value
        }
        var base = parentBase
        var pushes = false
        if !idApplied, let id = o["$id"]?.stringValue {
            base = URIs.stripFragment(URIs.resolve(id, against: parentBase))
            pushes = true
        }
        self.base = base
        self.pushesScope = pushes
        func node(_ v: JSONValue) -> SchemaNode { SchemaNode(v, base: base, idApplied: false, registry: registry) }
        func nodes(_ v: JSONValue?) -> [SchemaNode]? { v?.arrayValue.map { $0.map(node) } }
        func integer(_ key: String) -> Int64? { o[key]?.int64Value }
        func number(_ key: String) -> JSONValue? { o[key].flatMap { $0.doubleValue == nil ? nil : $0 } }

        ref = (o["$ref"]?.stringValue).map { Reference($0, base: base) }
        dynamicRef = o["$dynamicRef"]?.stringValue

        if let t = o["type"] {
            let names = t.arrayValue?.compactMap(\.stringValue) ?? [t.stringValue].compactMap { $0 }
            var mask: UInt8 = 0
            for name in names {
                switch name {
                case "null": mask |= Self.nullBit
                case "boolean": mask |= Self.booleanBit
                case "integer": mask |= Self.integerBit
                case "number": mask |= Self.numberBit
                case "string": mask |= Self.stringBit
                case "array": mask |= Self.arrayBit
                case "object": mask |= Self.objectBit
                default: continue // an unknown type name accepts nothing
                }
            }
            types = Types(mask: mask, names: names)
        } else {
            types = nil
        }
        enumValues = o["enum"]?.arrayValue
        constValue = o["const"]

        if let m = o["multipleOf"], let d = m.doubleValue, d > 0 { multipleOf = m } else { multipleOf = nil }
        maximum = number("maximum")
        exclusiveMaximum = number("exclusiveMaximum")
        minimum = number("minimum")
        exclusiveMinimum = number("exclusiveMinimum")
        hasNumberKeywords = multipleOf != nil || maximum != nil || exclusiveMaximum != nil || minimum != nil || exclusiveMinimum != nil

        maxLength = integer("maxLength")
        minLength = integer("minLength")
        if let p = o["pattern"]?.stringValue, let regex = registry.regex(p) { pattern = (p, regex) } else { pattern = nil }
        format = registry.formatAssertion ? o["format"]?.stringValue : nil
        hasStringKeywords = maxLength != nil || minLength != nil || pattern != nil || format != nil

        maxItems = integer("maxItems")
        minItems = integer("minItems")
        uniqueItems = o["uniqueItems"] == .bool(true)
        prefixItems = nodes(o["prefixItems"])
        items = o["items"].map(node)
        contains = o["contains"].map(node)
        hasMinContains = o["minContains"] != nil
        minContains = integer("minContains") ?? 1
        maxContains = integer("maxContains")
        unevaluatedItems = o["unevaluatedItems"].map(node)
        hasArrayKeywords = maxItems != nil || minItems != nil || uniqueItems || prefixItems != nil || items != nil || contains != nil

        maxProperties = integer("maxProperties")
        minProperties = integer("minProperties")
        let requiredNames = o["required"]?.arrayValue?.compactMap(\.stringValue)
        required = requiredNames
        let requiredSet = Set(requiredNames ?? [])
        if let props = o["properties"]?.objectValue {
            var compiled: [String: Property] = [:]
            compiled.reserveCapacity(props.count)
            for (name, s) in props {
                compiled[name] = Property(
                    node: node(s), keyword: "/properties/" + Validator.escape(name), isRequired: requiredSet.contains(name))
            }
            properties = compiled
            requiredByCount = requiredSet.allSatisfy { props[$0] != nil } ? requiredSet.count : nil
        } else {
            properties = nil
            requiredByCount = nil
        }
        dependentRequired = o["dependentRequired"]?.objectValue.map { deps in
            deps.map { (name: $0.key, needs: $0.value.arrayValue?.compactMap(\.stringValue) ?? []) }
        }
        patternProperties = o["patternProperties"]?.objectValue.map { patterns in
            patterns.compactMap { p, s in
                registry.regex(p).map { PatternProperty(regex: $0, node: node(s), keyword: "/patternProperties/" + Validator.escape(p)) }
            }
        }
        additionalProperties = o["additionalProperties"].map(node)
        propertyNames = o["propertyNames"].map(node)
        dependentSchemas = o["dependentSchemas"]?.objectValue.map { deps in
            deps.map { (name: $0.key, node: node($0.value), keyword: "/dependentSchemas/" + Validator.escape($0.key)) }
        }
        unevaluatedProperties = o["unevaluatedProperties"].map(node)
        hasObjectKeywords =
            maxProperties != nil || minProperties != nil || required != nil || dependentRequired != nil
            || properties != nil || patternProperties != nil || additionalProperties != nil || propertyNames != nil
            || dependentSchemas != nil

        allOf = nodes(o["allOf"])
        anyOf = nodes(o["anyOf"])
        oneOf = nodes(o["oneOf"])
        not = o["not"].map(node)
        ifSchema = o["if"].map(node)
        thenSchema = o["then"].map(node)
        elseSchema = o["else"].map(node)
        needsAnnotations = unevaluatedItems != nil || unevaluatedProperties != nil
    }

    /// A `$ref`: resolved and compiled on first use (the registry shares the compiled target), and
    /// again after the registry has taken a new document.
    final class Reference: @unchecked Sendable {
        // @unchecked: `target` is read and written under `lock`.
        let ref: String
        let base: String
        private let lock = NSLock()
        private var target: (generation: Int, node: SchemaNode)?

        init(_ ref: String, base: String) {
            self.ref = ref
            self.base = base
        }

        func resolve(_ registry: SchemaRegistry) -> SchemaNode? {
            // Read before resolving: a registration meanwhile leaves an older generation behind.
            let generation = registry.generation.load(ordering: .acquiring)
            if let t = lock.withLock({ target }), t.generation == generation { return t.node }
            guard let node = registry.compiledTarget(of: ref, base: base) else { return nil }
            lock.withLock { target = (generation, node) }
            return node
        }
    }
}

/// A step of an instance path, escaped only when a violation is reported.
enum PathToken {
    case name(String)
    case index(Int)
}

struct Validator {
    let registry: SchemaRegistry
    /// The dynamic scope (base URIs entered, outermost first), for `$dynamicRef`.
    var scope: [String]
    var depth = 0
    /// Where the validator is, as tokens: strings are built only for a violation.
    var instancePath: [PathToken] = []
    /// Keyword location tokens, each starting with "/" (e.g. `/properties/seq`, `/$ref`).
    var keywordPath: [String] = []
    /// Nested evaluations allowed (schema recursion through `$ref`, or deep instances). Bounded so
    /// that validation can never exhaust a thread's stack. Deeper input is a violation.
    // One level takes ~5 KB of stack, ~43 KB under AddressSanitizer (where 200 levels overflowed an
    // 8 MB stack).
    static let maxDepth = 100

    init(registry: SchemaRegistry, scope: [String]) {
        self.registry = registry
        self.scope = scope
    }

    /// A JSON Pointer reference token (RFC 6901): `~` becomes `~0`, `/` becomes `~1`. A token with
    /// neither (nearly all) is returned as is and the rest is one pass over the bytes.
    // Not Foundation's `replacingOccurrences`: see docs/decisions/0027-stage-per-record-cost.md.
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

    var currentPath: String {
        var s = ""
        for t in instancePath {
            switch t {
            case .name(let n): s += "/" + Self.escape(n)
            case .index(let i): s += "/\(i)"
            }
        }
        return s
    }

    /// Records a violation of keyword `kw` of the schema being evaluated (at `extra` below the
    /// current instance location when given).
    func fail(_ kw: String?, _ message: String, at extra: PathToken? = nil, _ errors: inout [SchemaViolation]) {
        var path = currentPath
        if let extra {
            switch extra {
            case .name(let n): path += "/" + Self.escape(n)
            case .index(let i): path += "/\(i)"
            }
        }
        let keyword = keywordPath.joined() + (kw.map { "/" + $0 } ?? "")
        errors.append(SchemaViolation(instancePath: path, keywordLocation: keyword, message: message))
    }

    /// `node` applied to a member / item of the current instance.
    mutating func child(_ node: SchemaNode, _ instance: JSONValue, _ token: PathToken, _ keyword: String, _ errors: inout [SchemaViolation])
    {
        instancePath.append(token)
        keywordPath.append(keyword)
        _ = validate(node, instance, collect: false, errors: &errors)
        keywordPath.removeLast()
        instancePath.removeLast()
    }

    /// `node` applied in place (to the current instance).
    mutating func inPlace(
        _ node: SchemaNode, _ instance: JSONValue, _ keyword: String, collect: Bool, _ errors: inout [SchemaViolation]
    ) -> Evaluated {
        keywordPath.append(keyword)
        defer { keywordPath.removeLast() }
        return validate(node, instance, collect: collect, errors: &errors)
    }

    /// A resolved `$ref` / `$dynamicRef` target applied in place, inside the target's resource (its
    /// base joins the dynamic scope unless it is the current one); a violation when it did not resolve.
    mutating func follow(
        _ target: SchemaNode?, _ keyword: String, _ ref: String, _ instance: JSONValue, collect: Bool, _ errors: inout [SchemaViolation]
    ) -> Evaluated {
        guard let target else {
            fail(keyword, "cannot resolve \(keyword) '\(ref)'", &errors)
            return Evaluated()
        }
        let push = scope.last != target.base
        if push { scope.append(target.base) }
        defer { if push { scope.removeLast() } }
        return inPlace(target, instance, "/" + keyword, collect: collect, &errors)
    }

    /// The kind of an instance as `SchemaNode.Types` bits (an integral number is also an integer).
    static func typeBits(_ v: JSONValue) -> UInt8 {
        switch v {
        case .null: return SchemaNode.nullBit
        case .bool: return SchemaNode.booleanBit
        case .integer: return SchemaNode.integerBit | SchemaNode.numberBit
        case .number(let d): return d.rounded() == d && d.isFinite ? SchemaNode.integerBit | SchemaNode.numberBit : SchemaNode.numberBit
        case .string: return SchemaNode.stringBit
        case .array: return SchemaNode.arrayBit
        case .object: return SchemaNode.objectBit
        }
    }

    /// Validates `instance` against `node`, appending violations. Returns the annotations when
    /// `collect` (an enclosing schema has `unevaluated…`) or the node needs them itself.
    mutating func validate(
        _ node: SchemaNode, _ instance: JSONValue, collect parentCollect: Bool, errors: inout [SchemaViolation]
    ) -> Evaluated {
        var evaluated = Evaluated()
        switch node.shape {
        case .anything: return evaluated
        case .nothing:
            fail(nil, "no value is allowed here", &errors)
            return evaluated
        case .keywords: break
        }
        depth += 1
        defer { depth -= 1 }
        if depth > Self.maxDepth {
            fail(nil, "schema recursion deeper than \(Self.maxDepth) levels", &errors)
            return evaluated
        }
        if node.pushesScope { scope.append(node.base) }
        defer { if node.pushesScope { scope.removeLast() } }
        let collect = parentCollect || node.needsAnnotations

        // References.
        if let ref = node.ref {
            let e = follow(ref.resolve(registry), "$ref", ref.ref, instance, collect: collect, &errors)
            if collect { evaluated.merge(e) }
        }
        if let ref = node.dynamicRef {
            let target = registry.compiledDynamicTarget(of: ref, base: node.base, dynamicScope: scope)
            let e = follow(target, "$dynamicRef", ref, instance, collect: collect, &errors)
            if collect { evaluated.merge(e) }
        }

        // Any instance type.
        if let t = node.types, t.mask & Self.typeBits(instance) == 0 {
            fail("type", "expected \(t.names.joined(separator: " or ")), got \(instance.typeName)", &errors)
        }
        if let e = node.enumValues, !e.contains(where: { $0.jsonEquals(instance) }) {
            fail("enum", "\(Self.short(instance)) is not one of \(Self.short(.array(e)))", &errors)
        }
        if let c = node.constValue, !c.jsonEquals(instance) {
            fail("const", "expected \(Self.short(c)), got \(Self.short(instance))", &errors)
        }

        switch instance {
        case .integer, .number:
            if node.hasNumberKeywords { checkNumber(node, instance, &errors) }
        case .string(let s):
            if node.hasStringKeywords { checkString(node, s, instance, &errors) }
        case .array(let items):
            if node.hasArrayKeywords { checkArray(node, items, collect: collect, &evaluated, &errors) }
        case .object(let members):
            if node.hasObjectKeywords { checkObject(node, members, instance, collect: collect, &evaluated, &errors) }
        default: break
        }

        // Applicators.
        if let all = node.allOf {
            for (i, s) in all.enumerated() {
                var errs: [SchemaViolation] = []
                let e = inPlace(s, instance, "/allOf/\(i)", collect: collect, &errs)
                if errs.isEmpty { if collect { evaluated.merge(e) } } else { errors += errs }
            }
        }
        if let any = node.anyOf {
            var matched = false
            var firstErrors: [SchemaViolation] = []
            for (i, s) in any.enumerated() {
                var errs: [SchemaViolation] = []
                let e = inPlace(s, instance, "/anyOf/\(i)", collect: collect, &errs)
                if errs.isEmpty {
                    matched = true
                    // Annotations need every alternative that matches; a verdict needs only one.
                    if collect { evaluated.merge(e) } else { break }
                } else if firstErrors.isEmpty {
                    firstErrors = errs
                }
            }
            if !matched {
                fail(
                    "anyOf", "matches none of the \(any.count) alternatives" + (firstErrors.first.map { " (first: \($0.message))" } ?? ""),
                    &errors)
            }
        }
        if let one = node.oneOf {
            var matches: [Int] = []
            var merged = Evaluated()
            for (i, s) in one.enumerated() {
                var errs: [SchemaViolation] = []
                let e = inPlace(s, instance, "/oneOf/\(i)", collect: collect, &errs)
                if errs.isEmpty {
                    matches.append(i)
                    if collect { merged.merge(e) }
                }
            }
            if matches.count == 1 {
                if collect { evaluated.merge(merged) }
            } else {
                fail(
                    "oneOf",
                    matches.isEmpty
                        ? "matches none of the \(one.count) alternatives"
                        : "matches alternatives \(matches.map(String.init).joined(separator: " and ")), exactly one may match", &errors)
            }
        }
        if let not = node.not {
            var errs: [SchemaViolation] = []
            _ = inPlace(not, instance, "/not", collect: false, &errs)
            if errs.isEmpty { fail("not", "must not match the 'not' schema", &errors) }
        }
        if let condition = node.ifSchema {
            var errs: [SchemaViolation] = []
            let e = inPlace(condition, instance, "/if", collect: collect, &errs)
            if errs.isEmpty {
                if collect { evaluated.merge(e) }
                if let then = node.thenSchema {
                    var thenErrs: [SchemaViolation] = []
                    let t = inPlace(then, instance, "/then", collect: collect, &thenErrs)
                    if thenErrs.isEmpty { if collect { evaluated.merge(t) } } else { errors += thenErrs }
                }
            } else if let otherwise = node.elseSchema {
                var elseErrs: [SchemaViolation] = []
                let t = inPlace(otherwise, instance, "/else", collect: collect, &elseErrs)
                if elseErrs.isEmpty { if collect { evaluated.merge(t) } } else { errors += elseErrs }
            }
        }

        // Unevaluated (after every other applicator, using their annotations).
        if let unevaluated = node.unevaluatedItems, case .array(let items) = instance {
            for i in items.indices where !evaluated.items.contains(i) {
                if unevaluated.shape == .nothing {
                    fail("unevaluatedItems", "item \(i) is not allowed", at: .index(i), &errors)
                } else {
                    child(unevaluated, items[i], .index(i), "/unevaluatedItems", &errors)
                }
                evaluated.items.insert(i)
            }
        }
        if let unevaluated = node.unevaluatedProperties, case .object(let members) = instance {
            for (k, v) in members where !evaluated.properties.contains(k) {
                if unevaluated.shape == .nothing {
                    fail("unevaluatedProperties", "property '\(k)' is not allowed", at: .name(k), &errors)
                } else {
                    child(unevaluated, v, .name(k), "/unevaluatedProperties", &errors)
                }
                evaluated.properties.insert(k)
            }
        }
        return evaluated
    }

    mutating func checkNumber(_ node: SchemaNode, _ instance: JSONValue, _ errors: inout [SchemaViolation]) {
        guard let x = instance.doubleValue else { return }
        if let m = node.multipleOf, let md = m.doubleValue {
            let isMultiple: Bool
            if let xi = instance.int64Value, let mi = m.int64Value, mi != 0 {
                isMultiple = xi % mi == 0
            } else {
                let q = x / md
                isMultiple = q.isFinite ? abs(q - q.rounded()) < 1e-9 * max(1, abs(q)) : false
            }
            if !isMultiple { fail("multipleOf", "\(Self.short(instance)) is not a multiple of \(Self.short(m))", &errors) }
        }
        if let m = node.maximum, let limit = m.doubleValue, Self.compare(instance, m, x, limit) > 0 {
            fail("maximum", "\(Self.short(instance)) is greater than the maximum \(Self.short(m))", &errors)
        }
        if let m = node.exclusiveMaximum, let limit = m.doubleValue, Self.compare(instance, m, x, limit) >= 0 {
            fail("exclusiveMaximum", "\(Self.short(instance)) is not less than \(Self.short(m))", &errors)
        }
        if let m = node.minimum, let limit = m.doubleValue, Self.compare(instance, m, x, limit) < 0 {
            fail("minimum", "\(Self.short(instance)) is less than the minimum \(Self.short(m))", &errors)
        }
        if let m = node.exclusiveMinimum, let limit = m.doubleValue, Self.compare(instance, m, x, limit) <= 0 {
            fail("exclusiveMinimum", "\(Self.short(instance)) is not greater than \(Self.short(m))", &errors)
        }
    }

    mutating func checkString(_ node: SchemaNode, _ s: String, _ instance: JSONValue, _ errors: inout [SchemaViolation]) {
        if node.maxLength != nil || node.minLength != nil {
            let length = Int64(s.unicodeScalars.count)
            if let m = node.maxLength, length > m { fail("maxLength", "\(length) characters, more than \(m)", &errors) }
            if let m = node.minLength, length < m { fail("minLength", "\(length) characters, fewer than \(m)", &errors) }
        }
        if let p = node.pattern, !p.regex.matches(s) {
            fail("pattern", "\(Self.short(instance)) does not match \(p.source)", &errors)
        }
        if let f = node.format, !Formats.check(f, s) {
            fail("format", "\(Self.short(instance)) is not a valid \(f)", &errors)
        }
    }

    mutating func checkArray(
        _ node: SchemaNode, _ items: [JSONValue], collect: Bool, _ evaluated: inout Evaluated, _ errors: inout [SchemaViolation]
    ) {
        if let m = node.maxItems, items.count > m { fail("maxItems", "\(items.count) items, more than \(m)", &errors) }
        if let m = node.minItems, items.count < m { fail("minItems", "\(items.count) items, fewer than \(m)", &errors) }
        if node.uniqueItems {
            outer: for i in items.indices {
                for j in items.indices where j > i && items[i].jsonEquals(items[j]) {
                    fail("uniqueItems", "items \(i) and \(j) are equal", &errors)
                    break outer
                }
            }
        }
        var prefix = 0
        if let prefixItems = node.prefixItems {
            for (i, s) in prefixItems.enumerated() where i < items.count {
                child(s, items[i], .index(i), "/prefixItems/\(i)", &errors)
                if collect { evaluated.items.insert(i) }
            }
            prefix = prefixItems.count
        }
        if let itemSchema = node.items {
            for i in items.indices where i >= prefix {
                child(itemSchema, items[i], .index(i), "/items", &errors)
                if collect { evaluated.items.insert(i) }
            }
        }
        if let contains = node.contains {
            var matched: [Int] = []
            for (i, item) in items.enumerated() {
                var scratch: [SchemaViolation] = []
                child(contains, item, .index(i), "/contains", &scratch)
                if scratch.isEmpty { matched.append(i) }
            }
            if collect { evaluated.items.formUnion(matched) }
            if Int64(matched.count) < node.minContains {
                fail(
                    node.hasMinContains ? "minContains" : "contains",
                    "\(matched.count) items match 'contains', at least \(node.minContains) must", &errors)
            }
            if let maxContains = node.maxContains, Int64(matched.count) > maxContains {
                fail("maxContains", "\(matched.count) items match 'contains', at most \(maxContains) may", &errors)
            }
        }
    }

    mutating func checkObject(
        _ node: SchemaNode, _ members: [String: JSONValue], _ instance: JSONValue, collect: Bool, _ evaluated: inout Evaluated,
        _ errors: inout [SchemaViolation]
    ) {
        if let m = node.maxProperties, members.count > m { fail("maxProperties", "\(members.count) properties, more than \(m)", &errors) }
        if let m = node.minProperties, members.count < m { fail("minProperties", "\(members.count) properties, fewer than \(m)", &errors) }
        if let dependent = node.dependentRequired {
            for (k, needs) in dependent where members[k] != nil {
                for n in needs where members[n] == nil {
                    fail("dependentRequired/\(Self.escape(k))", "property '\(n)' is required when '\(k)' is present", &errors)
                }
            }
        }
        // One pass over the members: properties, patternProperties, then additionalProperties for
        // the members neither matched.
        var requiredSeen = 0
        let scan = node.properties != nil || node.patternProperties != nil || node.additionalProperties != nil
        if scan {
            for (k, v) in members {
                var matched = false
                if let p = node.properties?[k] {
                    if p.isRequired { requiredSeen += 1 }
                    child(p.node, v, .name(k), p.keyword, &errors)
                    matched = true
                }
                if let patterns = node.patternProperties {
                    for p in patterns where p.regex.matches(k) {
                        child(p.node, v, .name(k), p.keyword, &errors)
                        matched = true
                    }
                }
                if !matched, let additional = node.additionalProperties {
                    if additional.shape == .nothing {
                        fail("additionalProperties", "property '\(k)' is not allowed", at: .name(k), &errors)
                    } else {
                        child(additional, v, .name(k), "/additionalProperties", &errors)
                    }
                    matched = true
                }
                if collect && matched { evaluated.properties.insert(k) }
            }
        }
        if let required = node.required, !(scan && node.requiredByCount == requiredSeen) {
            for r in required where members[r] == nil {
                fail("required", "missing required property '\(r)'", at: .name(r), &errors)
            }
        }
        if let names = node.propertyNames {
            for k in members.keys {
                var scratch: [SchemaViolation] = []
                _ = inPlace(names, .string(k), "/propertyNames", collect: false, &scratch)
                if !scratch.isEmpty { fail("propertyNames", "property name '\(k)' is not allowed: \(scratch[0].message)", &errors) }
            }
        }
        if let dependent = node.dependentSchemas {
            for (k, s, keyword) in dependent where members[k] != nil {
                var errs: [SchemaViolation] = []
                let e = inPlace(s, instance, keyword, collect: collect, &errs)
                if errs.isEmpty { if collect { evaluated.merge(e) } } else { errors += errs }
            }
        }
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
