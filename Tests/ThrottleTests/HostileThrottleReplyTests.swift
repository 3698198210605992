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
        .array([.integer(1), .integer(2), .bulkString(Array("d1".utf8)), .bulkString(Array("soon".utf8)),
                .bulkString(Array(goodAnnouncement.utf8))]),
        .array([.integer(1), .integer(2), .integer(5), .integer(3), .bulkString(Array(goodAnnouncement.utf8))]),
    ])
    func aHeartbeatReplyThatIsNotOneIsRefused(_ reply: RedisValue) {
        #expect(throws: RedisError.self) { try NodeRegistry.heartbeat(from: reply) }
    }

    /// One entry another version (or a hand) wrote must not stop the delivery nodes from
    /// reading the registry: it is listed apart and not counted as a node.
    @Test func registryEntriesThatDoNotDecodeAreListedApart() throws {
        let heartbeat = try NodeRegistry.heartbeat(from: .array([
            .integer(1_000), .integer(7),
            .bulkString(Array("d1".utf8)), .integer(4_000), .bulkString(Array(Self.goodAnnouncement.utf8)),
            .bulkString(Array("d2".utf8)), .integer(4_000), .bulkString(Array("{not json".utf8)),
            .bulkString(Array("other".utf8)), .integer(4_000), .bulkString(Array(Self.goodAnnouncement.utf8)),
        ]))
        #expect(heartbeat.nodes.map(\.announcement.id) == ["d1"])
        #expect(heartbeat.unreadable == [UnreadableEntry(id: "d2", problem: "not a node announcement: {not json"),
                                         UnreadableEntry(id: "other", problem: "announces another node (d1)")])
    }

    @Test func aWellFormedHeartbeatIsRead() throws {
        let heartbeat = try NodeRegistry.heartbeat(from: .array([
            .integer(1_000), .integer(7), .bulkString(Array("d1".utf8)), .integer(4_000), .bulkString(Array(Self.goodAnnouncement.utf8)),
        ]))
        #expect(heartbeat.serverTime == 1_000 && heartbeat.adjustmentsVersion == 7)
        #expect(heartbeat.nodes.map(\.announcement.id) == ["d1"] && heartbeat.nodes.first?.expiresAt == 4_000)
    }

    static let goodAdjustment = #"{"action":"suspend","reason":"r","scope":{"domain":"a.test"},"setBy":"operator"}"#
    static func bulk(_ text: String) -> RedisValue { .bulkString(Array(text.utf8)) }

    @Test(arguments: [
        RedisValue.null, .array([.integer(1)]), .array([.integer(1), .integer(2), bulk("suspend domain=a.test")]),
        .array([.integer(1), .integer(2), bulk("suspend domain=a.test"), bulk("soon"), bulk(goodAdjustment)]),
        .array([.integer(1), bulk("v"), bulk("suspend domain=a.test"), .integer(3), bulk(goodAdjustment)]),
        .array([.integer(1), .integer(2), .integer(9), .integer(3), bulk(goodAdjustment)]),
    ])
    func anAdjustmentListOfTheWrongShapeIsAnError(_ reply: RedisValue) {
        #expect(throws: RedisError.self) { try SharedAdjustments.adjustments(from: reply) }
    }

    @Test func entriesThatCannotApplyAreListedApartFromTheOthers() throws {
        let list = try SharedAdjustments.adjustments(from: .array([
            .integer(1_000), .integer(7),
            Self.bulk("suspend domain=a.test"), .integer(5_000), Self.bulk(Self.goodAdjustment),
            Self.bulk("junk"), .integer(5_000), Self.bulk("{not json"),
            Self.bulk("no-scope"), .integer(5_000), Self.bulk(#"{"action":"suspend","reason":"r","scope":{},"setBy":"operator"}"#),
            Self.bulk("elsewhere"), .integer(5_000), Self.bulk(Self.goodAdjustment),
        ]))
        #expect(list.version == 7 && list.serverTime == 1_000)
        #expect(list.active.map(\.adjustment.id) == ["suspend domain=a.test"] && list.active.first?.expiresAt == 5_000)
        #expect(list.unreadable.map(\.id) == ["junk", "no-scope", "elsewhere"])
        #expect(list.unreadable.map(\.problem) == [
            "not an adjustment: {not json", "an adjustment needs at least one of pool, site, domain, tenant",
            "stored under another id than its own (suspend domain=a.test)",
        ])
    }

    @Test func anAdjustmentWithoutScopeOrValuesDoesNotApply() {
        #expect(Adjustment(action: .suspend, scope: .init(), reason: "", setBy: "operator").problem != nil)
        #expect(Adjustment(action: .messageRate, scope: .init(domain: "a.test"), reason: "", setBy: "operator").problem != nil)
        #expect(Adjustment(action: .maxConnections, scope: .init(domain: "a.test"), maxConnections: -1, reason: "", setBy: "operator")
            .problem != nil)
        #expect(Adjustment(action: .suspend, scope: .init(tenant: "acme"), reason: "", setBy: "operator").problem == nil)
    }
}
