import Redis
import SmarthostConfig
import Testing
import TestSupport
@testable import Throttle

/// Connection leases held by delivery nodes (ClusterThrottle) against a real redis-server,
/// stepped by hand (`tick()`), so each assertion is about a state, not a timing.
@Suite(.timeLimit(.minutes(1)))
struct ConnectionLeaseTests {
    static let traffic = ConnectionTraffic(pool: "default", site: "mx.inbox.test", siteHosts: ["mx.inbox.test"], domains: ["inbox.test"])
    static let key = LeaseKey(name: "conn:domain=inbox.test", limit: 3)

    static func node(_ name: String, redis: RedisClient, settle: Duration = .seconds(1)) -> ClusterThrottle {
        var settings = ClusterThrottle.Settings()
        settings.heartbeatTTL = settle
        let announcement = NodeAnnouncement(id: name, role: "delivery", admin: "127.0.0.1:0", startedAt: 1, version: "test")
        let limits = [SmarthostConfiguration.Limit(scope: .init(domain: "inbox.test"), maxConnections: 3)]
        return ClusterThrottle(redis: redis, keyPrefix: "t:", announcement: announcement, limits: limits, settings: settings)
    }

    /// Redis restarts empty while connections live: each node puts its leases back on its
    /// first heartbeat, grants no new lease until every node has had time to do the same, and
    /// the cluster never holds more leases than the limit; a lease that no longer fits is lost
    /// (its connection ends after its message).
    @Test func leasesKeptThroughARedisRestartCountBeforeAnyNewOne() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let clients = (0..<3).map { _ in RedisClient(configuration: .init(port: server.port)) }
        let first = Self.node("first", redis: clients[0])
        let second = Self.node("second", redis: clients[1])
        let leases = SharedLeases(redis: clients[2], keyPrefix: "t:")
        let plan = first.connectionPlan(Self.traffic)
        #expect(plan.leases.map(\.limit) == [3], "\(plan)")
        let key = try #require(plan.leases.first)

        await first.tick()
        await second.tick()
        await first.tick()
        #expect(first.liveDeliveryNodes == 2 && second.liveDeliveryNodes == 2)
        let firstHeld = await first.acquire(Self.traffic, count: 3)
        #expect(firstHeld.count == 2, "a node takes at most ⌈3/2⌉")
        let secondHeld = await second.acquire(Self.traffic, count: 3)
        try #require(secondHeld.count == 1, "the cluster limit leaves one")
        #expect(try await leases.count(key) == 3)

        server.crash()
        await first.tick()
        await second.tick()
        #expect(!first.isRedisUp && !second.isRedisUp)
        #expect(await first.acquire(Self.traffic, count: 1).isEmpty, "the local share (⌊3/2⌋ = 1) is already held")

        try await server.restart()
        #expect(try await leases.count(key) == 0, "the restarted Redis holds nothing")
        // Before `second` is back, a newcomer holds one place (a lease Redis knows of).
        #expect(try await leases.acquire([key], ids: ["newcomer"], ttl: .seconds(15)) == ["newcomer"])
        await first.tick()
        #expect(first.isRedisUp)
        #expect(try await leases.count(key) == 3, "the first node's two leases are back in Redis")
        #expect(firstHeld.allSatisfy { first.isCurrent($0) })
        #expect(await first.acquire(Self.traffic, count: 1).isEmpty, "no new lease while the other nodes may still hold theirs")

        await second.tick()
        #expect(!second.isCurrent(secondHeld[0]), "no room for the second node's lease: its connection ends")
        #expect(try await leases.count(key) == 3, "never more than the limit")

        await second.release(secondHeld[0])
        try await leases.release([([key], "newcomer")])
        try await Task.sleep(for: .seconds(1.2))
        let later = await second.acquire(Self.traffic, count: 3)
        #expect(later.count == 1, "once settled, what the limit leaves")
        #expect(try await leases.count(key) == 3)
        for client in clients { await client.close() }
    }

    /// Renewal keeps live leases, takes back those Redis dropped where there is room, and
    /// reports the others; replies that are not one flag per lease are errors.
    @Test func renewalTakesBackWhatFitsAndReportsTheRest() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = RedisClient(configuration: .init(port: server.port))
        let leases = SharedLeases(redis: client, keyPrefix: "t:")
        let key = LeaseKey(name: "k", limit: 2)
        #expect(try await leases.acquire([key], ids: ["a", "b", "c"], ttl: .seconds(15)) == ["a", "b"])
        #expect(try await leases.renew([([key], "a"), ([key], "b")], ttl: .seconds(15)).isEmpty)
        _ = try await client.send(["DEL", "t:leases:k"])
        #expect(try await leases.acquire([key], ids: ["x"], ttl: .seconds(15)) == ["x"])
        let lost = try await leases.renew([([key], "a"), ([key], "b")], ttl: .seconds(15))
        #expect(lost == ["b"], "one place left for two dropped leases: the first gets it")
        #expect(try await leases.count(key) == 2)
        let members = try await client.send(["ZRANGE", "t:leases:k", "0", "-1"])
        #expect(members.description.contains("a") && !members.description.contains("\"b\""), "\(members)")
        await client.close()
    }
}
