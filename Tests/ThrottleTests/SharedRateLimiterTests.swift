import Redis
import Testing
import TestSupport
@testable import Throttle

@Suite(.timeLimit(.minutes(1)))
struct SharedRateLimiterTests {
    @Test func twoNodesShareOneLimitAndTheBurstIsExact() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        // Two clients stand for two nodes: the limit is the key's, not a node's.
        let first = RedisClient(configuration: .init(port: server.port))
        let second = RedisClient(configuration: .init(port: server.port))
        let nodes = [SharedRateLimiter(redis: first, keyPrefix: "t:"), SharedRateLimiter(redis: second, keyPrefix: "t:")]
        // 5 per hour: no refill within the test, so the count is exact whatever the timing.
        let rate = GCRARate(count: 5, per: .seconds(3600))
        var decisions: [ThrottleDecision] = []
        for index in 0..<8 { decisions.append(try await nodes[index % 2].take("tenant:acme", rate: rate)) }
        #expect(decisions.prefix(5).allSatisfy { $0 == .allowed })
        for decision in decisions.dropFirst(5) {
            guard case .limited(let retryAfter) = decision else { Issue.record("\(decision) after the burst"); continue }
            #expect(retryAfter > .zero && retryAfter <= .seconds(720), "one unit refills in 3600/5 s")
        }
        #expect(try await nodes[0].take("tenant:globex", rate: rate) == .allowed, "another key has its own limit")
        let stored = try await first.send(["PTTL", "t:gcra:tenant:acme"]).int()
        #expect(stored > 0 && stored <= 3_600_001, "the key expires by itself once idle")
        await first.close()
        await second.close()
    }

    @Test func aRequestLargerThanTheBurstIsRefusedWithoutTakingAnything() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = RedisClient(configuration: .init(port: server.port))
        let limiter = SharedRateLimiter(redis: client, keyPrefix: "t:")
        let rate = GCRARate(count: 10, per: .seconds(3600))
        guard case .limited = try await limiter.take("k", rate: rate, units: 11) else {
            Issue.record("11 units fit a burst of 10")
            return
        }
        #expect(try await limiter.take("k", rate: rate, units: 10) == .allowed, "the refused request took nothing")
        await client.close()
    }

    @Test(arguments: [
        RedisValue.null, .integer(1), .array([.integer(1)]), .array([.integer(2), .integer(0)]),
        .array([.integer(0), .integer(-5)]), .array([.bulkString(Array("x".utf8)), .integer(0)]),
        .array([.integer(1), .integer(0), .integer(0)]), .error("ERR something"),
    ])
    func aMalformedScriptReplyIsAnErrorNotADecision(reply: RedisValue) {
        #expect(throws: RedisError.self) { try SharedRateLimiter.decision(from: reply) }
    }

    @Test func ratesSpreadTheirPeriod() {
        #expect(GCRARate(count: 600, per: .seconds(60)).emissionInterval == .milliseconds(100))
        #expect(GCRARate(count: 600, per: .seconds(60)).burst == 600)
        #expect(GCRARate(count: 3, per: .seconds(1), burst: 0).burst == 1)
    }
}
