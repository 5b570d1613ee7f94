import CRdKafka
import Logging
import NIOConcurrencyHelpers

/// Performs a group consumer's (re)assignments inside librdkafka's rebalance callback, on the
/// consumer's polling thread: applies the start position, the listener's offsets, and emits events.
final class RebalanceHandler: Sendable {
    private struct State {
        var position: KafkaStartPosition = .committed
        /// The position applies to the first assignment after `subscribe` only: partitions that move
        /// here later (a member died or left) continue from the group's committed offsets.
        var firstAssignmentDone = false
    }
    private let state = NIOLockedValueBox(State())
    private struct Hooks {
        /// Told (on the polling thread, inside the callback) which partitions were revoked, so that
        /// records fetched from them but not yet handed out are dropped: the new owner reads them again.
        var revocation: (@Sendable (Set<KafkaTopicPartition>) -> Void)?
        var listener: KafkaRebalanceListener?
    }
    /// Until ``detach()``. The rd_kafka_t's context holds this handler until the handle is destroyed,
    /// and both hooks lead back to the consumer's client (the revocation hook through the poller, a
    /// listener often through the application object that owns the consumer): a cycle that would keep
    /// a handle alive forever when its destroy waits for the release of held records.
    private let hooks: NIOLockedValueBox<Hooks>
    let events: AsyncStream<KafkaConsumerEvent>.Continuation
    let logger: Logger
    let connectionProperties: [String: String]

    init(
        listener: KafkaRebalanceListener?, events: AsyncStream<KafkaConsumerEvent>.Continuation, logger: Logger,
        connectionProperties: [String: String]
    ) {
        self.hooks = NIOLockedValueBox(Hooks(revocation: nil, listener: listener))
        self.events = events
        self.logger = logger
        self.connectionProperties = connectionProperties
    }

    private var listener: KafkaRebalanceListener? { hooks.withLockedValue { $0.listener } }
    private var revocationHook: (@Sendable (Set<KafkaTopicPartition>) -> Void)? { hooks.withLockedValue { $0.revocation } }

    func setRevocationHook(_ hook: @escaping @Sendable (Set<KafkaTopicPartition>) -> Void) {
        hooks.withLockedValue { $0.revocation = hook }
    }

    /// Drops both hooks: called once the consumer has left its group (after `rd_kafka_consumer_close`,
    /// no rebalance callback runs).
    func detach() {
        hooks.withLockedValue { $0 = Hooks(revocation: nil, listener: nil) }
    }

    func setStartPosition(_ position: KafkaStartPosition) {
        state.withLockedValue {
            $0.position = position
            $0.firstAssignmentDone = false
        }
    }

    func handle(rk: OpaquePointer, err: rd_kafka_resp_err_t, list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        let cooperative = rd_kafka_rebalance_protocol(rk).map { String(cString: $0) } == "COOPERATIVE"
        let partitions = RDKafkaTopicPartitionList.read(list).map(\.topicPartition)
        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            let (position, fresh) = state.withLockedValue { s -> (KafkaStartPosition, [KafkaTopicPartition]) in
                defer { s.firstAssignmentDone = true }
                return (s.position, s.firstAssignmentDone ? [] : partitions)
            }
            var offsets: [KafkaTopicPartition: Int64] = [:]
            if position != .committed, !fresh.isEmpty {
                do {
                    let resolved = try OffsetResolver.resolve(
                        position, partitions: fresh, rk: rk, connection: connectionProperties, logger: logger)
                    for r in resolved { offsets[r.topicPartition] = r.offset }
                } catch {
                    logger.error("cannot resolve start position \(position): \(error); starting from committed offsets")
                    events.yield(.error(error as? KafkaError ?? KafkaError.client("REBALANCE", "\(error)")))
                }
            }
            if let listener {
                for o in listener.onAssigned(partitions, KafkaAssignmentContext(rk: rk)) { offsets[o.topicPartition] = o.offset }
            }
            if let elems = list.pointee.elems {
                for i in 0..<Int(list.pointee.cnt) {
                    let tp = KafkaTopicPartition(topic: String(cString: elems[i].topic), partition: elems[i].partition)
                    if let o = offsets[tp] { elems[i].offset = o }
                }
            }
            if cooperative {
                if let error = rd_kafka_incremental_assign(rk, list) {
                    report(KafkaError(consuming: error), "incremental assign")
                }
            } else {
                let e = rd_kafka_assign(rk, list)
                if e != RD_KAFKA_RESP_ERR_NO_ERROR { report(KafkaError(e), "assign") }
            }
            logger.info("assigned \(partitions.map(\.description).joined(separator: ", "))")
            events.yield(.assigned(RDKafkaTopicPartitionList.read(list)))
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            revocationHook?(Set(partitions))
            listener?.onRevoked(partitions)
            if cooperative {
                if let error = rd_kafka_incremental_unassign(rk, list) {
                    report(KafkaError(consuming: error), "incremental unassign")
                }
            } else {
                let e = rd_kafka_assign(rk, nil)
                if e != RD_KAFKA_RESP_ERR_NO_ERROR { report(KafkaError(e), "unassign") }
            }
            logger.info("revoked \(partitions.map(\.description).joined(separator: ", "))")
            events.yield(.revoked(partitions))
        default:
            revocationHook?(Set(partitions))
            report(KafkaError(err), "rebalance")
            _ = rd_kafka_assign(rk, nil)
            events.yield(.revoked(partitions))
        }
    }

    private func report(_ error: KafkaError, _ what: String) {
        var e = error
        e.message = "\(what): \(e.message)"
        logger.error("\(e)")
        events.yield(.error(e))
    }
}

let rdkafkaRebalanceCallback:
    @convention(c) (
        OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?
    ) -> Void = { rk, err, list, opaque in
        guard let rk, let list else { return }
        guard let handler = RDKafkaContext.from(opaque)?.rebalance else {
            _ = rd_kafka_assign(rk, err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? list : nil)
            return
        }
        handler.handle(rk: rk, err: err, list: list)
    }

/// Turns a ``KafkaStartPosition`` into offsets. Blocking: call it off the cooperative pool.
enum OffsetResolver {
    static func resolve(
        _ position: KafkaStartPosition, partitions: [KafkaTopicPartition], rk: OpaquePointer,
        connection: [String: String], logger: Logger, timeoutMs: Int32 = 10_000
    ) throws -> [KafkaTopicPartitionOffset] {
        switch position {
        case .committed:
            return partitions.map { KafkaTopicPartitionOffset($0, offset: KafkaOffset.invalid) }
        case .beginning:
            return partitions.map { KafkaTopicPartitionOffset($0, offset: KafkaOffset.beginning) }
        case .end:
            return partitions.map { KafkaTopicPartitionOffset($0, offset: KafkaOffset.end) }
        case .offsets(let map):
            return partitions.map { KafkaTopicPartitionOffset($0, offset: map[$0] ?? KafkaOffset.invalid) }
        case .timestamp(let t):
            return try offsets(
                forTimestamp: t, partitions: partitions, rk: rk, connection: connection, logger: logger, timeoutMs: timeoutMs)
        }
    }

    /// The first offset whose record timestamp is >= `t`, per partition (the high watermark when none is).
    ///
    /// Asks the broker (offsetsForTimes) and checks every "end" answer for a non-empty partition against
    /// the partition's last record: if that record is at or after `t`, the broker answered wrongly
    /// (librdkafka's mock cluster does, for every timestamp) and the partition is scanned instead.
    /// On a real cluster the check reads one record per such partition and never scans.
    static func offsets(
        forTimestamp t: Int64, partitions: [KafkaTopicPartition], rk: OpaquePointer,
        connection: [String: String], logger: Logger, timeoutMs: Int32
    ) throws -> [KafkaTopicPartitionOffset] {
        let list = RDKafkaTopicPartitionList(partitions.map { KafkaTopicPartitionOffset($0, offset: t) })
        try KafkaError.check(rd_kafka_offsets_for_times(rk, list.list, timeoutMs), "offsets for timestamp \(t)")
        var result = list.elements
        var suspicious: [(index: Int, low: Int64, high: Int64)] = []
        for (i, r) in result.enumerated() where r.offset < 0 || r.error != nil {
            let (low, high) = try queryWatermarks(rk, topic: r.topic, partition: r.partition, timeoutMs: timeoutMs)
            result[i].error = nil
            result[i].offset = high
            if high > low { suspicious.append((i, low, high)) }
        }
        if suspicious.isEmpty { return result }
        let reader = try SideReader(connection: connection, logger: logger)
        defer { reader.close() }
        let lastChecks = try reader.firstOffset(
            atOrAfter: t, ranges: suspicious.map { (result[$0.index].topicPartition, $0.high - 1, $0.high) })
        let toScan = suspicious.filter { lastChecks[result[$0.index].topicPartition] != nil }
        if toScan.isEmpty { return result }
        logger.debug("offsetsForTimes answered end for \(toScan.count) partition(s) holding later records: scanning")
        let scanned = try reader.firstOffset(
            atOrAfter: t, ranges: toScan.map { (result[$0.index].topicPartition, $0.low, $0.high) })
        for s in toScan {
            if let o = scanned[result[s.index].topicPartition] { result[s.index].offset = o }
        }
        return result
    }
}

/// A short-lived, group-less consumer that reads partitions by manual assignment (timestamp lookups).
final class SideReader {
    private let client: RDKafkaClient

    init(connection: [String: String], logger: Logger) throws {
        var p = connection
        p["enable.partition.eof"] = "true"
        p["enable.auto.commit"] = "false"
        p["enable.auto.offset.store"] = "false"
        p["fetch.wait.max.ms"] = "10"
        p["auto.offset.reset"] = "earliest"
        // librdkafka 2.0.2 refuses assign() without a group id; this one never joins or commits.
        p["group.id"] = "streamfirst-side-reader-\(String(UInt64.random(in: 1...UInt64.max), radix: 36))"
        p.removeValue(forKey: "statistics.interval.ms")
        client = try RDKafkaClient(
            kind: .consumer, properties: p, context: RDKafkaContext(logger: logger, onStatistics: nil, onError: nil))
        rd_kafka_poll_set_consumer(client.rk)
    }

    /// For each (partition, from, end): the first offset in [from, end) whose timestamp is >= t, or no entry.
    func firstOffset(
        atOrAfter t: Int64, ranges: [(KafkaTopicPartition, Int64, Int64)], timeout: Duration = .seconds(60)
    )
        throws -> [KafkaTopicPartition: Int64]
    {
        var ends: [KafkaTopicPartition: Int64] = [:]
        for (tp, _, end) in ranges { ends[tp] = end }
        var open = Set(ranges.map(\.0))
        var found: [KafkaTopicPartition: Int64] = [:]
        let list = RDKafkaTopicPartitionList(ranges.map { KafkaTopicPartitionOffset($0.0, offset: $0.1) })
        try KafkaError.check(rd_kafka_assign(client.rk, list.list), "assign side reader")
        defer { _ = rd_kafka_assign(client.rk, nil) }
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while !open.isEmpty {
            guard ContinuousClock.now < deadline else {
                throw KafkaError.client("TIMED_OUT", "timestamp scan did not finish within \(timeout)", retriable: true)
            }
            guard let m = rd_kafka_consumer_poll(client.rk, 100) else { continue }
            defer { rd_kafka_message_destroy(m) }
            guard let rkt = m.pointee.rkt else { continue }
            let tp = KafkaTopicPartition(topic: String(cString: rd_kafka_topic_name(rkt)), partition: m.pointee.partition)
            guard open.contains(tp) else { continue }
            let err = m.pointee.err
            if err == RD_KAFKA_RESP_ERR__PARTITION_EOF {
                open.remove(tp)
                continue
            }
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                if KafkaError.isRetriableCode(err) { continue }
                throw KafkaError(err, message: "scanning \(tp): \(KafkaError(err).message)")
            }
            if let end = ends[tp], m.pointee.offset >= end {
                open.remove(tp)
                continue
            }
            let ts = rd_kafka_message_timestamp(m, nil)
            if ts >= t {
                found[tp] = m.pointee.offset
                open.remove(tp)
            }
        }
        return found
    }

    func close() {
        _ = rd_kafka_consumer_close(client.rk)
        client.destroy()
    }
}
