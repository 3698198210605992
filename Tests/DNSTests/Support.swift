@testable import DNS
import Synchronization
import TestSupport

/// The shapes of domain an MTA meets, in the test zone.
func testRecords(ttl: Int = 30) -> DNSServer.Records {
    var records = DNSServer.Records()
    records.ttl = ttl
    records.mx = [
        ("pref.test", "mx-b.pref.test", 20), ("pref.test", "mx-a.pref.test", 10),
        ("equal.test", "two.equal.test", 10), ("equal.test", "backup.equal.test", 20), ("equal.test", "one.equal.test", 10),
        ("same-hosts.test", "one.equal.test", 10), ("same-hosts.test", "backup.equal.test", 20), ("same-hosts.test", "two.equal.test", 10),
        ("hostless.test", "nowhere.hostless.test", 10),
        ("partly.test", "gone.partly.test", 10), ("partly.test", "mx.partly.test", 20),
        ("literal.test", "192.0.2.1", 10), ("literal.test", "mx-b.pref.test", 20),
    ] + (0..<12).map { ("many.test", "mx\($0).many.test", $0) }
    records.a = [
        ("mx-a.pref.test", "127.0.0.2"), ("mx-b.pref.test", "127.0.0.3"),
        ("one.equal.test", "127.0.0.4"), ("two.equal.test", "127.0.0.5"), ("backup.equal.test", "127.0.0.9"),
        ("plain.test", "127.0.0.6"), ("mx.partly.test", "127.0.0.7"),
    ] + (0..<12).map { ("mx\($0).many.test", "127.0.1.\($0)") }
    records.aaaa = [("mx-a.pref.test", "2001:db8::2"), ("v6only.test", "2001:db8::6")]
    records.cname = [("alias.test", "plain.test")]
    records.txt = [("empty.test", "no mail here")]
    records.nullMX = ["null.test"]
    records.unansweredZones = ["slow.example"]
    return records
}

/// dnsmasq with test records, a resolver asking it and the routes over that resolver, on a
/// clock the test moves; stopped together.
final class DNSSetup: Sendable {
    let server: DNSServer
    let dns: DNSResolver
    let clock = TestClock()
    let routes: MailRouteResolver

    init(records: DNSServer.Records = testRecords(), port: Int? = nil, timeout: Duration = .seconds(5),
         settings: MailRouteResolver.Settings = .init()) async throws {
        server = try await DNSServer.start(records, port: port)
        dns = try DNSResolver(forwarders: [server.address], timeout: timeout)
        routes = MailRouteResolver(resolver: dns, settings: settings, clock: { [clock] in clock.now })
    }

    func route(_ domain: String) async -> MailRoute.Result { await routes.route(for: domain).result }

    func stop() {
        dns.shutdown()
        server.stop()
    }
}

/// A resolver whose one forwarder never answers; stopped together.
final class SilentSetup: Sendable {
    let port: SilentUDPPort
    let dns: DNSResolver

    init(timeout: Duration) throws {
        port = try SilentUDPPort()
        dns = try DNSResolver(forwarders: [port.address], timeout: timeout)
    }

    func stop() {
        dns.shutdown()
        port.close()
    }
}

/// A lookup over fixed answers (keyed "MX example.test"; NXDOMAIN for the rest) that counts
/// its calls and takes a moment, so that concurrent requests overlap.
final class FakeLookup: Sendable {
    private let answers: [String: DNSAnswer]
    private let counts = Mutex<[String: Int]>([:])

    init(_ answers: [String: DNSAnswer]) {
        self.answers = answers
    }

    func lookup(_ name: String, _ type: DNSRecordType) async -> DNSAnswer {
        let key = "\(type) \(name)"
        counts.withLock { $0[key, default: 0] += 1 }
        try? await Task.sleep(for: .milliseconds(10))
        return answers[key] ?? .nxdomain(ttl: 60)
    }

    func calls(_ key: String) -> Int { counts.withLock { $0[key, default: 0] } }
}

/// A clock the test moves: milliseconds since the epoch.
final class TestClock: Sendable {
    private let milliseconds = Mutex<UInt64>(1_800_000_000_000)
    var now: UInt64 { milliseconds.withLock { $0 } }
    func advance(seconds: UInt64) { milliseconds.withLock { $0 += seconds * 1_000 } }
}

/// Deterministic randomness for connection orders (SplitMix64).
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension MailRoute.Result {
    var hosts: [MailHost]? {
        guard case .hosts(_, let hosts) = self else { return nil }
        return hosts
    }

    var site: String? {
        guard case .hosts(let site, _) = self else { return nil }
        return site
    }

    var reply: SMTPReplyShape? {
        guard case .failed(let reply) = self else { return nil }
        return SMTPReplyShape(code: reply.code, enhanced: reply.enhancedCode?.description ?? "", text: reply.lines.joined(separator: " "))
    }
}

/// An SMTP reply as tests compare it.
struct SMTPReplyShape: Equatable {
    var code: Int
    var enhanced: String
    var text: String
}

/// MX rdata: preference, then the exchange's labels and the root.
func mxRdata(_ preference: UInt16, _ exchange: String) -> [UInt8] {
    let labels = exchange == "." ? [] : exchange.split(separator: ".").flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
    return [UInt8(preference >> 8), UInt8(preference & 0xFF)] + labels + [0]
}
