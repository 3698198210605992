/// Counts failed logins per client address, as Postfix's anvil does for its auth rate limit:
/// after `limit` failures within `window` the client's attempts are refused unchecked until
/// the window ends, so guessing passwords costs the guesser time and the node no CPU.
/// Pure logic over a given clock reading; the owner (an actor) supplies `now`.
public struct LoginFailureLimiter: Sendable {
    public let limit: Int
    public let window: Duration
    /// The most addresses tracked: memory stays bounded under a flood of addresses. When that
    /// many are within their window, a new address is not tracked until one expires.
    private let pruneThreshold: Int
    private var failures: [String: (count: Int, windowStart: ContinuousClock.Instant)] = [:]
    /// When the oldest tracked window ends: pruning before then would free nothing.
    private var nextPrune: ContinuousClock.Instant?

    public init(limit: Int, window: Duration, pruneThreshold: Int = 10_000) {
        self.limit = limit
        self.window = window
        self.pruneThreshold = pruneThreshold
    }

    public func isBlocked(_ client: String, now: ContinuousClock.Instant) -> Bool {
        guard let entry = failures[client], now - entry.windowStart < window else { return false }
        return entry.count >= limit
    }

    /// Records one failure; returns whether the client is now blocked.
    public mutating func recordFailure(_ client: String, now: ContinuousClock.Instant) -> Bool {
        if let entry = failures[client], now - entry.windowStart < window {
            failures[client] = (entry.count + 1, entry.windowStart)
        } else {
            if failures.count >= pruneThreshold {
                if nextPrune.map({ now >= $0 }) ?? true {
                    failures = failures.filter { now - $0.value.windowStart < window }
                    nextPrune = failures.values.map(\.windowStart).min().map { $0 + window }
                }
                guard failures.count < pruneThreshold else { return false }
            }
            failures[client] = (1, now)
        }
        return isBlocked(client, now: now)
    }

    /// Clients tracked (for tests and metrics).
    public var trackedClients: Int { failures.count }
}
