import Redis
import Testing
@testable import Throttle

/// Replies the throttle's scripts should never get (a different server behind the address, a
/// corrupted key, a bug in a script) are errors that name what was expected, never a crash or
/// a wrong grant.
@Suite struct HostileThrottleReplyTests {
    @Test(arguments: [
        RedisValue.null, .integer(1), .simpleString("OK"), .array([.integer(1)]), .array([.integer(1), .integer(0), .integer(0)]),
        .array([.integer(-1), .integer(0)]), .array([.integer(11), .integer(0)]), .array([.integer(0), .integer(0)]),
        .array([.integer(1), .integer(-5)]), .array([.bulkString(Array("x".utf8)), .integer(0)]), .error("ERR oops"),
    ])
    func aQuotaGrantThatIsNotOneIsRefused(_ reply: RedisValue) {
        #expect(throws: RedisError.self) { try SharedQuotas.grant(from: reply, asked: 10) }
    }

    @Test func aWellFormedGrantIsRead() throws {
        #expect(try SharedQuotas.grant(from: .array([.integer(4), .integer(0)]), asked: 10) == QuotaGrant(granted: 4, retryAfter: .zero))
        #expect(try SharedQuotas.grant(from: .array([.integer(0), .integer(2_500)]), asked: 10)
            == QuotaGrant(granted: 0, retryAfter: .microseconds(2_500)))
    }

    static let goodAnnouncement = #"{"id":"d1","role":"delivery","admin":"127.0.0.1:1","startedAt":1,"version":"v"}"#

    @Test(arguments: [
        RedisValue.null, .array([.integer(1)]), .array([.integer(1), .integer(2), .bulkString(Array("d1".utf8))]),
        .array([.integer(1), .integer(2), .bulkString(Array("d1".utf8)), .integer(3), .bulkString(Array("{not json".utf8))]),
        .array([.integer(1), .integer(2), .bulkString(Array("other".utf8)), .integer(3), .bulkString(Array(goodAnnouncement.utf8))]),
        .array([.integer(1), .integer(2), .bulkString(Array("d1".utf8)), .bulkString(Array("soon".utf8)),
                .bulkString(Array(goodAnnouncement.utf8))]),
    ])
    func aHeartbeatReplyThatIsNotOneIsRefused(_ reply: RedisValue) {
        #expect(throws: RedisError.self) { try NodeRegistry.heartbeat(from: reply) }
    }

    @Test func aWellFormedHeartbeatIsRead() throws {
        let heartbeat = try NodeRegistry.heartbeat(from: .array([
            .integer(1_000), .integer(7), .bulkString(Array("d1".utf8)), .integer(4_000), .bulkString(Array(Self.goodAnnouncement.utf8)),
        ]))
        #expect(heartbeat.serverTime == 1_000 && heartbeat.adjustmentsVersion == 7)
        #expect(heartbeat.nodes.map(\.announcement.id) == ["d1"] && heartbeat.nodes.first?.expiresAt == 4_000)
    }

    @Test func anAdjustmentWithoutScopeOrValuesDoesNotApply() {
        #expect(Adjustment(action: .suspend, scope: .init(), reason: "", setBy: "operator").problem != nil)
        #expect(Adjustment(action: .messageRate, scope: .init(domain: "a.test"), reason: "", setBy: "operator").problem != nil)
        #expect(Adjustment(action: .maxConnections, scope: .init(domain: "a.test"), maxConnections: -1, reason: "", setBy: "operator")
            .problem != nil)
        #expect(Adjustment(action: .suspend, scope: .init(tenant: "acme"), reason: "", setBy: "operator").problem == nil)
    }
}
