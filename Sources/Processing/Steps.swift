import Config
import Foundation
import StreamCore

/// The `steps:` of a pipeline's `process:` section, compiled: filter, set, rename, drop, keep, enrich,
/// route. See docs/EXPRESSIONS.md.
public struct StepProcessor: RecordProcessor {
    let steps: [Step]
    /// The logical topics that `route` steps name (the stage checks they are declared).
    public let routes: Set<String>
    /// The logical topics that `enrich` steps with `topic:` join against (their tables came from
    /// the provider given to ``init(steps:baseDirectory:tables:)``).
    public let tableTopics: Set<String>

    /// Compiles the steps; errors name the step's line and key. An `enrich` step with `topic:` is
    /// refused here (there is no table to join against): use ``init(steps:baseDirectory:tables:)``.
    public init(steps node: ConfigNode, baseDirectory: String) throws(ConfigError) {
        try self.init(steps: node, baseDirectory: baseDirectory) { request throws(ConfigError) -> any LookupTable in
            throw request.node.error("enrich with 'topic' (a table from a Kafka topic) is only available in a process stage")
        }
    }

    /// Compiles the steps; each `enrich` step with `topic:` gets its table from `tables`, called
    /// once per such step during compilation (a provider that serves several steps reading the same
    /// topic should return the same table). Errors name the step's line and key.
    public init(steps node: ConfigNode, baseDirectory: String, tables: LookupTableProvider) throws(ConfigError) {
        var steps: [Step] = []
        var routes: Set<String> = []
        var tableTopics: Set<String> = []
        for (i, item) in try node.sequence().enumerated() {
            let m = try item.mapping()
            guard m.keys.count == 1, let kind = m.keys.first else {
                throw item.error("each step is one of filter, set, rename, drop, keep, enrich, route (one key per list item)")
            }
            let body = try m.required(kind)
            let path = "steps[\(i)].\(kind)"
            switch kind {
            case "filter":
                steps.append(.filter(try Self.expression(body), path))
            case "set":
                let fields = try body.mapping()
                var assignments: [(String, [PathSegment], Expression)] = []
                for name in fields.keys {
                    let target = try Self.fieldPath(name, at: try fields.required(name))
                    assignments.append((name, target, try Self.expression(try fields.required(name))))
                }
                try fields.finish()
                steps.append(.set(assignments, path))
            case "rename":
                let pairs = try body.mapping()
                var renames: [([PathSegment], [PathSegment])] = []
                for old in pairs.keys {
                    let newNode = try pairs.required(old)
                    renames.append((try Self.fieldPath(old, at: newNode), try Self.fieldPath(try newNode.string(), at: newNode)))
                }
                try pairs.finish()
                steps.append(.rename(renames))
            case "drop":
                var fields: [[PathSegment]] = []
                for f in try body.stringList() { fields.append(try Self.fieldPath(f, at: body)) }
                steps.append(.drop(fields))
            case "keep":
                var fields: [[PathSegment]] = []
                for f in try body.stringList() { fields.append(try Self.fieldPath(f, at: body)) }
                steps.append(.keep(fields))
            case "enrich":
                let enrichment = try Enrichment(body, baseDirectory: baseDirectory, tables: tables)
                if let topic = enrichment.tableTopic { tableTopics.insert(topic) }
                steps.append(.enrich(enrichment, path))
            case "route":
                let rules = try RouteRules(body)
                routes.formUnion(rules.topics)
                steps.append(.route(rules, path))
            default:
                throw ConfigError(
                    file: item.source.file, line: item.line, path: "\(node.path)[\(i)].\(kind)",
                    message: "unknown step; expected filter, set, rename, drop, keep, enrich or route")
            }
            try m.finish()
        }
        self.steps = steps
        self.routes = routes
        self.tableTopics = tableTopics
    }

    static func expression(_ node: ConfigNode) throws(ConfigError) -> Expression {
        let text = try node.string()
        do {
            return try Expression(text)
        } catch {
            throw node.error(error.description)
        }
    }

    static func fieldPath(_ text: String, at node: ConfigNode) throws(ConfigError) -> [PathSegment] {
        guard let e = try? Expression(text), let path = e.fieldPath, !path.isEmpty else {
            throw node.error("'\(text)' is not a field path (write name, a.b or a[0])")
        }
        return path
    }

    public func process(_ value: JSONValue, context: RecordContext) throws(ProcessingError) -> [ProcessorOutput] {
        var current = [ProcessorOutput(value: value)]
        for step in steps {
            var next: [ProcessorOutput] = []
            next.reserveCapacity(current.count)
            for item in current {
                try step.apply(item, context: context, into: &next)
            }
            current = next
            if current.isEmpty { return [] }
        }
        return current
    }
}

enum Step: Sendable {
    case filter(Expression, String)
    case set([(String, [PathSegment], Expression)], String)
    case rename([([PathSegment], [PathSegment])])
    case drop([[PathSegment]])
    case keep([[PathSegment]])
    case enrich(Enrichment, String)
    case route(RouteRules, String)

    func apply(_ item: ProcessorOutput, context: RecordContext, into out: inout [ProcessorOutput]) throws(ProcessingError) {
        switch self {
        case .filter(let e, let path):
            do {
                if try e.isTrue(item.value, context: context) { out.append(item) }
            } catch {
                throw ProcessingError(step: path, errorClass: .expressionError, message: error.message)
            }
        case .set(let assignments, let path):
            var v = item.value
            for (name, target, e) in assignments {
                do {
                    // Each expression sees the record as the earlier assignments left it.
                    let result = try e.evaluate(v, context: context)
                    v = FieldPaths.setting(v, target, to: result)
                } catch {
                    throw ProcessingError(step: "\(path).\(name)", errorClass: .expressionError, message: error.message)
                }
            }
            out.append(ProcessorOutput(value: v, route: item.route))
        case .rename(let pairs):
            var v = item.value
            for (old, new) in pairs {
                let (without, moved) = FieldPaths.removing(v, old)
                if let moved { v = FieldPaths.setting(without, new, to: moved) }
            }
            out.append(ProcessorOutput(value: v, route: item.route))
        case .drop(let fields):
            var v = item.value
            for f in fields { v = FieldPaths.removing(v, f).0 }
            out.append(ProcessorOutput(value: v, route: item.route))
        case .keep(let fields):
            var kept = JSONValue.object([:])
            for f in fields where Functions.exists(item.value, f) {
                kept = FieldPaths.setting(kept, f, to: ExprEnv.lookup(item.value, f))
            }
            out.append(ProcessorOutput(value: kept, route: item.route))
        case .enrich(let enrichment, let path):
            if let v = try enrichment.apply(item.value, context: context, step: path) {
                out.append(ProcessorOutput(value: v, route: item.route))
            }
        case .route(let rules, let path):
            try rules.apply(item, context: context, step: path, into: &out)
        }
    }
}

/// Reading and writing nested fields by path.
enum FieldPaths {
    /// `root` with the value at `path` set, creating objects on the way (arrays are extended with nulls).
    static func setting(_ root: JSONValue, _ path: [PathSegment], to value: JSONValue) -> JSONValue {
        guard let first = path.first else { return value }
        let rest = Array(path.dropFirst())
        switch first {
        case .key(let k):
            var o = root.objectValue ?? [:]
            o[k] = setting(o[k] ?? .null, rest, to: value)
            return .object(o)
        case .index(let i):
            var a = root.arrayValue ?? []
            guard i < 100_000 else { return root } // no giant arrays from a typo'd index
            while a.count <= i { a.append(.null) }
            a[i] = setting(a[i], rest, to: value)
            return .array(a)
        }
    }

    /// `root` without the value at `path`, and that value.
    static func removing(_ root: JSONValue, _ path: [PathSegment]) -> (JSONValue, JSONValue?) {
        guard let first = path.first else { return (root, nil) }
        let rest = Array(path.dropFirst())
        switch (first, root) {
        case (.key(let k), .object(var o)):
            guard let child = o[k] else { return (root, nil) }
            if rest.isEmpty {
                o[k] = nil
                return (.object(o), child)
            }
            let (newChild, removed) = removing(child, rest)
            o[k] = newChild
            return (.object(o), removed)
        case (.index(let i), .array(var a)):
            guard i < a.count else { return (root, nil) }
            if rest.isEmpty {
                let removed = a.remove(at: i)
                return (.array(a), removed)
            }
            let (newChild, removed) = removing(a[i], rest)
            a[i] = newChild
            return (.array(a), removed)
        default:
            return (root, nil)
        }
    }
}

/// `route:` — choose output topics by condition. First matching rule wins; a rule with
/// `copy: true` also lets the record continue to later rules and the default.
struct RouteRules: Sendable {
    struct Rule: Sendable {
        var when: Expression
        var to: String
        var copy: Bool
    }

    var rules: [Rule]
    /// nil: the stage's default output.
    var defaultRoute: String?
    var dropUnmatched: Bool

    var topics: Set<String> { Set(rules.map(\.to) + (defaultRoute.map { [$0] } ?? [])) }

    init(_ node: ConfigNode) throws(ConfigError) {
        var rules: [Rule] = []
        var defaultRoute: String?
        var dropUnmatched = false
        // Either a list of rules, or a mapping { rules: [...], default: topic|null|drop }.
        let list: [ConfigNode]
        if case .sequence = node.node {
            list = try node.sequence()
        } else {
            let m = try node.mapping()
            list = try m.required("rules").sequence()
            if let d = m.optional("default") {
                let text = try d.string()
                if text == "drop" { dropUnmatched = true } else { defaultRoute = text }
            }
            try m.finish()
        }
        for item in list {
            let m = try item.mapping()
            let when = try StepProcessor.expression(try m.required("when", hint: "a condition"))
            let to = try m.required("to", hint: "a logical topic name").string()
            let copy = try m.bool("copy", default: false)
            try m.finish()
            rules.append(Rule(when: when, to: to, copy: copy))
        }
        self.rules = rules
        self.defaultRoute = defaultRoute
        self.dropUnmatched = dropUnmatched
    }

    func apply(
        _ item: ProcessorOutput, context: RecordContext, step: String, into out: inout [ProcessorOutput]
    )
        throws(ProcessingError)
    {
        for (i, rule) in rules.enumerated() {
            let matched: Bool
            do {
                matched = try rule.when.isTrue(item.value, context: context)
            } catch {
                throw ProcessingError(step: "\(step)[\(i)].when", errorClass: .expressionError, message: error.message)
            }
            guard matched else { continue }
            out.append(ProcessorOutput(value: item.value, route: rule.to))
            if !rule.copy { return }
        }
        if dropUnmatched { return }
        out.append(ProcessorOutput(value: item.value, route: defaultRoute ?? item.route))
    }
}
