import CRdKafka
import Foundation
import Logging
import NIOConcurrencyHelpers

/// Where a consumer starts reading a partition when it is first assigned.
public enum KafkaStartPosition: Sendable, Hashable {
    /// The group's committed offset, else `auto.offset.reset`.
    case committed
    /// The first retained offset.
    case beginning
    /// The end: only records written from now on.
    case end
    /// The first record whose timestamp is at or after this time (milliseconds since the epoch).
    case timestamp(Int64)
    /// Explicit offsets per partition; partitions not listed start from their committed offset.
    case offsets([KafkaTopicPartition: Int64])
}

/// Something that happened to a consumer other than a record: delivered on ``KafkaConsumer/events``.
public enum KafkaConsumerEvent: Sendable {
    /// Partitions were assigned, with the offsets consumption starts from (logical offsets such as
    /// ``KafkaOffset/invalid`` mean "committed, else auto.offset.reset").
    case assigned([KafkaTopicPartitionOffset])
    /// Partitions were revoked (rebalance or close).
    case revoked([KafkaTopicPartition])
    /// The consumer reached the end of a partition (only with ``KafkaConsumerConfiguration/partitionEOF``).
    case partitionEOF(KafkaTopicPartitionOffset)
    /// A per-message or client error; consumption goes on.
    case error(KafkaError)
    /// librdkafka statistics (`statistics.interval.ms`).
    case statistics(KafkaStatistics)
}

/// Synchronous hooks into a consumer group's rebalances.
///
/// They run on the consumer's polling thread, inside librdkafka's rebalance callback, before
/// fetching starts: blocking work (reading offsets from a database, committing) is allowed there and
/// delays nothing but this consumer. `onAssigned` may return start offsets for some partitions
/// (for example offsets stored transactionally with a sink's rows); those win over everything else.
public struct KafkaRebalanceListener: Sendable {
    /// Called with the newly assigned partitions and a context for questions to the broker.
    public var onAssigned: @Sendable ([KafkaTopicPartition], KafkaAssignmentContext) -> [KafkaTopicPartitionOffset]
    public var onRevoked: @Sendable ([KafkaTopicPartition]) -> Void

    /// A listener whose `onAssigned` can ask the broker about the partitions (``KafkaAssignmentContext``).
    public init(
        onAssigned: @escaping @Sendable ([KafkaTopicPartition], KafkaAssignmentContext) -> [KafkaTopicPartitionOffset],
        onRevoked: @escaping @Sendable ([KafkaTopicPartition]) -> Void = { _ in }
    ) {
        self.onAssigned = onAssigned
        self.onRevoked = onRevoked
    }

    public init(
        onAssigned: @escaping @Sendable ([KafkaTopicPartition]) -> [KafkaTopicPartitionOffset] = { _ in [] },
        onRevoked: @escaping @Sendable ([KafkaTopicPartition]) -> Void = { _ in }
    ) {
        self.init(onAssigned: { partitions, _ in onAssigned(partitions) }, onRevoked: onRevoked)
    }
}

/// What a rebalance listener's `onAssigned` may ask while it runs, on the polling thread.
///
/// Valid only during that call (it borrows the consumer's handle): do not keep it. Its calls block,
/// which is allowed there and only there.
public struct KafkaAssignmentContext {
    let rk: OpaquePointer

    /// Low and high watermarks of a partition (first retained offset, next offset to be written),
    /// asked from its leader. Blocks for at most `timeout`.
    public func watermarks(_ partition: KafkaTopicPartition, timeout: Duration = .seconds(10)) throws -> (low: Int64, high: Int64) {
        try queryWatermarks(
            rk, topic: partition.topic, partition: partition.partition, timeoutMs: Int32(clamping: timeout.milliseconds))
    }
}

/// Committed offset, position and watermarks of one partition, and the lag they imply.
public struct KafkaPartitionLag: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    /// The group's committed offset, or ``KafkaOffset/invalid`` when it has none.
    public var committed: Int64
    /// Low and high watermarks (first retained offset, next offset to be written).
    public var low: Int64
    public var high: Int64
    /// Records not yet committed: `high - committed`, or `high - low` with no commit.
    public var lag: Int64 {
        committed >= 0 ? max(0, high - committed) : max(0, high - low)
    }

    public init(topic: String, partition: Int32, committed: Int64, low: Int64, high: Int64) {
        self.topic = topic
        self.partition = partition
        self.committed = committed
        self.low = low
        self.high = high
    }
}

/// A Kafka consumer: group subscription or manual assignment, an `AsyncSequence` of records,
/// batches, offset store and commit, seek, pause / resume, lag and replay helpers.
///
/// **Polling**: records are pulled from `rd_kafka_consumer_poll` on a dedicated thread owned by
/// this consumer, as the application asks for them (``messages`` or ``poll(maxMessages:timeout:)``),
/// plus at most one batch read ahead of what librdkafka has already fetched: librdkafka's own prefetch
/// queue (`queued.max.messages.kbytes`) stays the real buffer, so memory is bounded and a slow
/// application applies backpressure. Rebalance callbacks run on that thread too. Blocking calls
/// (commit, committed, watermarks, seek) run on NIO's blocking pool.
///
/// **Offsets**: by default offsets are stored only when the application calls ``storeOffset(for:)``
/// (or ``storeOffsets(_:)``), and stored offsets are committed every `auto.commit.interval.ms` and by
/// ``commit()``: a record is never committed before it was processed.
///
/// **Errors**: a record that carries an error (broker down, offset out of range, …) becomes a
/// ``KafkaConsumerEvent/error(_:)`` and the sequence goes on; only a fatal error ends it (by throwing).
///
/// **Shutdown**: ``close(timeout:)`` leaves the group (`rd_kafka_consumer_close`), destroys topic
/// handles and then the client; the close is bounded by its timeout.
// The bound is there because librdkafka 2.0.2's consumer close can hang after a lost partition; see
// docs/decisions/0017-librdkafka-2.0.2-workarounds.md.
public final class KafkaConsumer: Sendable {
    let client: RDKafkaClient
    private let poller: ConsumerPoller
    private let rebalance: RebalanceHandler
    private let topicHandles = RDKafkaTopicHandles(closedError: KafkaConsumer.closedError)
    private let leftover = RecordBuffer()
    private let eventContinuation: AsyncStream<KafkaConsumerEvent>.Continuation
    private let logger: Logger
    /// The connection properties without group settings: used for side readers (timestamp lookups).
    private let connectionProperties: [String: String]
    /// The properties handed to librdkafka.
    public let properties: [String: String]

    /// Rebalances, per-message errors, partition EOF and statistics. Holds at most the newest 1,024
    /// unread events; consume it or ignore it. Like every Kafka consumer, this one joins its group,
    /// rebalances and emits these events only while the application is reading records (``messages``
    /// or ``poll(maxMessages:timeout:)``): read in one task, watch events in another.
    public let events: AsyncStream<KafkaConsumerEvent>

    /// Creates a consumer. Throws a configuration error naming the key if a property is unknown or invalid.
    public init(
        configuration: KafkaConsumerConfiguration,
        logger: Logger = Logger(label: "streamfirst.kafka.consumer"),
        rebalanceListener: KafkaRebalanceListener? = nil
    ) throws {
        let (events, continuation) = AsyncStream<KafkaConsumerEvent>.makeStream(bufferingPolicy: .bufferingNewest(1024))
        var connection = configuration.kafka.librdkafkaProperties()
        for (k, v) in configuration.kafka.properties { connection[k] = v }
        let handler = RebalanceHandler(
            listener: rebalanceListener, events: continuation, logger: logger, connectionProperties: connection)
        let context = RDKafkaContext(
            logger: logger,
            onStatistics: { continuation.yield(.statistics($0)) },
            onError: { continuation.yield(.error($0)) },
            rebalance: configuration.groupID == nil ? nil : handler
        )
        self.properties = configuration.librdkafkaProperties()
        self.client = try RDKafkaClient(
            kind: .consumer, properties: properties, context: context, closedError: KafkaConsumer.closedError)
        // Serve logs, stats and errors from the consumer queue, i.e. from our polling thread.
        rd_kafka_poll_set_consumer(client.rk)
        self.rebalance = handler
        self.events = events
        self.eventContinuation = continuation
        self.logger = logger
        self.connectionProperties = connection
        let poller = ConsumerPoller(client: client, events: continuation, logger: logger)
        self.poller = poller
        let leftover = self.leftover
        handler.setRevocationHook { revoked in
            poller.noteRevoked(revoked)
            leftover.remove(partitions: revoked)
        }
    }

    // MARK: - Subscription and assignment

    /// Joins the consumer group for these topics (requires `group.id`).
    ///
    /// `startingAt` applies to the partitions of this consumer's first assignment after `subscribe`
    /// (a replay of the group's input); partitions assigned later (after a rebalance) resume from the
    /// group's committed offsets, so a member taking over from a dead one neither skips nor repeats.
    public func subscribe(topics: [String], startingAt position: KafkaStartPosition = .committed) async throws {
        try ensureOpen()
        rebalance.setStartPosition(position)
        let client = self.client
        // rd_kafka_subscribe waits for librdkafka's main thread: off the cooperative pool.
        try await runBlocking {
            let list = RDKafkaTopicPartitionList(capacity: topics.count)
            for t in topics { list.add(topic: t, partition: RD_KAFKA_PARTITION_UA, offset: KafkaOffset.invalid) }
            try client.withHandle { try KafkaError.check(rd_kafka_subscribe($0, list.list), "subscribe to \(topics)") }
        }
    }

    /// Assigns partitions manually (no group membership), starting at `position`.
    public func assign(_ partitions: [KafkaTopicPartition], startingAt position: KafkaStartPosition = .committed) async throws {
        try ensureOpen()
        let offsets = try await resolve(position, for: partitions)
        let client = self.client
        try await runBlocking {
            let list = RDKafkaTopicPartitionList(offsets)
            try client.withHandle { try KafkaError.check(rd_kafka_assign($0, list.list), "assign \(partitions)") }
        }
        eventContinuation.yield(.assigned(offsets))
    }

    /// The partitions currently assigned to this consumer.
    public func assignment() async throws -> [KafkaTopicPartition] {
        try ensureOpen()
        let client = self.client
        return try await runBlocking {
            var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
            try client.withHandle { try KafkaError.check(rd_kafka_assignment($0, &list), "assignment") }
            guard let list else { return [] }
            defer { rd_kafka_topic_partition_list_destroy(list) }
            return RDKafkaTopicPartitionList.read(list).map(\.topicPartition)
        }
    }

    // MARK: - Records

    /// The records, pulled from librdkafka as the loop asks for them. Ends when the consumer is
    /// closed or the task is cancelled; throws only on a fatal error. Records that were fetched but
    /// not yet handed out when a loop is left stay with the consumer for the next loop.
    public var messages: KafkaMessageSequence { KafkaMessageSequence(consumer: self) }

    /// Up to `maxMessages` records: waits up to `timeout` for the first, then takes what is already
    /// fetched without waiting. Returns an empty array on timeout, cancellation or after close.
    public func poll(maxMessages: Int = 500, timeout: Duration = .seconds(1)) async throws -> [KafkaMessage] {
        let buffered = leftover.take(max: maxMessages)
        if !buffered.isEmpty { return buffered }
        return try await poller.poll(maxMessages: max(1, maxMessages), timeout: timeout)
    }

    /// A record fetched earlier and not handed out yet, if any (never suspends).
    @inline(__always)
    func takeBuffered() -> KafkaMessage? {
        leftover.take()
    }

    func nextMessage(batchSize: Int) async throws -> KafkaMessage? {
        while true {
            if let m = leftover.take() { return m }
            if Task.isCancelled || poller.isClosed { return nil }
            let batch = try await poller.poll(maxMessages: batchSize, timeout: nil)
            guard !batch.isEmpty else { continue }
            // Into the buffer whole (it takes the array's storage over) and out again from the front,
            // instead of `removeFirst`, which shifts the whole batch.
            leftover.append(batch)
        }
    }

    // MARK: - Offsets

    /// Marks a record processed: its offset + 1 is committed by the next (auto) commit.
    public func storeOffset(for message: KafkaMessage) throws {
        try ensureOpen()
        try withTopicHandle(message.topic) { rkt in
            try KafkaError.check(
                rd_kafka_offset_store(rkt, message.partition, message.offset), "store offset of \(message.topicPartition)")
        }
    }

    /// Stores offsets to commit (each is the *next* offset to read, i.e. last processed + 1).
    public func storeOffsets(_ offsets: [KafkaTopicPartitionOffset]) throws {
        try ensureOpen()
        let list = RDKafkaTopicPartitionList(offsets)
        try client.withHandle { try KafkaError.check(rd_kafka_offsets_store($0, list.list), "store offsets") }
        if let failed = list.elements.first(where: { $0.error != nil }), var e = failed.error {
            e.message = "store offset of \(failed.topicPartition): \(e.message)"
            throw e
        }
    }

    /// Commits the stored offsets and waits for the broker's answer. Nothing stored is not an error.
    public func commit() async throws {
        try ensureOpen()
        let client = self.client
        let err = try await runBlocking { try client.withHandle { rd_kafka_commit($0, nil, 0) } }
        if err == RD_KAFKA_RESP_ERR__NO_OFFSET { return }
        try KafkaError.check(err, "commit")
    }

    /// Commits these offsets (next offsets to read) and waits for the broker's answer.
    public func commit(_ offsets: [KafkaTopicPartitionOffset]) async throws {
        try ensureOpen()
        let client = self.client
        let err = try await runBlocking { () -> rd_kafka_resp_err_t in
            let list = RDKafkaTopicPartitionList(offsets)
            return try client.withHandle { rd_kafka_commit($0, list.list, 0) }
        }
        try KafkaError.check(err, "commit \(offsets)")
    }

    /// Starts a commit of the stored offsets without waiting; failures become ``KafkaConsumerEvent/error(_:)``.
    public func commitInBackground() throws {
        try ensureOpen()
        let err = try client.withHandle { rd_kafka_commit($0, nil, 1) }
        if err == RD_KAFKA_RESP_ERR__NO_OFFSET { return }
        try KafkaError.check(err, "commit")
    }

    /// The group's committed offsets for these partitions (``KafkaOffset/invalid`` where none).
    public func committed(
        _ partitions: [KafkaTopicPartition], timeout: Duration = .seconds(10)
    ) async throws
        -> [KafkaTopicPartitionOffset]
    {
        try ensureOpen()
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        return try await runBlocking {
            let list = RDKafkaTopicPartitionList(partitions)
            try client.withHandle { try KafkaError.check(rd_kafka_committed($0, list.list, ms), "committed offsets") }
            return list.elements
        }
    }

    /// The consumer's position (next offset it will hand out) in these partitions.
    public func position(_ partitions: [KafkaTopicPartition]) throws -> [KafkaTopicPartitionOffset] {
        try ensureOpen()
        let list = RDKafkaTopicPartitionList(partitions)
        try client.withHandle { try KafkaError.check(rd_kafka_position($0, list.list), "position") }
        let positions = list.elements
        // Records fetched but not handed out yet are not consumed: report the first of them.
        var pending = poller.prefetchedFirstOffsets()
        for (tp, offset) in leftover.firstOffsets() { pending[tp] = offset } // leftover records come first
        return positions.map { p in
            var p = p
            if let o = pending[p.topicPartition] { p.offset = o }
            return p
        }
    }

    /// Low and high watermarks of a partition, asked from the broker.
    public func watermarks(
        topic: String, partition: Int32, timeout: Duration = .seconds(10)
    ) async throws -> (
        low: Int64, high: Int64
    ) {
        try ensureOpen()
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        return try await runBlocking { try client.queryWatermarks(topic: topic, partition: partition, timeoutMs: ms) }
    }

    /// Lag of the group in the assigned partitions (or the given ones): committed offsets against high watermarks.
    public func lag(
        _ partitions: [KafkaTopicPartition]? = nil, timeout: Duration = .seconds(10)
    ) async throws
        -> [KafkaPartitionLag]
    {
        let parts: [KafkaTopicPartition]
        if let partitions { parts = partitions } else { parts = try await assignment() }
        let committed = try await committed(parts, timeout: timeout)
        let client = self.client
        let ms = Int32(clamping: timeout.milliseconds)
        return try await runBlocking { try client.lags(of: committed, timeoutMs: ms) }
    }

    // MARK: - Seek, pause, resume, replay

    /// Moves the consumer's position in assigned partitions. Records already fetched for those
    /// partitions and not yet handed out are dropped.
    public func seek(_ offsets: [KafkaTopicPartitionOffset], timeout: Duration = .seconds(10)) async throws {
        try ensureOpen()
        let moved = Set(offsets.map(\.topicPartition))
        leftover.remove(partitions: moved)
        _ = poller.invalidate(moved, rewind: false)
        let ms = Int32(clamping: timeout.milliseconds)
        for o in offsets {
            try await runBlocking { [self] in
                // rd_kafka_seek_partitions' timeout is broken in 2.0.2 (1000x too short): seek one by one.
                try withTopicHandle(o.topic) { rkt in
                    try KafkaError.check(rd_kafka_seek(rkt, o.partition, o.offset, ms), "seek \(o)")
                }
            }
        }
    }

    /// Replays assigned partitions (or the given ones) from a position: the beginning, the end, an
    /// offset map, or the first record at or after a timestamp.
    ///
    /// Timestamp lookups use the broker's offsetsForTimes and verify its answer: a broker that answers
    /// "end" for a partition whose last record is at or after the timestamp is corrected by scanning the
    /// partition with a side reader.
    // librdkafka's mock cluster answers "end" for every timestamp, hence the check.
    public func seek(to position: KafkaStartPosition, partitions: [KafkaTopicPartition]? = nil) async throws {
        let parts: [KafkaTopicPartition]
        if let partitions { parts = partitions } else { parts = try await assignment() }
        let offsets = try await resolve(position, for: parts)
        try await seek(offsets.filter { $0.offset != KafkaOffset.invalid })
    }

    /// Offsets for a start position, asked from the broker where needed.
    public func resolve(
        _ position: KafkaStartPosition, for partitions: [KafkaTopicPartition]
    ) async throws
        -> [KafkaTopicPartitionOffset]
    {
        try ensureOpen()
        let client = self.client
        let connection = connectionProperties
        let logger = self.logger
        return try await runBlocking {
            try client.withHandle { rk in
                try OffsetResolver.resolve(position, partitions: partitions, rk: rk, connection: connection, logger: logger)
            }
        }
    }

    /// Stops fetching these partitions (assigned ones); their position is kept.
    public func pause(_ partitions: [KafkaTopicPartition]) throws {
        try ensureOpen()
        let list = RDKafkaTopicPartitionList(partitions)
        try client.withHandle { try KafkaError.check(rd_kafka_pause_partitions($0, list.list), "pause") }
        let paused = Set(partitions)
        // Hand out nothing more from paused partitions; rewind them so nothing is skipped on resume.
        var firstOffsets = poller.invalidate(paused, rewind: true)
        for (tp, offset) in leftover.remove(partitions: paused) { firstOffsets[tp] = offset } // leftover records come first
        let rewinds = firstOffsets.map { KafkaTopicPartitionOffset($0.key, offset: $0.value) }
        for r in rewinds {
            try withTopicHandle(r.topic) { rkt in
                try KafkaError.check(rd_kafka_seek(rkt, r.partition, r.offset, 0), "rewind paused \(r)")
            }
        }
    }

    /// Resumes fetching paused partitions.
    public func resume(_ partitions: [KafkaTopicPartition]) throws {
        try ensureOpen()
        let list = RDKafkaTopicPartitionList(partitions)
        try client.withHandle { try KafkaError.check(rd_kafka_resume_partitions($0, list.list), "resume") }
    }

    // MARK: - Close

    /// Leaves the group (revoking partitions; the revoke listener runs), commits nothing by itself
    /// beyond auto-commit of stored offsets, and destroys the client. Bounded by `timeout`: if
    /// librdkafka hangs in close, the handle is abandoned and an error is logged. Idempotent.
    public func close(timeout: Duration = .seconds(15)) async {
        let closed = await poller.close(timeout: timeout, beforeDestroy: beforeDestroy)
        if !closed {
            logger.error("consumer close did not finish within \(timeout); the librdkafka handle is abandoned")
        }
        eventContinuation.finish()
    }

    /// What the polling thread does after `rd_kafka_consumer_close` and before `rd_kafka_destroy`, on
    /// close and on deinit alike: drop the rebalance hooks (see ``RebalanceHandler/detach()``), the
    /// records fetched but not handed out, then the topic handles.
    private var beforeDestroy: @Sendable () -> Void {
        let handles = topicHandles
        let leftover = self.leftover
        let rebalance = self.rebalance
        return {
            rebalance.detach()
            leftover.removeAll()
            handles.destroyAll()
        }
    }

    static let closedError = KafkaError.client("CLOSED", "the consumer has been closed")

    private func ensureOpen() throws {
        if poller.isClosed { throw Self.closedError }
    }

    deinit {
        // Dropped without close(): the polling thread leaves the group and destroys the handles.
        poller.beginClose(beforeDestroy)
        eventContinuation.finish()
    }

    /// Runs `body` with the topic's handle inside the client's gate: the polling thread destroys
    /// topic handles only after the gate has closed and the calls inside have returned.
    private func withTopicHandle<T>(_ name: String, _ body: (OpaquePointer) throws -> T) throws -> T {
        let handles = topicHandles
        return try client.withHandle { rk in try body(try handles.handle(name, on: rk)) }
    }
}

/// `for try await message in consumer.messages`.
public struct KafkaMessageSequence: AsyncSequence, Sendable {
    public typealias Element = KafkaMessage
    let consumer: KafkaConsumer
    /// Records pulled from librdkafka per request to the polling thread.
    public var batchSize = 500

    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: KafkaConsumer
        let batchSize: Int

        public mutating func next() async throws -> KafkaMessage? {
            // Fast path without a suspension point: a record already fetched.
            if let m = consumer.takeBuffered() { return m }
            return try await consumer.nextMessage(batchSize: batchSize)
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(consumer: consumer, batchSize: batchSize)
    }
}

// MARK: - The polling thread

/// Owns the consumer's polling thread. Requests are served one at a time, in order.
///
/// **Read-ahead**: after answering a request the thread polls, without waiting, up to one more batch
/// of what librdkafka has already fetched and keeps it (`prefetched`). The next request takes that
/// batch at once, without a thread handoff, and the thread reads ahead again while the application
/// works — polling and processing overlap on two cores. At most one batch is held; records of
/// partitions that are revoked, paused or sought meanwhile are dropped (paused ones rewound).
final class ConsumerPoller: Sendable {
    private struct Request {
        var maxMessages: Int
        var deadline: ContinuousClock.Instant?
        var continuation: CheckedContinuation<[KafkaMessage], Error>
        var id: Int
    }
    private struct State {
        var queue: [Request] = []
        var nextID = 0
        var cancelled: Set<Int> = []
        var closing = false
        var closeAction: (@Sendable () -> Void)?
        var closed = false
        /// Partitions revoked while the thread polls (set from the rebalance callback).
        var revokedDuringPoll: Set<KafkaTopicPartition> = []
        /// Partitions paused or sought by the application while the thread polls.
        var invalidatedDuringPoll: [KafkaTopicPartition: Bool] = [:] // value: rewind (pause)
        /// The thread is in a poll pass (serve or read-ahead) whose batch is not settled yet.
        var polling = false
        /// One batch read ahead, and how large the next one may be (0: no read-ahead wanted).
        var prefetched: [KafkaMessage] = []
        var readAheadSize = 0
        /// A fatal error met while reading ahead, thrown to the next request.
        var pendingFailure: KafkaError?

        /// Takes up to `max` read-ahead records for a request of that size, and asks for the next read-ahead.
        mutating func takePrefetched(max: Int) -> [KafkaMessage] {
            let n = Swift.min(max, prefetched.count)
            let out: [KafkaMessage]
            if n == prefetched.count {
                out = prefetched
                prefetched = []
            } else {
                out = Array(prefetched[..<n])
                prefetched.removeFirst(n)
            }
            readAheadSize = max
            return out
        }
    }
    private let state: ConditionLockedState<State>
    private let client: RDKafkaClient
    private let events: AsyncStream<KafkaConsumerEvent>.Continuation
    private let logger: Logger
    private let finished = ConditionLock(value: 0)
    private let liveBatches = RDKafkaRecordBatch.Live()

    init(client: RDKafkaClient, events: AsyncStream<KafkaConsumerEvent>.Continuation, logger: Logger) {
        self.client = client
        self.events = events
        self.logger = logger
        self.state = ConditionLockedState(State())
        startNamedThread("sf-consumer") { [self] in run() }
    }

    var isClosed: Bool { state.read { $0.closing || $0.closed } }

    /// Called by the rebalance callback (on the polling thread) when partitions are revoked.
    func noteRevoked(_ partitions: Set<KafkaTopicPartition>) {
        state.modify { s in
            s.revokedDuringPoll.formUnion(partitions)
            s.prefetched.removeAll { partitions.contains($0.topicPartition) }
        }
    }

    /// Drops read-ahead records of these partitions (paused: `rewind`, or sought) and returns the first
    /// dropped offset per partition; records the partitions for a poll in progress too.
    func invalidate(_ partitions: Set<KafkaTopicPartition>, rewind: Bool) -> [KafkaTopicPartition: Int64] {
        state.modify { s in
            var first: [KafkaTopicPartition: Int64] = [:]
            for m in s.prefetched where partitions.contains(m.topicPartition) && first[m.topicPartition] == nil {
                first[m.topicPartition] = m.offset
            }
            s.prefetched.removeAll { partitions.contains($0.topicPartition) }
            if s.polling {
                for p in partitions { s.invalidatedDuringPoll[p] = rewind }
            }
            return first
        }
    }

    /// The first read-ahead offset per partition.
    func prefetchedFirstOffsets() -> [KafkaTopicPartition: Int64] {
        state.read { s in
            var first: [KafkaTopicPartition: Int64] = [:]
            for m in s.prefetched where first[m.topicPartition] == nil { first[m.topicPartition] = m.offset }
            return first
        }
    }

    func poll(maxMessages: Int, timeout: Duration?) async throws -> [KafkaMessage] {
        // Fast path: a batch read ahead is taken at once; the thread reads the next one.
        let ready = try state.modifyAndSignal { s -> [KafkaMessage]? in
            if let failure = s.pendingFailure {
                s.pendingFailure = nil
                throw failure
            }
            guard s.queue.isEmpty, !s.prefetched.isEmpty, !s.closing else { return nil }
            return s.takePrefetched(max: maxMessages)
        }
        if let ready { return ready }

        let deadline = timeout.map { ContinuousClock.now.advanced(by: $0) }
        let id = state.modify { s -> Int in
            s.nextID += 1
            return s.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { c in
                let refused = state.modifyAndSignal { s -> Bool in
                    if s.closing || s.closed || s.cancelled.contains(id) { return true }
                    s.queue.append(Request(maxMessages: maxMessages, deadline: deadline, continuation: c, id: id))
                    return false
                }
                if refused { c.resume(returning: []) }
            }
        } onCancel: {
            // A queued request is answered here; one being served is answered by the polling thread.
            let queued = state.modifyAndSignal { s -> Request? in
                s.cancelled.insert(id)
                guard let i = s.queue.firstIndex(where: { $0.id == id }) else { return nil }
                return s.queue.remove(at: i)
            }
            queued?.continuation.resume(returning: [])
        }
    }

    /// Stops serving requests, runs `rd_kafka_consumer_close` on the polling thread (it serves the
    /// revoke callback), then `beforeDestroy`, then destroys the client. Returns false on timeout.
    func close(timeout: Duration, beforeDestroy: @escaping @Sendable () -> Void) async -> Bool {
        beginClose(beforeDestroy)
        let finished = self.finished
        let seconds = Double(timeout.milliseconds) / 1000
        return
            (try? await runBlocking {
                finished.lock(whenValue: 1, timeoutSeconds: seconds)
                    ? {
                        finished.unlock()
                        return true
                    }() : false
            }) ?? false
    }

    /// Asks the polling thread to close (answering queued requests with nothing); does not wait.
    func beginClose(_ beforeDestroy: @escaping @Sendable () -> Void) {
        let pending = state.modifyAndSignal { s -> [Request] in
            if !s.closing {
                s.closing = true
                s.closeAction = beforeDestroy
            }
            s.prefetched = []
            defer { s.queue = [] }
            return s.queue
        }
        for r in pending { r.continuation.resume(returning: []) }
    }

    private enum Work {
        case request(Request)
        case readAhead(Int)
        case close((@Sendable () -> Void)?)
    }

    private func run() {
        // Topic names by `rd_kafka_topic_t` pointer (stable for the handle's life), so that a record
        // does not allocate its topic string. Only this thread touches it.
        var topicNames: [UnsafeMutableRawPointer: String] = [:]
        while true {
            var work = Work.close(nil)
            let hasWork: (State) -> Bool = { s in
                s.closing || !s.queue.isEmpty || (s.readAheadSize > 0 && s.prefetched.isEmpty && s.pendingFailure == nil)
            }
            state.waitAndModify(until: hasWork) { s in
                if s.closing {
                    work = .close(s.closeAction)
                } else if !s.queue.isEmpty {
                    work = .request(s.queue.removeFirst())
                    s.polling = s.prefetched.isEmpty
                } else {
                    work = .readAhead(s.readAheadSize)
                    s.readAheadSize = 0 // one pass per batch taken
                    s.polling = true
                }
            }
            switch work {
            case .request(let request):
                // A batch read ahead meanwhile goes first: records leave in the order they were polled.
                let early = state.modify { s -> [KafkaMessage] in
                    guard !s.prefetched.isEmpty else { return [] }
                    s.cancelled.remove(request.id)
                    return s.takePrefetched(max: request.maxMessages)
                }
                if !early.isEmpty {
                    request.continuation.resume(returning: early)
                    continue
                }
                serve(request, topicNames: &topicNames)
            case .readAhead(let size):
                readAhead(size, topicNames: &topicNames)
            case .close(let closeAction):
                let err = rd_kafka_consumer_close(client.rk)
                if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                    logger.warning("consumer close: \(KafkaError(err))")
                }
                // The group is left: from here on calls from other threads throw the closed error, and
                // the ones in progress (a commit, a seek) return before topic handles and the client go.
                // Not before rd_kafka_consumer_close: a revoke listener may still commit during it.
                client.closeGate()
                closeAction?()
                // Records still held by the application borrow librdkafka's messages, which must be
                // destroyed before the rd_kafka_t: with none alive, destroy now; otherwise the client's
                // deinit destroys it (on a thread of its own) once the last record and the consumer are gone.
                if liveBatches.count.load(ordering: .acquiring) == 0 {
                    client.destroy()
                } else {
                    logger.debug("consumer closed while records are held; rd_kafka_destroy waits for their release")
                }
                state.modify { $0.closed = true }
                finished.lock()
                finished.unlock(withValue: 1)
                return
            }
        }
    }

    private enum PollOutcome {
        case record, empty, skipped
        case fatal(KafkaError)
    }

    /// One `rd_kafka_consumer_poll`: a record is handed to `owner` (which destroys it when its last
    /// ``KafkaMessage`` is released) and appended to `batch`; errors become events.
    private func pollOnce(
        wait: Int32, into batch: inout [KafkaMessage], owner: RDKafkaRecordBatch, topicNames: inout [UnsafeMutableRawPointer: String]
    ) -> PollOutcome {
        guard let message = rd_kafka_consumer_poll(client.rk, wait) else { return .empty }
        let err = message.pointee.err
        if err == RD_KAFKA_RESP_ERR_NO_ERROR {
            var topic = ""
            if let rkt = message.pointee.rkt {
                let key = UnsafeMutableRawPointer(rkt)
                if let name = topicNames[key] {
                    topic = name
                } else {
                    topic = String(cString: rd_kafka_topic_name(rkt))
                    topicNames[key] = topic
                }
            }
            let index = owner.append(message, topic: topic)
            batch.append(KafkaMessage(borrowing: owner, index: index))
            return .record
        }
        defer { rd_kafka_message_destroy(message) }
        if err == RD_KAFKA_RESP_ERR__PARTITION_EOF {
            let topic = message.pointee.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
            events.yield(
                .partitionEOF(
                    KafkaTopicPartitionOffset(topic: topic, partition: message.pointee.partition, offset: message.pointee.offset)))
            return .skipped
        }
        if err == RD_KAFKA_RESP_ERR__FATAL, let fatal = client.pendingFatalError() {
            return .fatal(fatal)
        }
        var e = KafkaError(err)
        if let payload = message.pointee.payload, message.pointee.len > 0 {
            e.message = String(decoding: UnsafeRawBufferPointer(start: payload, count: message.pointee.len), as: UTF8.self)
        }
        if let rkt = message.pointee.rkt {
            e.message = "\(String(cString: rd_kafka_topic_name(rkt)))[\(message.pointee.partition)]: \(e.message)"
        }
        logger.warning("consumer error: \(e)")
        events.yield(.error(e))
        return .skipped
    }

    /// Removes from `batch` what was revoked, paused or sought while it was polled; rewinds paused
    /// partitions to their first dropped record. Call with the batch just polled.
    private func settle(_ batch: inout [KafkaMessage], requestID: Int?) {
        let (revoked, invalidated) = state.modify { s -> (Set<KafkaTopicPartition>, [KafkaTopicPartition: Bool]) in
            if let requestID { s.cancelled.remove(requestID) }
            defer {
                s.revokedDuringPoll = []
                s.invalidatedDuringPoll = [:]
                s.polling = false
            }
            return (s.revokedDuringPoll, s.invalidatedDuringPoll)
        }
        if revoked.isEmpty && invalidated.isEmpty { return }
        var rewinds: [KafkaTopicPartition: Int64] = [:]
        batch.removeAll { m in
            let tp = m.topicPartition
            if revoked.contains(tp) { return true }
            guard let rewind = invalidated[tp] else { return false }
            if rewind && rewinds[tp] == nil { rewinds[tp] = m.offset }
            return true
        }
        for (tp, offset) in rewinds {
            guard let rkt = rd_kafka_topic_new(client.rk, tp.topic, nil) else { continue }
            let err = rd_kafka_seek(rkt, tp.partition, offset, 0)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { logger.warning("rewind of paused \(tp) to \(offset): \(KafkaError(err))") }
            rd_kafka_topic_destroy(rkt)
        }
    }

    private func readAhead(_ size: Int, topicNames: inout [UnsafeMutableRawPointer: String]) {
        var batch: [KafkaMessage] = []
        batch.reserveCapacity(min(size, 4096))
        let owner = RDKafkaRecordBatch(client: client, live: liveBatches, capacity: min(size, 4096))
        var failure: KafkaError?
        while batch.count < size {
            let outcome = pollOnce(wait: 0, into: &batch, owner: owner, topicNames: &topicNames)
            if case .empty = outcome { break }
            if case .fatal(let e) = outcome {
                failure = e
                break
            }
        }
        settle(&batch, requestID: nil)
        state.modifyAndSignal { s in
            if s.closing { return }
            if !batch.isEmpty {
                s.prefetched.append(contentsOf: batch)
            }
            if let failure { s.pendingFailure = failure }
        }
    }

    private func serve(_ request: Request, topicNames: inout [UnsafeMutableRawPointer: String]) {
        var batch: [KafkaMessage] = []
        batch.reserveCapacity(min(request.maxMessages, 4096))
        let owner = RDKafkaRecordBatch(client: client, live: liveBatches, capacity: min(request.maxMessages, 4096))
        var failure: KafkaError?
        while batch.count < request.maxMessages {
            let wait: Int32
            if !batch.isEmpty {
                wait = 0
            } else {
                let stop = state.read { $0.closing || $0.cancelled.contains(request.id) }
                if stop { break }
                if let deadline = request.deadline {
                    let left = deadline - ContinuousClock.now
                    if left <= .zero { break }
                    wait = Int32(clamping: min(left.milliseconds + 1, 100))
                } else {
                    wait = 100
                }
            }
            let outcome = pollOnce(wait: wait, into: &batch, owner: owner, topicNames: &topicNames)
            if case .empty = outcome, !batch.isEmpty { break }
            if case .fatal(let e) = outcome {
                failure = e
                break
            }
        }
        settle(&batch, requestID: request.id)
        state.modify { s in
            if !s.closing { s.readAheadSize = request.maxMessages }
        }
        if let failure, batch.isEmpty {
            request.continuation.resume(throwing: failure)
        } else {
            request.continuation.resume(returning: batch)
        }
    }
}
