import Config
import StreamCore
public struct RecordContext: Sendable { public var id: String; public var key: String?; public var eventTimeMs: Int64?; public var topic: String; public var partition: Int32; public var offset: Int64
  public init(id: String, key: String?, eventTimeMs: Int64?, topic: String, partition: Int32, offset: Int64) { self.id = id; self.key = key; self.eventTimeMs = eventTimeMs; self.topic = topic; self.partition = partition; self.offset = offset } }
public struct ProcessorOutput: Sendable, Equatable { public var value: JSONValue; public var route: String? }
public struct ProcessingError: Error, Sendable { public var step: String; public var errorClass: String; public var message: String }
public protocol RecordProcessor: Sendable { func process(_ value: JSONValue, context: RecordContext) throws(ProcessingError) -> [ProcessorOutput] }
public struct StepProcessor: RecordProcessor { public init(steps: ConfigNode, baseDirectory: String) throws(ConfigError) {}; public var routes: Set<String> { [] }
  public func process(_ value: JSONValue, context: RecordContext) throws(ProcessingError) -> [ProcessorOutput] { [] } }
public struct ExpressionError: Error {}
public struct Expression: Sendable { public init(_ text: String) throws {} ; public func evaluate(_ value: JSONValue, context: RecordContext) throws(ExpressionError) -> JSONValue { .null } }
public struct ProcessorChain: RecordProcessor { public init(_ p: [any RecordProcessor]) {}
  public func process(_ value: JSONValue, context: RecordContext) throws(ProcessingError) -> [ProcessorOutput] { [] } }
