import CRdKafka

/// The one error type of the Kafka client.
///
/// It carries librdkafka's error code and its symbolic name (for example `_QUEUE_FULL`,
/// `UNKNOWN_TOPIC_OR_PART`), a human-readable message, and the flags librdkafka attaches to an
/// error: whether retrying the operation may succeed, and whether the client instance is dead
/// (fatal) and must be recreated.
public struct KafkaError: Error, Sendable, Hashable, CustomStringConvertible {
    /// librdkafka's numeric error code (`rd_kafka_resp_err_t`); 0 for errors raised by this library.
    public var code: Int32
    /// librdkafka's symbolic name for `code` (`rd_kafka_err2name`), or a Streamfirst name such as `CONFIG`.
    public var codeName: String
    /// What went wrong, in words.
    public var message: String
    /// Retrying the same operation may succeed.
    public var isRetriable: Bool
    /// The client instance can no longer be used; it must be recreated.
    public var isFatal: Bool
    /// A transactional producer must abort the current transaction.
    public var transactionRequiresAbort: Bool
    /// The configuration key this error is about, when it is a configuration error.
    public var configurationKey: String?

    public init(
        code: Int32,
        codeName: String,
        message: String,
        isRetriable: Bool = false,
        isFatal: Bool = false,
        transactionRequiresAbort: Bool = false,
        configurationKey: String? = nil
    ) {
        self.code = code
        self.codeName = codeName
        self.message = message
        self.isRetriable = isRetriable
        self.isFatal = isFatal
        self.transactionRequiresAbort = transactionRequiresAbort
        self.configurationKey = configurationKey
    }

    public var description: String {
        var flags: [String] = []
        if isFatal { flags.append("fatal") }
        if isRetriable { flags.append("retriable") }
        if transactionRequiresAbort { flags.append("abort transaction") }
        let suffix = flags.isEmpty ? "" : " [\(flags.joined(separator: ", "))]"
        return "KafkaError \(codeName): \(message)\(suffix)"
    }

    // MARK: - Well-known codes

    /// librdkafka's `RD_KAFKA_RESP_ERR__QUEUE_FULL`.
    public static let queueFullCode: Int32 = RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue
    /// librdkafka's `RD_KAFKA_RESP_ERR__TIMED_OUT`.
    public static let timedOutCode: Int32 = RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue
    /// librdkafka's `RD_KAFKA_RESP_ERR__FATAL`.
    public static let fatalCode: Int32 = RD_KAFKA_RESP_ERR__FATAL.rawValue
    /// librdkafka's `RD_KAFKA_RESP_ERR__MSG_TIMED_OUT`: a message could not be delivered in `message.timeout.ms`.
    public static let messageTimedOutCode: Int32 = RD_KAFKA_RESP_ERR__MSG_TIMED_OUT.rawValue
    /// librdkafka's `RD_KAFKA_RESP_ERR__PARTITION_EOF`.
    public static let partitionEOFCode: Int32 = RD_KAFKA_RESP_ERR__PARTITION_EOF.rawValue

    // MARK: - Construction from librdkafka values

    /// An error from a plain `rd_kafka_resp_err_t`.
    init(_ err: rd_kafka_resp_err_t, message: String? = nil) {
        let name = String(cString: rd_kafka_err2name(err))
        let text = message ?? String(cString: rd_kafka_err2str(err))
        self.init(code: err.rawValue, codeName: name, message: text, isRetriable: KafkaError.isRetriableCode(err))
    }

    /// An error from an `rd_kafka_error_t`, which this initialiser destroys.
    init(consuming error: OpaquePointer) {
        let err = rd_kafka_error_code(error)
        let name = String(cString: rd_kafka_error_name(error))
        let text = String(cString: rd_kafka_error_string(error))
        self.init(
            code: err.rawValue,
            codeName: name,
            message: text,
            isRetriable: rd_kafka_error_is_retriable(error) != 0,
            isFatal: rd_kafka_error_is_fatal(error) != 0,
            transactionRequiresAbort: rd_kafka_error_txn_requires_abort(error) != 0
        )
        rd_kafka_error_destroy(error)
    }

    /// A configuration error naming the key and what to do about it.
    static func configuration(key: String?, _ message: String) -> KafkaError {
        KafkaError(code: 0, codeName: "CONFIG", message: message, configurationKey: key)
    }

    /// An error raised by this library itself (not by librdkafka).
    static func client(_ name: String, _ message: String, retriable: Bool = false, fatal: Bool = false) -> KafkaError {
        KafkaError(code: 0, codeName: name, message: message, isRetriable: retriable, isFatal: fatal)
    }

    /// Codes that a plain `rd_kafka_resp_err_t` carries without flags but that are transient by nature.
    static func isRetriableCode(_ err: rd_kafka_resp_err_t) -> Bool {
        switch err {
        case RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__QUEUE_FULL,
            RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__WAIT_COORD, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND, RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
            return true
        default:
            return false
        }
    }
}

extension KafkaError {
    /// Throws if `err` is not `RD_KAFKA_RESP_ERR_NO_ERROR`.
    static func check(_ err: rd_kafka_resp_err_t, _ context: @autoclosure () -> String) throws(KafkaError) {
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            var e = KafkaError(err)
            e.message = "\(context()): \(e.message)"
            throw e
        }
    }

    /// Throws (and destroys) a non-nil `rd_kafka_error_t`.
    static func check(_ error: OpaquePointer?, _ context: @autoclosure () -> String) throws(KafkaError) {
        if let error {
            var e = KafkaError(consuming: error)
            e.message = "\(context()): \(e.message)"
            throw e
        }
    }
}
