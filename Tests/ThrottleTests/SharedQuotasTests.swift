import Redis
import SmarthostConfig
import Testing
import TestSupport
@testable import Throttle

/// The batch script every delivery node takes message units with, against a real
/// redis-server: several quotas at once (GCRA rates and per-window counts), the most units
/// all of them allow, and nothing taken from any when one refuses.
@Suite(.timeLimit(.minutes(1)))
struct SharedQuotasTests {
    /// A window so long that no boundary falls inside a test run (windows count on Redis's clock
    /// from the epoch; the next boundary of this one is centuries away), so counts are exact.
    static let endless = Duration.seconds(86_400 * 100_000)

    @Test func aWindowCountIsSharedByEveryNodeAndGrantsWhatIsLeft() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let first = RedisClient(configuration: .init(port: server.port))
        let second = RedisClient(configuration: .init(port: server.port))
        let nodes = [SharedQuotas(redis: first, keyPrefix: "t:"), SharedQuotas(redis: second, keyPrefix: "t:")]
        let day = QuotaKey(name: "day:tenant=acme", quota: .perWindow(count: 5, window: Self.endless))

        #expect(try await nodes[0].take([day], units: 3) == QuotaGrant(granted: 3, retryAfter: .zero))
        #expect(try await nodes[1].take([day], units: 3) == QuotaGrant(granted: 2, retryAfter: .zero), "only what is left")
        let refused = try await nodes[0].take([day], units: 1)
        #expect(refused.granted == 0 && refused.retryAfter > .seconds(86_400), "refused until the window ends: \(refused)")
        let other = QuotaKey(name: "day:tenant=globex", quota: .perWindow(count: 5, window: Self.endless))
        #expect(try await nodes[1].take([other], units: 5).granted == 5, "another key has its own count")
        await first.close()
        await second.close()
    }

    @Test func severalQuotasGrantTheLeastAndARefusalTakesFromNone() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = RedisClient(configuration: .init(port: server.port))
        let quotas = SharedQuotas(redis: client, keyPrefix: "t:")
        // 10 an hour with the whole count as burst: no refill within the test.
        let rate = QuotaKey(name: "rate:domain=inbox.test", quota: .rate(GCRARate(count: 10, per: .seconds(3_600))))
        let window = QuotaKey(name: "hour:tenant=acme", quota: .perWindow(count: 4, window: Self.endless))

        #expect(try await quotas.take([rate, window], units: 6).granted == 4, "the window allows 4 of the 6")
        #expect(try await quotas.take([rate, window], units: 1).granted == 0, "the window is used up")
        // The refusal took nothing from the rate: 10 - 4 units are left there.
        #expect(try await quotas.take([rate], units: 6).granted == 6)
        let afterRate = try await quotas.take([rate], units: 1)
        #expect(afterRate.granted == 0 && afterRate.retryAfter > .zero && afterRate.retryAfter <= .seconds(360),
                "one unit refills in 3600/10 s: \(afterRate)")
        #expect(try await quotas.take([], units: 7) == QuotaGrant(granted: 7, retryAfter: .zero), "no quota: everything")
        await client.close()
    }

    /// PowerMTA's max-msg-per-hour counts per clock hour: a refusal waits until the next one
    /// (Redis's clock), and the counter expires by itself soon after its hour.
    @Test func anHourlyCountWaitsForTheNextClockHour() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = RedisClient(configuration: .init(port: server.port))
        let quotas = SharedQuotas(redis: client, keyPrefix: "t:")
        let hour = QuotaKey(name: "hour:pool=shared", quota: .perWindow(count: 2, window: .seconds(3_600)))
        let before = try await Self.serverMicroseconds(client)
        _ = try await quotas.take([hour], units: 2)
        let refused = try await quotas.take([hour], units: 1)
        let after = try await Self.serverMicroseconds(client)
        let hourMicros: Int64 = 3_600_000_000
        // Unless the hour turned during the test, the wait ends exactly at the next hour.
        if before / hourMicros == after / hourMicros {
            let nextHour = (before / hourMicros + 1) * hourMicros
            #expect(refused.granted == 0)
            let waited = refused.retryAfter / .microseconds(1)
            #expect(waited <= Double(nextHour - before) && waited >= Double(nextHour - after), "\(refused) vs next hour at \(nextHour)")
            let counter = "t:quota:hour:pool=shared:\(before / hourMicros)"
            #expect(try await client.send(["GET", "\(counter)"]).string() == "2")
            let ttl = try await client.send(["PTTL", "\(counter)"]).int()
            #expect(ttl > 0 && ttl <= 3_600_000 + 1_000, "the counter expires by itself: \(ttl) ms")
        } else {
            Issue.record("the clock hour turned during the test (\(before) → \(after) µs); run it again")
        }
        await client.close()
    }

    /// A daily quota used up in Redis stays used up while Redis is down: the local limits
    /// (a share of each cluster limit) cannot know what the cluster used, so the node keeps to
    /// the wait Redis last gave; when Redis is back, Redis decides again.
    @Test func aQuotaUsedUpInRedisStaysUsedUpWhileRedisIsDown() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = RedisClient(configuration: .init(port: server.port))
        let announcement = NodeAnnouncement(id: "only", role: "delivery", admin: "127.0.0.1:0", startedAt: 1, version: "test")
        let node = ClusterThrottle(redis: client, keyPrefix: "t:", announcement: announcement,
                                   limits: [SmarthostConfiguration.Limit(scope: .init(domain: "inbox.test"), maxMessagesPerDay: 3)])
        await node.tick()
        let traffic = MessageTraffic(pool: "default", site: "mx.inbox.test", siteHosts: ["mx.inbox.test"], domain: "inbox.test", tenant: "acme")
        for _ in 0..<3 { #expect(await node.admit(traffic) == nil) }
        let refused = try #require(await node.admit(traffic), "the day's 3 are used")
        #expect(refused > .seconds(1))

        server.crash()
        await node.tick()
        #expect(!node.isRedisUp)
        let whileDown = try #require(await node.admit(traffic), "the local limits (3 more for a lone node) must not grant what Redis refused")
        #expect(whileDown <= refused)

        try await server.restart()
        await node.tick()
        #expect(node.isRedisUp)
        // The restarted Redis is empty: the shared count starts again, as documented.
        #expect(await node.admit(traffic) == nil)
        await client.close()
    }

    static func serverMicroseconds(_ client: RedisClient) async throws -> Int64 {
        guard case .array(let fields) = try await client.send(["TIME"]), fields.count == 2 else {
            throw RedisError.unexpectedReply(expected: "TIME", got: "?")
        }
        return Int64(try fields[0].string())! * 1_000_000 + Int64(try fields[1].string())!
    }
}
