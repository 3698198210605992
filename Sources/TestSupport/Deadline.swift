/// Thrown when a test step takes longer than its bound: a hang becomes a failure that says
/// what was being waited for.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public let what: String
    public let limit: Duration
    public var description: String { "\(what) did not finish within \(limit)" }
}

/// Runs `body`, cancelling it and throwing `DeadlineExceeded` if it runs past `limit`.
public func withDeadline<T: Sendable>(_ limit: Duration, _ what: String,
                                      _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw DeadlineExceeded(what: what, limit: limit)
        }
        return value
    }
}
