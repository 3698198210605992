import Redis
import SmarthostConfig
import Testing
import TestSupport
@testable import Throttle

/// Traffic shaping rules as delivery nodes (ClusterThrottle) apply them through a real
/// redis-server, stepped by hand (`tick()` is a heartbeat): a rule's matches are counted
/// cluster-wide, its action is put in force once at its threshold, every node applies it at
/// its next heartbeat, and it ends by itself.
@Suite(.timeLimit(.minutes(1)))
struct TrafficShapingTests {
    static let site = "mx1.inbox.test,mx2.inbox.test"
    static let reply = "421 4.7.28 Our system has detected an unusual rate of unsolicited mail"

    /// A node whose registry entry outlives the test (a minute), so that which nodes are live
    /// follows the ticks, not how long a loaded machine takes between them.
    static func node(_ name: String, redis: RedisClient) -> ClusterThrottle {
        let announcement = NodeAnnouncement(id: name, role: "delivery", admin: "127.0.0.1:0", startedAt: 1, version: "test")
        var settings = ClusterThrottle.Settings()
        settings.heartbeatTTL = .seconds(60)
        return ClusterThrottle(redis: redis, keyPrefix: "t:", announcement: announcement, limits: [], settings: settings)
    }

    static func rule(_ name: String, action: SmarthostConfiguration.ShapingRule.Action, threshold: Int = 1,
                     messageRate: Rate? = nil, maxConnections: Int? = nil, duration: Duration) -> SmarthostConfiguration.ShapingRule {
        SmarthostConfiguration.ShapingRule(name: name, pattern: .init(enhanced: .init("4.7.28")), threshold: threshold,
                                           window: .seconds(3_600), action: action, messageRate: messageRate,
                                           maxConnections: maxConnections, duration: duration)
    }

    /// Two nodes in one Redis: `first` and `second`, heartbeated once so each knows the other.
    static func twoNodes(_ server: RedisServer) async -> (ClusterThrottle, ClusterThrottle, [RedisClient]) {
        let clients = (0..<2).map { _ in RedisClient(configuration: .init(port: server.port)) }
        let nodes = (Self.node("first", redis: clients[0]), Self.node("second", redis: clients[1]))
        await nodes.0.tick()
        await nodes.1.tick()
        return (nodes.0, nodes.1, clients)
    }

    /// "Suspend the tenant after 3 matching replies within the hour": matches seen by either
    /// node count together; the third puts it in force for every node and every destination
    /// of that tenant, a fourth while it holds does not extend it, and it ends by itself.
    @Test func aThresholdCountsMatchesFromEveryNodeAndSuspendsTheTenantEverywhere() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let (first, second, clients) = await Self.twoNodes(server)
        let rule = Self.rule("tenant-complaints", action: .suspendTenant, threshold: 3, duration: .seconds(2))

        #expect(await !first.shapingRuleMatched(rule, pool: "shared", site: Self.site, tenant: "acme", reply: Self.reply))
        #expect(await !second.shapingRuleMatched(rule, pool: "shared", site: Self.site, tenant: "acme", reply: Self.reply))
        #expect(second.suspension(pool: "shared", site: Self.site, tenant: "acme") == nil, "below the threshold nothing holds")
        #expect(await first.shapingRuleMatched(rule, pool: "other", site: "mx.elsewhere.test", tenant: "acme", reply: Self.reply),
                "the third match, from another pool and site, reaches the threshold of the tenant's counter")

        await second.tick()
        let held = try #require(second.suspension(pool: "dedicated", site: "any.site.test", domain: "any.test", tenant: "acme"),
                                "the other node applies it at its next heartbeat, to any pool and site")
        #expect(held.setBy == "rule:tenant-complaints")
        #expect(second.suspension(pool: "shared", site: Self.site, tenant: "globex") == nil, "other tenants go on")
        #expect(first.suspension(pool: "shared", site: Self.site, tenant: "acme") != nil, "the node that set it applies it at once")
        let active = first.activeAdjustments
        #expect(active.count == 1 && active.first?.adjustment.reason.hasPrefix("421 4.7.28") == true, "\(active)")

        #expect(await !second.shapingRuleMatched(rule, pool: "shared", site: Self.site, tenant: "acme", reply: Self.reply),
                "a match while it holds does not set it again")
        try await Task.sleep(for: .seconds(2.2))
        #expect(first.suspension(pool: "shared", site: Self.site, tenant: "acme") == nil
                    && second.suspension(pool: "shared", site: Self.site, tenant: "acme") == nil, "it ends by itself")
        await first.tick()
        #expect(first.activeAdjustments.isEmpty)
        for client in clients { await client.close() }
    }

    /// A `message_rate` rule lowers the pool → site's rate for every node: the nodes share one
    /// key in Redis, so the burst (1) is the cluster's; other sites and pools keep their pace.
    @Test func aLoweredRateIsOneRateForTheWholeCluster() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let (first, second, clients) = await Self.twoNodes(server)
        let rule = Self.rule("slow-down", action: .messageRate, messageRate: Rate(count: 1, per: .seconds(60)), duration: .seconds(30))
        let traffic = MessageTraffic(pool: "shared", site: Self.site, siteHosts: ["mx1.inbox.test", "mx2.inbox.test"],
                                     domain: "inbox.test", tenant: "acme")
        #expect(await first.admit(traffic) == nil, "no limit before the rule")

        #expect(await first.shapingRuleMatched(rule, pool: "shared", site: Self.site, tenant: "acme", reply: Self.reply))
        await second.tick()
        let firstTake = await first.admit(traffic)
        let secondTake = await second.admit(traffic)
        #expect(firstTake == nil, "the burst of one")
        let wait = try #require(secondTake, "the second node finds the cluster's one unit taken")
        #expect(wait > .seconds(50) && wait <= .seconds(60), "the next unit in about a minute: \(wait)")

        var otherPool = traffic
        otherPool.pool = "dedicated"
        #expect(await second.admit(otherPool) == nil, "another pool to the same site is not slowed")
        for client in clients { await client.close() }
    }

    /// An adjustment no node can apply (an unknown action, as a newer version or a hand-written
    /// HSET would leave) and a registry entry that does not decode are reported and ignored: the
    /// node stays on Redis, applies the other adjustments and counts the other nodes. Before,
    /// it took either for a Redis failure and went to local limits at every heartbeat.
    @Test func unreadableEntriesAreIgnoredAndTheRestApply() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let (first, second, clients) = await Self.twoNodes(server)
        let pause = Self.rule("stop", action: .suspend, duration: .seconds(30))
        #expect(await first.shapingRuleMatched(pause, pool: "shared", site: Self.site, tenant: "acme", reply: Self.reply))
        let now = try await clients[0].send(["TIME"])
        guard case .array(let time) = now, let seconds = Int64(try time[0].string()) else { throw RedisError.unexpectedReply(expected: "TIME", got: "\(now)") }
        for command: [RedisArgument] in [["HSET", "t:adjustments", "odd", #"{"action":"slow_down","scope":{"domain":"inbox.test"}}"#],
                                         ["ZADD", "t:adjustments:expiry", "\(seconds * 1_000 + 60_000)", "odd"],
                                         ["INCR", "t:adjustments:version"],
                                         ["ZADD", "t:nodes", "\(seconds * 1_000 + 60_000)", "newer"],
                                         ["HSET", "t:nodes:info", "newer", #"{"id":"newer","roles":["delivery"]}"#]] {
            _ = try await clients[0].send(command)
        }
        await second.tick()
        #expect(second.isRedisUp, "an unreadable entry is not an outage")
        #expect(second.liveDeliveryNodes == 2, "the entry that does not decode is not counted")
        #expect(second.suspension(pool: "shared", site: Self.site)?.setBy == "rule:stop", "the readable adjustment applies")
        let list = try await SharedAdjustments(redis: clients[0], keyPrefix: "t:").list()
        #expect(list.active.map(\.adjustment.setBy) == ["rule:stop"])
        #expect(list.unreadable.map(\.id) == ["odd"] && list.unreadable.first?.problem.hasPrefix("not an adjustment") == true,
                "\(list.unreadable)")
        for client in clients { await client.close() }
    }

    /// `max_connections` and `suspend` rules act on the pool → site where the reply came from.
    @Test func connectionRulesActOnThePoolAndSiteThatAnswered() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let (first, second, clients) = await Self.twoNodes(server)
        let traffic = ConnectionTraffic(pool: "shared", site: Self.site, siteHosts: ["mx1.inbox.test", "mx2.inbox.test"], domains: ["inbox.test"])
        let generation = second.generation

        let fewer = Self.rule("fewer-connections", action: .maxConnections, maxConnections: 2, duration: .seconds(30))
        #expect(await first.shapingRuleMatched(fewer, pool: "shared", site: Self.site, tenant: "acme", reply: Self.reply))
        await second.tick()
        #expect(second.connectionPlan(traffic).leases.map(\.limit) == [2])
        #expect(second.generation > generation, "open connections re-plan after their message")
        var otherPool = traffic
        otherPool.pool = "dedicated"
        #expect(second.connectionPlan(otherPool).leases.isEmpty)
        #expect(await second.acquire(traffic, count: 5).count == 1, "each of the two nodes takes its share of 2")
        #expect(await first.acquire(traffic, count: 5).count == 1)

        let pause = Self.rule("stop", action: .suspend, duration: .seconds(30))
        #expect(await second.shapingRuleMatched(pause, pool: "shared", site: Self.site, tenant: "acme", reply: Self.reply))
        await first.tick()
        #expect(first.suspension(pool: "shared", site: Self.site)?.setBy == "rule:stop")
        #expect(first.suspension(pool: "dedicated", site: Self.site) == nil)
        #expect(first.suspension(pool: "shared", site: "mx.other.test") == nil)
        for client in clients { await client.close() }
    }
}
