import StreamCore

/// Structural compatibility between two JSON Schemas: can every instance valid under `writer` be
/// read by a consumer that validates with `reader`? It reasons about the keywords data contracts
/// use — `type`, `properties`, `required`, `additionalProperties`, `items`, `enum`, `const`, numeric
/// and length bounds, `pattern` — and refuses to guess about anything else: a changed `$ref`,
/// `anyOf`, … is reported as unprovable. Problems name the JSON Pointer of the schema location and
/// the rule.
// Hand-written: no package checks JSON Schema evolution.
public enum SchemaCompatibility {
    /// Marks a property a migration computes (`set`): any reader constraint is accepted for it
    /// (the subject's examples check the computed values instead).
    static let computedMarker = "x-streamfirst-computed"

    static let understood: Set<String> = [
        "type", "properties", "required", "additionalProperties", "items", "enum", "const", "minimum", "maximum",
        "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems",
        "minProperties", "maxProperties", "uniqueItems",
        // annotations: never affect what is valid
        "title", "description", "$comment", "examples", "default", "$schema", "$id", "deprecated", "readOnly",
        "writeOnly", "format", "$defs", computedMarker,
    ]

    /// The problems that stop `reader` from accepting every instance `writer` accepts (empty: compatible).
    public static func problems(reader: JSONValue, writer: JSONValue) -> [String] {
        var out: [String] = []
        check(reader: reader, writer: writer, at: "", into: &out)
        return out
    }

    static func check(reader r: JSONValue, writer w: JSONValue, at path: String, into out: inout [String]) {
        let here = path.isEmpty ? "/" : path
        if case .bool(true) = r { return }
        if case .bool(false) = w { return }
        if case .object(let wo) = w, wo[computedMarker] == .bool(true) { return }
        if case .bool(false) = r {
            out.append("\(here): the new schema refuses every value here")
            return
        }
        let ro = r.objectValue ?? [:]
        let wo = w.objectValue ?? [:] // `true` as writer: anything may come

        // Keywords this checker does not reason about must be unchanged.
        for (k, v) in ro where !understood.contains(k) {
            if wo[k].map({ !$0.jsonEquals(v) }) ?? true {
                out.append("\(here): '\(k)' \(wo[k] == nil ? "was added" : "changed"); compatibility cannot be proven for it")
            }
        }

        // type: the reader's set must cover the writer's (integer ⊂ number).
        if let rt = types(ro["type"]) {
            if let wt = types(wo["type"]) {
                for t in wt where !covers(rt, t) {
                    out.append("\(here): type \(t) is no longer accepted (now \(rt.sorted().joined(separator: " or ")))")
                }
            } else if wo["const"] == nil && wo["enum"] == nil {
                out.append("\(here): the type is now restricted to \(rt.sorted().joined(separator: " or ")), old records may hold any type")
            }
        }
        // enum / const: the reader's values must cover the writer's.
        if let re = ro["enum"]?.arrayValue {
            let written: [JSONValue]? = wo["enum"]?.arrayValue ?? wo["const"].map { [$0] }
            if let written {
                for v in written where !re.contains(where: { $0.jsonEquals(v) }) {
                    out.append("\(here): enum value \(v.jsonString) was removed")
                }
            } else {
                out.append("\(here): an enum was added; old records may hold other values")
            }
        }
        if let rc = ro["const"], !(wo["const"].map { $0.jsonEquals(rc) } ?? false) {
            out.append("\(here): const \(rc.jsonString) was added or changed")
        }
        // Lower bounds may only go down, upper bounds only up.
        for (k, lower) in [
            ("minimum", true), ("exclusiveMinimum", true), ("maximum", false), ("exclusiveMaximum", false),
            ("minLength", true), ("maxLength", false), ("minItems", true), ("maxItems", false),
            ("minProperties", true), ("maxProperties", false),
        ] {
            guard let rv = ro[k]?.doubleValue else { continue }
            guard let wv = wo[k]?.doubleValue else {
                out.append("\(here): \(k) \(fmt(rv)) was added")
                continue
            }
            if lower ? rv > wv : rv < wv {
                out.append("\(here): \(k) \(lower ? "raised" : "lowered") from \(fmt(wv)) to \(fmt(rv))")
            }
        }
        if let rp = ro["pattern"], !(wo["pattern"].map { $0.jsonEquals(rp) } ?? false) {
            out.append("\(here): pattern \(rp.jsonString) was added or changed")
        }
        if ro["uniqueItems"] == .bool(true) && wo["uniqueItems"] != .bool(true) {
            out.append("\(here): uniqueItems was added")
        }

        // Objects.
        let rRequired = Set(ro["required"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        let wRequired = Set(wo["required"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        for name in rRequired.subtracting(wRequired).sorted() {
            out.append("\(here): property '\(name)' became required; old records may lack it (add it with a default in a migration)")
        }
        let rProps = ro["properties"]?.objectValue ?? [:]
        let wProps = wo["properties"]?.objectValue ?? [:]
        let wAdditional = wo["additionalProperties"] ?? .bool(true)
        for (name, rs) in rProps.sorted(by: { $0.key < $1.key }) {
            let ws = wProps[name] ?? wAdditional
            check(reader: rs, writer: ws, at: "\(path)/properties/\(escape(name))", into: &out)
        }
        if let rAdditional = ro["additionalProperties"] {
            for (name, ws) in wProps.sorted(by: { $0.key < $1.key }) where rProps[name] == nil {
                if case .bool(false) = rAdditional {
                    out.append("\(here): property '\(name)' is no longer allowed (additionalProperties: false)")
                } else {
                    check(reader: rAdditional, writer: ws, at: "\(path)/additionalProperties", into: &out)
                }
            }
            if wAdditional != .bool(false) {
                if case .bool(false) = rAdditional {
                    out.append("\(here): additionalProperties is now false; old records may carry other properties")
                } else {
                    check(reader: rAdditional, writer: wAdditional, at: "\(path)/additionalProperties", into: &out)
                }
            }
        }
        // Arrays.
        if let ri = ro["items"] {
            check(reader: ri, writer: wo["items"] ?? .bool(true), at: "\(path)/items", into: &out)
        }
    }

    static func types(_ v: JSONValue?) -> Set<String>? {
        switch v {
        case .string(let s)?: return [s]
        case .array(let a)?: return Set(a.compactMap(\.stringValue))
        default: return nil
        }
    }

    static func covers(_ accepted: Set<String>, _ t: String) -> Bool {
        accepted.contains(t) || (t == "integer" && accepted.contains("number"))
    }

    static func fmt(_ d: Double) -> String { d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d) }

    static func escape(_ s: String) -> String { s.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1") }
}
