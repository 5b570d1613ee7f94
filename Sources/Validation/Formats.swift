import Foundation

/// `format` checks, used when format assertion is on.
enum Formats {
    static func check(_ format: String, _ s: String) -> Bool {
        switch format {
        case "date-time": return dateTime(s)
        case "date": return date(s)
        case "time": return time(s)
        case "email": return email(s)
        case "ipv4": return ipv4(s)
        case "ipv6": return ipv6(s)
        case "uuid": return matches(s, uuidPattern)
        case "hostname": return hostname(s)
        case "uri": return uri(s)
        case "uri-reference": return uriReference(s, requireScheme: false)
        case "regex": return (try? NSRegularExpression(pattern: s)) != nil
        case "duration": return duration(s)
        case "json-pointer": return jsonPointer(s)
        case "relative-json-pointer": return relativeJSONPointer(s)
        default: return true // unknown formats are annotations only
        }
    }

    // The patterns compiled once (they were compiled on every check).
    static let uuidPattern = CompiledRegex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
    static let datePattern = CompiledRegex("^\\d{4}-\\d{2}-\\d{2}$")
    static let timePattern = CompiledRegex("^(\\d{2}):(\\d{2}):(\\d{2})(\\.\\d+)?([zZ]|[+-]\\d{2}:\\d{2})$")
    static let durationPattern: CompiledRegex? = {
        let time = "T(?:\\d+H(?:\\d+M(?:\\d+S)?)?|\\d+M(?:\\d+S)?|\\d+S)"
        let date = "(?:\\d+Y(?:\\d+M(?:\\d+D)?)?|\\d+M(?:\\d+D)?|\\d+D)"
        return CompiledRegex("^P(?:\(date)(?:\(time))?|\(time)|\\d+W)$")
    }()

    static func matches(_ s: String, _ regex: CompiledRegex?) -> Bool {
        // No line breaks anywhere: ICU's `$` would also match before a trailing newline.
        guard s.allSatisfy({ $0.isASCII && !$0.isNewline }), let regex else { return false }
        return regex.matches(s)
    }

    static func date(_ s: String) -> Bool {
        guard matches(s, datePattern) else { return false }
        let p = s.split(separator: "-").compactMap { Int($0) }
        guard p.count == 3, (1...12).contains(p[1]), p[2] >= 1 else { return false }
        let leap = (p[0] % 4 == 0 && p[0] % 100 != 0) || p[0] % 400 == 0
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][p[1] - 1]
        return p[2] <= days
    }

    static func time(_ s: String) -> Bool {
        guard matches(s, timePattern) else { return false }
        let parts = s.prefix(8).split(separator: ":").compactMap { Int($0) }
        guard parts.count == 3 else { return false }
        var offsetMinutes = 0
        if let sign = s.lastIndex(where: { $0 == "+" || $0 == "-" }) {
            let off = s[s.index(after: sign)...].split(separator: ":").compactMap { Int($0) }
            guard off.count == 2, off[0] <= 23, off[1] <= 59 else { return false }
            offsetMinutes = (off[0] * 60 + off[1]) * (s[sign] == "+" ? 1 : -1)
        }
        guard parts[0] <= 23, parts[1] <= 59, parts[2] <= 60 else { return false }
        if parts[2] == 60 {
            // A leap second is only valid at 23:59:60 UTC.
            let utc = ((parts[0] * 60 + parts[1] - offsetMinutes) % 1440 + 1440) % 1440
            return utc == 23 * 60 + 59
        }
        return true
    }

    static func dateTime(_ s: String) -> Bool {
        guard let t = s.firstIndex(where: { $0 == "T" || $0 == "t" }) else { return false }
        return date(String(s[..<t])) && time(String(s[s.index(after: t)...]))
    }

    /// RFC 3339 appendix A: units in order, contiguous (no "P1Y2D"), weeks alone.
    static func duration(_ s: String) -> Bool { matches(s, durationPattern) }

    /// RFC 6901: empty, or "/"-separated tokens in which "~" is only "~0" or "~1".
    static func jsonPointer(_ s: String) -> Bool {
        if s.isEmpty { return true }
        guard s.hasPrefix("/") else { return false }
        var chars = s.makeIterator()
        while let c = chars.next() {
            if c == "~" {
                guard let n = chars.next(), n == "0" || n == "1" else { return false }
            }
        }
        return true
    }

    /// draft-handrews-relative-json-pointer: a non-negative integer (no leading zero), an optional
    /// index adjustment, then "#" or a JSON pointer.
    static func relativeJSONPointer(_ s: String) -> Bool {
        let digits = s.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits == "0" || !digits.hasPrefix("0") else { return false }
        var rest = s.dropFirst(digits.count)
        if let sign = rest.first, sign == "+" || sign == "-" {
            let adj = rest.dropFirst().prefix { $0.isASCII && $0.isNumber }
            guard !adj.isEmpty, adj == "0" || !adj.hasPrefix("0") else { return false }
            rest = rest.dropFirst(1 + adj.count)
        }
        return rest == "#" || jsonPointer(String(rest))
    }

    static func email(_ s: String) -> Bool {
        guard let at = s.lastIndex(of: "@") else { return false }
        let local = s[..<at]
        guard !local.isEmpty, s.index(after: at) < s.endIndex else { return false }
        if local.count >= 2, local.hasPrefix("\""), local.hasSuffix("\"") {
            // quoted-string: anything printable but an unescaped quote or backslash.
            var escaped = false
            for c in local.dropFirst().dropLast() {
                if escaped {
                    escaped = false
                    continue
                }
                if c == "\\" {
                    escaped = true
                    continue
                }
                if c == "\"" || c.isNewline { return false }
            }
            if escaped { return false }
        } else {
            // dot-atom: atext characters separated by single dots.
            let atext = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-")
            if local.hasPrefix(".") || local.hasSuffix(".") || local.contains("..") { return false }
            guard local.allSatisfy({ $0 == "." || atext.contains($0) }) else { return false }
        }
        let domain = String(s[s.index(after: at)...])
        if domain.hasPrefix("[") && domain.hasSuffix("]") {
            let inner = String(domain.dropFirst().dropLast())
            return inner.hasPrefix("IPv6:") ? ipv6(String(inner.dropFirst(5))) : ipv4(inner)
        }
        return hostname(domain)
    }

    static func ipv4(_ s: String) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }), let v = Int(p), v <= 255 else { return false }
            if p.count > 1 && p.hasPrefix("0") { return false }
        }
        return true
    }

    static func ipv6(_ s: String) -> Bool {
        guard s.allSatisfy({ $0.isASCII }), !s.contains("%") else { return false }
        var addr = in6_addr()
        return inet_pton(AF_INET6, s, &addr) == 1
    }

    static func hostname(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 253 else { return false }
        for label in s.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.count <= 63, !label.hasPrefix("-"), !label.hasSuffix("-"),
                label.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
            else { return false }
            if label.count >= 4, label.dropFirst(2).hasPrefix("--"), !label.lowercased().hasPrefix("xn--") { return false }
        }
        return true
    }

    static func uri(_ s: String) -> Bool { uriReference(s, requireScheme: true) }

    // RFC 3986 character classes.
    static let unreserved = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
    static let subDelims = Set("!$&'()*+,;=")
    static let hexDigits = Set("0123456789abcdefABCDEF")

    /// Whether every character is unreserved, a sub-delim, in `extra`, or a complete %XX escape.
    static func allowed(_ part: Substring, extra: Set<Character>) -> Bool {
        var i = part.startIndex
        while i < part.endIndex {
            let c = part[i]
            if c == "%" {
                let a = part.index(after: i)
                guard a < part.endIndex, hexDigits.contains(part[a]) else { return false }
                let b = part.index(after: a)
                guard b < part.endIndex, hexDigits.contains(part[b]) else { return false }
                i = part.index(after: b)
                continue
            }
            guard unreserved.contains(c) || subDelims.contains(c) || extra.contains(c) else { return false }
            i = part.index(after: i)
        }
        return true
    }

    /// RFC 3986 URI (`requireScheme`) or URI-reference: scheme, authority (userinfo, host as
    /// reg-name, IPv4 or bracketed IPv6 / IPvFuture, numeric port), path, query, fragment.
    static func uriReference(_ s: String, requireScheme: Bool) -> Bool {
        var rest = Substring(s)
        if let hash = rest.firstIndex(of: "#") {
            guard allowed(rest[rest.index(after: hash)...], extra: [":", "@", "/", "?"]) else { return false }
            rest = rest[..<hash]
        }
        if let q = rest.firstIndex(of: "?") {
            guard allowed(rest[rest.index(after: q)...], extra: [":", "@", "/", "?"]) else { return false }
            rest = rest[..<q]
        }
        // A scheme is whatever precedes the first ":" when no "/" comes before it.
        let firstSlash = rest.firstIndex(of: "/") ?? rest.endIndex
        if let colon = rest.firstIndex(of: ":"), colon < firstSlash {
            let scheme = rest[..<colon]
            guard let f = scheme.first, f.isASCII, f.isLetter,
                scheme.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) })
            else { return false } // also: a relative reference's first segment may not hold ":"
            rest = rest[rest.index(after: colon)...]
        } else if requireScheme {
            return false
        }
        if rest.hasPrefix("//") {
            rest = rest.dropFirst(2)
            let end = rest.firstIndex(of: "/") ?? rest.endIndex
            guard authority(rest[..<end]) else { return false }
            rest = rest[end...]
        }
        return allowed(rest, extra: [":", "@", "/"])
    }

    static func authority(_ a: Substring) -> Bool {
        var hostPort = a
        if let at = a.firstIndex(of: "@") {
            guard allowed(a[..<at], extra: [":"]) else { return false }
            hostPort = a[a.index(after: at)...]
        }
        var port: Substring = ""
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { return false }
            let literal = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
            if literal.first == "v" || literal.first == "V" {
                guard literal.contains("."), allowed(literal.dropFirst(), extra: [":"]) else { return false }
            } else {
                guard ipv6(String(literal)) else { return false }
                // inet_pton accepts "::ffff:01.2.3.4"; RFC 3986's dec-octet does not.
                if literal.contains("."), let last = literal.lastIndex(of: ":"), !ipv4(String(literal[literal.index(after: last)...])) {
                    return false
                }
            }
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return false }
                port = after.dropFirst()
            }
        } else {
            if let colon = hostPort.lastIndex(of: ":") {
                port = hostPort[hostPort.index(after: colon)...]
                hostPort = hostPort[..<colon]
            }
            guard allowed(hostPort, extra: []) else { return false }
        }
        return port.allSatisfy { $0.isASCII && $0.isNumber }
    }
}
