import Foundation
import StreamCore

// The expression language of pipeline files (`filter: "temperature_c > 30"`, computed fields, keys).
// Hand-written (lexer, precedence-climbing parser, tree evaluator over JSONValue) because none of
// the available packages evaluates expressions over JSON values; it is small and compiled once per
// expression, so a record only pays for a tree walk. The language is documented in docs/EXPRESSIONS.md.

/// Where an expression's text is wrong: names the column (1-based) and the text.
public struct ExpressionParseError: Error, Sendable, CustomStringConvertible, Equatable {
    public let column: Int
    public let message: String
    public let text: String
    public var description: String { "\(message) at column \(column) in \"\(text)\"" }
}

/// Why an expression could not be evaluated on a record (a type error, division by zero, overflow).
public struct ExpressionError: Error, Sendable, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What an expression sees besides the record: its id, key, event time and where it was consumed.
public struct RecordContext: Sendable {
    public var id: String
    public var key: String?
    public var eventTimeMs: Int64?
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(id: String, key: String?, eventTimeMs: Int64?, topic: String, partition: Int32, offset: Int64) {
        self.id = id
        self.key = key
        self.eventTimeMs = eventTimeMs
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }

    /// A context for expressions evaluated outside a stream (tests, ingest before a record has a topic).
    public static let none = RecordContext(id: "", key: nil, eventTimeMs: nil, topic: "", partition: -1, offset: -1)
}

/// A compiled expression.
public struct Expression: Sendable, CustomStringConvertible {
    public let text: String
    let root: ExprNode

    /// Parses `text`; throws with the column of the first problem.
    public init(_ text: String) throws(ExpressionParseError) {
        self.text = text
        var parser = ExprParser(text: text)
        self.root = try parser.parseAll()
    }

    public var description: String { text }

    /// Evaluates the expression on a record.
    public func evaluate(_ value: JSONValue, context: RecordContext = .none) throws(ExpressionError) -> JSONValue {
        let env = ExprEnv(record: value, context: context)
        do {
            return try env.eval(root)
        } catch {
            throw ExpressionError("\(error.message) (in \"\(text)\")")
        }
    }

    /// Evaluates to a Boolean: `true` only for JSON `true` (null and false are false; other types are an error).
    public func isTrue(_ value: JSONValue, context: RecordContext = .none) throws(ExpressionError) -> Bool {
        switch try evaluate(value, context: context) {
        case .bool(let b): return b
        case .null: return false
        case let other: throw ExpressionError("expected true or false, got \(other.typeName) (in \"\(text)\")")
        }
    }

    /// When the expression is a plain field path (`a.b[0]`), its segments — used to assign computed fields.
    public var fieldPath: [PathSegment]? {
        guard case .path(let segments) = root else { return nil }
        return segments
    }
}

/// One step of a field path.
public enum PathSegment: Sendable, Equatable {
    case key(String)
    case index(Int)
}

indirect enum ExprNode: Sendable {
    case literal(JSONValue)
    case path([PathSegment]) // a plain field path from the record's root
    case meta(String) // $id, $key, …
    case member(ExprNode, String)
    case subscriptExpr(ExprNode, ExprNode)
    case array([ExprNode])
    case unary(String, ExprNode)
    case binary(String, ExprNode, ExprNode)
    case ternary(ExprNode, ExprNode, ExprNode)
    case call(String, [ExprNode])
}

// MARK: - Lexer

enum Token: Equatable {
    case number(JSONValue)
    case string(String)
    case identifier(String)
    case meta(String)
    case op(String)
    case end
}

struct Lexer {
    let chars: [Character]
    var index = 0

    init(_ text: String) { chars = Array(text) }

    mutating func next() throws(ExpressionParseError) -> (Token, Int) {
        while index < chars.count, chars[index].isWhitespace { index += 1 }
        let start = index
        guard index < chars.count else { return (.end, start) }
        let c = chars[index]
        if c.isNumber {
            var s = ""
            var isFloat = false
            while index < chars.count, chars[index].isNumber || chars[index] == "_" {
                if chars[index] != "_" { s.append(chars[index]) }
                index += 1
            }
            if index + 1 < chars.count, chars[index] == ".", chars[index + 1].isNumber {
                isFloat = true
                s.append(".")
                index += 1
                while index < chars.count, chars[index].isNumber {
                    s.append(chars[index])
                    index += 1
                }
            }
            if index < chars.count, chars[index] == "e" || chars[index] == "E" {
                var j = index + 1
                var exp = "e"
                if j < chars.count, chars[j] == "+" || chars[j] == "-" {
                    exp.append(chars[j])
                    j += 1
                }
                if j < chars.count, chars[j].isNumber {
                    while j < chars.count, chars[j].isNumber {
                        exp.append(chars[j])
                        j += 1
                    }
                    isFloat = true
                    s += exp
                    index = j
                }
            }
            if !isFloat, let i = Int64(s) { return (.number(.integer(i)), start) }
            guard let d = Double(s) else { throw err("invalid number '\(s)'", start) }
            return (.number(.number(d)), start)
        }
        if c == "\"" || c == "'" {
            index += 1
            var s = ""
            while index < chars.count, chars[index] != c {
                if chars[index] == "\\" {
                    index += 1
                    guard index < chars.count else { break }
                    switch chars[index] {
                    case "n": s.append("\n")
                    case "t": s.append("\t")
                    case "r": s.append("\r")
                    case "\\": s.append("\\")
                    case "'": s.append("'")
                    case "\"": s.append("\"")
                    default: throw err("unknown escape '\\\(chars[index])'", index)
                    }
                } else {
                    s.append(chars[index])
                }
                index += 1
            }
            guard index < chars.count else { throw err("unterminated string", start) }
            index += 1
            return (.string(s), start)
        }
        if c.isLetter || c == "_" || c == "$" {
            var s = ""
            index += 1
            while index < chars.count, chars[index].isLetter || chars[index].isNumber || chars[index] == "_" {
                s.append(chars[index])
                index += 1
            }
            if c == "$" {
                guard !s.isEmpty else { throw err("expected a name after '$'", start) }
                return (.meta(s), start)
            }
            return (.identifier(String(c) + s), start)
        }
        let two = index + 1 < chars.count ? String([c, chars[index + 1]]) : ""
        if ["==", "!=", "<=", ">=", "&&", "||", "??"].contains(two) {
            index += 2
            return (.op(two), start)
        }
        if "+-*/%<>!?:()[],.".contains(c) {
            index += 1
            return (.op(String(c)), start)
        }
        throw err("unexpected character '\(c)'", start)
    }

    func err(_ message: String, _ at: Int) -> ExpressionParseError {
        ExpressionParseError(column: at + 1, message: message, text: String(chars))
    }
}

// MARK: - Parser

struct ExprParser {
    var lexer: Lexer
    var token: Token = .end
    var tokenStart = 0
    var depth = 0
    let text: String
    static let maxDepth = 64

    init(text: String) {
        self.text = text
        self.lexer = Lexer(text)
    }

    mutating func advance() throws(ExpressionParseError) {
        (token, tokenStart) = try lexer.next()
    }

    func err(_ message: String) -> ExpressionParseError {
        ExpressionParseError(column: tokenStart + 1, message: message, text: text)
    }

    mutating func parseAll() throws(ExpressionParseError) -> ExprNode {
        try advance()
        if token == .end { throw err("empty expression") }
        let node = try parseTernary()
        guard token == .end else { throw err("unexpected \(describe(token))") }
        return node
    }

    func describe(_ t: Token) -> String {
        switch t {
        case .number(let v): return "number \(v)"
        case .string(let s): return "string '\(s)'"
        case .identifier(let s): return "'\(s)'"
        case .meta(let s): return "'$\(s)'"
        case .op(let s): return "'\(s)'"
        case .end: return "end of expression"
        }
    }

    mutating func expect(_ op: String) throws(ExpressionParseError) {
        guard token == .op(op) else { throw err("expected '\(op)' but found \(describe(token))") }
        try advance()
    }

    mutating func enter() throws(ExpressionParseError) {
        depth += 1
        if depth > Self.maxDepth { throw err("expression nested deeper than \(Self.maxDepth) levels") }
    }

    mutating func parseTernary() throws(ExpressionParseError) -> ExprNode {
        try enter()
        defer { depth -= 1 }
        let cond = try parseBinary(0)
        if token == .op("?") {
            try advance()
            let a = try parseTernary()
            try expect(":")
            let b = try parseTernary()
            return .ternary(cond, a, b)
        }
        return cond
    }

    /// Binary operators by precedence, lowest first.
    static let levels: [[String]] = [
        ["??"], ["||", "or"], ["&&", "and"], ["==", "!="], ["<", "<=", ">", ">=", "in"], ["+", "-"], ["*", "/", "%"],
    ]

    func binaryOp() -> String? {
        switch token {
        case .op(let o): return o
        case .identifier(let i) where ["and", "or", "in"].contains(i): return i
        default: return nil
        }
    }

    mutating func parseBinary(_ level: Int) throws(ExpressionParseError) -> ExprNode {
        if level == Self.levels.count { return try parseUnary() }
        var left = try parseBinary(level + 1)
        while let op = binaryOp(), Self.levels[level].contains(op) {
            try advance()
            let right = try parseBinary(level + 1)
            let normalized = op == "and" ? "&&" : op == "or" ? "||" : op
            left = .binary(normalized, left, right)
        }
        return left
    }

    mutating func parseUnary() throws(ExpressionParseError) -> ExprNode {
        try enter()
        defer { depth -= 1 }
        if token == .op("!") || token == .identifier("not") {
            try advance()
            return .unary("!", try parseUnary())
        }
        if token == .op("-") {
            try advance()
            return .unary("-", try parseUnary())
        }
        return try parsePostfix()
    }

    mutating func parsePostfix() throws(ExpressionParseError) -> ExprNode {
        var node = try parsePrimary()
        while true {
            if token == .op(".") {
                try advance()
                guard case .identifier(let name) = token else { throw err("expected a field name after '.'") }
                try advance()
                if case .path(let segs) = node { node = .path(segs + [.key(name)]) } else { node = .member(node, name) }
            } else if token == .op("[") {
                try advance()
                let index = try parseTernary()
                try expect("]")
                switch (node, index) {
                case (.path(let segs), .literal(.string(let k))): node = .path(segs + [.key(k)])
                case (.path(let segs), .literal(.integer(let i))) where i >= 0 && i <= Int64(Int32.max):
                    node = .path(segs + [.index(Int(i))])
                default: node = .subscriptExpr(node, index)
                }
            } else {
                return node
            }
        }
    }

    mutating func parsePrimary() throws(ExpressionParseError) -> ExprNode {
        let t = token
        switch t {
        case .number(let v):
            try advance()
            return .literal(v)
        case .string(let s):
            try advance()
            return .literal(.string(s))
        case .meta(let name):
            guard ExprEnv.metaNames.contains(name) else {
                throw err("unknown '$\(name)' (known: \(ExprEnv.metaNames.sorted().map { "$" + $0 }.joined(separator: ", ")))")
            }
            try advance()
            return .meta(name)
        case .identifier(let name):
            try advance()
            switch name {
            case "true": return .literal(.bool(true))
            case "false": return .literal(.bool(false))
            case "null": return .literal(.null)
            default: break
            }
            if token == .op("(") {
                guard let arity = Functions.arity[name] else {
                    throw ExpressionParseError(column: tokenStart, message: "unknown function '\(name)'", text: text)
                }
                try advance()
                var args: [ExprNode] = []
                if token != .op(")") {
                    args.append(try parseTernary())
                    while token == .op(",") {
                        try advance()
                        args.append(try parseTernary())
                    }
                }
                try expect(")")
                guard arity.contains(args.count) else {
                    let most = arity.upperBound == Int.max ? "any number of" : "\(arity.upperBound)"
                    let takes = arity.lowerBound == arity.upperBound ? "\(arity.lowerBound)" : "\(arity.lowerBound) to \(most)"
                    throw err("\(name)() takes \(takes) argument(s), got \(args.count)")
                }
                return .call(name, args)
            }
            return .path([.key(name)])
        case .op("("):
            try advance()
            try enter()
            defer { depth -= 1 }
            let inner = try parseTernary()
            try expect(")")
            return inner
        case .op("["):
            try advance()
            var items: [ExprNode] = []
            if token != .op("]") {
                items.append(try parseTernary())
                while token == .op(",") {
                    try advance()
                    items.append(try parseTernary())
                }
            }
            try expect("]")
            return .array(items)
        default:
            throw err("expected a value but found \(describe(t))")
        }
    }
}
