import NIOConcurrencyHelpers

/// A value set once (first writer wins) that any number of tasks can await.
final class OneShot<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var waiters: [CheckedContinuation<Value, Never>] = []
    }
    private let state = NIOLockedValueBox(State())

    /// Sets the value if none is set yet; returns whether this call set it.
    @discardableResult
    func set(_ value: Value) -> Bool {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Value, Never>]? in
            guard s.value == nil else { return nil }
            s.value = value
            defer { s.waiters = [] }
            return s.waiters
        }
        guard let waiters else { return false }
        for waiter in waiters { waiter.resume(returning: value) }
        return true
    }

    var value: Value? { state.withLockedValue { $0.value } }

    func wait() async -> Value {
        await withCheckedContinuation { (continuation: CheckedContinuation<Value, Never>) in
            let now = state.withLockedValue { s -> Value? in
                if let v = s.value { return v }
                s.waiters.append(continuation)
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }
}
