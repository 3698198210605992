import DSN
import Events
import Metrics
import Operations
import QueueRecord
import SMTPProtocol

/// A tenant and domain whose depth and oldest age are exported as gauges.
struct DepthKey: Hashable, Sendable {
    var tenant: String
    var domain: String
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

    /// Every `sampleInterval`, or less often when the queues are so long that one pass over
    /// them would take more than 1% of the queue manager's time: the deferred count for the
    /// trend, and the depth and oldest-age gauges per tenant and domain.
    func sampleIfDue(now: UInt64) {
        guard now >= UInt64(deferredSamples.last?.at ?? 0) + max(Self.sampleInterval, 100 * lastSampleCost) else { return }
        let started = ContinuousClock.now
        defer { lastSampleCost = UInt64((ContinuousClock.now - started) / .milliseconds(1)) }
        deferredSamples.append(DeferredSample(at: Int64(now), deferred: queues.counts.deferred))
        let oldest = UInt64(activity.windowSeconds) * 1_000
        deferredSamples.removeAll { UInt64($0.at) + oldest < now }
        var depth: [DepthKey: (count: Int, oldest: UInt64)] = [:]
        queues.forEachEntry { entry, _ in
            let key = DepthKey(tenant: entry.tenant, domain: entry.domain)
            let current = depth[key] ?? (0, .max)
            depth[key] = (current.count + 1, min(current.oldest, entry.receivedAt))
        }
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

    /// Where an entry is, in the operator's words: a scheduled entry is `suspended` while a
    /// pause or suspension covers it, `deferred` once attempted, else `scheduled`.
    func operatorState(_ entry: QueueEntry, _ state: DeliveryQueues.EntryState, now: UInt64) -> QueueState {
        switch state {
        case .ready: return .ready
        case .inFlight: return .inFlight
        case .held: return .held
        case .limbo: return .limbo
        case .scheduled:
            if suspension(of: entry, now: now) != nil { return .suspended }
            return entry.attempts > 0 ? .deferred : .scheduled
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
    func suspension(of entry: QueueEntry, now: UInt64) -> Suspender? {
        let site = siteName(of: entry.domain)
        if let adjustment = throttle?.suspension(pool: entry.pool, site: site ?? "", domain: entry.domain, tenant: entry.tenant),
           adjustment.until > now {
            return adjustment.setBy == "operator" ? .operator : .rule
        }
        if let site, let until = suspended[SiteKey(pool: entry.pool, site: Site(name: site))]?.until, until > now { return .rule }
        return nil
    }

    /// The site a domain was last routed to, if known.
    private func siteName(of domain: String) -> String? {
        if let hop = staticRoutes.nextHop(domain: domain) { return Site(hop).name }
        if case .hosts(let name, _) = mailRoutes[domain]?.result { return name }
        return nil
    }

    /// The node's queues by tenant, domain and pool, for the entries `filter` selects, with
    /// the recent outcomes of each (`GET /admin/queue/summary`).
    public func summary(_ filter: QueueFilter) async throws -> NodeQueueSummary {
        let spooled = try await spool.pendingCount()
        let now = clock()
        var rows: [RecentActivity.Key: QueueSummaryRow] = [:]
        var texts: [RecentActivity.Key: [String: Int]] = [:]
        queues.forEachEntry { entry, raw in
            let state = operatorState(entry, raw, now: now)
            guard filter.matches(tenant: entry.tenant, domain: entry.domain, job: entry.job, pool: entry.pool,
                                 receivedAt: entry.receivedAt, state: state, now: now) else { return }
            let key = RecentActivity.Key(tenant: entry.tenant, domain: entry.domain, pool: entry.pool)
            var row = rows[key] ?? QueueSummaryRow(node: settings.nodeID, tenant: key.tenant, domain: key.domain, pool: key.pool)
            row[state] += 1
            if state == .suspended, suspension(of: entry, now: now) == .operator { row.paused += 1 }
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
        // Outcomes count for every key the filter's tenant, domain and pool select (not its
        // job, age or state, which outcomes do not have).
        for (key, outcomes) in activity.outcomes(now: now)
        where filter.matches(tenant: key.tenant, domain: key.domain, job: filter.job, pool: key.pool) {
            rows[key, default: QueueSummaryRow(node: settings.nodeID, tenant: key.tenant, domain: key.domain, pool: key.pool)].recent = outcomes
        }
        for (key, counts) in texts { rows[key]?.responses = ResponseCount.top(counts, QueueSummaryRow.responsesKept) }
        let queued = queues.queuedMessages
        return NodeQueueSummary(
            node: settings.nodeID, generatedAt: Int64(now), windowSeconds: activity.windowSeconds,
            rows: rows.values.sorted { ($0.tenant ?? "", $0.domain ?? "", $0.pool ?? "") < ($1.tenant ?? "", $1.domain ?? "", $1.pool ?? "") },
            spooledMessages: spooled, queuedMessages: queued, orphanedMessages: max(0, spooled - queued),
            deferredSamples: deferredSamples + [DeferredSample(at: Int64(now), deferred: queues.counts.deferred)],
            dsnFailuresRecent: activity.dsnFailuresRecent(now: now), dsnFailuresTotal: activity.dsnFailuresTotal)
    }

    /// The oldest entries `filter` selects, up to `limit` (`GET /admin/queue/messages`).
    public func listing(_ filter: QueueFilter, limit: Int) -> NodeQueueListing {
        let now = clock()
        var matched: [ListedEntry] = []
        queues.forEachEntry { entry, raw in
            let state = operatorState(entry, raw, now: now)
            guard filter.matches(tenant: entry.tenant, domain: entry.domain, job: entry.job, pool: entry.pool,
                                 receivedAt: entry.receivedAt, state: state, now: now) else { return }
            let due = [.scheduled, .deferred, .suspended].contains(state) ? Int64(entry.dueAt) : nil
            matched.append(ListedEntry(node: settings.nodeID, id: entry.id.text, tenant: entry.tenant, job: entry.job, domain: entry.domain,
                                       pool: entry.pool, sender: entry.sender?.description ?? "", recipients: entry.recipients.map(\.description),
                                       state: state, attempts: entry.attempts, receivedAt: Int64(entry.receivedAt), dueAt: due,
                                       lastResponse: entry.lastResponse))
        }
        let oldest = matched.sorted { ($0.receivedAt, $0.id, $0.domain) < ($1.receivedAt, $1.id, $1.domain) }.prefix(limit)
        return NodeQueueListing(node: settings.nodeID, matched: matched.count, entries: Array(oldest))
    }

    // MARK: - Changing

    /// Counts the entries `filter` selects by state, and which of them an action may take.
    private func select(_ filter: QueueFilter, now: UInt64, takeable: Set<QueueState>)
        -> (matched: Int, skipped: [String: Int], picks: (QueueEntry, DeliveryQueues.EntryState) -> Bool) {
        var matched = 0
        var skipped: [String: Int] = [:]
        let picks = { (entry: QueueEntry, raw: DeliveryQueues.EntryState) -> Bool in
            let state = self.operatorState(entry, raw, now: now)
            return takeable.contains(state) && filter.matches(tenant: entry.tenant, domain: entry.domain, job: entry.job, pool: entry.pool,
                                                              receivedAt: entry.receivedAt, state: state, now: now)
        }
        queues.forEachEntry { entry, raw in
            let state = operatorState(entry, raw, now: now)
            guard filter.matches(tenant: entry.tenant, domain: entry.domain, job: entry.job, pool: entry.pool,
                                 receivedAt: entry.receivedAt, state: state, now: now) else { return }
            matched += 1
            if !takeable.contains(state) { skipped[state.rawValue, default: 0] += 1 }
        }
        return (matched, skipped, picks)
    }

    /// Makes the selected entries due now (scheduled, deferred and held ones; a pause is not
    /// overridden, in-flight ones are left alone) and ends the connection backoff of their
    /// sites, so that they go at once (`POST /admin/queue/retry`).
    public func retry(_ request: QueueActionRequest) -> QueueActionResult {
        let now = clock()
        let (matched, skipped, picks) = select(request.filter, now: now, takeable: [.scheduled, .deferred, .held])
        guard request.dryRun != true else {
            return QueueActionResult(node: settings.nodeID, matched: matched, affected: 0, recipients: 0, skipped: skipped, failed: 0)
        }
        let taken = queues.takeMatching(limit: request.limit ?? .max, picks)
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
        let now = clock()
        let (matched, skipped, picks) = select(request.filter, now: now, takeable: [.scheduled, .deferred, .suspended, .ready, .held])
        guard request.dryRun != true else {
            return QueueActionResult(node: settings.nodeID, matched: matched, affected: 0, recipients: 0, skipped: skipped, failed: 0)
        }
        let taken = queues.takeMatching(limit: request.limit ?? .max, picks)
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
        do {
            _ = try await spool.settle(entry.id, finalRecipients: entry.recipients, attempts: entry.attempts, nextAttemptAt: entry.dueAt,
                                       events: events.outboxEvents(published))
            events.logLocally(published)
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
