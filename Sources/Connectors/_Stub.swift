import Config
import Kafka
import Logging
public enum SourceFactory { public static func make(_ config: ConfigMapping, baseDirectory: String, logger: Logger) throws(ConfigError) -> any RecordSource { throw config.node.error("stub") } }
public enum SinkFactory { public static func make(_ config: ConfigMapping, baseDirectory: String, kafka: KafkaProducerConfiguration?, logger: Logger) throws(ConfigError) -> any RecordSink { throw config.node.error("stub") } }
