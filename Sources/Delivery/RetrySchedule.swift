import Foundation
import SmarthostConfig

/// When a deferred message is tried again, and when it gives up: a traffic class's schedule.
/// The wait after attempt n is `first_retry × multiplier^(n-1)`, capped at `max_retry_interval`;
/// a message whose next attempt would fall after `received + expiry` expires instead.
public struct RetrySchedule: Sendable, Equatable {
    public var firstRetry: Duration
    public var multiplier: Double
    public var maximumInterval: Duration
    public var expiry: Duration

    public init(_ trafficClass: SmarthostConfiguration.TrafficClass) {
        firstRetry = trafficClass.firstRetry
        multiplier = trafficClass.retryMultiplier
        maximumInterval = trafficClass.maxRetryInterval
        expiry = trafficClass.expiry
    }

    /// Milliseconds to wait after the `attempt`-th attempt (1 for the first) failed.
    public func delay(afterAttempt attempt: Int) -> UInt64 {
        let first = Double(firstRetry.milliseconds)
        let cap = Double(maximumInterval.milliseconds)
        let grown = first * pow(multiplier, Double(max(attempt - 1, 0)))
        return UInt64(min(grown.isFinite ? grown : cap, cap))
    }

    public enum Decision: Sendable, Equatable {
        case retry(at: UInt64)
        case expire
    }

    /// After a transient failure at `now` of a message received at `receivedAt` (both in ms).
    public func decide(afterAttempt attempt: Int, now: UInt64, receivedAt: UInt64) -> Decision {
        decide(nextAttemptAt: now + delay(afterAttempt: attempt), receivedAt: receivedAt)
    }

    /// Whether a message received at `receivedAt` may still be tried at `next`.
    public func decide(nextAttemptAt next: UInt64, receivedAt: UInt64) -> Decision {
        next > receivedAt + UInt64(expiry.milliseconds) ? .expire : .retry(at: next)
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000 + attoseconds / 1_000_000_000_000_000
    }
}
