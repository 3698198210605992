import Operations

/// A delivery node's recent attempts per tenant, domain and pool, in one-minute buckets over a
/// sliding window, with when each run of deferrals began: what `diagnose` reads to tell a
/// destination that stopped accepting from one that is merely busy. Pure state, no clock.
struct RecentActivity: Sendable {
    struct Key: Hashable, Sendable {
        var tenant: String
        var domain: String
        var pool: String
    }

    fileprivate struct Bucket: Sendable {
        var minute: UInt64
        var outcomes = RecentOutcomes()
    }

    let windowMinutes: UInt64
    private var buckets: [Key: [Bucket]] = [:]
    private var deferringSince: [Key: UInt64] = [:]
    private var lastDelivered: [Key: UInt64] = [:]
    private var dsnFailures: [Bucket] = []
    private(set) var dsnFailuresTotal = 0

    init(windowMinutes: UInt64 = 10) {
        self.windowMinutes = windowMinutes
    }

    var windowSeconds: Int { Int(windowMinutes * 60) }

    mutating func record(_ key: Key, delivered: Int = 0, deferred: Int = 0, bounced: Int = 0, expired: Int = 0, now: UInt64) {
        let minute = now / 60_000
        buckets[key, default: []].withBuckets(minute: minute, window: windowMinutes) {
            $0.add(RecentOutcomes(delivered: delivered, deferred: deferred, bounced: bounced, expired: expired))
        }
        if delivered > 0 {
            deferringSince[key] = nil
            lastDelivered[key] = now
        } else if deferred > 0, deferringSince[key] == nil {
            deferringSince[key] = now
        }
    }

    mutating func recordDSNFailure(now: UInt64) {
        dsnFailures.withBuckets(minute: now / 60_000, window: windowMinutes) { $0.bounced += 1 }
        dsnFailuresTotal += 1
    }

    /// The outcomes of each key with attempts in the window; keys without any are forgotten.
    mutating func outcomes(now: UInt64) -> [Key: RecentOutcomes] {
        let minute = now / 60_000
        var result: [Key: RecentOutcomes] = [:]
        for (key, list) in buckets {
            let live = list.filter { $0.minute + windowMinutes > minute }
            guard !live.isEmpty else {
                buckets[key] = nil
                deferringSince[key] = nil
                lastDelivered[key] = nil
                continue
            }
            var total = RecentOutcomes()
            for bucket in live { total.add(bucket.outcomes) }
            total.deferringSince = deferringSince[key].map(Int64.init)
            total.lastDeliveredAt = lastDelivered[key].map(Int64.init)
            result[key] = total
        }
        return result
    }

    func dsnFailuresRecent(now: UInt64) -> Int {
        dsnFailures.filter { $0.minute + windowMinutes > now / 60_000 }.reduce(0) { $0 + $1.outcomes.bounced }
    }
}

extension [RecentActivity.Bucket] {
    /// Adds to the bucket of `minute` (made when missing), after dropping the buckets that
    /// left the window: in place, without copying the list on every outcome.
    fileprivate mutating func withBuckets(minute: UInt64, window: UInt64, _ update: (inout RecentOutcomes) -> Void) {
        if let first = self.first, first.minute + window <= minute { removeAll { $0.minute + window <= minute } }
        if last?.minute != minute { append(RecentActivity.Bucket(minute: minute)) }
        update(&self[count - 1].outcomes)
    }
}
