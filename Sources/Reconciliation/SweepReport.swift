/// A message entry the sweep found in a node's spool but in none of its queues and sets (or
/// in limbo, retried): what it was, how old, why the sweep took it, and whether it was put back.
public struct OrphanRecord: Codable, Sendable, Equatable {
    public var node: String
    public var id: String
    public var tenant: String
    public var domain: String
    /// The scheduled queue it went back to (`tenant/job/domain`).
    public var queue: String
    /// `in no queue`, or `limbo: <the error that put it there>`.
    public var reason: String
    /// Seconds since the ingress accepted it.
    public var ageSeconds: Int64
    public var attempts: Int
    public var repaired: Bool
    /// Why it could not be put back (a spool error), when `repaired` is false.
    public var error: String?

    public init(node: String, id: String, tenant: String, domain: String, queue: String, reason: String, ageSeconds: Int64,
                attempts: Int, repaired: Bool, error: String? = nil) {
        self.node = node
        self.id = id
        self.tenant = tenant
        self.domain = domain
        self.queue = queue
        self.reason = reason
        self.ageSeconds = ageSeconds
        self.attempts = attempts
        self.repaired = repaired
        self.error = error
    }

    public var ageBucket: String { AgeBucket.name(seconds: ageSeconds) }
}

/// Age buckets of the reports, as an operator reads a queue's age.
public enum AgeBucket {
    public static let names = ["<1m", "1m-10m", "10m-1h", "1h-6h", "6h-24h", ">24h"]

    public static func name(seconds: Int64) -> String {
        switch seconds {
        case ..<60: names[0]
        case ..<600: names[1]
        case ..<3_600: names[2]
        case ..<21_600: names[3]
        case ..<86_400: names[4]
        default: names[5]
        }
    }
}

/// One node's sweep: its spool compared with its queues.
public struct SweepReport: Codable, Sendable, Equatable {
    public var node: String
    /// `schedule` or `request`.
    public var trigger: String
    /// Milliseconds since the epoch.
    public var startedAt: Int64
    public var durationMilliseconds: Int64
    /// Unfinished messages in the spool, and their entries (one per domain) checked.
    public var spooledMessages: Int
    public var entriesChecked: Int
    /// Entries in no queue past the grace period, and how many went back to their queues.
    public var orphansFound: Int
    public var orphansRepaired: Int
    /// Limbo entries retried, and how many left limbo.
    public var limboRetried: Int
    public var limboRepaired: Int
    /// Spool rows that do not decode (never silently skipped).
    public var malformedRows: [String]
    /// What stopped part of the sweep (a spool read error); the next sweep tries again.
    public var errors: [String]
    /// Up to `listed` orphans (the counts above cover all of them).
    public var orphans: [OrphanRecord]
    /// Every sweep of this node since it started, this one included: what the sweeps had to
    /// repair over time, not only in the last one.
    public var sinceStart: Totals

    public struct Totals: Codable, Sendable, Equatable {
        public var sweeps = 0
        public var orphansFound = 0
        public var orphansRepaired = 0
        public var limboRetried = 0
        public var limboRepaired = 0

        public init() {}

        public mutating func add(_ report: SweepReport) {
            sweeps += 1
            orphansFound += report.orphansFound
            orphansRepaired += report.orphansRepaired
            limboRetried += report.limboRetried
            limboRepaired += report.limboRepaired
        }
    }

    public static let listed = 10_000

    public init(node: String, trigger: String, startedAt: Int64) {
        self.node = node
        self.trigger = trigger
        self.startedAt = startedAt
        durationMilliseconds = 0
        spooledMessages = 0
        entriesChecked = 0
        orphansFound = 0
        orphansRepaired = 0
        limboRetried = 0
        limboRepaired = 0
        malformedRows = []
        errors = []
        orphans = []
        sinceStart = Totals()
    }

    public mutating func add(_ orphan: OrphanRecord, limbo: Bool) {
        if limbo {
            limboRetried += 1
            if orphan.repaired { limboRepaired += 1 }
        } else {
            orphansFound += 1
            if orphan.repaired { orphansRepaired += 1 }
        }
        if orphans.count < Self.listed { orphans.append(orphan) }
    }
}

/// The sweeps of every delivery node, merged: what `smarthost reconcile report` and the
/// reconciler's report show.
public struct ReconcileReport: Codable, Sendable, Equatable {
    public var generatedAt: Int64
    public var sweeps: [SweepReport]
    /// Nodes that did not answer, with the error.
    public var unanswered: [String: String]

    public init(generatedAt: Int64, sweeps: [SweepReport], unanswered: [String: String] = [:]) {
        self.generatedAt = generatedAt
        self.sweeps = sweeps.sorted { $0.node < $1.node }
        self.unanswered = unanswered
    }

    public var orphans: [OrphanRecord] { sweeps.flatMap(\.orphans) }

    /// Orphans found (limbo retries included) by one dimension: node, tenant, domain, age
    /// bucket or reason.
    public func breakdown(_ dimension: KeyPath<OrphanRecord, String>) -> [(key: String, found: Int, repaired: Int)] {
        var found: [String: (Int, Int)] = [:]
        for orphan in orphans {
            found[orphan[keyPath: dimension], default: (0, 0)].0 += 1
            if orphan.repaired { found[orphan[keyPath: dimension], default: (0, 0)].1 += 1 }
        }
        return found.map { ($0.key, $0.value.0, $0.value.1) }.sorted { ($0.found, $1.key) > ($1.found, $0.key) }
    }
}
