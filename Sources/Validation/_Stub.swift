import StreamCore
public struct SchemaViolation: Sendable, Equatable { public var instancePath: String; public var keywordLocation: String; public var message: String }
public struct SchemaError: Error, Sendable, CustomStringConvertible { public var description: String }
public final class SchemaRegistry: Sendable {
  public static func load(directory: String, formatAssertion: Bool) throws(SchemaError) -> SchemaRegistry { SchemaRegistry() }
  public func schema(named: String) throws(SchemaError) -> JSONSchema { JSONSchema() }
}
public final class JSONSchema: Sendable { public func validate(_ instance: JSONValue) -> [SchemaViolation] { [] } }
