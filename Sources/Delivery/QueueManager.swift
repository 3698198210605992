import Events
import Logging
import Metrics
import QueueRecord
import SMTPClient
import SMTPProtocol
import SmarthostConfig
import Spool

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
        }
    }

    /// What a delivery attempt's connection looked like, for the events.
    struct Attempt: Sendable {
        var site: SiteKey
        var peer: String?
        var tls: Bool
    }

    public let settings: Settings
    private var queues: DeliveryQueues
    private let spool: Spool
    private let events: EventPublisher
    private let resolver: any NextHopResolver
    private let clock: @Sendable () -> UInt64
    private let logger: Logger
    private var connections: [SiteKey: Int] = [:]
    /// Next hops whose connections failed: not tried again before `until`. Only the entries
    /// waiting when a connection failed get a TransientFailure; the rest wait, unattempted,
    /// in their scheduled queues (PowerMTA's backoff mode), so an unreachable destination
    /// does not cost an attempt per message per retry.
    private var backoff: [NextHop: (until: UInt64, interval: UInt64)] = [:]
    private var stopping = false

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

    public init(settings: Settings, spool: Spool, events: EventPublisher, resolver: any NextHopResolver,
                clock: @escaping @Sendable () -> UInt64 = { MessageID.currentMilliseconds() },
                logger: Logger = Logger(label: "smarthost.delivery")) {
        self.settings = settings
        queues = DeliveryQueues(readyQueueSize: settings.readyQueueSize)
        self.spool = spool
        self.events = events
        self.resolver = resolver
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
        queues.promote(now: now) { domain in
            let decision = resolver.route(domain: domain)
            if case .nextHop(let hop) = decision, let wait = backoff[hop], wait.until > now { return .wait }
            return decision
        }
        for (site, waiting) in queues.readySites {
            let open = connections[site, default: 0]
            // One connection per waiting message, up to the limit: a short queue does not open
            // connections it cannot use.
            let wanted = min(settings.maxConnectionsPerSite, waiting + open) - open
            for _ in 0..<max(wanted, 0) {
                connections[site, default: 0] += 1
                let client = clientSettings(for: site)
                Task { await self.runConnection(site: site, settings: client) }
            }
        }
        for (state, gauge) in depthGauges { gauge.record(queues.counts[state]) }
        connectionGauge.record(openConnections)
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

    private func take(_ site: SiteKey) -> QueueEntry? {
        stopping ? nil : queues.take(from: site)
    }

    private func connectionEnded(_ site: SiteKey) {
        connections[site, default: 1] -= 1
        if connections[site] == 0 { connections[site] = nil }
        pump()
    }

    /// One connection's life: open it, send what the site's ready queue holds (up to the
    /// per-connection limit), close it. A connection that cannot be opened fails every entry
    /// waiting for the site: they are retried on their schedule.
    private nonisolated func runConnection(site: SiteKey, settings client: SMTPClientSettings) async {
        var opened = false
        do {
            try await SMTPClientSession.withSession(host: site.site.host, port: site.site.port, settings: client) { session in
                opened = true
                await reached(site)
                var idle = 0
                while session.isUsable && session.messagesSent < settings.maxMessagesPerConnection {
                    guard let entry = await take(site) else {
                        // Keep the connection a moment for mail about to be promoted.
                        idle += 1
                        if idle > 5 { break }
                        try await Task.sleep(for: .milliseconds(50))
                        continue
                    }
                    idle = 0
                    let attempt = Attempt(site: site, peer: session.peer, tls: session.tlsActive)
                    let content: [UInt8]?
                    do {
                        content = try await spool.content(of: entry.id)
                    } catch {
                        let reply = SMTPReply(451, EnhancedStatusCode(4, 3, 0), "Local spool error: \(error)")
                        await record(entry, outcomes: entry.recipients.map { _ in .transientFailure(reply) }, attempt: attempt, tried: false)
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
                        // The connection goes on while the spool fsyncs the outcome (the entry
                        // stays in flight until then), so one connection's throughput is not one
                        // message per fsync; concurrent outcomes share a group commit.
                        Task { await self.record(entry, outcomes: outcomes, attempt: attempt, tried: true) }
                    } catch let error as SMTPClientError {
                        await record(entry, outcomes: entry.recipients.map { _ in .transientFailure(error.reply) }, attempt: attempt, tried: true)
                        throw error
                    }
                }
            }
        } catch let error as SMTPClientError where !opened || error.stage == .greeting || error.stage == .ehlo || error.stage == .starttls {
            await connectionFailed(site, error: error)
        } catch {
            logger.info("connection ended by an error", metadata: ["site": "\(site)", "error": "\(error)"])
        }
        await connectionEnded(site)
    }

    /// The site could not be reached or refused the session: every entry waiting for it gets
    /// the error as a transient failure.
    private func connectionFailed(_ site: SiteKey, error: SMTPClientError) async {
        let waiting = queues.takeAll(from: site)
        let interval = min((backoff[site.site]?.interval ?? 0) * 2, Self.maximumBackoff)
        backoff[site.site] = (until: clock() + max(interval, Self.firstBackoff), interval: max(interval, Self.firstBackoff))
        logger.notice("connection failed", metadata: [
            "site": "\(site)", "error": "\(error)", "deferred": "\(waiting.count)",
        ])
        let attempt = Attempt(site: site, peer: nil, tls: false)
        // Recorded concurrently, so that the spool writes them in a few group commits.
        await withTaskGroup(of: Void.self) { group in
            for entry in waiting {
                group.addTask {
                    await self.record(entry, outcomes: entry.recipients.map { _ in .transientFailure(error.reply) }, attempt: attempt, tried: true)
                }
            }
        }
    }

    static let firstBackoff: UInt64 = 1_000
    static let maximumBackoff: UInt64 = 30_000

    /// A session opened: the next hop is reachable again.
    private func reached(_ site: SiteKey) {
        backoff[site.site] = nil
    }

    /// The spool no longer has the message (deleted by an operator): nothing to deliver.
    private func vanished(_ entry: QueueEntry) {
        queues.land(entry.key)
        logger.notice("message no longer in the spool; dropped from the queues", metadata: ["id": "\(entry.id)"])
    }

    // MARK: - Outcomes

    /// Records an attempt: events per recipient, the spool updated (recipients made final,
    /// attempts, next attempt), then the entry rescheduled or done. `tried` is false when the
    /// failure was local and the attempt does not count.
    func record(_ entry: QueueEntry, outcomes: [ClientTransaction.Outcome], attempt: Attempt, tried: Bool) async {
        outcomesBeingRecorded += 1
        defer { outcomesBeingRecorded -= 1 }
        let now = clock()
        let attempts = entry.attempts + (tried ? 1 : 0)
        let schedule = settings.schedules[entry.trafficClass] ?? settings.schedules["bulk"]!
        var finals: [Mailbox] = []
        var deferred: [(Mailbox, SMTPReply)] = []
        var published: [MessageEvent] = []
        for (recipient, outcome) in zip(entry.recipients, outcomes) {
            switch outcome {
            case .delivered(let reply):
                finals.append(recipient)
                published.append(event(.delivery, entry, recipient, reply, attempt, attempts, now))
                recipientCounters.delivered.increment()
            case .permanentFailure(let reply):
                finals.append(recipient)
                published.append(event(.bounce, entry, recipient, reply, attempt, attempts, now))
                recipientCounters.bounced.increment()
            case .transientFailure(let reply):
                deferred.append((recipient, reply))
            }
        }
        var nextAttempt: UInt64 = 0
        if !deferred.isEmpty {
            switch schedule.decide(afterAttempt: max(attempts, 1), now: now, receivedAt: entry.receivedAt) {
            case .retry(let at):
                nextAttempt = at
                for (recipient, reply) in deferred {
                    var transient = event(.transientFailure, entry, recipient, reply, attempt, attempts, now)
                    transient.nextAttemptAt = Int64(at)
                    published.append(transient)
                    recipientCounters.deferred.increment()
                }
            case .expire:
                for (recipient, reply) in deferred {
                    finals.append(recipient)
                    published.append(event(.expiration, entry, recipient, reply, attempt, attempts, now))
                    recipientCounters.expired.increment()
                }
                deferred = []
            }
        }
        var next = entry
        next.recipients = deferred.map(\.0)
        next.attempts = attempts
        next.dueAt = nextAttempt
        do {
            _ = try await spool.settle(entry.id, finalRecipients: finals, attempts: attempts, nextAttemptAt: nextAttempt)
            queues.land(entry.key)
            if !next.recipients.isEmpty { queues.schedule(next) }
        } catch {
            // The outcome happened; only its record failed. The entry stays enumerable in
            // limbo with what it still needs, and the spool still lists every recipient, so a
            // restart or a limbo retry cannot lose it (at worst a recipient gets it twice).
            queues.moveToLimbo(entry.key, replacing: next, unrecordedFinals: finals, error: "\(error)", now: now)
            logger.error("could not record an outcome in the spool; entry kept in limbo",
                         metadata: ["id": "\(entry.id)", "error": "\(error)"])
        }
        events.publish(published)
    }

    private func event(_ type: MessageEvent.Kind, _ entry: QueueEntry, _ recipient: Mailbox, _ reply: SMTPReply,
                       _ attempt: Attempt, _ attempts: Int, _ now: UInt64) -> MessageEvent {
        var event = MessageEvent(type: type, id: entry.id.text, tenant: entry.tenant, time: Int64(now), node: settings.nodeID,
                                 sender: entry.sender?.description ?? "", size: entry.size, job: entry.job)
        event.recipient = recipient.description
        event.queue = entry.queue.description
        event.site = attempt.site.site.description
        event.attempt = attempts
        event.response = MessageEvent.Response(code: reply.code, enhanced: reply.enhancedCode?.description,
                                               text: reply.lines.joined(separator: " "))
        event.peer = attempt.peer
        event.pool = attempt.site.pool
        event.source = settings.pools[attempt.site.pool]?.sourceAddress
        event.receivedAt = Int64(entry.receivedAt)
        event.tls = attempt.peer == nil ? nil : attempt.tls
        return event
    }
}
