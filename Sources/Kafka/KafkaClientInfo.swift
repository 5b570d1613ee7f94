import CRdKafka

/// Facts about the linked librdkafka.
public enum KafkaClientInfo {
    /// librdkafka's version string, e.g. `2.0.2`.
    public static var librdkafkaVersion: String { String(cString: rd_kafka_version_str()) }

    /// librdkafka's `builtin.features` (e.g. `gzip,snappy,ssl,sasl,…,sasl_scram,…`).
    public static var builtinFeatures: String {
        guard let conf = rd_kafka_conf_new() else { return "" }
        defer { rd_kafka_conf_destroy(conf) }
        var size = 0
        guard rd_kafka_conf_get(conf, "builtin.features", nil, &size) == RD_KAFKA_CONF_OK, size > 0 else { return "" }
        var buffer = [CChar](repeating: 0, count: size)
        _ = rd_kafka_conf_get(conf, "builtin.features", &buffer, &size)
        return stringFromCBuffer(buffer)
    }
}
