import Dispatch
import NIOConcurrencyHelpers

/// Mutual exclusion between a stage's batch work (on a task) and its rebalance callbacks (on the
/// consumer's polling thread, which may block): a rebalance never runs while a batch is applied, and
/// a batch never starts while a rebalance restores or repositions. Used by persist (``SinkGate``)
/// and the stateful stage.
// Written here because no mirrored package offers a lock that an async task can wait for without
// blocking the cooperative pool and a C callback thread can block on.
final class BatchRebalanceGate: Sendable {
    private static let free = 0
    private static let batch = 1
    private static let rebalance = 2
    private let lock = ConditionLock<Int>(value: BatchRebalanceGate.free)

    /// Enters a batch; when a rebalance holds the gate, waits for it off the cooperative pool.
    func enterBatch() async {
        if lock.lock(whenValue: Self.free, timeoutSeconds: 0) {
            lock.unlock(withValue: Self.batch)
            return
        }
        let lock = self.lock
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                lock.lock(whenValue: Self.free)
                lock.unlock(withValue: Self.batch)
                c.resume()
            }
        }
    }

    /// Leaves the batch entered with ``enterBatch()``.
    func leaveBatch() { release() }

    /// Enters a rebalance callback, blocking the calling (polling) thread while a batch holds the gate.
    func enterRebalance() {
        lock.lock(whenValue: Self.free)
        lock.unlock(withValue: Self.rebalance)
    }

    /// Leaves the rebalance entered with ``enterRebalance()``.
    func leaveRebalance() { release() }

    private func release() {
        lock.lock()
        lock.unlock(withValue: Self.free)
    }
}
