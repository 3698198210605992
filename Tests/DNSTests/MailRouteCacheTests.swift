@testable import DNS
import Testing

/// `MailRouteResolver`'s cache and route rules over fixed answers and a clock the test moves.
@Suite struct MailRouteCacheTests {
    static let exampleAnswers: [String: DNSAnswer] = [
        "MX example.test": .records([.mx(preference: 10, exchange: "mx.example.test")], ttl: 600),
        "A mx.example.test": .records([.a("192.0.2.1")], ttl: 300),
        "AAAA mx.example.test": .noData(ttl: 900),
    ]

    @Test func concurrentRequestsShareOneLookup() async {
        let lookup = FakeLookup(Self.exampleAnswers)
        let clock = TestClock()
        let routes = MailRouteResolver(clock: { clock.now }, lookup: lookup.lookup)
        let results = await withTaskGroup(of: MailRoute.self) { group in
            for _ in 0..<20 { group.addTask { await routes.route(for: "example.test") } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(results.map(\.validUntil)).count == 1)
        #expect(lookup.calls("MX example.test") == 1 && lookup.calls("A mx.example.test") == 1)
    }

    @Test func answersAreKeptForTheSmallestTTLThenAskedAgain() async {
        let lookup = FakeLookup(Self.exampleAnswers)
        let clock = TestClock()
        let routes = MailRouteResolver(clock: { clock.now }, lookup: lookup.lookup)
        let start = clock.now
        let first = await routes.route(for: "example.test")
        #expect(first.validUntil == start + 300_000, "the A record's 300 s is the smallest")
        clock.advance(seconds: 299)
        #expect(await routes.route(for: "EXAMPLE.test.") == first)
        #expect(lookup.calls("MX example.test") == 1)
        clock.advance(seconds: 1)
        #expect(await routes.route(for: "example.test").validUntil == clock.now + 300_000)
        #expect(lookup.calls("MX example.test") == 2)
    }

    @Test func ttlsAreClampedToTheBounds() async {
        let answers: [String: DNSAnswer] = [
            "MX short.test": .records([.mx(preference: 0, exchange: "mx.short.test")], ttl: 1),
            "A mx.short.test": .records([.a("192.0.2.1")], ttl: 1),
            "MX long.test": .noData(ttl: 604_800),
            "A long.test": .records([.a("192.0.2.2")], ttl: 604_800),
            "AAAA long.test": .noData(ttl: 604_800),
        ]
        let clock = TestClock()
        let routes = MailRouteResolver(settings: .init(minimumTTL: .seconds(10), maximumTTL: .seconds(60)),
                                       clock: { clock.now }, lookup: FakeLookup(answers).lookup)
        #expect(await routes.route(for: "short.test").validUntil == clock.now + 10_000)
        #expect(await routes.route(for: "long.test").validUntil == clock.now + 60_000)
    }

    @Test func negativeAnswersAreKeptForTheirTTL() async {
        let answers: [String: DNSAnswer] = [
            "MX gone.test": .nxdomain(ttl: 120),
            "MX null.test": .records([.mx(preference: 0, exchange: ".")], ttl: 240),
        ]
        let lookup = FakeLookup(answers)
        let clock = TestClock()
        let routes = MailRouteResolver(clock: { clock.now }, lookup: lookup.lookup)
        let gone = await routes.route(for: "gone.test")
        #expect(gone.result.reply?.enhanced == "5.1.2" && gone.validUntil == clock.now + 120_000)
        let null = await routes.route(for: "null.test")
        #expect(null.result.reply?.enhanced == "5.1.10" && null.validUntil == clock.now + 240_000)
        clock.advance(seconds: 119)
        _ = await routes.route(for: "gone.test")
        #expect(lookup.calls("MX gone.test") == 1)
    }

    @Test func failedLookupsAreKeptOnlyBriefly() async {
        let lookup = FakeLookup(["MX down.test": .serverFailure(rcode: 2), "MX slow.test": .timeout])
        let clock = TestClock()
        let routes = MailRouteResolver(settings: .init(failureTTL: .seconds(3)), clock: { clock.now }, lookup: lookup.lookup)
        for domain in ["down.test", "slow.test"] {
            let route = await routes.route(for: domain)
            #expect(route.result.reply?.code == 451 && route.result.reply?.enhanced == "4.4.3")
            #expect(route.validUntil == clock.now + 3_000)
        }
        for _ in 0..<50 { _ = await routes.route(for: "down.test") }
        #expect(lookup.calls("MX down.test") == 1, "a flood of messages asks once")
        clock.advance(seconds: 3)
        _ = await routes.route(for: "down.test")
        #expect(lookup.calls("MX down.test") == 2)
    }

    @Test func aRouteMissingAHostBecauseOfAFailureIsKeptOnlyBriefly() async {
        let answers: [String: DNSAnswer] = [
            "MX half.test": .records([.mx(preference: 10, exchange: "a.half.test"), .mx(preference: 20, exchange: "b.half.test")], ttl: 600),
            "A a.half.test": .timeout,
            "AAAA a.half.test": .timeout,
            "A b.half.test": .records([.a("192.0.2.2")], ttl: 600),
            "AAAA b.half.test": .noData(ttl: 600),
        ]
        let clock = TestClock()
        let routes = MailRouteResolver(settings: .init(failureTTL: .seconds(4)), clock: { clock.now }, lookup: FakeLookup(answers).lookup)
        let route = await routes.route(for: "half.test")
        #expect(route.result == .hosts(site: "b.half.test", [MailHost(name: "b.half.test", preference: 20, addresses: ["192.0.2.2"])]))
        #expect(route.validUntil == clock.now + 4_000, "the preferred host may be back in a moment")
    }

    @Test func mxHostsWhoseAddressLookupsFailAreATransientFailure() async {
        let answers: [String: DNSAnswer] = [
            "MX dark.test": .records([.mx(preference: 10, exchange: "mx.dark.test")], ttl: 600),
            "A mx.dark.test": .serverFailure(rcode: 2),
            "AAAA mx.dark.test": .noData(ttl: 600),
        ]
        let routes = MailRouteResolver(clock: { 0 }, lookup: FakeLookup(answers).lookup)
        #expect(await routes.route(for: "dark.test").result.reply == SMTPReplyShape(
            code: 451, enhanced: "4.4.3", text: "DNS lookup of the A records of mx.dark.test failed: SERVFAIL"))
    }

    @Test func oddMXSetsAreCleanedUp() async {
        let answers: [String: DNSAnswer] = [
            // A root exchange beside a real one, a duplicate, an IP address.
            "MX odd.test": .records([.mx(preference: 0, exchange: "."), .mx(preference: 30, exchange: "mx.odd.test"),
                                     .mx(preference: 5, exchange: "192.0.2.9"), .mx(preference: 10, exchange: "mx.odd.test")], ttl: 600),
            "A mx.odd.test": .records([.a("192.0.2.3")], ttl: 600),
            "MX literal.test": .records([.mx(preference: 10, exchange: "192.0.2.9")], ttl: 600),
            "MX broken.test": .failed("no well-formed MX record in the answer"),
        ]
        let routes = MailRouteResolver(clock: { 0 }, lookup: FakeLookup(answers).lookup)
        #expect(await routes.route(for: "odd.test").result == .hosts(site: "mx.odd.test", [MailHost(name: "mx.odd.test", preference: 10, addresses: ["192.0.2.3"])]))
        #expect(await routes.route(for: "literal.test").result.reply == SMTPReplyShape(
            code: 550, enhanced: "5.4.4", text: "the MX records of literal.test name IP addresses (192.0.2.9), not hosts"))
        #expect(await routes.route(for: "broken.test").result.reply?.enhanced == "4.4.3")
    }

    @Test func anInvalidDomainIsAPermanentFailure() async {
        let routes = MailRouteResolver(clock: { 0 }, lookup: { name, _ in .invalidName("\(name.debugDescription) is not a domain name: an empty label") })
        #expect(await routes.route(for: "a..test").result.reply == SMTPReplyShape(code: 553, enhanced: "5.1.3", text: "\"a..test\" is not a domain name: an empty label"))
    }
}

@Suite struct ConnectionOrderTests {
    static let hosts = [
        MailHost(name: "a.test", preference: 10, addresses: ["192.0.2.1"]),
        MailHost(name: "b.test", preference: 10, addresses: ["192.0.2.2"]),
        MailHost(name: "c.test", preference: 10, addresses: ["192.0.2.3"]),
        MailHost(name: "backup.test", preference: 20, addresses: ["192.0.2.9"]),
        MailHost(name: "first.test", preference: 5, addresses: ["192.0.2.5"]),
    ]

    @Test func preferenceFirstThenShuffledWithinAPreference() {
        var generator = SeededGenerator(state: 42)
        var orders: Set<[String]> = []
        for _ in 0..<100 {
            let order = MailHost.connectionOrder(Self.hosts, using: &generator).map(\.name)
            #expect(order.first == "first.test" && order.last == "backup.test")
            #expect(Set(order[1...3]) == ["a.test", "b.test", "c.test"])
            orders.insert(order)
        }
        #expect(orders.count == 6, "every order of the three equal hosts")
    }

    @Test func theSameSeedGivesTheSameOrder() {
        var one = SeededGenerator(state: 7)
        var two = SeededGenerator(state: 7)
        #expect(MailHost.connectionOrder(Self.hosts, using: &one) == MailHost.connectionOrder(Self.hosts, using: &two))
    }
}
