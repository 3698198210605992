import SmarthostConfig
import Testing

/// The error message of a value parser, or nil if it accepted the text.
private func message<T>(_ parse: (String) throws(ValueError) -> T, _ text: String) -> String? {
    do {
        _ = try parse(text)
        return nil
    } catch {
        return error.message
    }
}

@Suite("Durations")
struct DurationTests {
    @Test(arguments: [
        ("500ms", Duration.milliseconds(500)),
        ("1ms", .milliseconds(1)),
        ("10s", .seconds(10)),
        ("5m", .seconds(300)),
        ("90m", .seconds(5_400)),
        ("6h", .seconds(21_600)),
        ("2d", .seconds(172_800)),
        ("007s", .seconds(7)),
        ("106751991167d", .seconds(106_751_991_167 * 86_400)),
    ])
    func parses(text: String, expected: Duration) throws {
        #expect(try ConfigSyntax.duration(text) == expected)
    }

    static let generic = "expected a duration such as 500ms, 10s, 5m, 6h or 2d, got"

    @Test(arguments: [
        ("", "\(generic) \"\""),
        ("ten", "\(generic) \"ten\""),
        ("10", "\(generic) \"10\""),
        ("10S", "\(generic) \"10S\""),
        ("10 s", "\(generic) \"10 s\""),
        ("10sec", "\(generic) \"10sec\""),
        ("1h30m", "\(generic) \"1h30m\""),
        ("+5s", "\(generic) \"+5s\""),
        ("1.s", "\(generic) \"1.s\""),
        ("ms", "\(generic) \"ms\""),
        ("0s", "expected a positive duration, got \"0s\""),
        ("0ms", "expected a positive duration, got \"0ms\""),
        ("-5s", "expected a positive duration, got \"-5s\""),
        ("1.5s", "expected a duration without a fraction (write 1500ms), got \"1.5s\""),
        ("0.5h", "expected a duration without a fraction (write 30m), got \"0.5h\""),
        (".5s", "expected a duration without a fraction (write 500ms), got \".5s\""),
        ("1.0001s", "expected a duration without a fraction, got \"1.0001s\""),
        ("0.0s", "expected a duration without a fraction, got \"0.0s\""),
        ("99999999999999999999d", "\(generic) \"99999999999999999999d\" (too large)"),
        ("9999999999999999d", "\(generic) \"9999999999999999d\" (too large)"),
    ])
    func rejects(text: String, expected: String) {
        #expect(message(ConfigSyntax.duration, text) == expected)
    }

    @Test(arguments: [
        (Duration.milliseconds(1_500), "1500ms"),
        (.milliseconds(2_000), "2s"),
        (.seconds(5_400), "90m"),
        (.seconds(3_600), "1h"),
        (.seconds(172_800), "2d"),
        (.seconds(-5), "-5s"),
        (.zero, "0ms"),
        (.microseconds(1_500), "0.0015 seconds"),
    ])
    func formats(duration: Duration, expected: String) {
        #expect(ConfigSyntax.format(duration) == expected)
    }
}

@Suite("Byte sizes")
struct ByteSizeTests {
    @Test(arguments: [
        ("25MiB", 25 << 20), ("512KiB", 512 << 10), ("1GiB", 1 << 30), ("10MB", 10_000_000), ("1KB", 1_000),
        ("2GB", 2_000_000_000), ("100B", 100), ("1048576", 1_048_576), ("0", 0),
    ])
    func parses(text: String, bytes: Int) throws {
        #expect(try ByteSize(parsing: text) == ByteSize(bytes: bytes))
    }

    static let generic = "expected a byte size such as 512KiB, 25MiB, 10MB or 1048576, got"

    @Test(arguments: [
        ("", "\(generic) \"\""),
        ("25mib", "\(generic) \"25mib\""),
        ("25 MiB", "\(generic) \"25 MiB\""),
        ("1.5MiB", "\(generic) \"1.5MiB\""),
        ("-1", "\(generic) \"-1\""),
        ("MiB", "\(generic) \"MiB\""),
        ("10TB", "\(generic) \"10TB\""),
        ("99999999999999999999", "\(generic) \"99999999999999999999\" (too large)"),
        ("9999999999999GiB", "\(generic) \"9999999999999GiB\" (too large)"),
    ])
    func rejects(text: String, expected: String) {
        #expect(message(ByteSize.init(parsing:), text) == expected)
    }

    @Test(arguments: [
        (32 << 20, "32MiB"), (10_000_000, "10MB"), (1 << 30, "1GiB"), (1_536, "1536B"), (3_072, "3KiB"), (0, "0B"),
    ])
    func describes(bytes: Int, expected: String) {
        #expect(ByteSize(bytes: bytes).description == expected)
    }
}

@Suite("Rates")
struct RateTests {
    @Test(arguments: [
        ("300/min", 300, Duration.seconds(60), 5.0),
        ("20/s", 20, .seconds(1), 20.0),
        ("1800/h", 1_800, .seconds(3_600), 0.5),
        ("86400/d", 86_400, .seconds(86_400), 1.0),
        ("1000000000/s", 1_000_000_000, .seconds(1), 1e9),
    ])
    func parses(text: String, count: Int, per: Duration, perSecond: Double) throws {
        let rate = try Rate(parsing: text)
        #expect(rate == Rate(count: count, per: per))
        #expect(rate.perSecond == perSecond)
        #expect(rate.description == text)
    }

    static let generic = "expected a rate such as 20/s, 300/min, 1000/h or 50000/d, got"

    @Test(arguments: [
        ("300", "\(generic) \"300\""),
        ("300/m", "\(generic) \"300/m\" (write /min for per minute)"),
        ("300/minute", "\(generic) \"300/minute\""),
        ("300 / min", "\(generic) \"300 / min\""),
        ("/min", "\(generic) \"/min\""),
        ("1.5/s", "\(generic) \"1.5/s\""),
        ("-1/s", "\(generic) \"-1/s\""),
        ("0/min", "expected a positive rate, got \"0/min\""),
        ("1000000001/s", "expected a rate of at most 1000000000 per unit, got \"1000000001/s\""),
        ("99999999999999999999/s", "expected a rate of at most 1000000000 per unit, got \"99999999999999999999/s\""),
    ])
    func rejects(text: String, expected: String) {
        #expect(message(Rate.init(parsing:), text) == expected)
    }

    @Test func describesOtherPeriodsAsDurations() {
        #expect(Rate(count: 10, per: .seconds(300)).description == "10/5m")
        #expect(Rate(count: 10, per: .seconds(300)).perSecond == 10.0 / 300.0)
    }
}

@Suite("Host and port")
struct HostPortTests {
    @Test(arguments: [
        ("mail.example.com:25", "mail.example.com", 25, "mail.example.com:25"),
        ("MAIL.Example.COM:587", "mail.example.com", 587, "mail.example.com:587"),
        ("localhost:6379", "localhost", 6_379, "localhost:6379"),
        ("redis_1:6379", "redis_1", 6_379, "redis_1:6379"),
        ("192.0.2.1:65535", "192.0.2.1", 65_535, "192.0.2.1:65535"),
        ("[2001:db8::1]:25", "2001:db8::1", 25, "[2001:db8::1]:25"),
        ("[2001:DB8:0:0::1]:1", "2001:db8::1", 1, "[2001:db8::1]:1"),
        ("[::1]:8025", "::1", 8_025, "[::1]:8025"),
    ])
    func parses(text: String, host: String, port: Int, description: String) throws {
        let parsed = try HostPort(parsing: text)
        #expect(parsed == HostPort(host: host, port: port))
        #expect(parsed.description == description)
    }

    static let generic = "expected host:port such as mail.example.com:25, 192.0.2.1:25 or [2001:db8::1]:25, got"

    @Test(arguments: [
        ("localhost", "\(generic) \"localhost\" (missing :port)"),
        (":25", "\(generic) \":25\" (missing host)"),
        ("2001:db8::1:25", "\(generic) \"2001:db8::1:25\" (write an IPv6 address in brackets, such as [2001:db8::1]:25)"),
        ("[2001:db8::1]", "\(generic) \"[2001:db8::1]\" (missing :port)"),
        ("[2001:db8::1:25", "\(generic) \"[2001:db8::1:25\" (missing ])"),
        ("[10.0.0.1]:25", "\(generic) \"[10.0.0.1]:25\" (\"10.0.0.1\" is not an IPv6 address)"),
        ("999.1.1.1:25", "\(generic) \"999.1.1.1:25\" (\"999.1.1.1\" is not an IPv4 address)"),
        ("-host:25", "\(generic) \"-host:25\" (a label starts or ends with a hyphen)"),
        ("ho st:25", "\(generic) \"ho st:25\" (a space is not allowed)"),
        ("exa..mple:25", "\(generic) \"exa..mple:25\" (empty label)"),
        ("host:", "expected a port between 1 and 65535, got \"host:\""),
        ("host:0", "expected a port between 1 and 65535, got \"host:0\""),
        ("host:65536", "expected a port between 1 and 65535, got \"host:65536\""),
        ("host:+25", "expected a port between 1 and 65535, got \"host:+25\""),
        ("host:smtp", "expected a port between 1 and 65535, got \"host:smtp\""),
    ])
    func rejects(text: String, expected: String) {
        #expect(message(HostPort.init(parsing:), text) == expected)
    }
}

@Suite("Networks")
struct CIDRNetworkTests {
    @Test(arguments: [
        ("10.0.0.0/8", "10.0.0.0/8", 8),
        ("192.0.2.1", "192.0.2.1/32", 32),
        ("0.0.0.0/0", "0.0.0.0/0", 0),
        ("2001:db8::/32", "2001:db8::/32", 32),
        ("2001:DB8:0::/48", "2001:db8::/48", 48),
        ("::1", "::1/128", 128),
        ("::/0", "::/0", 0),
    ])
    func parses(text: String, description: String, prefixLength: Int) throws {
        let network = try CIDRNetwork(parsing: text)
        #expect(network.description == description)
        #expect(network.prefixLength == prefixLength)
    }

    static let generic = "expected a network such as 10.0.0.0/8, 2001:db8::/32 or 192.0.2.1, got"

    @Test(arguments: [
        ("10.0.0.0/33", "expected a prefix length between 0 and 32, got \"10.0.0.0/33\""),
        ("2001:db8::/129", "expected a prefix length between 0 and 128, got \"2001:db8::/129\""),
        ("10.0.0.0/", "expected a prefix length between 0 and 32, got \"10.0.0.0/\""),
        ("10.0.0.0/-1", "expected a prefix length between 0 and 32, got \"10.0.0.0/-1\""),
        ("10.0.0.0/8/8", "expected a prefix length between 0 and 32, got \"10.0.0.0/8/8\""),
        ("10.1.2.3/8", "expected no address bits set after the prefix (did you mean 10.0.0.0/8?), got \"10.1.2.3/8\""),
        ("172.17.0.0/12",
         "expected no address bits set after the prefix (did you mean 172.16.0.0/12?), got \"172.17.0.0/12\""),
        ("2001:db8::1/32",
         "expected no address bits set after the prefix (did you mean 2001:db8::/32?), got \"2001:db8::1/32\""),
        ("10.0.0/8", "\(generic) \"10.0.0/8\""),
        ("300.1.1.1/8", "\(generic) \"300.1.1.1/8\""),
        ("example.com/8", "\(generic) \"example.com/8\""),
        ("10.0.0.1\u{0}garbage", "\(generic) \"10.0.0.1\\u{0000}garbage\""),
        ("", "\(generic) \"\""),
    ])
    func rejects(text: String, expected: String) {
        #expect(message(CIDRNetwork.init(parsing:), text) == expected)
    }

    @Test(arguments: [
        ("10.0.0.0/8", "10.1.2.3", true),
        ("10.0.0.0/8", "10.255.255.255", true),
        ("10.0.0.0/8", "11.0.0.1", false),
        ("10.0.0.0/8", "9.255.255.255", false),
        ("172.16.0.0/12", "172.31.255.255", true),
        ("172.16.0.0/12", "172.32.0.0", false),
        ("192.0.2.1", "192.0.2.1", true),
        ("192.0.2.1", "192.0.2.2", false),
        ("0.0.0.0/0", "255.255.255.255", true),
        ("10.0.0.0/8", "::ffff:10.1.2.3", true),
        ("10.0.0.0/8", "::ffff:11.1.2.3", false),
        ("10.0.0.0/8", "2001:db8::1", false),
        ("2001:db8::/32", "2001:db8:1::5", true),
        ("2001:db8::/32", "2001:DB8::", true),
        ("2001:db8::/32", "2001:db9::", false),
        ("2001:db8::/32", "10.0.0.1", false),
        ("::/0", "::1", true),
        ("10.0.0.0/8", "not an address", false),
        ("10.0.0.0/8", "10.1.2.3/32", false),
        ("10.0.0.0/8", "", false),
    ])
    func contains(network: String, address: String, expected: Bool) throws {
        #expect(try CIDRNetwork(parsing: network).contains(address) == expected)
    }
}

@Suite("Names")
struct NameTests {
    static let label63 = String(repeating: "a", count: 63)
    static let name253 = String([String](repeating: label63, count: 4).joined(separator: ".").dropLast(2))

    @Test(arguments: [
        ("example.com", "example.com"),
        ("Mail.Example.COM", "mail.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c", "a-b.c"),
        ("localhost", "localhost"),
        ("\(label63).example", "\(label63).example"),
        (name253, name253),
    ])
    func acceptsDomains(text: String, expected: String) throws {
        #expect(try ConfigSyntax.domainName(text) == expected)
    }

    static let generic = "expected a domain name such as example.com, got"

    @Test(arguments: [
        ("", "\(generic) \"\" (empty)"),
        ("*.example.com", "\(generic) \"*.example.com\" (wildcards are not supported)"),
        ("example.com.", "\(generic) \"example.com.\" (remove the trailing dot)"),
        ("exa_mple.com", "\(generic) \"exa_mple.com\" (\"_\" is not allowed)"),
        ("exam ple.com", "\(generic) \"exam ple.com\" (a space is not allowed)"),
        ("bücher.example", "\(generic) \"bücher.example\" (\"ü\" is not allowed)"),
        ("-example.com", "\(generic) \"-example.com\" (a label starts or ends with a hyphen)"),
        ("example-.com", "\(generic) \"example-.com\" (a label starts or ends with a hyphen)"),
        ("exa..mple", "\(generic) \"exa..mple\" (empty label)"),
        (".", "\(generic) \".\" (empty label)"),
        ("\(label63)a.example", "\(generic) \"\(label63)a.example\" (a label is longer than 63 characters)"),
    ])
    func rejectsDomains(text: String, expected: String) {
        #expect(message(ConfigSyntax.domainName, text) == expected)
    }

    @Test func rejectsDomainsLongerThan253Characters() {
        let name = [String](repeating: "abcdefghi", count: 26).joined(separator: ".")
        #expect(name.count == 259)
        #expect(Self.name253.count == 253)
        #expect(message(ConfigSyntax.domainName, name) ==
                "\(Self.generic) \"\(name.prefix(80))…\" (longer than 253 characters)")
    }

    @Test(arguments: ["acme", "a", "0day", "acme_corp-eu", String(repeating: "t", count: 48)])
    func acceptsTenantNames(name: String) throws {
        #expect(try ConfigSyntax.tenantName(name) == name)
    }

    @Test(arguments: ["", "Acme", "-acme", "_acme", "acme.eu", "acme corp", "ácme", String(repeating: "t", count: 49)])
    func rejectsTenantNames(name: String) {
        #expect(message(ConfigSyntax.tenantName, name) == "expected a tenant name matching [a-z0-9][a-z0-9_-]{0,47} "
                + "(it becomes part of Kafka topic names), got \"\(name)\"")
    }

    @Test(arguments: [
        ("192.0.2.1", "192.0.2.1"), ("2001:DB8:0:0::1", "2001:db8::1"), ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    ])
    func acceptsIPAddresses(text: String, expected: String) throws {
        #expect(try ConfigSyntax.ipAddress(text) == expected)
    }

    @Test(arguments: ["192.0.2", "192.0.2.1/32", "host.example", "1.2.3.4\u{0}", ""])
    func rejectsIPAddresses(text: String) {
        #expect(message(ConfigSyntax.ipAddress, text)?.hasPrefix(
            "expected an IP address such as 192.0.2.1 or 2001:db8::1, got ") == true)
    }
}

@Suite("Kafka topics")
struct KafkaTopicTests {
    @Test func tenantTopicsAndTheirPattern() {
        let kafka = SmarthostConfiguration.KafkaSettings(brokers: [], topicPrefix: "mail.prod")
        #expect(kafka.tenantTopic(for: "acme") == "mail.prod.acme")
        #expect(kafka.tenantTopicPattern == #"^mail\.prod\..*"#)
        #expect(kafka.eventsTopic == "mail.prod-events")
        #expect(SmarthostConfiguration.KafkaSettings(brokers: []).tenantTopicPattern == #"^smarthost\..*"#)
    }
}
