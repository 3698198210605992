import Events

/// The cluster ledger, as pure state fed by the events topic: every message a spool took
/// (its Reception, written by the delivery node in the transaction that spooled the Kafka
/// record, or that queued a DSN), until each of its recipients has a terminal event
/// (Delivery, Bounce, Expiration, AdminBounce, AdminDelete). Counted per recipient and once
/// per message, so that `accepted = delivered + bounced + expired + deleted + open` always
/// holds; a second copy of a message, or a second outcome for a recipient, is named in
/// `duplicates`, never counted twice.
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
        /// Messages with a second copy (spooled by two nodes, or twice) or a second terminal
        /// event for a recipient: named in `Ledger.duplicates`.
        public var duplicateMessages = 0
        /// Terminal events for a recipient that already had one (a delivery repeated after a
        /// crash, or by a second copy): counted here, never in the outcomes above.
        public var duplicateOutcomes = 0
        /// Terminal events that came before their message's Reception (counted once it comes).
        public var outcomesBeforeReception = 0
        /// Terminal events received a second time: written by the node, in the millisecond, of
        /// an outcome event already counted for the message (for an open message, for the same
        /// recipient and outcome too): an outbox batch sent again after a timeout or a crash
        /// before its rows were cleared, not a second delivery. Optional so that a
        /// ledger state written before it was counted still loads.
        public var resentOutcomes: Int?
        public var finishedMessages = 0
        /// Tenant-topic records that are not messages, kept in a spool's quarantine.
        public var quarantinedRecords = 0

        public init() {}
    }

    /// One spooled copy of a message: the delivery node that spooled it and its Kafka record
    /// (`topic/partition/offset`; none for a DSN, made on the node).
    public struct Copy: Codable, Sendable, Equatable, Hashable {
        public var node: String
        public var record: String?

        public init(node: String, record: String?) {
            self.node = node
            self.record = record
        }

        init(_ reception: MessageEvent) {
            var record: String?
            if let topic = reception.topic, let partition = reception.partition, let offset = reception.offset {
                record = "\(topic)/\(partition)/\(offset)"
            }
            self.init(node: reception.node, record: record)
        }
    }

    /// A message delivered (or ended) more than once, or spooled more than once.
    public struct Duplicate: Codable, Sendable, Equatable {
        /// A terminal event for a recipient that already had one.
        public struct Repeat: Codable, Sendable, Equatable {
            public var recipient: String
            public var outcome: String
            public var node: String
            public var time: Int64
        }

        public var id: String
        public var tenant: String
        /// Every copy seen, the first one first.
        public var copies: [Copy]
        public var repeats: [Repeat] = []
    }

    /// A message with recipients still open.
    public struct Open: Codable, Sendable, Equatable {
        public var tenant: String
        /// From Reception (the ingress's acceptance time); nil while only outcomes were seen.
        public var acceptedAt: Int64?
        public var recipients: [String]?
        /// Terminal outcome per recipient: `delivered`, `bounced`, `expired`, `deleted`.
        public var outcomes: [String: String] = [:]
        /// Which event set each outcome (to recognise that event sent again); optional so that
        /// a ledger state written before it was kept still loads.
        public var outcomeEvents: [String: Stamp]?
        /// The copies spooled (from each Reception).
        public var copies: [Copy] = []
        public var lastEvent: String
        public var lastNode: String
        public var lastTime: Int64

        /// Where the message record is in Kafka: its first copy's.
        public var record: String? { copies.first?.record }

        public var openRecipients: Int {
            guard let recipients else { return 0 }
            return recipients.filter { outcomes[$0] == nil }.count
        }
    }

    /// A finished message, remembered for a while so that a late copy or outcome is named.
    public struct Finished: Codable, Sendable, Equatable {
        /// When the event that finished it was written.
        public var time: Int64
        public var tenant: String
        public var copies: [Copy]
        /// The outcome events' stamps, each once (nil in a ledger state from before they were kept).
        public var outcomeEvents: [Stamp]?
    }

    /// Which node wrote an event, and when: with the outcome and recipient, what tells the
    /// same event sent twice from a second outcome (which has a time of its own).
    public struct Stamp: Codable, Sendable, Equatable, Hashable {
        public var node: String
        public var time: Int64
    }

    /// At most this many duplicated messages are named (all are counted).
    public static let namedDuplicates = 10_000

    public private(set) var totals = Totals()
    public private(set) var open: [String: Open] = [:]
    /// Messages finished recently: a late duplicate is recognised.
    public private(set) var finished: [String: Finished] = [:]
    public private(set) var duplicates: [String: Duplicate] = [:]
    /// Per tenant partition (`topic/partition`), the records whose Reception came.
    public private(set) var coverage: [String: Coverage] = [:]
    /// Quarantined records (at most `namedDuplicates` named; all counted).
    public private(set) var quarantined: [Quarantine] = []

    /// A record a delivery node kept in its spool's quarantine as not a message.
    public struct Quarantine: Codable, Sendable, Equatable {
        /// `topic/partition/offset`.
        public var record: String
        public var node: String
        public var reason: String
        public var time: Int64
    }

    public init() {}

    /// Which records of one tenant partition a spool took (a Reception names each one's
    /// offset), against where the delivery group's consumers are done (`compare`): an offset
    /// below that with no Reception is a record a consumer passed and no spool took.
    public struct Coverage: Codable, Sendable, Equatable {
        /// The first offset checked: the partition's low watermark when the ledger first
        /// compared it (nil before).
        public var start: Int64?
        /// Offsets with a Reception, as sorted, disjoint, non-adjacent ranges.
        public var covered: [Range<Int64>] = []
        /// Offsets below the committed position without a Reception, and since when (ms).
        public var missing: [Int64: Int64] = [:]

        /// At most this many missing offsets are kept per partition.
        public static let namedMissing = 10_000

        /// Adds `offset`; false when it was covered already.
        @discardableResult
        mutating func cover(_ offset: Int64) -> Bool {
            missing[offset] = nil
            // The first range that ends at or after `offset`.
            var low = 0
            var high = covered.count
            while low < high {
                let middle = (low + high) / 2
                if covered[middle].upperBound < offset { low = middle + 1 } else { high = middle }
            }
            if low < covered.count, covered[low].contains(offset) { return false }
            if low < covered.count, covered[low].upperBound == offset {
                covered[low] = covered[low].lowerBound..<(offset + 1)
                if low + 1 < covered.count, covered[low + 1].lowerBound == offset + 1 {
                    covered[low] = covered[low].lowerBound..<covered[low + 1].upperBound
                    covered.remove(at: low + 1)
                }
            } else if low < covered.count, covered[low].lowerBound == offset + 1 {
                covered[low] = offset..<covered[low].upperBound
            } else {
                covered.insert(offset..<(offset + 1), at: low)
            }
            return true
        }

        /// The offsets in `start..<end` no range covers, at most `limit` of them.
        func gaps(below end: Int64, limit: Int) -> [Int64] {
            var gaps: [Int64] = []
            var next = start ?? end
            for range in covered where range.upperBound > next {
                guard next < end, gaps.count < limit else { break }
                let stop = min(range.lowerBound, end)
                while next < stop, gaps.count < limit {
                    gaps.append(next)
                    next += 1
                }
                next = max(next, range.upperBound)
            }
            while next < end, gaps.count < limit {
                gaps.append(next)
                next += 1
            }
            return gaps
        }
    }

    /// Partitions of `keys` the ledger has not compared yet (their start comes from their low watermark).
    public func partitionsWithoutStart(_ keys: [String]) -> [String] {
        keys.filter { coverage[$0]?.start == nil }
    }

    /// Compares each tenant partition's committed offset (`topic/partition` → offset) with the
    /// Receptions seen; `lows` gives the start of partitions compared for the first time.
    public mutating func compare(committed: [String: Int64], lows: [String: Int64], now: Int64) {
        for (key, end) in committed {
            var partition = coverage[key] ?? Coverage()
            if partition.start == nil { partition.start = lows[key] ?? 0 }
            for offset in partition.gaps(below: end, limit: Coverage.namedMissing) where partition.missing[offset] == nil {
                guard partition.missing.count < Coverage.namedMissing else { break }
                partition.missing[offset] = now
            }
            coverage[key] = partition
        }
    }

    /// Applies one event (events about one message arrive in order: the topic is keyed by id).
    public mutating func apply(_ event: MessageEvent) {
        if var done = finished[event.id] {
            applyLate(event, to: &done)
            finished[event.id] = done
            return
        }
        var entry = open[event.id] ?? Open(tenant: event.tenant, lastEvent: event.type.rawValue, lastNode: event.node, lastTime: event.time)
        entry.lastEvent = event.type.rawValue
        entry.lastNode = event.node
        entry.lastTime = event.time
        switch event.type {
        case .reception:
            let copy = Copy(event)
            cover(event)
            guard entry.acceptedAt == nil else {
                if !entry.copies.contains(copy) {
                    entry.copies.append(copy)
                    noteDuplicate(event.id, tenant: entry.tenant, copies: entry.copies)
                }
                break
            }
            let recipients = Array(Set(event.recipients ?? []))
            entry.acceptedAt = event.time
            entry.recipients = recipients
            entry.copies = [copy]
            totals.acceptedMessages += 1
            if event.client == "dsn" { totals.notificationMessages += 1 }
            totals.acceptedRecipients += recipients.count
            // Outcomes that came first count now, for the recipients this message has.
            entry.outcomes = entry.outcomes.filter { recipients.contains($0.key) }
            for outcome in entry.outcomes.values { count(outcome) }
        case .delivery, .bounce, .expiration, .adminBounce, .adminDelete:
            let outcome = Self.terminal(event.type)!
            if entry.acceptedAt == nil, open[event.id] == nil { totals.outcomesBeforeReception += 1 }
            // An operator's deletion without a recipient covers every open one.
            let recipients = event.recipient.map { [$0] } ?? (entry.recipients ?? []).filter { entry.outcomes[$0] == nil }
            let stamp = Stamp(node: event.node, time: event.time)
            for recipient in recipients {
                if let counted = entry.outcomes[recipient] {
                    if counted == outcome, entry.outcomeEvents?[recipient] == stamp {
                        noteResent()
                    } else {
                        noteRepeat(event, recipient: recipient, outcome: outcome, tenant: entry.tenant, copies: entry.copies)
                    }
                    continue
                }
                entry.outcomes[recipient] = outcome
                var stamps = entry.outcomeEvents ?? [:]
                stamps[recipient] = stamp
                entry.outcomeEvents = stamps
                if entry.acceptedAt != nil { count(outcome) }
            }
        case .quarantined:
            quarantine(event)
            return
        case .transientFailure, .orphanRequeued:
            break
        }
        if entry.acceptedAt != nil, entry.openRecipients == 0 {
            open[event.id] = nil
            finished[event.id] = Finished(time: event.time, tenant: entry.tenant, copies: entry.copies,
                                         outcomeEvents: Set((entry.outcomeEvents ?? [:]).values).sorted { ($0.time, $0.node) < ($1.time, $1.node) })
            totals.finishedMessages += 1
        } else {
            open[event.id] = entry
        }
    }

    /// An event about a message already finished: a second copy, or a repeated outcome.
    private mutating func applyLate(_ event: MessageEvent, to done: inout Finished) {
        if event.type == .reception {
            let copy = Copy(event)
            guard !done.copies.contains(copy) else { return }
            done.copies.append(copy)
            noteDuplicate(event.id, tenant: done.tenant, copies: done.copies)
        } else if let outcome = Self.terminal(event.type) {
            // One of its outcome events sent again (a second delivery has a time of its own).
            if done.outcomeEvents?.contains(Stamp(node: event.node, time: event.time)) == true {
                noteResent()
                return
            }
            noteRepeat(event, recipient: event.recipient ?? "*", outcome: outcome, tenant: done.tenant, copies: done.copies)
        }
    }

    /// A quarantined record counts as taken (it is no unspooled record), once per position.
    private mutating func quarantine(_ event: MessageEvent) {
        guard let topic = event.topic, let partition = event.partition, let offset = event.offset else { return }
        let key = "\(topic)/\(partition)"
        guard coverage[key, default: Coverage()].cover(offset) else { return }
        totals.quarantinedRecords += 1
        guard quarantined.count < Self.namedDuplicates else { return }
        quarantined.append(Quarantine(record: "\(key)/\(offset)", node: event.node, reason: event.reason ?? "", time: event.time))
    }

    private mutating func cover(_ reception: MessageEvent) {
        guard let topic = reception.topic, let partition = reception.partition, let offset = reception.offset else { return }
        coverage["\(topic)/\(partition)", default: Coverage()].cover(offset)
    }

    private mutating func noteResent() {
        totals.resentOutcomes = (totals.resentOutcomes ?? 0) + 1
    }

    private mutating func noteRepeat(_ event: MessageEvent, recipient: String, outcome: String, tenant: String, copies: [Copy]) {
        totals.duplicateOutcomes += 1
        noteDuplicate(event.id, tenant: tenant, copies: copies,
                      repeat: Duplicate.Repeat(recipient: recipient, outcome: outcome, node: event.node, time: event.time))
    }

    private mutating func noteDuplicate(_ id: String, tenant: String, copies: [Copy], repeat: Duplicate.Repeat? = nil) {
        var duplicate: Duplicate
        if let known = duplicates[id] {
            duplicate = known
        } else {
            totals.duplicateMessages += 1
            guard duplicates.count < Self.namedDuplicates else { return }
            duplicate = Duplicate(id: id, tenant: tenant, copies: [])
        }
        duplicate.copies = copies
        if let `repeat` { duplicate.repeats.append(`repeat`) }
        duplicates[id] = duplicate
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
        case .reception, .transientFailure, .orphanRequeued, .quarantined: nil
        }
    }

    /// Forgets finished messages older than `before` (duplicates come soon after the original).
    public mutating func prune(finishedBefore before: Int64) {
        finished = finished.filter { $0.value.time >= before }
    }

    /// The newest time a message finished, if any did.
    public var lastFinished: Int64? { finished.values.map(\.time).max() }

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
            guard let acceptedAt = entry.acceptedAt else {
                // Outcomes of a message no spool reported taking: an acceptance the ledger
                // missed, once older than the Reception could still be on its way.
                if entry.lastTime < cutoff {
                    report.withoutReception.append(LedgerReport.Missing(id: id, tenant: entry.tenant, acceptedAt: 0, ageSeconds: 0,
                                                                        openRecipients: 0, record: nil, lastEvent: entry.lastEvent,
                                                                        lastNode: entry.lastNode, lastTime: entry.lastTime))
                }
                continue
            }
            guard acceptedAt < cutoff, !held.contains(id) else {
                report.queuedRecipients += entry.openRecipients
                continue
            }
            let missing = LedgerReport.Missing(id: id, tenant: entry.tenant, acceptedAt: acceptedAt, ageSeconds: (now - acceptedAt) / 1_000,
                                               openRecipients: entry.openRecipients, record: entry.record, lastEvent: entry.lastEvent,
                                               lastNode: entry.lastNode, lastTime: entry.lastTime)
            if unanswered.isEmpty {
                report.unaccountedRecipients += entry.openRecipients
                report.unaccounted.append(missing)
            } else {
                report.unconfirmedRecipients += entry.openRecipients
                report.unconfirmed.append(missing)
            }
        }
        report.unaccounted.sort { $0.id < $1.id }
        report.unconfirmed.sort { $0.id < $1.id }
        report.withoutReception.sort { $0.id < $1.id }
        report.openMessagesWithoutReception = open.values.filter { $0.acceptedAt == nil }.count
        report.duplicates = duplicates.values.sorted { $0.id < $1.id }
        report.quarantined = quarantined
        for (key, partition) in coverage {
            for (offset, since) in partition.missing where since < cutoff {
                report.unspooledRecords.append(LedgerReport.UnspooledRecord(record: "\(key)/\(offset)", since: since))
            }
        }
        report.unspooledRecords.sort { ($0.since, $0.record) < ($1.since, $1.record) }
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
        /// `topic/partition/offset` of its record (its first copy's).
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
    /// Messages with outcomes and no Reception for longer than `unaccounted_after`: an
    /// acceptance the ledger never learnt (`acceptedAt` is 0 for them).
    public var withoutReception: [Missing] = []
    /// Messages delivered or spooled more than once, with each copy.
    public var duplicates: [Ledger.Duplicate] = []
    /// Records of tenant topics the delivery group's consumers are done with (below its
    /// committed offset) that no spool reported taking, for longer than `unaccounted_after`.
    public var unspooledRecords: [UnspooledRecord] = []
    /// Records that are not messages, kept in a spool's quarantine (not accepted: apart from the balance).
    public var quarantined: [Ledger.Quarantine] = []
    /// Why the tenant topics' records could not be compared this time, if they could not.
    public var recordsUnchecked: String?

    public struct UnspooledRecord: Codable, Sendable, Equatable {
        /// `topic/partition/offset`.
        public var record: String
        /// Since when the ledger finds no Reception for it (ms).
        public var since: Int64
    }
    /// Records of the events topic that are not events (counted and skipped).
    public var malformedEvents = 0
    /// Nodes that could not be asked, with the error.
    public var unanswered: [String: String]

    public init(generatedAt: Int64, totals: Ledger.Totals, unanswered: [String: String]) {
        self.generatedAt = generatedAt
        self.totals = totals
        self.unanswered = unanswered
    }

    /// accepted = delivered + bounced + expired + deleted + queued, per recipient, each message
    /// counted once (duplicates apart), and no outcome without its acceptance: every
    /// message a spool took is finished or held by a spool now.
    public var balances: Bool {
        totals.acceptedRecipients == totals.delivered + totals.bounced + totals.expired + totals.deleted + queuedRecipients
            && withoutReception.isEmpty && unspooledRecords.isEmpty
    }

    /// Why the balance does not hold, in a few words (nil when it holds).
    public var imbalance: String? {
        guard !balances else { return nil }
        var reasons: [String] = []
        if unaccountedRecipients > 0 { reasons.append("\(unaccountedRecipients) recipients in no spool") }
        if unconfirmedRecipients > 0 { reasons.append("\(unconfirmedRecipients) recipients unconfirmed, \(unanswered.count) nodes not answering") }
        if !withoutReception.isEmpty { reasons.append("\(withoutReception.count) messages with outcomes and no Reception") }
        if !unspooledRecords.isEmpty { reasons.append("\(unspooledRecords.count) Kafka records no spool took") }
        let sum = totals.delivered + totals.bounced + totals.expired + totals.deleted + queuedRecipients + unaccountedRecipients + unconfirmedRecipients
        if sum != totals.acceptedRecipients { reasons.append("\(totals.acceptedRecipients - sum) recipients in no row") }
        return reasons.joined(separator: "; ")
    }
}
