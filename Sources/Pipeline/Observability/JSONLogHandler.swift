import Foundation
import Logging
import StreamCore

/// One JSON object per log line on standard error: `{"ts","level","label","msg", …metadata}`.
// Written by hand because swift-log ships only a text handler and no listed package has a JSON one.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String

    public init(label: String) {
        self.label = label
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var object: [String: JSONValue] = [
            "ts": .string(Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))),
            "level": .string(event.level.rawValue),
            "label": .string(label),
            "msg": .string(event.message.description),
        ]
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let extra = event.metadata { all.merge(extra) { $1 } }
        for (k, v) in all { object[k] = .string(v.description) }
        var line = JSONValue.object(object).serialized()
        line.append(0x0A)
        FileHandle.standardError.write(Data(line))
    }
}
