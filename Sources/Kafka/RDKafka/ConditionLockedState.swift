import Foundation

/// A value guarded by a mutex with a condition variable, for the handoff between async callers and a
/// dedicated C-polling thread.
// Written here because NIO's `ConditionLock` only holds an `Int`.
final class ConditionLockedState<Value>: @unchecked Sendable {
    // `@unchecked`: every access to `value` happens with `condition` locked.
    private let condition = NSCondition()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func read<T>(_ body: (Value) throws -> T) rethrows -> T {
        condition.lock()
        defer { condition.unlock() }
        return try body(value)
    }

    @discardableResult
    func modify<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        condition.lock()
        defer { condition.unlock() }
        return try body(&value)
    }

    /// Modifies the value and wakes every waiter.
    @discardableResult
    func modifyAndSignal<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        return try body(&value)
    }

    /// Blocks the calling (non-cooperative) thread until `predicate` holds, then modifies the value.
    func waitAndModify(until predicate: (Value) -> Bool, _ body: (inout Value) -> Void) {
        condition.lock()
        defer { condition.unlock() }
        while !predicate(value) { condition.wait() }
        body(&value)
    }
}
