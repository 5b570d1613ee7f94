import NIOConcurrencyHelpers
import Synchronization

/// Guards a C handle that application threads use while its owner's thread may tear it down.
///
/// Every use from outside the owner's thread ``enter()``s the gate and ``leave()``s it. The owner
/// ``close()``s the gate before it destroys the handle (new users are refused from then on) and waits
/// until the last user inside has left. Without it, a call that checked "still open" a moment before
/// the owner destroyed the handle would go on with a freed pointer (for example a send racing
/// `shutdown()`).
// One atomic word: bit 0 is "closed", the rest counts the users inside in steps of 2. A user's
// increment and the owner's close are read-modify-writes of that one word, so they are ordered:
// either the user got in first (and the owner waits for it) or the owner closed first (and the user
// backs out). The uncontended cost is two atomic read-modify-writes per use.
//
// Written here because none of the packages this project depends on offers such a gate; the
// waiting part is NIO's `ConditionLock`.
final class HandleGate: Sendable {
    private static let closedBit = 1
    private static let user = 2
    private let word = Atomic<Int>(0)
    /// Set to 1 by the user that leaves a closed gate empty.
    private let drained = ConditionLock(value: 0)

    init() {}

    /// Enters the gate: true if the handle may be used (then ``leave()`` exactly once), false once closed.
    @inline(__always)
    func enter() -> Bool {
        let now = word.wrappingAdd(Self.user, ordering: .acquiringAndReleasing).newValue
        if now & Self.closedBit == 0 { return true }
        leave()
        return false
    }

    /// Leaves the gate; the last user out of a closed gate wakes the owner.
    @inline(__always)
    func leave() {
        if word.wrappingSubtract(Self.user, ordering: .acquiringAndReleasing).newValue == Self.closedBit {
            drained.lock()
            drained.unlock(withValue: 1)
        }
    }

    /// Refuses new users from now on. Idempotent. Returns true if nobody is inside.
    @discardableResult
    func close() -> Bool {
        word.bitwiseOr(Self.closedBit, ordering: .acquiringAndReleasing).newValue == Self.closedBit
    }

    var isClosed: Bool { word.load(ordering: .acquiring) & Self.closedBit != 0 }

    /// After ``close()``: waits until the last user has left, at most `timeoutSeconds` (nil: no bound).
    /// True when the gate is empty. Blocks the calling thread: never call it on the cooperative pool.
    func waitUntilEmpty(timeoutSeconds: Double? = nil) -> Bool {
        if word.load(ordering: .acquiring) == Self.closedBit { return true }
        if let timeoutSeconds {
            guard drained.lock(whenValue: 1, timeoutSeconds: timeoutSeconds) else { return false }
        } else {
            drained.lock(whenValue: 1)
        }
        drained.unlock()
        return true
    }
}
