/// The queue incident patterns operators name (PowerMTA's patterns A to E in
/// ../shared/seeds/powermta-queue-mechanics.txt, and KumoMTA's mail stuck in the spool), and
/// which of them the cluster's queues show now, each with its evidence and what to do.
public enum IncidentPattern: String, Codable, Sendable, CaseIterable {
    case singleDestinationBackedUp = "single-destination-backed-up"
    case allDestinationsSlow = "all-destinations-slow"
    case retryQueueExploding = "retry-queue-exploding"
    case bounceProcessingFailing = "bounce-processing-failing"
    case poolDegraded = "pool-degraded"
    case orphanedInSpool = "orphaned-in-spool"
}

public struct Finding: Codable, Sendable, Equatable {
    public var pattern: IncidentPattern
    /// What holds, in one line.
    public var summary: String
    /// Counts and reply texts that show it.
    public var evidence: [String]
    /// When it began (ms since the epoch), when known.
    public var since: Int64?
    /// What to run or check, in order.
    public var interventions: [String]
}

/// `smarthostctl diagnose`: the findings, or none when the cluster is healthy.
public struct Diagnosis: Codable, Sendable, Equatable {
    public struct Thresholds: Codable, Sendable, Equatable {
        /// The fewest waiting entries (or attempts) that make a pattern worth naming.
        public var minimumEntries: Int
        /// A share of failed attempts at or above this is failing.
        public var failingShare: Double
        /// Backed-up destinations making up at least this share of the active ones: all slow.
        public var allDestinationsShare: Double

        public init(minimumEntries: Int = 10, failingShare: Double = 0.8, allDestinationsShare: Double = 0.8) {
            self.minimumEntries = minimumEntries
            self.failingShare = failingShare
            self.allDestinationsShare = allDestinationsShare
        }
    }

    public var generatedAt: Int64
    public var healthy: Bool
    public var findings: [Finding]
    public var unanswered: [String: String]
    /// What was looked at: nodes, entries, attempts in the window.
    public var scope: String
    /// What is not an incident but an operator should keep in mind (mail held by a pause).
    public var notes: [String]

    public init(nodes: [NodeQueueSummary], unanswered: [String: String], thresholds: Thresholds = Thresholds(), now: Int64) {
        generatedAt = now
        self.unanswered = unanswered
        var rules = DiagnosisRules(nodes: nodes, thresholds: thresholds)
        findings = rules.run()
        healthy = findings.isEmpty
        let entries = nodes.reduce(0) { $0 + $1.rows.reduce(0) { $0 + $1.queued } }
        let attempts = nodes.reduce(0) { $0 + $1.rows.reduce(0) { $0 + $1.recent.attempts } }
        let window = nodes.map(\.windowSeconds).max() ?? 0
        scope = "\(nodes.count) delivery nodes, \(entries) queued entries, \(attempts) attempts in the last \(window / 60) minutes"
        let paused = nodes.reduce(0) { $0 + $1.rows.reduce(0) { $0 + $1.paused } }
        notes = paused > 0 ? ["\(paused) entries are held by an operator's pause (smarthostctl suspend list; queue resume ends it)"] : []
    }
}

/// The rules, over every node's rows merged by domain and by pool.
struct DiagnosisRules {
    let nodes: [NodeQueueSummary]
    let thresholds: Diagnosis.Thresholds
    var findings: [Finding] = []

    init(nodes: [NodeQueueSummary], thresholds: Diagnosis.Thresholds) {
        self.nodes = nodes
        self.thresholds = thresholds
    }

    private var rows: [QueueSummaryRow] { nodes.flatMap(\.rows) }

    mutating func run() -> [Finding] {
        orphans()
        let degraded = pools()
        destinations(excludingPools: degraded)
        retries()
        bounces()
        return findings
    }

    /// Entries waiting for a destination that is not taking them: an operator's pause is not
    /// counted (chosen), a rule's suspension is (the destination asked us to back off).
    private static func waiting(_ row: QueueSummaryRow) -> Int {
        row.scheduled + row.deferred + row.ready + row.held + row.suspended - row.paused
    }

    private static func failures(_ outcomes: RecentOutcomes) -> Int { outcomes.deferred + outcomes.bounced + outcomes.expired }

    private static func merged(_ rows: [QueueSummaryRow], by label: (QueueSummaryRow) -> String?) -> [String: QueueSummaryRow] {
        var merged: [String: QueueSummaryRow] = [:]
        for row in rows {
            guard let key = label(row) else { continue }
            merged[key, default: QueueSummaryRow()].add(row)
        }
        return merged
    }

    private static func responses(_ row: QueueSummaryRow) -> String {
        row.responses.prefix(3).map { "\"\($0.text)\" × \($0.count)" }.joined(separator: "; ")
    }

    private static func responseEvidence(_ row: QueueSummaryRow) -> [String] {
        row.responses.isEmpty ? [] : ["top responses: " + responses(row)]
    }

    /// Spooled messages in no queue, or outcomes the spool could not record.
    private mutating func orphans() {
        let orphaned = nodes.filter { $0.orphanedMessages > 0 }
        let limbo = nodes.map { ($0.node, $0.rows.reduce(0) { $0 + $1.limbo }) }.filter { $0.1 > 0 }
        guard !orphaned.isEmpty || !limbo.isEmpty else { return }
        let count = orphaned.reduce(0) { $0 + $1.orphanedMessages }
        var evidence = orphaned.map { "\($0.node): \($0.orphanedMessages) of \($0.spooledMessages) spooled messages are in no queue" }
        evidence += limbo.map { "\($0.0): \($0.1) entries in limbo (an outcome the spool could not record)" }
        findings.append(Finding(
            pattern: .orphanedInSpool,
            summary: "\(count) spooled messages in no queue, \(limbo.reduce(0) { $0 + $1.1 }) entries in limbo",
            evidence: evidence, since: nil,
            interventions: ["smarthostctl reconcile sweep   (puts back in its queue every orphan spooled longer than reconciliation.orphan_grace ago, and retries limbo)",
                            "smarthostctl reconcile report --format csv   (which messages, since when, why)",
                            "if they come back after a sweep: a bug; keep the node's log and the report, and smarthostctl ledger --now"]))
    }

    /// One egress pool failing while another delivers. Returns the degraded pools.
    private mutating func pools() -> Set<String> {
        let byPool = Self.merged(rows) { $0.pool }
        guard byPool.count >= 2 else { return [] }
        let failing = byPool.filter { _, row in
            row.recent.attempts >= thresholds.minimumEntries
                && Double(Self.failures(row.recent)) >= thresholds.failingShare * Double(row.recent.attempts)
        }
        let healthy = byPool.filter { _, row in row.recent.delivered > 0 && Self.failures(row.recent) * 2 < row.recent.attempts }
        guard !failing.isEmpty, !healthy.isEmpty else { return [] }
        for (pool, row) in failing.sorted(by: { $0.key < $1.key }) {
            findings.append(Finding(
                pattern: .poolDegraded,
                summary: "pool \(pool): \(Self.failures(row.recent)) of \(row.recent.attempts) recent attempts failed while pool(s) \(healthy.keys.sorted().joined(separator: ", ")) deliver",
                evidence: ["pool \(pool): \(Self.waiting(row)) entries waiting, \(row.recent.delivered) delivered, \(row.recent.deferred) deferred, \(row.recent.bounced) bounced recently"]
                    + healthy.sorted(by: { $0.key < $1.key }).map { "pool \($0.key): \($0.value.recent.delivered) delivered of \($0.value.recent.attempts) recent attempts" }
                    + Self.responseEvidence(row),
                since: row.recent.deferringSince,
                interventions: ["check the pool's source address and EHLO name (pools.\(pool) in the configuration): is it bound on this host, listed on a blocklist, refused by the destinations?",
                                "smarthostctl queue pause --pool \(pool) --for 1h   (stops spending attempts while you fix it)",
                                "smarthostctl queue list --pool \(pool) --state deferred --limit 20   (the messages and their last responses)",
                                "once fixed (pools.\(pool) changed: restart the delivery nodes): smarthostctl queue resume --pool \(pool) && smarthostctl queue retry --pool \(pool)"]))
        }
        return Set(failing.keys)
    }

    /// Destinations not taking mail: one or a few (pattern A), or nearly all (pattern B).
    private mutating func destinations(excludingPools degraded: Set<String>) {
        let byDomain = Self.merged(rows.filter { !degraded.contains($0.pool ?? "") }) { $0.domain }
        let active = byDomain.filter { $0.value.queued > 0 || $0.value.recent.attempts > 0 }
        let backedUp = active.filter { _, row in
            Self.waiting(row) >= thresholds.minimumEntries
                && (row.recent.delivered == 0 || Self.failures(row.recent) * 2 >= row.recent.attempts)
        }
        guard !backedUp.isEmpty else { return }
        let worst = backedUp.sorted { (Self.waiting($0.value), $1.key) > (Self.waiting($1.value), $0.key) }
        // Flowing: a destination that delivered since the backed-up ones began failing (one
        // that delivered before and has nothing queued now says nothing about now).
        let trouble = backedUp.values.compactMap { $0.recent.deferringSince ?? $0.oldestReceivedAt }.min() ?? .min
        let flowing = active.filter { backedUp[$0.key] == nil && ($0.value.recent.lastDeliveredAt ?? .min) >= trouble }
        if backedUp.count >= 2 && Double(backedUp.count) >= thresholds.allDestinationsShare * Double(backedUp.count + flowing.count) {
            var all = QueueSummaryRow()
            for (_, row) in backedUp { all.add(row) }
            findings.append(Finding(
                pattern: .allDestinationsSlow,
                summary: "\(backedUp.count) of \(backedUp.count + flowing.count) destinations with recent traffic are not taking mail: \(Self.waiting(all)) entries waiting",
                evidence: ["destinations: " + worst.prefix(5).map { "\($0.key) (\(Self.waiting($0.value)) waiting, \($0.value.recent.delivered) delivered recently)" }.joined(separator: ", ")]
                    + Self.responseEvidence(all),
                since: all.recent.deferringSince ?? all.oldestReceivedAt,
                interventions: ["the cause is on our side or between us and the Internet: from a delivery node, can it reach port 25 (firewall, routing, DNS resolvers in dns.resolvers)?",
                                "smarthostctl nodes   and   cluster/status   (every delivery node up?); node logs: \"connection failed\"",
                                "once fixed: smarthostctl queue retry   (everything due now, connection backoff cleared)"]))
            return
        }
        for (domain, row) in worst.prefix(3) {
            findings.append(Finding(
                pattern: .singleDestinationBackedUp,
                summary: "\(domain): \(Self.waiting(row)) entries waiting, \(row.recent.delivered) delivered and \(Self.failures(row.recent)) failed recently; \(flowing.count) other destinations flowing",
                evidence: ["\(domain): \(row.deferred) deferred, \(row.suspended - row.paused) suspended by a rule, \(row.ready) ready, \(row.scheduled) scheduled, \(row.held) held"]
                    + Self.responseEvidence(row),
                since: row.recent.deferringSince ?? row.oldestReceivedAt,
                interventions: ["read the responses above: a 421/4.7.x rate limit or reputation text means slow down — smarthostctl throttle set --action message_rate --domain \(domain) --rate 60/min --for 1h",
                                "to stop spending attempts while it lasts: smarthostctl queue pause --domain \(domain) --for 1h",
                                "smarthostctl queue list --domain \(domain) --state deferred --limit 20   (messages and last responses)",
                                "when it accepts again: smarthostctl queue resume --domain \(domain) && smarthostctl queue retry --domain \(domain)"]))
        }
    }

    /// The retry queue growing fast with entries failing attempt after attempt (pattern C).
    private mutating func retries() {
        var first = 0
        var last = 0
        var since: Int64?
        for node in nodes {
            guard let earliest = node.deferredSamples.first, let latest = node.deferredSamples.last else { continue }
            first += earliest.deferred
            last += latest.deferred
            since = min(since ?? earliest.at, earliest.at)
        }
        let deferred = rows.reduce(0) { $0 + $1.deferred }
        let queued = rows.reduce(0) { $0 + $1.queued }
        let attempts = rows.reduce(RecentOutcomes()) { var total = $0; total.add($1.recent); return total }
        guard last >= 10 * thresholds.minimumEntries, last >= 2 * max(first, 1), deferred * 2 >= queued,
              attempts.deferred > attempts.delivered else { return }
        var all = QueueSummaryRow()
        for row in rows where row.deferred > 0 { all.add(row) }
        let top = Self.merged(rows) { $0.domain }.filter { $0.value.deferred > 0 }.sorted { $0.value.deferred > $1.value.deferred }.prefix(5)
        findings.append(Finding(
            pattern: .retryQueueExploding,
            summary: "deferred entries grew from \(first) to \(last); \(attempts.deferred) deferrals against \(attempts.delivered) deliveries recently",
            evidence: ["most deferred: " + top.map { "\($0.key) (\($0.value.deferred))" }.joined(separator: ", ")] + Self.responseEvidence(all),
            since: since,
            interventions: ["if one destination dominates: it rate-limits harder than our retries allow — smarthostctl throttle set --action message_rate --domain <domain> --rate <lower>/min --for 2h",
                            "or hold it while it lasts: smarthostctl queue pause --domain <domain> --for 2h",
                            "lengthen the traffic class's retry schedule (traffic_classes.<class>.first_retry, retry_multiplier; restart the delivery nodes)",
                            "smarthostctl queue summary --sort deferred   (where they are)"]))
    }

    /// Delivery status notifications that cannot be made or cannot get out (pattern D).
    private mutating func bounces() {
        let failures = nodes.reduce(0) { $0 + $1.dsnFailuresRecent }
        var notices = QueueSummaryRow()
        for row in rows where row.nullSender > 0 { notices.add(row) }
        let stuck = rows.reduce(0) { $0 + ($1.nullSender > 0 ? min($1.nullSender, Self.waiting($1)) : 0) }
        guard failures > 0 || (stuck >= thresholds.minimumEntries && notices.recent.delivered == 0) else { return }
        var evidence: [String] = []
        if failures > 0 {
            evidence.append(nodes.filter { $0.dsnFailuresRecent > 0 }.map { "\($0.node): \($0.dsnFailuresRecent) DSNs could not be queued recently" }
                .joined(separator: "; "))
        }
        if stuck > 0 { evidence.append("\(stuck) notifications (null sender) waiting to go out") }
        findings.append(Finding(
            pattern: .bounceProcessingFailing,
            summary: "bounces happen but their notifications are \(failures > 0 ? "not being made" : "not going out")",
            evidence: evidence + Self.responseEvidence(notices),
            since: notices.recent.deferringSince ?? notices.oldestReceivedAt,
            interventions: ["the delivery node's log: \"could not queue a DSN\" names the error (spool, message content)",
                            "smarthostctl queue list --state deferred --limit 20   (notifications have an empty sender; their domains are the senders' domains)",
                            "the mail itself was handled: the events topic has every Bounce; only the notification flow is broken"]))
    }
}
