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
        case "uuid": return matches(s, "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
        case "hostname": return hostname(s)
        case "uri": return uri(s)
        case "uri-reference": return !s.contains(" ")
        case "regex": return (try? NSRegularExpression(pattern: s)) != nil
        case "duration": return matches(s, "^P(?!$)(\\d+Y)?(\\d+M)?(\\d+W)?(\\d+D)?(T(?=\\d)(\\d+H)?(\\d+M)?(\\d+S)?)?$")
        default: return true  // unknown formats are annotations only
        }
    }

    static func matches(_ s: String, _ pattern: String) -> Bool {
        guard s.allSatisfy(\.isASCII), let r = try? NSRegularExpression(pattern: pattern) else { return false }
        return r.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
    }

    static func date(_ s: String) -> Bool {
        guard matches(s, "^\\d{4}-\\d{2}-\\d{2}$") else { return false }
        let p = s.split(separator: "-").compactMap { Int($0) }
        guard p.count == 3, (1...12).contains(p[1]), p[2] >= 1 else { return false }
        let leap = (p[0] % 4 == 0 && p[0] % 100 != 0) || p[0] % 400 == 0
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][p[1] - 1]
        return p[2] <= days
    }

    static func time(_ s: String) -> Bool {
        guard matches(s, "^(\\d{2}):(\\d{2}):(\\d{2})(\\.\\d+)?([zZ]|[+-]\\d{2}:\\d{2})$") else { return false }
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

    static func email(_ s: String) -> Bool {
        let parts = s.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return false }
        let local = parts[0]
        if local.hasPrefix(".") || local.hasSuffix(".") || local.contains("..") { return false }
        let domain = String(parts[1])
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

    static func uri(_ s: String) -> Bool {
        guard let colon = s.firstIndex(of: ":"), colon != s.startIndex else { return false }
        let scheme = s[..<colon]
        guard scheme.first?.isLetter == true, scheme.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) }) else {
            return false
        }
        let invalid: Set<Character> = [" ", "<", ">", "\"", "{", "}", "|", "\\", "^", "`"]
        guard !s.contains(where: { invalid.contains($0) || !$0.isASCII }) else { return false }
        if s[s.index(after: colon)...].hasPrefix("//") {
            let authority = s[s.index(colon, offsetBy: 3)...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
            if authority.hasPrefix("[") { return authority.contains("]") }
            if authority.filter({ $0 == "@" }).count > 1 { return false }
            if let at = authority.lastIndex(of: "@") {
                let hostPort = authority[authority.index(after: at)...]
                if hostPort.filter({ $0 == ":" }).count > 1 { return false }
            } else if authority.filter({ $0 == ":" }).count > 1 {
                return false
            }
        }
        return true
    }
}
