@testable import DNS
import Testing
import TestSupport

/// `MailRouteResolver` over a real `DNSResolver` and dnsmasq: what each shape of domain becomes.
@Suite(.timeLimit(.minutes(2)))
struct MailRouteTests {
    @Test func mxHostsByPreferenceWithTheirAddresses() async throws {
        let setup = try await DNSSetup()
        defer { setup.stop() }
        #expect(await setup.route("pref.test") == .hosts(site: "mx-a.pref.test,mx-b.pref.test", [
            MailHost(name: "mx-a.pref.test", preference: 10, addresses: ["127.0.0.2", "2001:db8::2"]),
            MailHost(name: "mx-b.pref.test", preference: 20, addresses: ["127.0.0.3"]),
        ]))
    }

    @Test func domainsOnTheSameMXHostsAreOneSite() async throws {
        let setup = try await DNSSetup()
        defer { setup.stop() }
        let equal = await setup.route("Equal.TEST.")
        #expect(equal.site == "one.equal.test,two.equal.test,backup.equal.test")
        #expect(await setup.route("same-hosts.test").site == equal.site)
        #expect(equal.hosts?.map(\.preference) == [10, 10, 20])
    }

    @Test func equalPreferencesShareTheFirstConnection() async throws {
        let setup = try await DNSSetup()
        defer { setup.stop() }
        let hosts = try #require(await setup.route("equal.test").hosts)
        var generator = SystemRandomNumberGenerator()
        var firsts: Set<String> = []
        for _ in 0..<200 {
            let order = MailHost.connectionOrder(hosts, using: &generator)
            #expect(order.last?.name == "backup.equal.test")
            firsts.insert(order[0].name)
        }
        #expect(firsts == ["one.equal.test", "two.equal.test"])
    }

    @Test func aDomainWithoutMXIsItsOwnHost() async throws {
        let setup = try await DNSSetup()
        defer { setup.stop() }
        #expect(await setup.route("plain.test") == .hosts(site: "plain.test", [MailHost(name: "plain.test", preference: 0, addresses: ["127.0.0.6"])]))
        #expect(await setup.route("v6only.test") == .hosts(site: "v6only.test", [MailHost(name: "v6only.test", preference: 0, addresses: ["2001:db8::6"])]))
        // Through a CNAME: the alias keeps its name, the address is the target's.
        #expect(await setup.route("alias.test") == .hosts(site: "alias.test", [MailHost(name: "alias.test", preference: 0, addresses: ["127.0.0.6"])]))
    }

    @Test func domainsThatCannotReceiveMailFailPermanently() async throws {
        let setup = try await DNSSetup()
        defer { setup.stop() }
        #expect(await setup.route("null.test").reply == SMTPReplyShape(code: 556, enhanced: "5.1.10", text: "null.test does not accept mail (null MX, RFC 7505)"))
        #expect(await setup.route("absent.test").reply == SMTPReplyShape(code: 550, enhanced: "5.1.2", text: "absent.test: no such domain (DNS NXDOMAIN)"))
        #expect(await setup.route("empty.test").reply == SMTPReplyShape(code: 550, enhanced: "5.1.2", text: "empty.test has no MX and no A or AAAA record"))
        #expect(await setup.route("hostless.test").reply == SMTPReplyShape(
            code: 550, enhanced: "5.4.4", text: "the MX hosts of hostless.test (nowhere.hostless.test) have no A or AAAA record"))
    }

    @Test func hostsWithoutAddressesAndIPLiteralsAreSkipped() async throws {
        let setup = try await DNSSetup()
        defer { setup.stop() }
        #expect(await setup.route("partly.test") == .hosts(site: "mx.partly.test", [MailHost(name: "mx.partly.test", preference: 20, addresses: ["127.0.0.7"])]))
        #expect(await setup.route("literal.test") == .hosts(site: "mx-b.pref.test", [MailHost(name: "mx-b.pref.test", preference: 20, addresses: ["127.0.0.3"])]))
    }

    @Test func atMostTenMXHostsAreUsed() async throws {
        let setup = try await DNSSetup()
        defer { setup.stop() }
        #expect(await setup.route("many.test").hosts?.map(\.name) == (0..<10).map { "mx\($0).many.test" })
    }

    @Test func dnsFailuresAreTransient() async throws {
        let setup = try await DNSSetup(timeout: .milliseconds(300))
        defer { setup.stop() }
        #expect(await setup.route("refused.example").reply == SMTPReplyShape(
            code: 451, enhanced: "4.4.3", text: "DNS lookup of the MX records of refused.example failed: SERVFAIL"))
        #expect(await setup.route("mail.slow.example").reply == SMTPReplyShape(
            code: 451, enhanced: "4.4.3", text: "DNS lookup of the MX records of mail.slow.example timed out"))
    }

    @Test func routesAreKeptForTheirTTLWithinTheBounds() async throws {
        let setup = try await DNSSetup(settings: .init(minimumTTL: .seconds(5), maximumTTL: .seconds(20), failureTTL: .seconds(2)))
        defer { setup.stop() }
        let now = setup.clock.now
        #expect(await setup.routes.route(for: "pref.test").validUntil == now + 20_000, "TTL 30 s, at most 20 s")
        #expect(await setup.routes.route(for: "absent.test").validUntil == now + 20_000, "the negative TTL, clamped the same")
        #expect(await setup.routes.route(for: "refused.example").validUntil == now + 2_000, "a failure: the failure TTL")

        let short = try await DNSSetup(records: testRecords(ttl: 8))
        defer { short.stop() }
        #expect(await short.routes.route(for: "pref.test").validUntil == short.clock.now + 8_000)
        let tiny = try await DNSSetup(records: testRecords(ttl: 1))
        defer { tiny.stop() }
        #expect(await tiny.routes.route(for: "pref.test").validUntil == tiny.clock.now + 5_000, "raised to the 5 s minimum")
    }
}
