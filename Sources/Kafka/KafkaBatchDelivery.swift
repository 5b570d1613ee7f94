/// The outcome of ``KafkaProducer/sendBatch(_:)``: how many records were sent, and the few that
/// failed or were acknowledged without an offset, by their index in the batch.
public struct KafkaBatchDelivery: Sendable {
    /// A record of the batch that was not delivered.
    public struct Failure: Sendable {
        /// Its index in the batch.
        public var index: Int
        public var topic: String
        public var error: KafkaError

        public init(index: Int, topic: String, error: KafkaError) {
            self.index = index
            self.topic = topic
            self.error = error
        }
    }

    /// A record of the batch reported delivered without an offset.
    public struct Unconfirmed: Sendable {
        /// Its index in the batch.
        public var index: Int
        /// The partition it was sent to.
        public var partition: Int32

        public init(index: Int, partition: Int32) {
            self.index = index
            self.partition = partition
        }
    }

    /// How many records the batch had.
    public var count: Int
    /// The records that failed, by index (ascending).
    public var failures: [Failure]
    /// Records reported delivered but without an offset, by index (ascending): acknowledged only
    /// implicitly, when a later request to the partition succeeded (see `sendConfirmed`).
    public var withoutOffset: [Unconfirmed]

    public init(count: Int, failures: [Failure] = [], withoutOffset: [Unconfirmed] = []) {
        self.count = count
        self.failures = failures
        self.withoutOffset = withoutOffset
    }

    /// True when every record was delivered.
    public var succeeded: Bool { failures.isEmpty }
}
