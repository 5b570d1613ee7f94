/// One documented setting of a component (a connector, a processor): its key, type, default and
/// description. Connectors (`ConnectorSpec.Field`) and processors (`StepSpec.Field`) share it, so the
/// reference pages and the key check read one shape.
// It lives here because both modules read their settings through `Config`.
public struct SettingSpec: Sendable {
    public var name: String
    public var type: String
    public var defaultValue: String?
    public var description: String
    public init(_ name: String, _ type: String, default defaultValue: String? = nil, _ description: String) {
        self.name = name
        self.type = type
        self.defaultValue = defaultValue
        self.description = description
    }
}
