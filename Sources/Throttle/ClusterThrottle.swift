import Foundation
import Logging
import Metrics
import Redis
import ServiceLifecycle
import SmarthostConfig
import Synchronization

/// A connection's permission to exist: one lease in each of its limits' sets (or, while
/// Redis is down, a local count).
public struct ConnectionLease: Sendable, Hashable {
    public let id: String
    let keys: [LeaseKey]
    /// The throttle's generation when taken; a lease from an older one ends with its message.
    let generation: Int
    /// Taken while Redis was down: counted only by this node until Redis holds it again.
    var local: Bool
}

/// A delivery node's side of the cluster-wide limits (docs/throttling.md): message quotas and
/// connection leases in Redis, taken in batches; the node's heartbeat; the adjustments that
/// traffic shaping rules and operators put in force. While Redis cannot be reached it goes
/// on under local limits (each cluster limit divided by the live delivery nodes last seen),
/// and returns to the shared ones by itself when Redis answers again.
public actor ClusterThrottle: Service {
    public struct Settings: Sendable {
        public var leaseTTL: Duration = .seconds(15)
        public var renewEvery: Duration = .seconds(5)
        /// Also how often the adjustments version is checked: what an operator or a rule sets
        /// reaches every node within this plus one round trip.
        public var heartbeatEvery: Duration = .milliseconds(500)
        public var heartbeatTTL: Duration = .seconds(3)
        /// Tokens fetched in a batch and not used within this are dropped.
        public var tokenLifetime: Duration = .seconds(1)
        public var maximumBatch = 64

        public init() {}
    }

    /// What the queue manager reads synchronously (inside its own actor, without a hop).
    private struct Published: Sendable {
        var planner: LimitPlanner
        var adjustments: [ActiveAdjustment] = []
        /// Server clock minus this node's clock, ms, from the last heartbeat.
        var clockOffset: Int64 = 0
        var generation = 0
        var lost: Set<String> = []
        var liveDeliveryNodes = 1
        var redisUp = true
    }

    private struct Tokens {
        var count: Int
        var fetchedAt: ContinuousClock.Instant
    }

    public let settings: Settings
    private let announcement: NodeAnnouncement
    private let registry: NodeRegistry
    private let quotas: SharedQuotas
    private let leases: SharedLeases
    public nonisolated let adjustments: SharedAdjustments
    private let logger: Logger
    private nonisolated let published: Mutex<Published>

    private var tokens: [String: Tokens] = [:]
    private var fetching: [String: Task<QuotaGrant?, Never>] = [:]
    private var local = LocalQuotas()
    /// Per set of quotas (as `admit` names it), when Redis last said the next unit would be
    /// free: kept through an outage, so a daily quota used up in Redis is not granted again
    /// by the local limits (which cannot know what the cluster used).
    private var refusedUntil: [String: ContinuousClock.Instant] = [:]
    private var held: [String: ConnectionLease] = [:]
    private var leaseSequence = 0
    private var adjustmentsVersion: Int64 = -1
    private var lastRenewal = ContinuousClock.now
    /// After Redis comes back, no new lease before this: every live node has then heartbeated
    /// (so the node count is right again) and put the leases it kept through the outage back
    /// into Redis, so that those count before any new one is granted.
    private var newLeasesFrom = ContinuousClock.now

    private let redisUpGauge = Gauge(label: "smarthost_throttle_redis_up")
    private let nodesGauge = Gauge(label: "smarthost_cluster_delivery_nodes")
    private let adjustmentsGauge = Gauge(label: "smarthost_throttle_adjustments")
    private let unreadableGauge = Gauge(label: "smarthost_throttle_adjustments_unreadable")
    private let unreadableNodesGauge = Gauge(label: "smarthost_cluster_registry_unreadable")
    /// Registry entries the last heartbeat could not read (logged when they change).
    private var unreadableNodes: [UnreadableEntry] = []
    private let localDecisions = Counter(label: "smarthost_throttle_local_decisions_total")
    private let redisErrors = Counter(label: "smarthost_throttle_redis_errors_total")

    public init(redis: RedisClient, keyPrefix: String, announcement: NodeAnnouncement, limits: [SmarthostConfiguration.Limit],
                settings: Settings = Settings(), logger: Logger = Logger(label: "smarthost.throttle")) {
        self.settings = settings
        self.announcement = announcement
        registry = NodeRegistry(redis: redis, keyPrefix: keyPrefix)
        quotas = SharedQuotas(redis: redis, keyPrefix: keyPrefix)
        leases = SharedLeases(redis: redis, keyPrefix: keyPrefix)
        adjustments = SharedAdjustments(redis: redis, keyPrefix: keyPrefix)
        self.logger = logger
        published = Mutex(Published(planner: LimitPlanner(limits: limits)))
        redisUpGauge.record(1)
    }

    // MARK: - Read synchronously by the queue manager

    /// The leases and per-connection message limit of a connection to this traffic: the
    /// configured limits, then the `max_connections` adjustments in force.
    public nonisolated func connectionPlan(_ traffic: ConnectionTraffic) -> ConnectionPlan {
        published.withLock { state in
            var plan = state.planner.plan(for: traffic)
            for active in live(state) where active.adjustment.action == .maxConnections
                && Self.matches(active.adjustment.scope, pool: traffic.pool, site: traffic.site, domains: traffic.domains, tenant: nil) {
                plan.leases.append(LeaseKey(name: "adjusted-conn:\(active.adjustment.scope)", limit: active.adjustment.maxConnections!))
            }
            return plan
        }
    }

    /// When a `suspend` adjustment covering this traffic ends (this node's clock, ms), or nil.
    /// A selector of the adjustment that the traffic does not give (a domain, when asking
    /// about a whole site) does not match.
    public nonisolated func suspendedUntil(pool: String, site: String, domain: String? = nil, tenant: String? = nil) -> UInt64? {
        suspension(pool: pool, site: site, domain: domain, tenant: tenant)?.until
    }

    /// The `suspend` adjustment covering this traffic that lasts longest: until when (this
    /// node's clock, ms) and who set it (an operator's pause, or a shaping rule), or nil.
    public nonisolated func suspension(pool: String, site: String, domain: String? = nil, tenant: String? = nil)
        -> (until: UInt64, setBy: String)? {
        published.withLock { state in
            live(state).filter {
                $0.adjustment.action == .suspend
                    && Self.matches($0.adjustment.scope, pool: pool, site: site, domains: domain.map { [$0] } ?? [], tenant: tenant)
            }.max { $0.expiresAt < $1.expiresAt }.map { (UInt64(max(0, $0.expiresAt - state.clockOffset)), $0.adjustment.setBy) }
        }
    }

    /// Changes whenever the adjustments or the limits change: connections then end after
    /// their message and new ones take leases under the new plan.
    public nonisolated var generation: Int { published.withLock { $0.generation } }

    /// False once the lease's limits changed or Redis no longer holds it.
    public nonisolated func isCurrent(_ lease: ConnectionLease) -> Bool {
        published.withLock { $0.generation == lease.generation && !$0.lost.contains(lease.id) }
    }

    public nonisolated var isRedisUp: Bool { published.withLock { $0.redisUp } }
    public nonisolated var liveDeliveryNodes: Int { published.withLock { $0.liveDeliveryNodes } }
    public nonisolated var activeAdjustments: [ActiveAdjustment] { published.withLock { live($0) } }

    private nonisolated func live(_ state: Published) -> [ActiveAdjustment] {
        let now = Self.milliseconds() + state.clockOffset
        return state.adjustments.filter { $0.expiresAt > now }
    }

    static func matches(_ scope: Adjustment.Scope, pool: String, site: String, domains: Set<String>, tenant: String?) -> Bool {
        if let wanted = scope.pool, wanted != pool { return false }
        if let wanted = scope.site, wanted != site { return false }
        if let wanted = scope.domain, !domains.contains(wanted) { return false }
        if let wanted = scope.tenant, wanted != tenant { return false }
        return !scope.isEmpty
    }

    // MARK: - Configuration

    /// New limits (a configuration reload): connections re-plan after their message.
    public func reload(limits: [SmarthostConfiguration.Limit]) {
        published.withLock {
            $0.planner = LimitPlanner(limits: limits)
            $0.generation += 1
        }
        tokens.removeAll()
        refusedUntil.removeAll()
    }

    // MARK: - Messages

    /// Takes one message's unit from every quota that applies to it: nil when it may go now,
    /// otherwise how long until it may.
    public func admit(_ traffic: MessageTraffic) async -> Duration? {
        let (keys, nodes, up) = published.withLock { state in
            var keys = state.planner.quotas(for: traffic)
            for active in live(state) where active.adjustment.action == .messageRate
                && Self.matches(active.adjustment.scope, pool: traffic.pool, site: traffic.site, domains: [traffic.domain], tenant: traffic.tenant) {
                let rate = Rate(count: active.adjustment.rateCount!, per: .seconds(active.adjustment.ratePeriodSeconds!))
                keys.append(QuotaKey(name: "adjusted-rate:\(active.adjustment.scope)",
                                     quota: .rate(GCRARate(count: rate.count, per: rate.per, burst: LimitPlanner.defaultBurst(rate)))))
            }
            return (keys, state.liveDeliveryNodes, state.redisUp)
        }
        if keys.isEmpty { return nil }
        let plan = keys.map(\.name).joined(separator: "|")
        guard up else { return takeLocally(keys, plan: plan, nodes: nodes) }
        for _ in 0..<3 {
            if var held = tokens[plan], held.count > 0, ContinuousClock.now - held.fetchedAt < settings.tokenLifetime {
                held.count -= 1
                tokens[plan] = held
                return nil
            }
            if let task = fetching[plan] {
                _ = await task.value
                continue
            }
            let batch = batchSize(keys, nodes: nodes)
            let shared = keys.map { Self.sharedQuota($0, nodes: nodes, batch: batch) }
            let task = Task { [quotas] () -> QuotaGrant? in try? await quotas.take(shared, units: batch) }
            fetching[plan] = task
            let grant = await task.value
            fetching[plan] = nil
            guard let grant else {
                markDown("a quota could not be taken")
                return takeLocally(keys, plan: plan, nodes: nodes)
            }
            guard grant.granted > 0 else {
                refusedUntil[plan] = .now + grant.retryAfter
                return grant.retryAfter
            }
            refusedUntil[plan] = nil
            tokens[plan] = Tokens(count: grant.granted - 1, fetchedAt: .now)
            return nil
        }
        return .milliseconds(10)
    }

    /// Units fetched per round trip: at most half the burst shared among the live nodes, so
    /// that the tokens every node holds stay within the burst (see `sharedQuota`).
    private func batchSize(_ keys: [QuotaKey], nodes: Int) -> Int {
        var batch = settings.maximumBatch
        for key in keys {
            switch key.quota {
            case .rate(let rate): batch = min(batch, max(1, rate.burst / (2 * nodes)))
            case .perWindow(let count, _): batch = min(batch, max(1, count / (100 * nodes)))
            }
        }
        return batch
    }

    /// A rate's burst in Redis is what is configured minus the tokens all nodes may hold
    /// unused (one batch each): what reaches the destination in any window stays within
    /// rate × window + the configured burst.
    private static func sharedQuota(_ key: QuotaKey, nodes: Int, batch: Int) -> QuotaKey {
        guard case .rate(var rate) = key.quota else { return key }
        rate.burst = max(1, rate.burst - nodes * batch)
        return QuotaKey(name: key.name, quota: .rate(rate))
    }

    private func takeLocally(_ keys: [QuotaKey], plan: String, nodes: Int) -> Duration? {
        localDecisions.increment()
        if let until = refusedUntil[plan] {
            if until > .now { return until - .now }
            refusedUntil[plan] = nil
        }
        return local.take(keys, nodes: nodes, now: Self.milliseconds() * 1_000)
    }

    // MARK: - Connections

    /// Up to `count` leases for connections carrying `traffic` (fewer, or none, when its limits
    /// are reached). Traffic without connection limits gets them all at no cost.
    public func acquire(_ traffic: ConnectionTraffic, count: Int) async -> [ConnectionLease] {
        let plan = connectionPlan(traffic)
        let (generation, nodes, up) = published.withLock { ($0.generation, $0.liveDeliveryNodes, $0.redisUp) }
        let ids = (0..<max(0, count)).map { _ in nextLeaseID() }
        if plan.leases.isEmpty || ids.isEmpty {
            return ids.map { ConnectionLease(id: $0, keys: [], generation: generation, local: false) }
        }
        if plan.leases.contains(where: { $0.limit == 0 }) { return [] }
        if up {
            if ContinuousClock.now < newLeasesFrom { return [] }
            // A node takes at most its share of each limit, so that a node whose connections
            // are long-lived cannot keep the others' mail waiting.
            let share = plan.leases.map { key in
                (key.limit + nodes - 1) / nodes - heldCount(key)
            }.min() ?? 0
            let ids = Array(ids.prefix(max(0, share)))
            if ids.isEmpty { return [] }
            do {
                let taken = try await leases.acquire(plan.leases, ids: ids, ttl: settings.leaseTTL)
                let granted = taken.map { ConnectionLease(id: $0, keys: plan.leases, generation: generation, local: false) }
                for lease in granted { held[lease.id] = lease }
                return granted
            } catch {
                markDown("a connection lease could not be taken: \(error)")
            }
        }
        localDecisions.increment()
        let room = plan.leases.map { key in
            max(1, key.limit / nodes) - heldCount(key)
        }.min() ?? 0
        let granted = ids.prefix(max(0, room)).map { ConnectionLease(id: $0, keys: plan.leases, generation: generation, local: true) }
        for lease in granted { held[lease.id] = lease }
        return granted
    }

    private func heldCount(_ key: LeaseKey) -> Int {
        held.values.filter { $0.keys.contains { $0.name == key.name } }.count
    }

    /// The connection closed: its lease goes back at once (or expires by itself if Redis is down).
    public func release(_ lease: ConnectionLease) async {
        guard held.removeValue(forKey: lease.id) != nil else { return }
        published.withLock { _ = $0.lost.remove(lease.id) }
        guard !lease.local, published.withLock({ $0.redisUp }) else { return }
        do {
            try await leases.release([(lease.keys, lease.id)])
        } catch {
            redisErrors.increment()
        }
    }

    private func nextLeaseID() -> String {
        leaseSequence += 1
        return "\(announcement.id):\(announcement.startedAt):\(leaseSequence)"
    }

    // MARK: - Traffic shaping

    /// A reply matched `rule`: counted cluster-wide, and at its threshold the rule's action is
    /// put in force for every node. Returns true when this call put it in force.
    @discardableResult
    public func shapingRuleMatched(_ rule: SmarthostConfiguration.ShapingRule, pool: String, site: String, tenant: String,
                                   reply: String) async -> Bool {
        let adjustment = Self.adjustment(for: rule, pool: pool, site: site, tenant: tenant, reply: reply)
        do {
            let (_, set) = try await adjustments.hit(counter: "\(rule.name):\(adjustment.scope)", window: rule.window,
                                                     threshold: rule.threshold, adjustment: adjustment, for: rule.duration)
            if set {
                logger.notice("traffic shaping rule in force", metadata: [
                    "rule": "\(rule.name)", "scope": "\(adjustment.scope)", "action": "\(adjustment.action.rawValue)",
                    "duration": "\(rule.duration)", "reply": "\(reply)",
                ])
                await refreshAdjustments()
            }
            return set
        } catch {
            redisErrors.increment()
            logger.warning("a traffic shaping rule could not be counted in Redis", metadata: ["rule": "\(rule.name)", "error": "\(error)"])
            return false
        }
    }

    static func adjustment(for rule: SmarthostConfiguration.ShapingRule, pool: String, site: String, tenant: String,
                           reply: String) -> Adjustment {
        let siteScope = Adjustment.Scope(pool: pool, site: site)
        let reason = "\(reply.prefix(200))"
        let setBy = "rule:\(rule.name)"
        switch rule.action {
        case .messageRate:
            let rate = rule.messageRate!
            return Adjustment(action: .messageRate, scope: siteScope, rateCount: rate.count,
                              ratePeriodSeconds: max(1, Int(rate.per / .seconds(1))), reason: reason, setBy: setBy)
        case .maxConnections:
            return Adjustment(action: .maxConnections, scope: siteScope, maxConnections: rule.maxConnections, reason: reason, setBy: setBy)
        case .suspend:
            return Adjustment(action: .suspend, scope: siteScope, reason: reason, setBy: setBy)
        case .suspendTenant:
            return Adjustment(action: .suspend, scope: Adjustment.Scope(tenant: tenant), reason: reason, setBy: setBy)
        }
    }

    // MARK: - Heartbeat

    /// Heartbeats, checks the adjustments and renews leases until a graceful shutdown (or
    /// cancellation), then leaves the registry.
    public func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.tick()
                try? await Task.sleep(for: self.settings.heartbeatEvery)
            }
        }
        try? await registry.leave(announcement.id)
    }

    /// One heartbeat: also the probe that notices Redis is back.
    func tick() async {
        let heartbeat: Heartbeat
        do {
            heartbeat = try await registry.heartbeat(announcement, ttl: settings.heartbeatTTL)
        } catch {
            markDown("the heartbeat failed: \(error)")
            return
        }
        let deliveryNodes = max(1, heartbeat.nodes.filter { $0.announcement.role == "delivery" }.count)
        if heartbeat.unreadable != unreadableNodes {
            unreadableNodes = heartbeat.unreadable
            unreadableNodesGauge.record(unreadableNodes.count)
            if !unreadableNodes.isEmpty {
                logger.error("node registry entries that do not decode are not counted as nodes", metadata: ["unreadable": "\(unreadableNodes)"])
            }
        }
        let wasUp = published.withLock { state in
            defer {
                state.redisUp = true
                state.liveDeliveryNodes = deliveryNodes
                state.clockOffset = heartbeat.serverTime - Self.milliseconds()
            }
            return state.redisUp
        }
        nodesGauge.record(deliveryNodes)
        if !wasUp {
            redisUpGauge.record(1)
            local.reset()
            refusedUntil.removeAll()
            newLeasesFrom = .now + settings.heartbeatTTL
            // Redis may have restarted empty: every lease this node holds goes back in now.
            await renewLeases()
            logger.notice("Redis is back: shared limits in force again", metadata: ["delivery_nodes": "\(deliveryNodes)"])
        }
        if heartbeat.adjustmentsVersion != adjustmentsVersion { await refreshAdjustments() }
        if ContinuousClock.now - lastRenewal >= settings.renewEvery { await renewLeases() }
    }

    private func refreshAdjustments() async {
        do {
            let list = try await adjustments.list()
            adjustmentsVersion = list.version
            unreadableGauge.record(list.unreadable.count)
            if !list.unreadable.isEmpty {
                logger.error("adjustments in Redis that cannot apply are ignored; remove them with smarthostctl throttle remove ID",
                             metadata: ["unreadable": "\(list.unreadable)"])
            }
            published.withLock { state in
                let connectionActions: Set<Adjustment.Action> = [.maxConnections, .suspend]
                let before = state.adjustments.filter { connectionActions.contains($0.adjustment.action) }.map(\.adjustment.id)
                let after = list.active.filter { connectionActions.contains($0.adjustment.action) }.map(\.adjustment.id)
                if before != after { state.generation += 1 }
                state.adjustments = list.active
                state.clockOffset = list.serverTime - Self.milliseconds()
            }
            adjustmentsGauge.record(list.active.count)
            tokens.removeAll()
        } catch {
            markDown("the adjustments could not be read: \(error)")
        }
    }

    /// Keeps every lease of a live connection in Redis (taking again, where there is room,
    /// those Redis lost or those taken locally while it was down); a connection whose lease
    /// cannot be kept ends after its message.
    private func renewLeases() async {
        lastRenewal = .now
        let lost = published.withLock { $0.lost }
        let kept = held.values.filter { !$0.keys.isEmpty && !lost.contains($0.id) }
        guard !kept.isEmpty else { return }
        do {
            let dropped = try await leases.renew(kept.map { ($0.keys, $0.id) }, ttl: settings.leaseTTL)
            for lease in kept where !dropped.contains(lease.id) { held[lease.id]?.local = false }
            if !dropped.isEmpty {
                published.withLock { $0.lost.formUnion(dropped) }
                logger.warning("connection leases lost; their connections end after their message", metadata: ["leases": "\(dropped.count)"])
            }
        } catch {
            markDown("leases could not be renewed: \(error)")
        }
    }

    private func markDown(_ reason: String) {
        redisErrors.increment()
        let wasUp = published.withLock { state in
            defer { state.redisUp = false }
            return state.redisUp
        }
        guard wasUp else { return }
        redisUpGauge.record(0)
        tokens.removeAll()
        let nodes = published.withLock { $0.liveDeliveryNodes }
        logger.warning("Redis unreachable: delivery goes on under local limits (each cluster limit divided by the live delivery nodes last seen)",
                       metadata: ["reason": "\(reason)", "delivery_nodes": "\(nodes)"])
    }

    static func milliseconds() -> Int64 {
        Int64(Date().timeIntervalSince1970 * 1_000)
    }
}
