import Foundation
import StreamCore
import Testing
import Validation

/// Property names with `/` and `~` are escaped in violation paths (RFC 6901) by the validator's own
/// byte loop; names without them (the hot path) come out unchanged.
@Suite struct JSONPointerEscapeTests {
    @Test func propertyNamesAreEscapedInInstancePathsAndKeywordLocations() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-escape-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let schemaText = #"""
            {"type": "object", "properties": {
              "a/b": {"type": "integer"}, "c~d": {"type": "integer"}, "~/~": {"type": "integer"},
              "plain": {"type": "integer"}, "ünï/cødé": {"type": "integer"}}}
            """#
        try schemaText.write(to: dir.appendingPathComponent("escape.json"), atomically: true, encoding: .utf8)
        let schema = try SchemaRegistry.load(directory: dir.path).schema(named: "escape")
        let instance = try JSONValue.parse(Array(#"{"a/b": "x", "c~d": "x", "~/~": "x", "plain": "x", "ünï/cødé": "x", "ok": 1}"#.utf8))
        let violations = schema.validate(instance)
        #expect(Set(violations.map(\.instancePath)) == ["/a~1b", "/c~0d", "/~0~1~0", "/plain", "/ünï~1cødé"], "got \(violations)")
        #expect(violations.contains { $0.keywordLocation.contains("/properties/a~1b/") }, "got \(violations)")
        #expect(schema.validate(try JSONValue.parse(Array(#"{"a/b": 1, "c~d": 2}"#.utf8))).isEmpty)
    }
}
