/// A reply text and how many entries (or outcomes) it is the last response of.
public struct ResponseCount: Codable, Sendable, Equatable {
    public var text: String
    public var count: Int

    public init(text: String, count: Int) {
        self.text = text
        self.count = count
    }

    /// The `limit` most frequent of `counts`, most frequent first (ties by text).
    public static func top(_ counts: [String: Int], _ limit: Int) -> [ResponseCount] {
        counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(limit).map { ResponseCount(text: $0.key, count: $0.value) }
    }
}

/// Outcomes of attempts in the node's recent window (`windowSeconds` of the summary).
public struct RecentOutcomes: Codable, Sendable, Equatable {
    public var delivered = 0
    public var deferred = 0
    public var bounced = 0
    public var expired = 0
    /// When the current run of deferrals began (ms); nil once a delivery succeeded since.
    public var deferringSince: Int64?
    /// When the last delivery succeeded (ms).
    public var lastDeliveredAt: Int64?

    public init(delivered: Int = 0, deferred: Int = 0, bounced: Int = 0, expired: Int = 0, deferringSince: Int64? = nil,
                lastDeliveredAt: Int64? = nil) {
        self.delivered = delivered
        self.deferred = deferred
        self.bounced = bounced
        self.expired = expired
        self.deferringSince = deferringSince
        self.lastDeliveredAt = lastDeliveredAt
    }

    public var attempts: Int { delivered + deferred + bounced + expired }

    public mutating func add(_ other: RecentOutcomes) {
        delivered += other.delivered
        deferred += other.deferred
        bounced += other.bounced
        expired += other.expired
        deferringSince = [deferringSince, other.deferringSince].compactMap { $0 }.min()
        lastDeliveredAt = [lastDeliveredAt, other.lastDeliveredAt].compactMap { $0 }.max()
    }
}

/// The entries of one tenant, destination domain and egress pool on a node (or merged across
/// nodes and groups): how many in each state, the oldest, what the destination last said.
public struct QueueSummaryRow: Codable, Sendable, Equatable {
    public var node: String?
    public var tenant: String?
    public var domain: String?
    public var pool: String?
    public var scheduled = 0
    public var deferred = 0
    public var suspended = 0
    public var ready = 0
    public var inFlight = 0
    public var held = 0
    public var limbo = 0
    /// Of the suspended entries, those an operator paused (the rest a rule suspended because
    /// the destination asked us to back off).
    public var paused = 0
    /// When the oldest entry was received (ms since the epoch).
    public var oldestReceivedAt: Int64?
    public var lastResponse: String?
    public var lastResponseAt: Int64?
    /// The most frequent last responses of the queued entries.
    public var responses: [ResponseCount] = []
    /// Entries from the null sender (delivery status notifications).
    public var nullSender = 0
    public var recent = RecentOutcomes()

    public init(node: String? = nil, tenant: String? = nil, domain: String? = nil, pool: String? = nil) {
        self.node = node
        self.tenant = tenant
        self.domain = domain
        self.pool = pool
    }

    public var queued: Int { scheduled + deferred + suspended + ready + inFlight + held + limbo }

    public subscript(state: QueueState) -> Int {
        get {
            switch state {
            case .scheduled: scheduled
            case .deferred: deferred
            case .suspended: suspended
            case .ready: ready
            case .inFlight: inFlight
            case .held: held
            case .limbo: limbo
            }
        }
        set {
            switch state {
            case .scheduled: scheduled = newValue
            case .deferred: deferred = newValue
            case .suspended: suspended = newValue
            case .ready: ready = newValue
            case .inFlight: inFlight = newValue
            case .held: held = newValue
            case .limbo: limbo = newValue
            }
        }
    }

    /// Adds another row's counts (merging nodes, or coarser groups).
    public mutating func add(_ other: QueueSummaryRow) {
        for state in QueueState.allCases { self[state] += other[state] }
        paused += other.paused
        oldestReceivedAt = [oldestReceivedAt, other.oldestReceivedAt].compactMap { $0 }.min()
        if let at = other.lastResponseAt, at >= lastResponseAt ?? .min {
            lastResponseAt = at
            lastResponse = other.lastResponse
        }
        var texts = Dictionary(responses.map { ($0.text, $0.count) }, uniquingKeysWith: +)
        for response in other.responses { texts[response.text, default: 0] += response.count }
        responses = ResponseCount.top(texts, Self.responsesKept)
        nullSender += other.nullSender
        recent.add(other.recent)
    }

    public static let responsesKept = 5
}

/// A number of deferred entries at a moment (ms), for the retry queue's trend.
public struct DeferredSample: Codable, Sendable, Equatable {
    public var at: Int64
    public var deferred: Int

    public init(at: Int64, deferred: Int) {
        self.at = at
        self.deferred = deferred
    }
}

/// `GET /admin/queue/summary` of one delivery node.
public struct NodeQueueSummary: Codable, Sendable, Equatable {
    public var node: String
    public var generatedAt: Int64
    /// How far back `recent` outcomes and `dsnFailuresRecent` reach.
    public var windowSeconds: Int
    /// One per tenant, domain and pool with entries queued or outcomes in the window.
    public var rows: [QueueSummaryRow]
    public var spooledMessages: Int
    public var queuedMessages: Int
    /// Spooled messages with no entry in any queue (the sweep puts them back).
    public var orphanedMessages: Int
    /// Deferred entries over the window, oldest first.
    public var deferredSamples: [DeferredSample]
    /// DSNs that could not be queued, in the window and since the node started.
    public var dsnFailuresRecent: Int
    public var dsnFailuresTotal: Int

    public init(node: String, generatedAt: Int64, windowSeconds: Int, rows: [QueueSummaryRow], spooledMessages: Int,
                queuedMessages: Int, orphanedMessages: Int, deferredSamples: [DeferredSample], dsnFailuresRecent: Int,
                dsnFailuresTotal: Int) {
        self.node = node
        self.generatedAt = generatedAt
        self.windowSeconds = windowSeconds
        self.rows = rows
        self.spooledMessages = spooledMessages
        self.queuedMessages = queuedMessages
        self.orphanedMessages = orphanedMessages
        self.deferredSamples = deferredSamples
        self.dsnFailuresRecent = dsnFailuresRecent
        self.dsnFailuresTotal = dsnFailuresTotal
    }
}

/// One queued entry, as `queue list` shows it.
public struct ListedEntry: Codable, Sendable, Equatable {
    public var node: String
    public var id: String
    public var tenant: String
    public var job: String?
    public var domain: String
    public var pool: String
    /// Empty for the null sender.
    public var sender: String
    public var recipients: [String]
    public var state: QueueState
    public var attempts: Int
    public var receivedAt: Int64
    /// When it is due (scheduled, deferred, suspended); nil elsewhere.
    public var dueAt: Int64?
    public var lastResponse: String?

    public init(node: String, id: String, tenant: String, job: String?, domain: String, pool: String, sender: String,
                recipients: [String], state: QueueState, attempts: Int, receivedAt: Int64, dueAt: Int64?, lastResponse: String?) {
        self.node = node
        self.id = id
        self.tenant = tenant
        self.job = job
        self.domain = domain
        self.pool = pool
        self.sender = sender
        self.recipients = recipients
        self.state = state
        self.attempts = attempts
        self.receivedAt = receivedAt
        self.dueAt = dueAt
        self.lastResponse = lastResponse
    }
}

/// `GET /admin/queue/messages` of one node: the oldest matching entries first, up to the limit.
public struct NodeQueueListing: Codable, Sendable, Equatable {
    public var node: String
    public var matched: Int
    public var entries: [ListedEntry]

    public init(node: String, matched: Int, entries: [ListedEntry]) {
        self.node = node
        self.matched = matched
        self.entries = entries
    }
}
