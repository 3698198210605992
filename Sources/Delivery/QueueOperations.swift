import DNS
import DSN
import Events
import Metrics
import Operations
import QueueRecord
import SMTPProtocol
import Throttle

/// A tenant and destination domain: what the depth and oldest-age gauges are per.
public struct DepthKey: Hashable, Sendable {
    public var tenant: String
    public var domain: String

    public init(tenant: String, domain: String) {
        self.tenant = tenant
        self.domain = domain
    }
}

/// What an operator asks of a node's queues (docs/admin-api.md): the summary, the list, a
/// retry, a delete. Each reads or changes the queues inside the actor without a suspension
/// point between finding entries and moving them, so a count and its action agree.
extension QueueManager {
    /// How often deferred entries are sampled and the per-tenant/domain gauges refreshed.
    static let sampleInterval: UInt64 = 15_000
    /// At most this many tenant/domain label pairs are exported (the deepest); the rest are
    /// summed under domain `_other`, so that a queue of a million domains stays scrapeable.
    static let depthGaugeLimit = 100

    // MARK: - Recording

    func noteOutcomes(_ entry: QueueEntry, delivered: Int, deferred: Int, bounced: Int, expired: Int, now: UInt64) {
        activity.record(RecentActivity.Key(tenant: entry.tenant, domain: entry.domain, pool: entry.pool),
                        delivered: delivered, deferred: deferred, bounced: bounced, expired: expired, now: now)
        if deferred > 0 {
            retryCounter(entry.domain).increment(by: deferred)
            bounceCounters.soft.increment(by: deferred)
        }
        if bounced > 0 { bounceCounters.hard.increment(by: bounced) }
    }

    /// Retries of a domain that has a depth gauge are counted under its name, the rest under
    /// `_other` (a bounded label set); counters are made once per label.
    private func retryCounter(_ domain: String) -> Counter {
        let label = gaugeDomains.contains(domain) ? domain : "_other"
        if let counter = retryCounters[label] { return counter }
        let counter = Counter(label: "smarthost_delivery_retries_total", dimensions: [("domain", label)])
        retryCounters[label] = counter
        return counter
    }

    /// Every `sampleInterval`: the deferred count for the trend, and the depth and oldest-age
    /// gauges per tenant and domain, from the counts the queues keep as entries come and go
    /// (the oldest found again only where it left).
    func sampleIfDue(now: UInt64) {
        guard now >= UInt64(deferredSamples.last?.at ?? 0) + Self.sampleInterval else { return }
        deferredSamples.append(DeferredSample(at: Int64(now), deferred: queues.counts.deferred))
        let oldest = UInt64(activity.windowSeconds) * 1_000
        deferredSamples.removeAll { UInt64($0.at) + oldest < now }
        queues.refreshOldest()
        exportDepths(queues.depths.mapValues { ($0.entries, $0.oldestReceivedAt) }, now: now)
    }

    private func exportDepths(_ depth: [DepthKey: (count: Int, oldest: UInt64)], now: UInt64) {
        let deepest = depth.sorted { $0.value.count > $1.value.count }
        var exported: [DepthKey: (count: Int, oldest: UInt64)] = [:]
        for (index, (key, value)) in deepest.enumerated() {
            let label = index < Self.depthGaugeLimit ? key : DepthKey(tenant: key.tenant, domain: "_other")
            let current = exported[label] ?? (0, .max)
            exported[label] = (current.count + value.count, min(current.oldest, value.oldest))
        }
        for key in depthGaugeKeys where exported[key] == nil { exported[key] = (0, now) }
        for (key, value) in exported {
            let dimensions = [("tenant", key.tenant), ("domain", key.domain)]
            Gauge(label: "smarthost_queue_depth", dimensions: dimensions).record(value.count)
            Gauge(label: "smarthost_queue_oldest_age_seconds", dimensions: dimensions)
                .record(Double(now - min(now, value.oldest)) / 1_000)
        }
        depthGaugeKeys = Set(exported.filter { $0.value.count > 0 }.keys)
        gaugeDomains = Set(depthGaugeKeys.map(\.domain)).subtracting(["_other"])
        retryCounters = retryCounters.filter { gaugeDomains.contains($0.key) || $0.key == "_other" }
    }

    // MARK: - Reading

    /// How an operator sees entries now, from a copy of what this actor knows.
    func classifier() -> EntryClassifier {
        EntryClassifier(now: clock(), throttle: throttle, ruleSuspensions: suspended.mapValues(\.until), staticRoutes: staticRoutes,
                        mailRoutes: mailRoutes)
    }

    /// The node's queues by tenant, domain and pool, for the entries `filter` selects, with
    /// the recent outcomes of each (`GET /admin/queue/summary`). The pass over the entries runs
    /// off the actor, over a snapshot.
    public func summary(_ filter: QueueFilter) async throws -> NodeQueueSummary {
        let spooled = try await spool.pendingCount()
        let classifier = classifier()
        let (snapshot, queued, deferred) = (queues.contents, queues.queuedMessages, queues.counts.deferred)
        var rows = await Self.summarize(snapshot, classifier, filter, node: settings.nodeID)
        let now = classifier.now
        // Outcomes count for every key the filter's tenant, domain and pool select (not its
        // job, age or state, which outcomes do not have).
        for (key, outcomes) in activity.outcomes(now: now)
        where filter.matches(tenant: key.tenant, domain: key.domain, job: filter.job, pool: key.pool) {
            rows[key, default: QueueSummaryRow(node: settings.nodeID, tenant: key.tenant, domain: key.domain, pool: key.pool)].recent = outcomes
        }
        return NodeQueueSummary(
            node: settings.nodeID, generatedAt: Int64(now), windowSeconds: activity.windowSeconds,
            rows: rows.values.sorted { ($0.tenant ?? "", $0.domain ?? "", $0.pool ?? "") < ($1.tenant ?? "", $1.domain ?? "", $1.pool ?? "") },
            spooledMessages: spooled, queuedMessages: queued, orphanedMessages: max(0, spooled - queued),
            deferredSamples: deferredSamples + [DeferredSample(at: Int64(now), deferred: deferred)],
            dsnFailuresRecent: activity.dsnFailuresRecent(now: now), dsnFailuresTotal: activity.dsnFailuresTotal)
    }

    @concurrent
    private nonisolated static func summarize(_ queues: DeliveryQueues.Contents, _ classifier: EntryClassifier, _ filter: QueueFilter,
                                              node: String) async -> [RecentActivity.Key: QueueSummaryRow] {
        var rows: [RecentActivity.Key: QueueSummaryRow] = [:]
        var texts: [RecentActivity.Key: [String: Int]] = [:]
        classifier.forEachMatch(of: filter, in: queues) { entry, state in
            let key = RecentActivity.Key(tenant: entry.tenant, domain: entry.domain, pool: entry.pool)
            var row = rows[key] ?? QueueSummaryRow(node: node, tenant: key.tenant, domain: key.domain, pool: key.pool)
            row[state] += 1
            if state == .suspended, classifier.suspension(of: entry) == .operator { row.paused += 1 }
            row.oldestReceivedAt = min(row.oldestReceivedAt ?? .max, Int64(entry.receivedAt))
            if entry.sender == nil { row.nullSender += 1 }
            if let response = entry.lastResponse, let at = entry.lastResponseAt {
                texts[key, default: [:]][response, default: 0] += 1
                if Int64(at) >= row.lastResponseAt ?? .min {
                    row.lastResponse = response
                    row.lastResponseAt = Int64(at)
                }
            }
            rows[key] = row
        }
        for (key, counts) in texts { rows[key]?.responses = ResponseCount.top(counts, QueueSummaryRow.responsesKept) }
        return rows
    }

    /// The oldest entries `filter` selects, up to `limit` (`GET /admin/queue/messages`),
    /// found off the actor over a snapshot.
    public func listing(_ filter: QueueFilter, limit: Int) async -> NodeQueueListing {
        await Self.list(queues.contents, classifier(), filter, limit: limit, node: settings.nodeID)
    }

    @concurrent
    private nonisolated static func list(_ queues: DeliveryQueues.Contents, _ classifier: EntryClassifier, _ filter: QueueFilter, limit: Int,
                                         node: String) async -> NodeQueueListing {
        var matched: [(entry: QueueEntry, state: QueueState)] = []
        classifier.forEachMatch(of: filter, in: queues) { entry, state in matched.append((entry, state)) }
        let oldest = matched.sorted { ($0.entry.receivedAt, $0.entry.id.text, $0.entry.domain) < ($1.entry.receivedAt, $1.entry.id.text, $1.entry.domain) }
            .prefix(limit)
        return NodeQueueListing(node: node, matched: matched.count, entries: oldest.map { entry, state in
            ListedEntry(node: node, id: entry.id.text, tenant: entry.tenant, job: entry.job, domain: entry.domain, pool: entry.pool,
                        sender: entry.sender?.description ?? "", recipients: entry.recipients.map(\.description), state: state,
                        attempts: entry.attempts, receivedAt: Int64(entry.receivedAt),
                        dueAt: [.scheduled, .deferred, .suspended].contains(state) ? Int64(entry.dueAt) : nil, lastResponse: entry.lastResponse)
        })
    }

    // MARK: - Changing

    /// Counts the entries `filter` selects, off the actor over a snapshot, and those an action
    /// leaves alone (by state).
    @concurrent
    private nonisolated static func count(_ queues: DeliveryQueues.Contents, _ classifier: EntryClassifier, _ filter: QueueFilter,
                                          takeable: Set<QueueState>) async -> (matched: Int, skipped: [String: Int]) {
        var matched = 0
        var skipped: [String: Int] = [:]
        classifier.forEachMatch(of: filter, in: queues) { _, state in
            matched += 1
            if !takeable.contains(state) { skipped[state.rawValue, default: 0] += 1 }
        }
        return (matched, skipped)
    }

    /// Counts, then (unless a dry run) takes up to the request's limit into flight: only the
    /// scheduled queues the filter can match are visited.
    private func select(_ request: QueueActionRequest, takeable: Set<QueueState>) async
        -> (matched: Int, skipped: [String: Int], taken: [QueueEntry]) {
        let (matched, skipped) = await Self.count(queues.contents, classifier(), request.filter, takeable: takeable)
        guard request.dryRun != true else { return (matched, skipped, []) }
        let classifier = classifier()
        let taken = queues.takeMatching(limit: request.limit ?? .max, in: request.filter.mayMatch) { entry, raw in
            classifier.matchingState(request.filter, entry, raw).map(takeable.contains) ?? false
        }
        return (matched, skipped, taken)
    }

    /// Makes the selected entries due now (scheduled, deferred and held ones; a pause is not
    /// overridden, in-flight ones are left alone) and ends the connection backoff of their
    /// sites, so that they go at once (`POST /admin/queue/retry`).
    public func retry(_ request: QueueActionRequest) async -> QueueActionResult {
        let (matched, skipped, taken) = await select(request, takeable: [.scheduled, .deferred, .held])
        guard request.dryRun != true else {
            return QueueActionResult(node: settings.nodeID, matched: matched, affected: 0, recipients: 0, skipped: skipped, failed: 0)
        }
        let now = clock()
        var domains: Set<String> = []
        for var entry in taken {
            queues.land(entry.key)
            entry.dueAt = now
            queues.schedule(entry)
            domains.insert(entry.domain)
        }
        for site in Array(backoff.keys) where !(siteDomains[site.site] ?? []).isDisjoint(with: domains) { backoff[site] = nil }
        logger.notice("operator retry", metadata: ["filter": "\(request.filter.query)", "entries": "\(taken.count)"])
        pump()
        return QueueActionResult(node: settings.nodeID, matched: matched, affected: taken.count,
                                 recipients: taken.reduce(0) { $0 + $1.recipients.count },
                                 skipped: leftOver(skipped, matched: matched, taken: taken.count), failed: 0)
    }

    /// Matched entries not taken: those in states the action leaves alone, and beyond its limit.
    private func leftOver(_ skipped: [String: Int], matched: Int, taken: Int) -> [String: Int] {
        var result = skipped
        let beyond = matched - taken - skipped.values.reduce(0, +)
        if beyond > 0 { result["over_limit"] = beyond }
        return result
    }

    /// Ends the selected recipients for good (`POST /admin/queue/delete`): each gets an
    /// AdminBounce event and the sender a DSN (`bounce`), or an AdminDelete event and nothing
    /// else (`silent`). The entries are in flight while the spool records it; an entry whose
    /// record fails goes to limbo, like any outcome that could not be recorded.
    public func delete(_ request: QueueActionRequest) async -> QueueActionResult {
        let (matched, skipped, taken) = await select(request, takeable: [.scheduled, .deferred, .suspended, .ready, .held])
        guard request.dryRun != true else {
            return QueueActionResult(node: settings.nodeID, matched: matched, affected: 0, recipients: 0, skipped: skipped, failed: 0)
        }
        let now = clock()
        let mode = request.mode ?? .silent
        let failed = await withTaskGroup(of: Bool.self) { group in
            for entry in taken { group.addTask { await self.deleteTaken(entry, mode: mode, now: now) } }
            var failed = 0
            for await recorded in group where !recorded { failed += 1 }
            return failed
        }
        logger.notice("operator delete", metadata: [
            "filter": "\(request.filter.query)", "mode": "\(mode.rawValue)", "entries": "\(taken.count)", "failed": "\(failed)",
        ])
        return QueueActionResult(node: settings.nodeID, matched: matched, affected: taken.count - failed,
                                 recipients: taken.reduce(0) { $0 + $1.recipients.count },
                                 skipped: leftOver(skipped, matched: matched, taken: taken.count), failed: failed)
    }

    /// The reply an operator's deletion stands for, in events and DSNs.
    static let deletedReply = SMTPReply(550, EnhancedStatusCode(5, 0, 0), "Deleted from the queue by the relay's operator")

    /// Records one taken entry's deletion; false when the spool could not record it (limbo).
    private func deleteTaken(_ entry: QueueEntry, mode: QueueActionRequest.Mode, now: UInt64) async -> Bool {
        let attempt = Attempt(site: nil, peer: nil, tls: false)
        let kind: MessageEvent.Kind = mode == .bounce ? .adminBounce : .adminDelete
        var published = entry.recipients.map { event(kind, entry, $0, Self.deletedReply, attempt, entry.attempts, now, rule: "operator") }
        if mode == .bounce {
            let failures = entry.recipients.map {
                Failure(recipient: $0, reply: Self.deletedReply, verdict: ResponseClassifier.Verdict(action: .bounce, delay: nil, rule: "operator"))
            }
            await notifySender(entry, failed: failures, delayed: [], attempt: attempt, now: now, events: &published)
        }
        let encoded = events.encode(published)
        do {
            _ = try await spool.settle(entry.id, finalRecipients: entry.recipients, attempts: entry.attempts, nextAttemptAt: entry.dueAt,
                                       events: events.outboxEvents(encoded))
            events.logLocally(encoded)
            queues.land(entry.key)
            return true
        } catch {
            var rest = entry
            rest.recipients = []
            queues.moveToLimbo(entry.key, replacing: rest, unrecordedFinals: entry.recipients, events: published,
                               error: "operator delete: \(error)", now: now)
            logger.error("could not record an operator's delete; entry kept in limbo", metadata: ["id": "\(entry.id)", "error": "\(error)"])
            return false
        }
    }
}

/// How an operator sees an entry (`QueueState`, who suspended it), from a copy of what the
/// queue manager knew at `now`: the suspensions in force and the routes. Sendable, so that a
/// pass over a snapshot of the queues runs off the queue manager.
struct EntryClassifier: Sendable {
    let now: UInt64
    let throttle: ClusterThrottle?
    /// Sites a response rule suspended, until when.
    let ruleSuspensions: [SiteKey: UInt64]
    let staticRoutes: StaticRoutes
    let mailRoutes: [String: MailRoute]

    /// A scheduled entry is `suspended` while a pause or suspension covers it, `deferred` once
    /// attempted, else `scheduled`.
    func state(_ entry: QueueEntry, _ raw: DeliveryQueues.EntryState) -> QueueState {
        switch raw {
        case .ready: .ready
        case .inFlight: .inFlight
        case .held: .held
        case .limbo: .limbo
        case .scheduled: suspension(of: entry) != nil ? .suspended : entry.attempts > 0 ? .deferred : .scheduled
        }
    }

    /// The entry's state when `filter` selects it, else nil.
    func matchingState(_ filter: QueueFilter, _ entry: QueueEntry, _ raw: DeliveryQueues.EntryState) -> QueueState? {
        let state = state(entry, raw)
        return filter.matches(tenant: entry.tenant, domain: entry.domain, job: entry.job, pool: entry.pool, receivedAt: entry.receivedAt,
                              state: state, now: now) ? state : nil
    }

    /// Every entry of `queues` that `filter` selects, with its state (scheduled queues that
    /// cannot match are skipped whole).
    func forEachMatch(of filter: QueueFilter, in queues: DeliveryQueues.Contents, _ body: (QueueEntry, QueueState) -> Void) {
        queues.forEachEntry(in: filter.mayMatch) { entry, raw in
            if let state = matchingState(filter, entry, raw) { body(entry, state) }
        }
    }

    /// Who suspended an entry's traffic.
    enum Suspender {
        /// An operator's pause (`queue pause`, or an adjustment set by hand).
        case `operator`
        /// A response or traffic shaping rule: the destination asked us to back off.
        case rule
    }

    /// What covers the entry now: a cluster-wide pause or suspension, or a response rule's
    /// suspension of its site (as last routed; an unrouted domain matches no site selector).
    func suspension(of entry: QueueEntry) -> Suspender? {
        let site = siteName(of: entry.domain)
        if let adjustment = throttle?.suspension(pool: entry.pool, site: site ?? "", domain: entry.domain, tenant: entry.tenant),
           adjustment.until > now {
            return adjustment.setBy == "operator" ? .operator : .rule
        }
        if let site, let until = ruleSuspensions[SiteKey(pool: entry.pool, site: Site(name: site))], until > now { return .rule }
        return nil
    }

    /// The site a domain was last routed to, if known.
    private func siteName(of domain: String) -> String? {
        if let hop = staticRoutes.nextHop(domain: domain) { return Site(hop).name }
        if case .hosts(let name, _) = mailRoutes[domain]?.result { return name }
        return nil
    }
}

extension QueueFilter {
    /// Whether entries of this scheduled queue can match (its tenant, job and domain), so that
    /// a pass skips the queues that cannot.
    func mayMatch(_ queue: ScheduledQueueName) -> Bool {
        (tenant == nil || tenant == queue.tenant) && (domain == nil || domain == queue.domain) && (job == nil || job == queue.job)
    }
}
