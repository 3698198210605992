import DNS
import DSN
import Events
import Logging
import Metrics
import Operations
import QueueRecord
import Reconciliation
import SMTPClient
import SMTPProtocol
import SmarthostConfig
import Spool
import Throttle

/// Owns a delivery node's queues: puts spooled messages in their scheduled queues, promotes
/// due ones to ready queues, opens connections to sites with mail waiting, and records each
/// attempt's outcome (spool, events, retry or expiry).
///
/// Every change of an entry's place happens inside this actor without an `await` between
/// taking it from one queue and putting it in the next, so no entry is ever in no queue; the
/// one await that can fail (recording the outcome in the spool) happens while the entry is
/// still in flight, and a failure moves it to limbo.
public actor QueueManager {
    public struct Settings: Sendable {
        public var nodeID: String
        public var readyQueueSize: Int
        public var maxConnectionsPerSite: Int
        public var maxMessagesPerConnection: Int
        public var tls: SMTPClientSettings.TLSPolicy
        public var timeouts: SMTPClientTimeouts
        public var pools: [String: SmarthostConfiguration.Pool]
        public var defaultEHLOName: String
        public var tenantPools: [String: String]
        public var schedules: [String: RetrySchedule]
        /// The port of MX hosts.
        public var smtpPort: Int
        public var classifier: ResponseClassifier
        /// Builds the notifications to senders; nil when `delivery.send_dsn` is false.
        public var notifications: DSNBuilder?
        public var delayNoticeAfter: Duration?
        public var shapingRules: [SmarthostConfiguration.ShapingRule]

        public init(configuration: SmarthostConfiguration) {
            let delivery = configuration.delivery
            nodeID = configuration.node.id
            readyQueueSize = delivery.readyQueueSize
            maxConnectionsPerSite = delivery.maxConnectionsPerSite
            maxMessagesPerConnection = delivery.maxMessagesPerConnection
            tls = delivery.tls == .disabled ? .disabled : .opportunistic
            var timeouts = delivery.commandTimeout >= .seconds(300) ? SMTPClientTimeouts() : SMTPClientTimeouts(all: delivery.commandTimeout)
            timeouts.connect = delivery.connectTimeout
            self.timeouts = timeouts
            pools = configuration.pools
            defaultEHLOName = configuration.ingress.hostname ?? configuration.node.id
            tenantPools = configuration.tenants.compactMapValues(\.pool)
            schedules = configuration.trafficClasses.mapValues(RetrySchedule.init)
            smtpPort = delivery.smtpPort
            // The loader has compiled every rule's expression already.
            classifier = try! ResponseClassifier(rules: configuration.effectiveResponseRules)
            notifications = delivery.sendDSN ? DSNBuilder(
                reportingMTA: defaultEHLOName, postmaster: Mailbox(localPart: "MAILER-DAEMON", domain: defaultEHLOName),
                messageIDDomain: defaultEHLOName) : nil
            delayNoticeAfter = delivery.delayNoticeAfter
            shapingRules = configuration.shaping
        }
    }

    /// What a delivery attempt's connection looked like, for the events.
    struct Attempt: Sendable {
        /// Nil when the route itself failed (no site was chosen).
        var site: SiteKey?
        var peer: String?
        var tls: Bool
        /// The host connected to (an MX host name, or the next hop as configured).
        var host: String? = nil
    }

    public let settings: Settings
    var queues: DeliveryQueues
    let spool: Spool
    let events: EventPublisher
    let staticRoutes: StaticRoutes
    private let mailRouter: (any MailRouter)?
    let clock: @Sendable () -> UInt64
    let logger: Logger
    /// Test-only faults (`testing.fault_injection`); nil in production.
    let faults: FaultInjector?
    /// The sweep running now, which a second request joins, and the last one's report.
    var sweepInProgress: Task<SweepReport, Never>?
    public internal(set) var lastSweep: SweepReport?
    var sweepTotals = SweepReport.Totals()
    private var connections: [SiteKey: Int] = [:]
    /// How each site with entries is reached (refreshed whenever a route is decided).
    private var targets: [Site: SiteTargets] = [:]
    /// MX answers by domain, reused until their TTL ends; domains being resolved.
    var mailRoutes: [String: MailRoute] = [:]
    private var resolving: Set<String> = []
    /// Sites whose connections failed: not tried again before `until`. Only the entries
    /// waiting when a connection failed get a TransientFailure; the rest wait, unattempted,
    /// in their scheduled queues (PowerMTA's backoff mode), so an unreachable destination
    /// does not cost an attempt per message per retry.
    var backoff: [SiteKey: (until: UInt64, interval: UInt64)] = [:]
    /// Sites a response rule suspended (rate limited, reputation): no connection before `until`.
    var suspended: [SiteKey: (until: UInt64, rule: String)] = [:]
    private var stopping = false
    private var random = SystemRandomNumberGenerator()
    /// Cluster-wide limits, suspensions and shaping (nil: this node's own limits only).
    let throttle: ClusterThrottle?
    private var shaping: [(rule: SmarthostConfiguration.ShapingRule, matcher: ReplyMatcher)]
    /// The domains routed to each site, for connection limits that select a domain.
    var siteDomains: [Site: Set<String>] = [:]
    /// Sites whose connection leases are being asked for, and when to ask again after a refusal.
    private var acquiring: Set<SiteKey> = []
    private var leaseRetry: [SiteKey: (at: UInt64, interval: UInt64)] = [:]
    /// The throttle generation whose suspensions the ready queues reflect.
    private var appliedGeneration = 0
    /// Attempts of the last minutes, per tenant, domain and pool (for `diagnose`).
    var activity = RecentActivity()
    /// Deferred entries, sampled every `sampleInterval` over the activity window.
    var deferredSamples: [DeferredSample] = []
    /// Tenants and domains whose depth gauges were last set (set to 0 when they empty).
    var depthGaugeKeys: Set<DepthKey> = []
    /// Reply texts as the entries hold them: one string shared by every entry that got the same
    /// reply (200,000 entries deferred by one refusal hold one copy of its text, not 200,000).
    private var replyTexts: [String: String] = [:]

    func sharedText(_ text: String) -> String {
        if let known = replyTexts[text] { return known }
        if replyTexts.count >= 10_000 { replyTexts.removeAll(keepingCapacity: true) }
        replyTexts[text] = text
        return text
    }

    /// The domains of those gauges, and the retry counters by domain label.
    var gaugeDomains: Set<String> = []
    var retryCounters: [String: Counter] = [:]
    let bounceCounters = (hard: Counter(label: "smarthost_delivery_bounces_total", dimensions: [("kind", "hard")]),
                          soft: Counter(label: "smarthost_delivery_bounces_total", dimensions: [("kind", "soft")]))

    private let recipientCounters = (
        delivered: Counter(label: "smarthost_delivery_recipients_total", dimensions: [("outcome", "delivered")]),
        deferred: Counter(label: "smarthost_delivery_recipients_total", dimensions: [("outcome", "deferred")]),
        bounced: Counter(label: "smarthost_delivery_recipients_total", dimensions: [("outcome", "bounced")]),
        expired: Counter(label: "smarthost_delivery_recipients_total", dimensions: [("outcome", "expired")])
    )
    private let depthGauges = DeliveryQueues.EntryState.allCases.map {
        ($0, Gauge(label: "smarthost_queue_entries", dimensions: [("state", $0.rawValue)]))
    }
    private let connectionGauge = Gauge(label: "smarthost_delivery_connections")
    private let suspendedGauge = Gauge(label: "smarthost_delivery_sites_suspended")
    private let notificationCounter = Counter(label: "smarthost_delivery_dsn_total")
    private let notificationFailures = Counter(label: "smarthost_delivery_dsn_failures_total")

    /// `mailRouter` resolves the domains that `staticRoutes` does not name; without one, their
    /// entries are held.
    public init(settings: Settings, spool: Spool, events: EventPublisher, staticRoutes: StaticRoutes,
                mailRouter: (any MailRouter)?, throttle: ClusterThrottle? = nil, faults: FaultInjector? = nil,
                clock: @escaping @Sendable () -> UInt64 = { MessageID.currentMilliseconds() },
                logger: Logger = Logger(label: "smarthost.delivery")) {
        self.settings = settings
        self.throttle = throttle
        self.faults = faults
        // The loader has compiled every rule's expression already.
        shaping = settings.shapingRules.map { ($0, try! ReplyMatcher($0.pattern)) }
        queues = DeliveryQueues(readyQueueSize: settings.readyQueueSize)
        self.spool = spool
        self.events = events
        self.staticRoutes = staticRoutes
        self.mailRouter = mailRouter
        self.clock = clock
        self.logger = logger
    }

    public var counts: DeliveryQueues.Counts { queues.counts }
    public var openConnections: Int { connections.values.reduce(0, +) }
    /// Outcomes being written to the spool; a stopping node waits for them.
    public private(set) var outcomesBeingRecorded = 0

    // MARK: - Entering the queues

    /// Schedules spooled messages: one entry per destination domain of their pending recipients.
    public func enqueue(_ messages: [SpooledMessage]) {
        for message in messages {
            for entry in entries(of: message) { queues.schedule(entry) }
        }
        pump()
    }

    func entries(of message: SpooledMessage) -> [QueueEntry] {
        var byDomain: [String: [Mailbox]] = [:]
        var order: [String] = []
        for recipient in message.pendingRecipients {
            let domain = recipient.normalizedDomain
            if byDomain[domain] == nil { order.append(domain) }
            byDomain[domain, default: []].append(recipient)
        }
        let pool = message.pool ?? settings.tenantPools[message.tenant] ?? "default"
        return order.map { domain in
            QueueEntry(id: message.id, tenant: message.tenant, job: message.job, domain: domain, sender: message.sender,
                       recipients: byDomain[domain]!, pool: pool, lane: message.lane, trafficClass: message.trafficClass,
                       size: message.size, eightBit: message.eightBit, smtputf8: message.smtputf8,
                       receivedAt: message.receivedAt, attempts: message.attempts, dueAt: message.nextAttemptAt)
        }
    }

    // MARK: - Scheduling

    /// Promotes due entries and opens the connections their sites need. Called on a timer by
    /// the node and after every change that can make more work.
    public func pump() {
        guard !stopping else { return }
        let now = clock()
        applyClusterSuspensions(now: now)
        let promotion = queues.promote(now: now, route: { route($0, now: now) },
                                       accepts: { entry, site in !isPaused(site, now: now) && !isSuspended(entry, at: site, now: now) })
        if !promotion.failed.isEmpty {
            Task { await self.recordRouteFailures(promotion.failed) }
        }
        for (site, waiting) in queues.readySites where !isPaused(site, now: now) {
            guard let siteTargets = targets[site.site] else { continue }
            // A connection per waiting message, counting those already open (still in their
            // handshake, or about to take the next message), up to the limit: a short queue
            // does not open connections it cannot use.
            let wanted = min(settings.maxConnectionsPerSite, waiting) - connections[site, default: 0]
            guard wanted > 0 else { continue }
            guard let throttle else {
                for _ in 0..<wanted { open(site, siteTargets, lease: nil, messageLimit: settings.maxMessagesPerConnection) }
                continue
            }
            // Leases first: one request per site at a time, and after a refusal not again
            // before the retry interval (the limit is full; someone else's connection must end).
            guard !acquiring.contains(site), leaseRetry[site].map({ $0.at <= now }) ?? true else { continue }
            acquiring.insert(site)
            let traffic = connectionTraffic(site, siteTargets)
            Task {
                let leases = await throttle.acquire(traffic, count: wanted)
                await self.leased(site, leases)
            }
        }
        sampleIfDue(now: now)
        for (state, gauge) in depthGauges { gauge.record(queues.counts[state]) }
        connectionGauge.record(openConnections)
        suspendedGauge.record(suspended.values.filter { $0.until > now }.count)
    }

    private func connectionTraffic(_ site: SiteKey, _ siteTargets: SiteTargets) -> ConnectionTraffic {
        ConnectionTraffic(pool: site.pool, site: site.site.name, siteHosts: siteTargets.hostNames, domains: siteDomains[site.site] ?? [])
    }

    /// Leases came back for `site`: a connection for each (none: ask again later).
    private func leased(_ site: SiteKey, _ leases: [ConnectionLease]) {
        acquiring.remove(site)
        let now = clock()
        guard !leases.isEmpty else {
            let interval = min(max((leaseRetry[site]?.interval ?? 0) * 2, Self.firstLeaseRetry), Self.maximumLeaseRetry)
            leaseRetry[site] = (now + interval, interval)
            return
        }
        leaseRetry[site] = nil
        guard !stopping, let throttle, let siteTargets = targets[site.site] else {
            for lease in leases { Task { await throttle?.release(lease) } }
            return
        }
        let plan = throttle.connectionPlan(connectionTraffic(site, siteTargets))
        let messageLimit = min(settings.maxMessagesPerConnection, plan.maxMessagesPerConnection ?? .max)
        for lease in leases { open(site, siteTargets, lease: lease, messageLimit: messageLimit) }
    }

    static let firstLeaseRetry: UInt64 = 250
    static let maximumLeaseRetry: UInt64 = 1_000

    private func open(_ site: SiteKey, _ siteTargets: SiteTargets, lease: ConnectionLease?, messageLimit: Int) {
        connections[site, default: 0] += 1
        let client = clientSettings(for: site)
        let candidates = siteTargets.candidates(using: &random)
        Task { await self.runConnection(site: site, candidates: candidates, settings: client, lease: lease, messageLimit: messageLimit) }
    }

    /// When the cluster's suspensions changed, the ready entries they now cover go back to their
    /// scheduled queues (unattempted), where promotion leaves them until the suspension ends.
    private func applyClusterSuspensions(now: UInt64) {
        guard let throttle, throttle.generation != appliedGeneration else { return }
        appliedGeneration = throttle.generation
        var returned = 0
        for (site, _) in queues.readySites {
            returned += queues.returnToScheduled(from: site, dueAt: now) { isSuspended($0, at: site, now: now) }
        }
        if returned > 0 {
            logger.notice("suspended traffic back in its scheduled queues", metadata: ["entries": "\(returned)"])
        }
    }

    /// A cluster-wide suspension (by a shaping rule or an operator) covers this entry.
    func isSuspended(_ entry: QueueEntry, at site: SiteKey, now: UInt64) -> Bool {
        guard let until = throttle?.suspendedUntil(pool: site.pool, site: site.site.name, domain: entry.domain, tenant: entry.tenant)
        else { return false }
        return until > now
    }

    /// New limits and shaping rules (a configuration reload), in force without a restart.
    public func reload(_ configuration: SmarthostConfiguration) async {
        shaping = configuration.shaping.map { ($0, try! ReplyMatcher($0.pattern)) }
        await throttle?.reload(limits: configuration.limits)
        logger.notice("limits and traffic shaping rules reloaded", metadata: [
            "limits": "\(configuration.limits.count)", "shaping_rules": "\(configuration.shaping.count)",
        ])
    }

    /// A domain's route: a static route, else its MX answer while its TTL lasts (a lookup is
    /// started when there is none, and the domain's entries wait for it).
    private func route(_ domain: String, now: UInt64) -> RouteDecision {
        if let hop = staticRoutes.nextHop(domain: domain) { return deliver(domain, to: hop) }
        // An address literal (user@[192.0.2.1], RFC 5321 §4.1.3) names the host: no DNS.
        if domain.hasPrefix("["), domain.hasSuffix("]") {
            let literal = domain.dropFirst().dropLast()
            return deliver(domain, to: NextHop(host: String(literal.hasPrefix("ipv6:") ? literal.dropFirst(5) : literal), port: settings.smtpPort))
        }
        guard let mailRouter else {
            return .hold(reason: "no route for \(domain): no static route, no delivery.default_next_hop and no MX resolution")
        }
        if let answer = mailRoutes[domain], answer.validUntil > now {
            switch answer.result {
            case .hosts(let name, let hosts):
                let site = Site(name: name)
                targets[site] = .exchanges(hosts, port: settings.smtpPort)
                siteDomains[site, default: []].insert(domain)
                return .deliver(site)
            case .failed(let reply):
                return .fail(reply)
            }
        }
        if resolving.insert(domain).inserted {
            Task {
                let answer = await mailRouter.route(for: domain)
                self.resolved(domain, answer)
            }
        }
        return .wait
    }

    private func deliver(_ domain: String, to hop: NextHop) -> RouteDecision {
        let site = Site(hop)
        targets[site] = .nextHop(hop)
        siteDomains[site, default: []].insert(domain)
        return .deliver(site)
    }

    private func resolved(_ domain: String, _ answer: MailRoute) {
        resolving.remove(domain)
        if mailRoutes.updateValue(answer, forKey: domain) == nil, mailRoutes.count.isMultiple(of: Self.routePruneInterval) {
            pruneRoutes()
        }
        if case .failed(let reply) = answer.result {
            logger.notice("no mail route", metadata: ["domain": "\(domain)", "reply": "\(reply)"])
        }
        pump()
    }

    /// Domains seen over a node's life: answers past their TTL, and the targets of sites with
    /// nothing waiting and no connection, are dropped every so many new domains (a later entry
    /// asks again), so neither table grows with every domain ever delivered to.
    static let routePruneInterval = 1_000

    private func pruneRoutes() {
        let now = clock()
        mailRoutes = mailRoutes.filter { $0.value.validUntil > now }
        let busy = Set(queues.readySites.map(\.site.site) + connections.keys.map(\.site))
        targets = targets.filter { busy.contains($0.key) }
        siteDomains = siteDomains.filter { busy.contains($0.key) }
    }

    private func isPaused(_ site: SiteKey, now: UInt64) -> Bool {
        if let until = backoff[site]?.until, until > now { return true }
        if let until = suspended[site]?.until, until > now { return true }
        if let until = throttle?.suspendedUntil(pool: site.pool, site: site.site.name), until > now { return true }
        return false
    }

    /// Entries whose route failed: a 5xx bounces them, a 4xx retries them on schedule.
    private func recordRouteFailures(_ failed: [(entry: QueueEntry, reply: SMTPReply)]) async {
        await withTaskGroup(of: Void.self) { group in
            for (entry, reply) in failed {
                group.addTask {
                    let attempt = Attempt(site: nil, peer: nil, tls: false)
                    await self.record(entry, outcomes: entry.recipients.map { _ in ClientTransaction.Outcome(reply) },
                                      attempt: attempt, tried: true, classify: false)
                }
            }
        }
    }

    private func clientSettings(for site: SiteKey) -> SMTPClientSettings {
        let pool = settings.pools[site.pool]
        return SMTPClientSettings(ehloName: pool?.ehloName ?? settings.defaultEHLOName, sourceAddress: pool?.sourceAddress,
                                  tls: site.site.requireTLS ? .required : settings.tls, timeouts: settings.timeouts)
    }

    /// Stops opening connections; those open finish their current message.
    public func stop() {
        stopping = true
    }

    // MARK: - Connections

    /// What a connection does next.
    enum Next {
        case send(QueueEntry)
        /// Nothing waiting for the site.
        case idle
        /// Entries wait, but their limits allow none before this.
        case wait(Duration)
        /// The site is paused, the node stopping, or the connection's lease no longer current.
        case end
    }

    /// The next entry for a connection to `site`, taken in flight once every limit that
    /// applies to it has allowed it. An entry over its limits for longer than a moment goes
    /// back to its scheduled queue, unattempted, with the others of its domain and tenant.
    private func next(for site: SiteKey, lease: ConnectionLease?) async -> Next {
        let now = clock()
        if stopping || isPaused(site, now: now) { return .end }
        if let lease, let throttle, !throttle.isCurrent(lease) { return .end }
        guard let entry = queues.take(from: site) else { return .idle }
        guard let throttle, let siteTargets = targets[site.site] else { return .send(entry) }
        if isSuspended(entry, at: site, now: now) {
            queues.putBack(entry.key, to: site)
            applyClusterSuspensionsNow(site, now: now)
            return .wait(.zero)
        }
        let traffic = MessageTraffic(pool: site.pool, site: site.site.name, siteHosts: siteTargets.hostNames,
                                     domain: entry.domain, tenant: entry.tenant)
        guard let wait = await throttle.admit(traffic) else { return .send(entry) }
        queues.putBack(entry.key, to: site)
        if wait > Self.longestLimitWait {
            let due = clock() + UInt64(wait.milliseconds)
            let returned = queues.returnToScheduled(from: site, dueAt: due) { $0.domain == entry.domain && $0.tenant == entry.tenant }
            logger.info("over a limit for a while: entries back in their scheduled queue", metadata: [
                "site": "\(site)", "domain": "\(entry.domain)", "tenant": "\(entry.tenant)", "entries": "\(returned)",
                "wait": "\(wait)",
            ])
            return .wait(.zero)
        }
        return .wait(wait)
    }

    /// A connection waits this long at most for its next message's limits; longer waits send
    /// the entries back to their scheduled queues and free the connection.
    static let longestLimitWait: Duration = .seconds(2)

    private func applyClusterSuspensionsNow(_ site: SiteKey, now: UInt64) {
        queues.returnToScheduled(from: site, dueAt: now) { isSuspended($0, at: site, now: now) }
    }

    private func connectionEnded(_ site: SiteKey, lease: ConnectionLease?) {
        connections[site, default: 1] -= 1
        if connections[site] == 0 { connections[site] = nil }
        if let lease, let throttle { Task { await throttle.release(lease) } }
        pump()
    }

    /// One connection's life: open it (trying the site's addresses in order until one
    /// answers), send what the site's ready queue holds (up to the per-connection limit),
    /// close it. When no address can be opened, every entry waiting for the site fails: they
    /// are retried on their schedule.
    private nonisolated func runConnection(site: SiteKey, candidates: [ConnectionCandidate], settings client: SMTPClientSettings,
                                           lease: ConnectionLease?, messageLimit: Int) async {
        var failure: SMTPClientError?
        for candidate in candidates {
            var opened = false
            do {
                try await SMTPClientSession.withSession(host: candidate.address, port: candidate.port, settings: client) { session in
                    opened = true
                    await reached(site)
                    try await send(on: session, to: site, host: candidate.host, lease: lease, messageLimit: messageLimit)
                }
                failure = nil
                break
            } catch let error as SMTPClientError where !opened {
                // Not connected, or refused before any message (greeting, EHLO, STARTTLS): the
                // next address may do better (RFC 5321 §5.1).
                logger.info("could not open a session", metadata: [
                    "site": "\(site)", "host": "\(candidate.host)", "address": "\(candidate.address)", "error": "\(error)",
                ])
                failure = error
            } catch {
                logger.info("connection ended by an error", metadata: ["site": "\(site)", "error": "\(error)"])
                failure = nil
                break
            }
        }
        if let failure { await connectionFailed(site, error: failure) }
        await connectionEnded(site, lease: lease)
    }

    /// Sends the site's ready entries on an open session until the queue is empty for a
    /// moment, the per-connection limit is reached or the session is unusable.
    private nonisolated func send(on session: SMTPClientSession, to site: SiteKey, host: String, lease: ConnectionLease?,
                                  messageLimit: Int) async throws {
        var idle = 0
        while session.isUsable && session.messagesSent < messageLimit {
            let entry: QueueEntry
            switch await next(for: site, lease: lease) {
            case .end:
                return
            case .idle:
                // Keep the connection a moment for mail about to be promoted.
                idle += 1
                if idle > 5 { return }
                try await Task.sleep(for: .milliseconds(50))
                continue
            case .wait(let delay):
                idle = 0
                try await Task.sleep(for: min(delay, .seconds(1)))
                continue
            case .send(let taken):
                entry = taken
            }
            idle = 0
            let attempt = Attempt(site: site, peer: session.peer, tls: session.tlsActive, host: host)
            let content: [UInt8]?
            do {
                // Test-only (`fail-body-reads`): the read fails as a damaged spool's would.
                if let faults, faults.takeBodyReadFailure() { throw spool.injectedFailure("read message \(entry.id)") }
                content = try await spool.content(of: entry.id)
            } catch {
                let reply = SMTPReply(451, EnhancedStatusCode(4, 3, 0), "Local spool error: \(error)")
                await record(entry, outcomes: entry.recipients.map { _ in .transientFailure(reply) }, attempt: attempt,
                             tried: false, classify: false)
                continue
            }
            guard let content else {
                await vanished(entry)
                continue
            }
            let message = OutboundMessage(sender: entry.sender, recipients: entry.recipients, content: content,
                                          eightBit: entry.eightBit, smtputf8: entry.smtputf8)
            do {
                let outcomes = try await session.send(message)
                // The connection goes on while the spool fsyncs the outcome (the entry stays in
                // flight until then), so one connection's throughput is not one message per
                // fsync; concurrent outcomes share a group commit.
                Task { await self.record(entry, outcomes: outcomes, attempt: attempt, tried: true, classify: true) }
            } catch let error as SMTPClientError {
                await record(entry, outcomes: entry.recipients.map { _ in .transientFailure(error.reply) }, attempt: attempt,
                             tried: true, classify: error.isServerReply)
                throw error
            }
        }
    }

    /// The site could not be reached or refused the session: every entry waiting for it gets
    /// the error as a transient failure, and the site backs off. A refusal in the server's own
    /// words that a rule says means "suspend" (a 421 rate limit at the greeting) suspends it
    /// instead, and the waiting entries go back to their queues unattempted.
    private func connectionFailed(_ site: SiteKey, error: SMTPClientError) async {
        if case .refused(let reply) = error.kind {
            shape(site, tenant: nil, replies: [reply])
            let verdict = settings.classifier.classify(reply)
            if verdict.action == .suspend, let rule = verdict.rule, let delay = verdict.delay {
                suspend(site, for: delay, rule: rule, reply: reply)
                return
            }
        }
        let waiting = queues.takeAll(from: site)
        let interval = min((backoff[site]?.interval ?? 0) * 2, Self.maximumBackoff)
        backoff[site] = (until: clock() + max(interval, Self.firstBackoff), interval: max(interval, Self.firstBackoff))
        logger.notice("connection failed", metadata: [
            "site": "\(site)", "error": "\(error)", "deferred": "\(waiting.count)",
        ])
        let attempt = Attempt(site: site, peer: nil, tls: false)
        // Recorded concurrently, so that the spool writes them in a few group commits.
        await withTaskGroup(of: Void.self) { group in
            for entry in waiting {
                group.addTask {
                    await self.record(entry, outcomes: entry.recipients.map { _ in .transientFailure(error.reply) }, attempt: attempt,
                                      tried: true, classify: false)
                }
            }
        }
    }

    /// Counts the replies that traffic shaping rules watch, cluster-wide; a rule at its
    /// threshold puts its action in force on every node. A refusal before any message has no
    /// tenant, so it cannot count towards a tenant suspension.
    private func shape(_ site: SiteKey, tenant: String?, replies: [SMTPReply]) {
        guard let throttle, !shaping.isEmpty else { return }
        for (rule, matcher) in shaping {
            guard let reply = replies.first(where: matcher.matches) else { continue }
            if rule.action == .suspendTenant && tenant == nil { continue }
            Task { await throttle.shapingRuleMatched(rule, pool: site.pool, site: site.site.name, tenant: tenant ?? "", reply: "\(reply)") }
        }
    }

    /// No connection to `site` until the delay has passed; what waits in its ready queue goes
    /// back to the scheduled queues for then.
    private func suspend(_ site: SiteKey, for delay: Duration, rule: String, reply: SMTPReply) {
        let until = clock() + UInt64(delay.milliseconds)
        guard until > suspended[site]?.until ?? 0 else { return }
        suspended[site] = (until, rule)
        let returned = queues.returnToScheduled(from: site, dueAt: until)
        logger.notice("site suspended by a response rule", metadata: [
            "site": "\(site)", "rule": "\(rule)", "until": "\(until)", "reply": "\(reply)", "returned": "\(returned)",
        ])
    }

    static let firstBackoff: UInt64 = 1_000
    static let maximumBackoff: UInt64 = 30_000

    /// A session opened: the next hop is reachable again.
    private func reached(_ site: SiteKey) {
        backoff[site] = nil
    }

    /// The spool no longer has the message (deleted by an operator): nothing to deliver.
    private func vanished(_ entry: QueueEntry) {
        queues.land(entry.key)
        logger.notice("message no longer in the spool; dropped from the queues", metadata: ["id": "\(entry.id)"])
    }

    // MARK: - Outcomes

    /// A recipient's non-2xx outcome, as the response rules read it.
    struct Failure {
        var recipient: Mailbox
        var reply: SMTPReply
        var verdict: ResponseClassifier.Verdict
    }

    /// Records an attempt: events per recipient, the spool updated (recipients made final,
    /// attempts, next attempt), then the entry rescheduled or done. `tried` is false when the
    /// failure was local and the attempt does not count; `classify` is false when the reply
    /// is this node's own (a connection or DNS failure), which the response rules do not read.
    func record(_ entry: QueueEntry, outcomes: [ClientTransaction.Outcome], attempt: Attempt, tried: Bool, classify: Bool) async {
        outcomesBeingRecorded += 1
        defer { outcomesBeingRecorded -= 1 }
        let now = clock()
        let schedule = schedule(of: entry)
        var finals: [Mailbox] = []
        var bounced: [Failure] = []
        var deferred: [Failure] = []
        var published: [MessageEvent] = []
        for (recipient, outcome) in zip(entry.recipients, outcomes) {
            let reply: SMTPReply
            switch outcome {
            case .delivered(let delivered):
                finals.append(recipient)
                published.append(event(.delivery, entry, recipient, delivered, attempt, entry.attempts + 1, now))
                recipientCounters.delivered.increment()
                continue
            case .permanentFailure(let failed), .transientFailure(let failed):
                reply = failed
            }
            let verdict = classify
                ? settings.classifier.classify(reply)
                : ResponseClassifier.Verdict(action: reply.isPermanent ? .bounce : .retry, delay: nil, rule: nil)
            let failure = Failure(recipient: recipient, reply: reply, verdict: verdict)
            if verdict.isFinal { bounced.append(failure) } else { deferred.append(failure) }
        }
        if classify, let site = attempt.site {
            shape(site, tenant: entry.tenant, replies: (bounced + deferred).map(\.reply))
        }
        // A suspension is the destination asking us to back off, not a failed attempt.
        let suspendedOnly = !deferred.isEmpty && bounced.isEmpty && finals.isEmpty
            && deferred.allSatisfy { $0.verdict.action == .suspend }
        let attempts = entry.attempts + (tried && !suspendedOnly ? 1 : 0)
        for failure in bounced {
            finals.append(failure.recipient)
            published.append(event(.bounce, entry, failure.recipient, failure.reply, attempt, attempts, now, rule: failure.verdict.rule))
            recipientCounters.bounced.increment()
        }
        var expired: [Failure] = []
        var nextAttempt: UInt64 = 0
        if !deferred.isEmpty {
            for failure in deferred where failure.verdict.action == .suspend {
                if let site = attempt.site, let delay = failure.verdict.delay, let rule = failure.verdict.rule {
                    suspend(site, for: delay, rule: rule, reply: failure.reply)
                }
            }
            let notBefore = deferred.compactMap { $0.verdict.delay.map { now + UInt64($0.milliseconds) } }.max() ?? 0
            let planned = suspendedOnly ? notBefore : max(now + schedule.delay(afterAttempt: max(attempts, 1)), notBefore)
            switch schedule.decide(nextAttemptAt: planned, receivedAt: entry.receivedAt) {
            case .retry(let at):
                nextAttempt = at
                for failure in deferred {
                    var transient = event(.transientFailure, entry, failure.recipient, failure.reply, attempt, attempts, now,
                                          rule: failure.verdict.rule)
                    transient.nextAttemptAt = Int64(at)
                    published.append(transient)
                    recipientCounters.deferred.increment()
                }
            case .expire:
                for failure in deferred {
                    finals.append(failure.recipient)
                    published.append(event(.expiration, entry, failure.recipient, failure.reply, attempt, attempts, now,
                                           rule: failure.verdict.rule))
                    recipientCounters.expired.increment()
                }
                expired = deferred
                deferred = []
            }
        }
        var next = entry
        next.recipients = deferred.map(\.recipient)
        next.attempts = attempts
        next.dueAt = nextAttempt
        if let reply = (deferred.first ?? bounced.first ?? expired.first)?.reply {
            next.lastResponse = sharedText("\(reply)")
            next.lastResponseAt = now
        }
        noteOutcomes(entry, delivered: finals.count - bounced.count - expired.count, deferred: deferred.count, bounced: bounced.count,
                     expired: expired.count, now: now)
        // Notifications are spooled before the outcome: a crash in between makes the next
        // attempt produce the same notification id, which the spool keeps once.
        await notifySender(entry, failed: bounced + expired, delayed: deferred, attempt: attempt, now: now, events: &published)
        let encoded = events.encode(published)
        do {
            // The events go into the spool's outbox with the outcome: both durable, or neither.
            _ = try await spool.settle(entry.id, finalRecipients: finals, attempts: attempts, nextAttemptAt: nextAttempt,
                                       events: events.outboxEvents(encoded))
            events.logLocally(encoded)
            if !next.recipients.isEmpty, let faults, faults.takeReinsertFailure() {
                // Test-only: the re-insert "fails"; the failure branch every re-insert has.
                queues.moveToLimbo(entry.key, replacing: next, unrecordedFinals: [], error: "re-insert failed (injected fault)", now: now)
            } else {
                queues.land(entry.key)
                if !next.recipients.isEmpty { queues.schedule(next) }
            }
        } catch {
            // The outcome happened; only its record failed. The entry stays enumerable in
            // limbo with what it still needs, and the spool still lists every recipient, so a
            // restart or a limbo retry cannot lose it (at worst a recipient gets it twice).
            queues.moveToLimbo(entry.key, replacing: next, unrecordedFinals: finals, events: published, error: "\(error)", now: now)
            logger.error("could not record an outcome in the spool; entry kept in limbo",
                         metadata: ["id": "\(entry.id)", "error": "\(error)"])
        }
    }

    /// The entry's traffic class schedule (`bulk` for a class the configuration no longer has).
    private func schedule(of entry: QueueEntry) -> RetrySchedule {
        settings.schedules[entry.trafficClass] ?? settings.schedules["bulk"]!
    }

    /// Queues delivery status notifications for the sender: one about the recipients that
    /// failed for good, one (once per message and domain) about those still being retried
    /// after `delivery.delay_notice_after`. The events of those recipients name the DSN.
    func notifySender(_ entry: QueueEntry, failed: [Failure], delayed: [Failure], attempt: Attempt, now: UInt64,
                              events: inout [MessageEvent]) async {
        guard let builder = settings.notifications, entry.sender != nil else { return }
        let remoteMTA = attempt.peer == nil ? nil : attempt.host
        if !failed.isEmpty {
            let statuses = failed.map {
                RecipientStatus(recipient: $0.recipient, action: .failed, reply: $0.reply, remoteMTA: remoteMTA, lastAttemptDate: now)
            }
            let purpose = "failed " + failed.map(\.recipient.description).sorted().joined(separator: " ")
            if let id = await queueNotification(about: entry, statuses, purpose: purpose, builder: builder, now: now) {
                mark(&events, failed.map(\.recipient), dsn: id, types: [.bounce, .expiration, .adminBounce])
            }
        }
        // A 5xx a rule said to retry is not a delay in RFC 3464's sense (its status is 5.x.x).
        let stillTrying = delayed.filter(\.reply.isTransient)
        if let after = settings.delayNoticeAfter, !stillTrying.isEmpty, now >= entry.receivedAt + UInt64(after.milliseconds) {
            let until = entry.receivedAt + UInt64(schedule(of: entry).expiry.milliseconds)
            let statuses = stillTrying.map {
                RecipientStatus(recipient: $0.recipient, action: .delayed(willRetryUntil: until), reply: $0.reply,
                                remoteMTA: remoteMTA, lastAttemptDate: now)
            }
            if let id = await queueNotification(about: entry, statuses, purpose: "delayed \(entry.domain)", builder: builder, now: now) {
                mark(&events, stillTrying.map(\.recipient), dsn: id, types: [.transientFailure])
            }
        }
    }

    /// Builds a DSN and puts it in the spool and the queues like any message (from `<>`, in
    /// the high lane). Its id is derived from the original's and `purpose`, so the spool keeps
    /// one copy however often it is made; nil when none was queued now.
    private func queueNotification(about entry: QueueEntry, _ statuses: [RecipientStatus], purpose: String,
                                   builder: DSNBuilder, now: UInt64) async -> MessageID? {
        let id = MessageID.derived(from: entry.id, purpose: purpose)
        do {
            guard let content = try await spool.content(of: entry.id) else { return nil }
            let original = OriginalMessage(id: entry.id.text, envelopeSender: entry.sender, arrivalDate: entry.receivedAt, content: content)
            let dsn = try builder.build(about: original, recipients: statuses, messageIDLocalPart: id.text, now: now)
            let message = AcceptedMessage(id: id, tenant: entry.tenant, sender: nil, recipients: [dsn.recipient], receivedAt: now,
                                          client: "dsn", helo: settings.nodeID, pool: entry.pool, lane: .high,
                                          trafficClass: entry.trafficClass, smtputf8: dsn.needsSMTPUTF8,
                                          eightBit: dsn.needsEightBitMIME, content: dsn.content)
            // Its Reception is spooled with it, as a record's is.
            let reception = events.receptions(of: [(message, nil)], node: settings.nodeID)
            // Test-only (`fail-dsn-queueing`): spooling the DSN fails as on a full disk.
            if let faults, faults.takeNotificationFailure() { throw spool.injectedFailure("insert") }
            guard try await spool.insert([(message, nil)], receptions: events.outboxEvents(reception)).first == true else { return nil }
            events.logLocally(reception)
            for queued in entries(of: SpooledMessage(message, position: nil)) { queues.schedule(queued) }
            notificationCounter.increment()
            return id
        } catch let error as DSNError {
            logger.info("no DSN", metadata: ["id": "\(entry.id)", "reason": "\(error)"])
        } catch {
            // The outcome is still recorded; only the notification is missing, and says so.
            logger.error("could not queue a DSN", metadata: ["id": "\(entry.id)", "purpose": "\(purpose)", "error": "\(error)"])
            notificationFailures.increment()
            activity.recordDSNFailure(now: now)
        }
        return nil
    }

    private func mark(_ events: inout [MessageEvent], _ recipients: [Mailbox], dsn id: MessageID, types: Set<MessageEvent.Kind>) {
        let addresses = Set(recipients.map(\.description))
        for index in events.indices where types.contains(events[index].type) && addresses.contains(events[index].recipient ?? "") {
            events[index].dsn = id.text
        }
    }

    func event(_ type: MessageEvent.Kind, _ entry: QueueEntry, _ recipient: Mailbox, _ reply: SMTPReply,
                       _ attempt: Attempt, _ attempts: Int, _ now: UInt64, rule: String? = nil) -> MessageEvent {
        var event = MessageEvent(type: type, id: entry.id.text, tenant: entry.tenant, time: Int64(now), node: settings.nodeID,
                                 sender: entry.sender?.description ?? "", size: entry.size, job: entry.job)
        event.recipient = recipient.description
        event.queue = entry.queue.description
        event.site = attempt.site?.site.description
        event.attempt = attempts
        event.response = MessageEvent.Response(code: reply.code, enhanced: reply.enhancedCode?.description,
                                               text: reply.lines.joined(separator: " "))
        event.peer = attempt.peer
        event.pool = attempt.site?.pool ?? entry.pool
        event.source = settings.pools[event.pool ?? ""]?.sourceAddress
        event.rule = rule
        event.receivedAt = Int64(entry.receivedAt)
        event.tls = attempt.peer == nil ? nil : attempt.tls
        return event
    }
}
