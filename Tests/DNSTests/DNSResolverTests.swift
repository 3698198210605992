@testable import DNS
import Testing
import TestSupport

/// `DNSResolver` against a real dnsmasq on loopback.
@Suite(.timeLimit(.minutes(2)))
struct DNSResolverTests {
    @Test func answersAreDecodedWithTheirTTLs() async throws {
        let setup = try await DNSSetup(records: testRecords(ttl: 30))
        defer { setup.stop() }
        let resolver = setup.dns

        guard case .records(let mx, let ttl) = await resolver.lookup("pref.test", .mx) else {
            Issue.record("pref.test has MX records; dnsmasq was asked \(setup.server.queries())")
            return
        }
        #expect(Set(mx) == [.mx(preference: 10, exchange: "mx-a.pref.test"), .mx(preference: 20, exchange: "mx-b.pref.test")])
        #expect(ttl == 30)
        #expect(await resolver.lookup("MX-A.pref.test.", .a) == .records([.a("127.0.0.2")], ttl: 30))
        #expect(await resolver.lookup("mx-a.pref.test", .aaaa) == .records([.aaaa("2001:db8::2")], ttl: 30))
        #expect(await resolver.lookup("null.test", .mx) == .records([.mx(preference: 0, exchange: ".")], ttl: 30))
        // dnsmasq's negative answers carry no SOA, so their TTL is libunbound's guess.
        guard case .noData = await resolver.lookup("plain.test", .mx), case .nxdomain = await resolver.lookup("absent.test", .mx) else {
            Issue.record("plain.test has no MX, absent.test does not exist")
            return
        }
        // libunbound follows the CNAME.
        #expect(await resolver.lookup("alias.test", .a) == .records([.a("127.0.0.6")], ttl: 30))
    }

    @Test func aRefusingServerIsAServerFailure() async throws {
        let setup = try await DNSSetup()
        defer { setup.stop() }
        let resolver = setup.dns
        // Outside dnsmasq's zones: REFUSED, which libunbound reports as SERVFAIL.
        #expect(await resolver.lookup("refused.example", .mx) == .serverFailure(rcode: 2))
    }

    @Test func libunboundCachesForTheTTL() async throws {
        let setup = try await DNSSetup(records: testRecords(ttl: 3))
        defer { setup.stop() }
        let resolver = setup.dns
        func asked() -> Int { setup.server.queries().filter { $0 == "A plain.test" }.count }

        #expect(await resolver.lookup("plain.test", .a) == .records([.a("127.0.0.6")], ttl: 3))
        _ = await resolver.lookup("plain.test", .a)
        #expect(asked() == 1, "the second answer comes from libunbound's cache")
        try await Task.sleep(for: .seconds(4))
        #expect(await resolver.lookup("plain.test", .a) == .records([.a("127.0.0.6")], ttl: 3))
        #expect(asked() == 2, "asked again once the TTL ran out")
    }

    @Test func aResolverThatNeverAnswersTimesOut() async throws {
        let silent = try SilentSetup(timeout: .milliseconds(300))
        defer { silent.stop() }
        let resolver = silent.dns
        #expect(await resolver.lookup("pref.test", .mx) == .timeout)
        #expect(await resolver.lookup("pref.test", .a) == .timeout, "the resolver still works after a timeout")
    }

    @Test func aServerCanTakeOverASilentPortAfterAChildProcessStarted() async throws {
        let silent = try SilentUDPPort()
        defer { silent.close() }
        // A process started while the port is held must not inherit it (close-on-exec).
        let child = try ManagedProcess(name: "sleep", executable: try findExecutable("sleep"), arguments: ["30"],
                                       logPath: "/dev/null")
        defer { child.stop() }
        silent.close()
        let setup = try await DNSSetup(port: silent.port)
        defer { setup.stop() }
        let resolver = setup.dns
        #expect(await resolver.lookup("mx-b.pref.test", .a) == .records([.a("127.0.0.3")], ttl: 30))
    }

    @Test func aZoneWhoseServersAreDeadTimesOut() async throws {
        let setup = try await DNSSetup(timeout: .milliseconds(300))
        defer { setup.stop() }
        let resolver = setup.dns
        #expect(await resolver.lookup("mail.slow.example", .mx) == .timeout)
        #expect(await resolver.lookup("mx-b.pref.test", .a) == .records([.a("127.0.0.3")], ttl: 30))
    }

    @Test(arguments: ["127.0.0.1", "localhost:53", "dns.example:53", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:+53",
                      "127.0.0.1:53:53", "::1:53", "[::1]53", "[::1", "[127.0.0.1]:53", "", "1.2.3.4:x", "1.2.3:53"])
    func aBadForwarderIsRefusedByName(_ forwarder: String) {
        let error = #expect(throws: DNSResolverError.self) {
            try DNSResolver(forwarders: ["127.0.0.1:53", forwarder], timeout: .seconds(1))
        }
        #expect(error?.description.contains(forwarder.debugDescription) == true, "\(error?.description ?? "")")
    }

    @Test(arguments: ["", "a..test", " spaced.test", "bücher.test", "bad\u{0}.test", String(repeating: "a", count: 64) + ".test",
                      String(repeating: "a.", count: 130)])
    func invalidNamesAreRefusedWithoutAQuery(_ name: String) async throws {
        // A query would time out here.
        let silent = try SilentSetup(timeout: .seconds(1))
        defer { silent.stop() }
        let resolver = silent.dns
        let answer = await resolver.lookup(name, .mx)
        guard case .invalidName = answer else {
            Issue.record("\(name.prefix(20).debugDescription): \(answer)")
            return
        }
    }

    @Test func manyConcurrentLookupsAreAllAnswered() async throws {
        let setup = try await DNSSetup(timeout: .seconds(20))
        defer { setup.stop() }
        let resolver = setup.dns
        let wrong = await withTaskGroup(of: String?.self) { group in
            for index in 0..<200 {
                group.addTask {
                    // Half distinct names (each a query to dnsmasq), half one name (libunbound's cache).
                    let cached = index.isMultiple(of: 2)
                    let name = cached ? "one.equal.test" : "n\(index).test"
                    let answer = await resolver.lookup(name, .a)
                    switch answer {
                    case .records(let records, _) where cached && records == [.a("127.0.0.4")]: return nil
                    case .nxdomain where !cached: return nil
                    default: return "\(name): \(answer)"
                    }
                }
            }
            return await group.compactMap { $0 }.reduce(into: []) { $0.append($1) }
        }
        #expect(wrong.isEmpty)
    }

    @Test func shutdownAnswersTheQueriesInFlight() async throws {
        let silent = try SilentUDPPort()
        defer { silent.close() }
        let resolver = try DNSResolver(forwarders: [silent.address], timeout: .seconds(600))
        let answers = Task {
            await withTaskGroup(of: DNSAnswer.self) { group in
                for index in 0..<20 { group.addTask { await resolver.lookup("q\(index).test", .mx) } }
                return await group.reduce(into: []) { $0.append($1) }
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        resolver.shutdown()
        let shutDown = DNSAnswer.failed("the DNS resolver is shut down")
        #expect(await answers.value == Array(repeating: shutDown, count: 20))
        #expect(await resolver.lookup("later.test", .mx) == shutDown)
        resolver.shutdown()  // again: returns at once
    }

    @Test func aResolverDroppedWithoutShutdownStopsItsThread() async throws {
        let silent = try SilentUDPPort()
        defer { silent.close() }
        weak var inbox: ResolverInbox?
        do {
            let resolver = try DNSResolver(forwarders: [silent.address], timeout: .milliseconds(100))
            inbox = resolver.inbox
            #expect(await resolver.lookup("dropped.test", .a) == .timeout)
        }
        // The thread holds the inbox until it has deleted the context and ended.
        for _ in 0..<500 where inbox != nil { try await Task.sleep(for: .milliseconds(20)) }
        #expect(inbox == nil)
    }
}
