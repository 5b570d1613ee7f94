import Config
import Foundation
import StreamCore
import Testing

/// Inputs libFuzzer found (`make fuzz`), kept so that they stay fixed.
@Suite struct FuzzRegressionTests {
    /// `-1E380` parsed as -infinity and was written back as `null`: a silent change of data.
    @Test(arguments: ["-1E380", "1e400", "[1e999]", "{\"a\":-9e99999}"])
    func numbersBeyondDoubleRangeAreRefused(text: String) {
        let error = #expect(throws: JSONParseError.self) { try JSONValue.parse(Array(text.utf8)) }
        #expect(error?.description.contains("out of range") == true)
    }

    @Test func theLargestFiniteNumbersRoundTrip() throws {
        for text in ["1.7976931348623157e308", "-1.7976931348623157e308", "5e-324", "9223372036854775807", "-9223372036854775808"] {
            let v = try JSONValue.parse(Array(text.utf8))
            #expect(try JSONValue.parse(v.serialized()).jsonEquals(v), "\(text)")
        }
    }
}

@Suite struct ConfigFuzzRegressionTests {
    /// `2777…7s` (a duration beyond Int64 milliseconds) trapped in the conversion instead of
    /// failing with the key's line.
    @Test(arguments: ["277777777777777777777777777777777777777777s", "1e300h", "99999999999999999999ms"])
    func hugeDurationsAreAConfigErrorNotATrap(text: String) throws {
        let node = try ConfigNode.parse(yaml: "timeout: \(text)", source: ConfigSource(file: "f.yaml", environment: [:]))
        let m = try node.mapping()
        let error = #expect(throws: ConfigError.self) { try m.required("timeout").durationMilliseconds() }
        #expect(error?.description.hasPrefix("f.yaml:1:") == true, "\(error?.description ?? "")")
    }
}

@Suite struct SecretFileInterpolationTests {
    @Test func fileReferencesReadTheSecretWithoutItsNewline() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sf-secret-\(UUID().uuidString.prefix(8))").path
        try "hunter2\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try Interpolation.expand("sasl.password=${file:\(path)}", environment: [:]) == "sasl.password=hunter2")
        let error = #expect(throws: Interpolation.Failure.self) {
            try Interpolation.expand("${file:/nonexistent/secret}", environment: [:])
        }
        #expect(error?.message.contains("/nonexistent/secret") == true)
    }
}
