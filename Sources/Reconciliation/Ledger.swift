import Events

/// The cluster ledger, as pure state fed by the events topic: every message a Reception
/// acknowledged, until each of its recipients has a terminal event (Delivery, Bounce,
/// Expiration, AdminBounce). Counted per recipient, so that
/// `accepted = delivered + bounced + expired + deleted + still open` always holds.
public struct Ledger: Codable, Sendable, Equatable {
    public struct Totals: Codable, Sendable, Equatable {
        public var acceptedMessages = 0
        /// Of the accepted messages, delivery status notifications made by delivery nodes.
        public var notificationMessages = 0
        public var acceptedRecipients = 0
        public var delivered = 0
        public var bounced = 0
        public var expired = 0
        public var deleted = 0
        /// A second terminal event for a recipient that already had one (a delivery repeated
        /// after a crash, for example): counted, never silent, never counted twice above.
        public var duplicateOutcomes = 0
        /// Events for messages this ledger has no Reception of and that were not recently finished.
        public var outcomesBeforeReception = 0
        public var finishedMessages = 0

        public init() {}
    }

    /// A message with recipients still open.
    public struct Open: Codable, Sendable, Equatable {
        public var tenant: String
        /// From Reception; nil while only outcomes were seen.
        public var acceptedAt: Int64?
        public var recipients: [String]?
        /// Terminal outcome per recipient: `delivered`, `bounced`, `expired`, `deleted`.
        public var outcomes: [String: String] = [:]
        /// Where the message record is in Kafka (Reception), `topic/partition/offset`.
        public var record: String?
        public var lastEvent: String
        public var lastNode: String
        public var lastTime: Int64

        public var openRecipients: Int {
            guard let recipients else { return 0 }
            return recipients.filter { outcomes[$0] == nil }.count
        }
    }

    public private(set) var totals = Totals()
    public private(set) var open: [String: Open] = [:]
    /// Messages finished recently (id → when): a late duplicate event is recognised.
    public private(set) var finished: [String: Int64] = [:]

    public init() {}

    /// Applies one event (events about one message arrive in order: the topic is keyed by id).
    public mutating func apply(_ event: MessageEvent) {
        if finished[event.id] != nil {
            if Self.terminal(event.type) != nil { totals.duplicateOutcomes += 1 }
            return
        }
        var entry = open[event.id] ?? Open(tenant: event.tenant, lastEvent: event.type.rawValue, lastNode: event.node, lastTime: event.time)
        entry.lastEvent = event.type.rawValue
        entry.lastNode = event.node
        entry.lastTime = event.time
        switch event.type {
        case .reception:
            guard entry.acceptedAt == nil else { return }
            let recipients = Array(Set(event.recipients ?? []))
            entry.acceptedAt = event.time
            entry.recipients = recipients
            if let topic = event.topic, let partition = event.partition, let offset = event.offset {
                entry.record = "\(topic)/\(partition)/\(offset)"
            }
            totals.acceptedMessages += 1
            if event.client == "dsn" { totals.notificationMessages += 1 }
            totals.acceptedRecipients += recipients.count
        case .delivery, .bounce, .expiration, .adminBounce, .adminDelete:
            let outcome = Self.terminal(event.type)!
            if entry.acceptedAt == nil, open[event.id] == nil { totals.outcomesBeforeReception += 1 }
            // An operator's deletion without a recipient covers every open one.
            let recipients = event.recipient.map { [$0] } ?? (entry.recipients ?? []).filter { entry.outcomes[$0] == nil }
            for recipient in recipients {
                if entry.outcomes[recipient] != nil {
                    totals.duplicateOutcomes += 1
                    continue
                }
                entry.outcomes[recipient] = outcome
                count(outcome)
            }
        case .transientFailure, .orphanRequeued:
            break
        }
        if entry.acceptedAt != nil, entry.openRecipients == 0 {
            open[event.id] = nil
            finished[event.id] = event.time
            totals.finishedMessages += 1
        } else {
            open[event.id] = entry
        }
    }

    private mutating func count(_ outcome: String) {
        switch outcome {
        case "delivered": totals.delivered += 1
        case "bounced": totals.bounced += 1
        case "expired": totals.expired += 1
        default: totals.deleted += 1
        }
    }

    static func terminal(_ kind: MessageEvent.Kind) -> String? {
        switch kind {
        case .delivery: "delivered"
        case .bounce: "bounced"
        case .expiration: "expired"
        case .adminBounce, .adminDelete: "deleted"
        case .reception, .transientFailure, .orphanRequeued: nil
        }
    }

    /// Forgets finished messages older than `before` (duplicates come soon after the original).
    public mutating func prune(finishedBefore before: Int64) {
        finished = finished.filter { $0.value >= before }
    }

    /// Open messages accepted before `cutoff`: the ones to look for in the spools.
    public func candidates(acceptedBefore cutoff: Int64) -> [String] {
        open.compactMap { id, entry in (entry.acceptedAt ?? .max) < cutoff ? id : nil }.sorted()
    }

    /// The ledger's report: totals, and each open message old enough classified by what the
    /// spools said (`held`: ids some spool holds; `unanswered`: nodes that could not be asked).
    public func report(now: Int64, unaccountedAfter: Int64, held: Set<String>, unanswered: [String: String]) -> LedgerReport {
        let cutoff = now - unaccountedAfter
        var report = LedgerReport(generatedAt: now, totals: totals, unanswered: unanswered)
        for (id, entry) in open {
            let openRecipients = entry.acceptedAt == nil ? 0 : entry.openRecipients
            guard let acceptedAt = entry.acceptedAt, acceptedAt < cutoff, !held.contains(id) else {
                report.queuedRecipients += openRecipients
                continue
            }
            let missing = LedgerReport.Missing(id: id, tenant: entry.tenant, acceptedAt: acceptedAt, ageSeconds: (now - acceptedAt) / 1_000,
                                               openRecipients: openRecipients, record: entry.record, lastEvent: entry.lastEvent,
                                               lastNode: entry.lastNode, lastTime: entry.lastTime)
            if unanswered.isEmpty {
                report.unaccountedRecipients += openRecipients
                report.unaccounted.append(missing)
            } else {
                report.unconfirmedRecipients += openRecipients
                report.unconfirmed.append(missing)
            }
        }
        report.unaccounted.sort { $0.id < $1.id }
        report.unconfirmed.sort { $0.id < $1.id }
        report.openMessagesWithoutReception = open.values.filter { $0.acceptedAt == nil }.count
        return report
    }
}

/// What the ledger says at one moment.
public struct LedgerReport: Codable, Sendable, Equatable {
    /// An open message old enough that some spool should hold it.
    public struct Missing: Codable, Sendable, Equatable {
        public var id: String
        public var tenant: String
        public var acceptedAt: Int64
        public var ageSeconds: Int64
        public var openRecipients: Int
        /// `topic/partition/offset` of its record, from Reception.
        public var record: String?
        /// Where it was last seen: the last event's type, node and time.
        public var lastEvent: String
        public var lastNode: String
        public var lastTime: Int64
    }

    public var generatedAt: Int64
    public var totals: Ledger.Totals
    /// Open recipients of messages held by a spool or accepted less than `unaccounted_after` ago.
    public var queuedRecipients = 0
    /// Open recipients of messages no spool holds (every delivery node answered).
    public var unaccountedRecipients = 0
    public var unaccounted: [Missing] = []
    /// Open recipients of messages no answering spool holds while some node did not answer.
    public var unconfirmedRecipients = 0
    public var unconfirmed: [Missing] = []
    public var openMessagesWithoutReception = 0
    /// Records of the events topic that are not events (counted and skipped).
    public var malformedEvents = 0
    /// Nodes that could not be asked, with the error.
    public var unanswered: [String: String]

    public init(generatedAt: Int64, totals: Ledger.Totals, unanswered: [String: String]) {
        self.generatedAt = generatedAt
        self.totals = totals
        self.unanswered = unanswered
    }

    /// accepted = delivered + bounced + expired + deleted + queued + unaccounted + unconfirmed.
    public var balances: Bool {
        totals.acceptedRecipients == totals.delivered + totals.bounced + totals.expired + totals.deleted
            + queuedRecipients + unaccountedRecipients + unconfirmedRecipients
    }
}
