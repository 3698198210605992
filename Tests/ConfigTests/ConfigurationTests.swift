import Foundation
import SmarthostConfig
import Testing

typealias Configuration = SmarthostConfiguration

/// The repository's root directory, found from this file's path.
private let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The text of the error `parse` throws for `yaml` (named t.yaml), or nil if it parses.
private func errorText(_ yaml: String) -> String? {
    do {
        _ = try Configuration.parse(yaml: yaml, fileName: "t.yaml")
        return nil
    } catch {
        return error.description
    }
}

@Suite("Valid files")
struct ValidConfigurationTests {
    @Test func theExampleFileParsesToExactlyTheseValues() throws {
        let path = repositoryRoot.appendingPathComponent("cluster/config-example.yaml").path
        let configuration = try Configuration.load(path: path)
        let expected = Configuration(
            node: .init(id: "delivery-1", logLevel: .notice, logFormat: .json,
                        adminListen: HostPort(host: "0.0.0.0", port: 8_025), spoolDirectory: "/var/spool/smarthost"),
            kafka: .init(
                brokers: [HostPort(host: "kafka-1.internal", port: 9_092), HostPort(host: "kafka-2.internal", port: 9_092),
                          HostPort(host: "2001:db8::10", port: 9_092)],
                topicPrefix: "smarthost", eventsTopic: "smarthost-events", deliveryTimeout: .seconds(15),
                maxInFlight: 10_000, maxRecordSize: ByteSize(bytes: 32 << 20), consumerGroup: "smarthost-delivery",
                sessionTimeout: .seconds(30), metadataRefresh: .seconds(30),
                clientOptions: ["security.protocol": "ssl", "ssl.ca.location": "/etc/smarthost/kafka-ca.pem"]),
            redis: .init(address: HostPort(host: "redis.internal", port: 6_379), poolSize: 8,
                         connectTimeout: .seconds(1), commandTimeout: .milliseconds(250), keyPrefix: "smarthost:",
                         password: "change me", database: 0),
            pools: [
                "shared": .init(name: "shared", sourceAddress: nil, ehloName: "mta1.relay.example.net"),
                "acme-dedicated": .init(name: "acme-dedicated", sourceAddress: "192.0.2.25",
                                        ehloName: "mta2.relay.example.net"),
            ],
            trafficClasses: [
                "transactional": .init(name: "transactional", firstRetry: .seconds(30), retryMultiplier: 2.0,
                                       maxRetryInterval: .seconds(1_800), expiry: .seconds(6 * 3_600)),
                "bulk": .init(name: "bulk", firstRetry: .seconds(300), retryMultiplier: 2.0,
                              maxRetryInterval: .seconds(3_600), expiry: .seconds(2 * 86_400)),
                "marketing": .init(name: "marketing", firstRetry: .seconds(900), retryMultiplier: 1.5,
                                   maxRetryInterval: .seconds(4 * 3_600), expiry: .seconds(3 * 86_400)),
            ],
            tenants: [
                "acme": .init(
                    name: "acme",
                    trustedNetworks: [try CIDRNetwork(parsing: "10.20.0.0/16"), try CIDRNetwork(parsing: "2001:db8:ac::/48")],
                    senderDomains: ["acme.example", "mail.acme.example"], maxMessageSize: ByteSize(bytes: 20 << 20),
                    maxRecipients: 500, messageRate: Rate(count: 300, per: .seconds(60)), lane: .high,
                    trafficClass: "transactional", pool: "acme-dedicated"),
                "globex": .init(
                    name: "globex", trustedNetworks: [try CIDRNetwork(parsing: "192.0.2.0/24")], senderDomains: [],
                    maxMessageSize: ByteSize(bytes: 25 << 20), maxRecipients: 100, messageRate: nil, lane: .low,
                    trafficClass: "marketing", pool: "shared"),
                "initech": .init(
                    name: "initech", trustedNetworks: [], senderDomains: [], maxMessageSize: ByteSize(bytes: 25 << 20),
                    maxRecipients: 100, messageRate: nil, lane: .normal, trafficClass: "bulk", pool: nil),
            ],
            routes: [
                .init(domain: "partner.example", nextHop: HostPort(host: "mx.partner.example", port: 2_525),
                      requireTLS: true),
                .init(domain: "legacy.example", nextHop: HostPort(host: "198.51.100.7", port: 25), requireTLS: false),
            ],
            delivery: .init(defaultNextHop: nil, maxMessagesPerConnection: 50),
            limits: [
                .init(scope: .init(pool: "shared", domain: "gmail.com", tenant: nil), maxConnections: 20,
                      maxMessageRate: Rate(count: 300, per: .seconds(60)), maxMessagesPerConnection: nil,
                      maxMessagesPerHour: nil, maxMessagesPerDay: nil),
                .init(scope: .init(pool: nil, domain: "yahoo.com", tenant: nil), maxConnections: 10,
                      maxMessageRate: nil, maxMessagesPerConnection: nil, maxMessagesPerHour: 20_000,
                      maxMessagesPerDay: nil),
                .init(scope: .init(pool: nil, domain: nil, tenant: "globex"), maxConnections: nil,
                      maxMessageRate: nil, maxMessagesPerConnection: nil, maxMessagesPerHour: nil,
                      maxMessagesPerDay: 500_000),
            ])
        #expect(configuration == expected)
        #expect(configuration.kafka.tenantTopic(for: "acme") == "smarthost.acme")
        #expect(configuration.tenants["acme"]?.trustedNetworks.first?.contains("10.20.3.4") == true)
    }

    @Test func theDocumentationShowsTheExampleFileVerbatim() throws {
        let example = try String(contentsOf: repositoryRoot.appendingPathComponent("cluster/config-example.yaml"),
                                 encoding: .utf8)
        let documentation = try String(contentsOf: repositoryRoot.appendingPathComponent("docs/configuration.md"),
                                       encoding: .utf8)
        #expect(documentation.contains("```yaml\n" + example + "```\n"))
    }

    @Test func aMinimalFileGetsEveryDefault() throws {
        let configuration = try Configuration.parse(yaml: """
            node: {id: n1}
            kafka: {brokers: [localhost:9092]}
            redis: {address: localhost:6379}
            tenants: {acme: {}}
            """, fileName: "t.yaml")
        let expected = Configuration(
            node: .init(id: "n1", logLevel: .info, logFormat: .json, adminListen: HostPort(host: "127.0.0.1", port: 8_025),
                        spoolDirectory: "/var/spool/smarthost"),
            kafka: .init(brokers: [HostPort(host: "localhost", port: 9_092)], topicPrefix: "smarthost",
                         eventsTopic: "smarthost-events", deliveryTimeout: .seconds(10), maxInFlight: 10_000,
                         maxRecordSize: ByteSize(bytes: 32 << 20), consumerGroup: "smarthost-delivery",
                         sessionTimeout: .seconds(10), metadataRefresh: .seconds(30), clientOptions: [:]),
            redis: .init(address: HostPort(host: "localhost", port: 6_379), poolSize: 4, connectTimeout: .seconds(1),
                         commandTimeout: .milliseconds(500), keyPrefix: "smarthost:", password: nil, database: 0),
            pools: [:],
            trafficClasses: [
                "transactional": .init(name: "transactional", firstRetry: .seconds(60), retryMultiplier: 2.0,
                                       maxRetryInterval: .seconds(3_600), expiry: .seconds(6 * 3_600)),
                "bulk": .init(name: "bulk", firstRetry: .seconds(300), retryMultiplier: 2.0,
                              maxRetryInterval: .seconds(3_600), expiry: .seconds(2 * 86_400)),
            ],
            tenants: [
                "acme": .init(name: "acme", trustedNetworks: [], senderDomains: [],
                              maxMessageSize: ByteSize(bytes: 25 << 20), maxRecipients: 100, messageRate: nil,
                              lane: .normal, trafficClass: "bulk", pool: nil),
            ],
            routes: [],
            delivery: .init(defaultNextHop: nil, maxMessagesPerConnection: 100),
            limits: [])
        #expect(configuration == expected)
    }

    @Test func everyKeySetToItsBound() throws {
        let configuration = try Configuration.parse(yaml: """
            node:
              id: "node.1_A-b"
              log_level: critical
              log_format: text
              admin_listen: "[::1]:9000"
              spool_dir: /srv/spool with space
            kafka:
              brokers: [k:1]
              topic_prefix: mail.prod
              events_topic: mail.prod-events.v2
              delivery_timeout: 300s
              max_in_flight: 1000000
              max_record_size: 1GiB
              consumer_group: delivery.eu
              session_timeout: 1s
              metadata_refresh: 1h
              client_options:
                sasl.username: no
                sasl.password: "*s3cr&t*"
            redis:
              address: r:1
              pool_size: 64
              connect_timeout: 10ms
              command_timeout: 60s
              key_prefix: "{mail}:"
              password: "yes"
              database: 15
            traffic_classes:
              bulk:
                retry_multiplier: 10
                max_retry_interval: 7d
                expiry: 30d
              fast:
                first_retry: 1s
                max_retry_interval: 1s
                expiry: 1m
            tenants:
              "0":
                max_message_size: 1KiB
                max_recipients: 10000
                message_rate: 1000000000/d
                traffic_class: fast
            delivery:
              default_next_hop: relay.example.net:587
              max_messages_per_connection: 10000
              max_connections_per_site: 1000
              ready_queue_size: 1
              connect_timeout: 100ms
              command_timeout: 3600s
              tls: disabled
              event_log_max_size: 16GiB
              event_log_keep: 1
              max_queued: 100000000
              smtp_port: 65535
              send_dsn: false
              delay_notice_after: 30d
              default_response_rules: false
            dns:
              resolvers: ["127.0.0.1:5353", "[::1]:53"]
              timeout: 60s
              minimum_ttl: 1s
              maximum_ttl: 7d
              failure_ttl: 1h
            response_rules:
              - name: yahoo-TS03
                code: 4xx
                enhanced: "4.7.*"
                text: '(?i)\\[TS0[1-3]\\]'
                action: retry_later
                delay: 7d
            limits:
              - tenant: "0"
                max_messages_per_hour: 1000000000
                max_messages_per_day: 1
              - site: "*"
                max_connections: 10000
                max_messages_per_connection: 1
            """, fileName: "t.yaml")
        #expect(configuration.node == .init(id: "node.1_A-b", logLevel: .critical, logFormat: .text,
                                            adminListen: HostPort(host: "::1", port: 9_000),
                                            spoolDirectory: "/srv/spool with space"))
        #expect(configuration.kafka.eventsTopic == "mail.prod-events.v2")
        #expect(configuration.kafka.maxRecordSize == .gibibytes(1))
        #expect(configuration.kafka.clientOptions == ["sasl.username": "no", "sasl.password": "*s3cr&t*"])
        #expect(configuration.redis == .init(address: HostPort(host: "r", port: 1), poolSize: 64,
                                             connectTimeout: .milliseconds(10), commandTimeout: .seconds(60),
                                             keyPrefix: "{mail}:", password: "yes", database: 15))
        #expect(configuration.trafficClasses["bulk"] == .init(name: "bulk", firstRetry: .seconds(300),
                                                                retryMultiplier: 10, maxRetryInterval: .seconds(7 * 86_400),
                                                                expiry: .seconds(30 * 86_400)))
        #expect(configuration.trafficClasses["fast"]?.expiry == .seconds(60))
        #expect(configuration.trafficClasses.keys.sorted() == ["bulk", "fast", "transactional"])
        #expect(configuration.tenants["0"]?.messageRate == Rate(count: 1_000_000_000, per: .seconds(86_400)))
        #expect(configuration.delivery.defaultNextHop == HostPort(host: "relay.example.net", port: 587))
        #expect(configuration.delivery.maxConnectionsPerSite == 1_000 && configuration.delivery.readyQueueSize == 1)
        #expect(configuration.delivery.connectTimeout == .milliseconds(100) && configuration.delivery.commandTimeout == .seconds(3_600))
        #expect(configuration.delivery.tls == .disabled && configuration.delivery.eventLogKeep == 1)
        #expect(configuration.delivery.eventLogMaxSize == .gibibytes(16) && configuration.delivery.maxQueued == 100_000_000)
        #expect(configuration.limits.first?.maxMessagesPerDay == 1)
        #expect(configuration.delivery.smtpPort == 65_535 && !configuration.delivery.sendDSN)
        #expect(configuration.delivery.delayNoticeAfter == .seconds(30 * 86_400) && !configuration.delivery.defaultResponseRules)
        #expect(configuration.dns == .init(resolvers: [HostPort(host: "127.0.0.1", port: 5_353), HostPort(host: "::1", port: 53)],
                                           timeout: .seconds(60), minimumTTL: .seconds(1), maximumTTL: .seconds(7 * 86_400),
                                           failureTTL: .seconds(3_600)))
        #expect(configuration.responseRules == [.init(name: "yahoo-TS03", code: .init("4xx"), enhanced: .init("4.7.*"),
                                                      text: "(?i)\\[TS0[1-3]\\]", action: .retryLater, delay: .seconds(7 * 86_400))])
        #expect(configuration.effectiveResponseRules == configuration.responseRules, "default_response_rules: false")
    }

    @Test func aByteOrderMarkAndCRLFLineEndingsChangeNoPosition() {
        #expect(errorText("\u{FEFF}node:\r\n  id: n1\r\n  idd: x\r\n") == """
            t.yaml:1:1: missing required key "kafka"
            t.yaml:1:1: missing required key "redis"
            t.yaml:1:1: missing required key "tenants"
            t.yaml:3:3: node.idd: unknown key (did you mean "id"?)
            """)
    }
}

/// A broken file and the exact error for it.
struct BadCase: Sendable, CustomTestStringConvertible {
    let name: String
    let yaml: String
    let error: String
    /// Whether the sections the case does not define itself are added after its text.
    var completed = true

    var testDescription: String { name }

    static let requiredSections = [
        ("node", "node:\n  id: n1\n"),
        ("kafka", "kafka:\n  brokers: [localhost:9092]\n"),
        ("redis", "redis:\n  address: localhost:6379\n"),
        ("tenants", "tenants:\n  acme: {}\n"),
    ]

    /// The case's text followed by the required sections it does not define, so that positions in
    /// the expected errors are positions in the case's own text.
    var text: String {
        guard completed else { return yaml }
        let defined = Set(yaml.split(separator: "\n").compactMap { line in
            line.first?.isLetter == true ? line.split(separator: ":").first.map(String.init) : nil
        })
        var text = yaml + "\n"
        for (section, lines) in Self.requiredSections where !defined.contains(section) {
            text += lines
        }
        return text
    }
}

@Suite("Invalid files")
struct InvalidConfigurationTests {
    static let sections = "node, kafka, redis, pools, traffic_classes, tenants, routes, delivery, ingress, limits, dns, response_rules, shaping, reconciliation, testing"
    static let anchors = "YAML anchors (&name) and aliases (*name) are not supported; write the value out in full"

    static let cases: [BadCase] = [
        // Keys
        BadCase(name: "unknown key with a suggestion", yaml: "node:\n  id: n1\n  lgo_level: info",
                error: #"t.yaml:3:3: node.lgo_level: unknown key (did you mean "log_level"?)"#),
        BadCase(name: "unknown key without a suggestion", yaml: "node:\n  id: n1\n  colour: blue",
                error: "t.yaml:3:3: node.colour: unknown key (expected one of id, log_level, log_format, admin_listen, spool_dir, admin_token)"),
        BadCase(name: "unknown section", yaml: "tenant:\n  x: {}",
                error: #"t.yaml:1:1: tenant: unknown key (did you mean "tenants"?)"#),
        BadCase(name: "duplicate key", yaml: "node:\n  id: n1\n  id: n2",
                error: "t.yaml:3:3: node.id: duplicate key (first defined at 2:3)"),
        BadCase(name: "duplicate section", yaml: "node:\n  id: a\nnode:\n  id: b",
                error: "t.yaml:3:1: node: duplicate key (first defined at 1:1)"),
        BadCase(name: "duplicate keys in a flow map", yaml: "node: {id: a, id: b, id: c}",
                error: "t.yaml:1:15: node.id: duplicate key (first defined at 1:8)\n"
                    + "t.yaml:1:22: node.id: duplicate key (first defined at 1:8)"),
        BadCase(name: "duplicate key written with an escape", yaml: "\"\\u006Eode\":\n  id: a\nnode:\n  id: b",
                error: #"t.yaml:1:1: duplicate key "node" (each key may appear only once in a map)"#),
        BadCase(name: "missing required key", yaml: "node: {log_level: info}",
                error: #"t.yaml:1:7: node: missing required key "id""#),
        BadCase(name: "missing required section", yaml: "node:\n  id: n1\nkafka:\n  brokers: [k:9092]\nredis:\n  address: r:6379",
                error: #"t.yaml:1:1: missing required key "tenants""#, completed: false),
        BadCase(name: "a list as a key", yaml: "? [a]\n: b",
                error: "t.yaml:1:3: expected a string as key, got a list"),

        // Kinds and scalars
        BadCase(name: "a list where a map is expected", yaml: "node:\n  - id: n1",
                error: "t.yaml:2:3: node: expected a map, got a list"),
        BadCase(name: "an empty section", yaml: "pools:",
                error: "t.yaml:1:7: pools: expected a map of names to settings, got an empty value"),
        BadCase(name: "a string where an integer is expected", yaml: "redis:\n  address: r:6379\n  pool_size: ten",
                error: #"t.yaml:3:14: redis.pool_size: expected an integer between 1 and 64, got "ten""#),
        BadCase(name: "a quoted number", yaml: "redis:\n  address: r:6379\n  pool_size: \"8\"",
                error: #"t.yaml:3:14: redis.pool_size: expected an integer between 1 and 64, got the quoted string "8""#),
        BadCase(name: "a YAML tag", yaml: "redis:\n  address: r:6379\n  pool_size: !!int 8",
                error: "t.yaml:3:14: redis.pool_size: expected an integer between 1 and 64, got a value with the "
                    + "YAML tag !!int (tags are not supported)"),
        BadCase(name: "the Norway problem: no is not false", yaml: "node:\n  id: n1\n  log_format: no",
                error: #"t.yaml:3:15: node.log_format: expected one of json, text, got "no""#),
        BadCase(name: "yes is not a boolean",
                yaml: "routes:\n  - domain: example.com\n    next_hop: a.example.net:25\n    require_tls: yes",
                error: #"t.yaml:4:18: routes[0].require_tls: expected true or false, got "yes""#),
        BadCase(name: "a quoted boolean",
                yaml: "routes:\n  - domain: example.com\n    next_hop: a.example.net:25\n    require_tls: 'true'",
                error: #"t.yaml:4:18: routes[0].require_tls: expected true or false, got the quoted string "true""#),
        BadCase(name: "null", yaml: "redis:\n  address: r:6379\n  password: ~",
                error: "t.yaml:3:13: redis.password: expected a non-empty password (leave the key out for none), got null"),
        BadCase(name: "an unknown choice with a suggestion", yaml: "node:\n  id: n1\n  log_level: debg",
                error: "t.yaml:3:14: node.log_level: expected one of trace, debug, info, notice, warning, error, "
                    + #"critical, got "debg" (did you mean "debug"?)"#),
        BadCase(name: "a node id with a space", yaml: "node:\n  id: \"n 1\"",
                error: #"t.yaml:2:7: node.id: expected a node id matching [A-Za-z0-9._-]{1,64}, got the quoted string "n 1""#),
        BadCase(name: "a relative spool directory", yaml: "node:\n  id: n1\n  spool_dir: var/spool",
                error: #"t.yaml:3:14: node.spool_dir: expected an absolute path such as /var/spool/smarthost, got "var/spool""#),

        // Values
        // Response rules and DNS
        BadCase(name: "a rule without conditions", yaml: "response_rules:\n  - action: bounce",
                error: #"t.yaml:2:5: response_rules[0]: expected at least one of code, enhanced or text to match replies, got none"#),
        BadCase(name: "a rule whose text does not compile", yaml: "response_rules:\n  - text: \"(unclosed\"\n    action: bounce",
                error: #"t.yaml:2:11: response_rules[0].text: expected a regular expression, got "(unclosed", which does not compile"#),
        BadCase(name: "suspend without a delay", yaml: "response_rules:\n  - code: 421\n    action: suspend",
                error: #"t.yaml:2:5: response_rules[0]: action suspend needs a delay (how long to wait)"#),
        BadCase(name: "bounce with a delay", yaml: "response_rules:\n  - code: 421\n    action: bounce\n    delay: 5m",
                error: #"t.yaml:4:12: response_rules[0].delay: action bounce takes no delay; remove it"#),
        BadCase(name: "a reply code out of range", yaml: "response_rules:\n  - code: 6xx\n    action: retry",
                error: #"t.yaml:2:11: response_rules[0].code: expected a reply code such as 421 or 4xx (three characters, digits or x), got "6xx""#),
        BadCase(name: "an enhanced code with two parts", yaml: "response_rules:\n  - enhanced: \"4.7\"\n    action: retry",
                error: #"t.yaml:2:15: response_rules[0].enhanced: expected an enhanced status code such as 4.7.28, 4.7.* or 4.7.65*, got "4.7""#),
        BadCase(name: "an unknown action", yaml: "response_rules:\n  - code: 421\n    action: retry-later",
                error: #"t.yaml:3:13: response_rules[0].action: expected one of retry, retry_later, bounce, suspend, got "retry-later" (did you mean "retry_later"?)"#),
        BadCase(name: "two rules with one name", yaml: "response_rules:\n  - {name: a, code: 421, action: retry}\n  - {name: a, code: 450, action: retry}",
                error: #"t.yaml:3:12: response_rules[1].name: duplicate rule name: "a" is already used by response_rules[0]"#),
        BadCase(name: "a resolver without a port", yaml: "dns:\n  resolvers: [127.0.0.1]",
                error: #"t.yaml:2:15: dns.resolvers[0]: expected host:port such as mail.example.com:25, 192.0.2.1:25 or [2001:db8::1]:25, got "127.0.0.1" (missing :port)"#),
        BadCase(name: "a resolver named, not addressed", yaml: "dns:\n  resolvers: [dns.example:53]",
                error: #"t.yaml:2:15: dns.resolvers[0]: expected a resolver's IP address and port such as 127.0.0.1:53 or [::1]:53, got "dns.example:53""#),
        BadCase(name: "minimum TTL above maximum", yaml: "dns:\n  minimum_ttl: 2h\n  maximum_ttl: 1h",
                error: #"t.yaml:2:3: dns: expected minimum_ttl (2h) to be at most maximum_ttl (1h)"#),
        BadCase(name: "an unknown dns key", yaml: "dns:\n  resolver: [127.0.0.1:53]",
                error: #"t.yaml:2:3: dns.resolver: unknown key (did you mean "resolvers"?)"#),
        BadCase(name: "bad duration", yaml: "kafka:\n  brokers: [k:9092]\n  delivery_timeout: ten",
                error: #"t.yaml:3:21: kafka.delivery_timeout: expected a duration such as 500ms, 10s, 5m, 6h or 2d, got "ten""#),
        BadCase(name: "duration out of range", yaml: "kafka:\n  brokers: [k:9092]\n  delivery_timeout: 10m",
                error: #"t.yaml:3:21: kafka.delivery_timeout: expected a duration between 1s and 5m, got "10m""#),
        BadCase(name: "fractional duration", yaml: "kafka:\n  brokers: [k:9092]\n  session_timeout: 1.5s",
                error: #"t.yaml:3:20: kafka.session_timeout: expected a duration without a fraction (write 1500ms), got "1.5s""#),
        BadCase(name: "zero duration", yaml: "redis:\n  address: r:6379\n  connect_timeout: 0s",
                error: #"t.yaml:3:20: redis.connect_timeout: expected a positive duration, got "0s""#),
        BadCase(name: "bad byte size", yaml: "kafka:\n  brokers: [k:9092]\n  max_record_size: 32 MB",
                error: "t.yaml:3:20: kafka.max_record_size: expected a byte size such as 512KiB, 25MiB, 10MB or 1048576, "
                    + #"got "32 MB""#),
        BadCase(name: "byte size out of range", yaml: "tenants:\n  acme:\n    max_message_size: 2GiB",
                error: #"t.yaml:3:23: tenants.acme.max_message_size: expected a byte size between 1KiB and 1GiB, got "2GiB""#),
        BadCase(name: "bad rate", yaml: "tenants:\n  acme:\n    message_rate: 300/m",
                error: "t.yaml:3:19: tenants.acme.message_rate: expected a rate such as 20/s, 300/min, 1000/h or 50000/d, "
                    + #"got "300/m" (write /min for per minute)"#),
        BadCase(name: "address without a port", yaml: "redis:\n  address: localhost",
                error: "t.yaml:2:12: redis.address: expected host:port such as mail.example.com:25, 192.0.2.1:25 or "
                    + #"[2001:db8::1]:25, got "localhost" (missing :port)"#),
        BadCase(name: "port out of range", yaml: "redis:\n  address: localhost:70000",
                error: #"t.yaml:2:12: redis.address: expected a port between 1 and 65535, got "localhost:70000""#),
        BadCase(name: "IPv6 address without brackets", yaml: "kafka:\n  brokers: [\"2001:db8::1:9092\"]",
                error: "t.yaml:2:13: kafka.brokers[0]: expected host:port such as mail.example.com:25, 192.0.2.1:25 or "
                    + #"[2001:db8::1]:25, got "2001:db8::1:9092" (write an IPv6 address in brackets, such as [2001:db8::1]:25)"#),
        BadCase(name: "CIDR prefix too long", yaml: "tenants:\n  acme:\n    trusted_networks: [10.0.0.0/33]",
                error: #"t.yaml:3:24: tenants.acme.trusted_networks[0]: expected a prefix length between 0 and 32, got "10.0.0.0/33""#),
        BadCase(name: "CIDR with host bits", yaml: "tenants:\n  acme:\n    trusted_networks:\n      - 10.0.0.0/8\n      - 10.1.2.3/8",
                error: "t.yaml:5:9: tenants.acme.trusted_networks[1]: expected no address bits set after the prefix "
                    + #"(did you mean 10.0.0.0/8?), got "10.1.2.3/8""#),
        BadCase(name: "CIDR with a bad address", yaml: "tenants:\n  acme:\n    trusted_networks: [300.1.1.1/8]",
                error: "t.yaml:3:24: tenants.acme.trusted_networks[0]: expected a network such as 10.0.0.0/8, "
                    + #"2001:db8::/32 or 192.0.2.1, got "300.1.1.1/8""#),
        BadCase(name: "bad domain", yaml: "tenants:\n  acme:\n    sender_domains: [exa_mple.com]",
                error: "t.yaml:3:22: tenants.acme.sender_domains[0]: expected a domain name such as example.com, "
                    + #"got "exa_mple.com" ("_" is not allowed)"#),
        BadCase(name: "wildcard domain", yaml: "routes:\n  - domain: \"*.example.com\"\n    next_hop: smtp.example.net:25",
                error: "t.yaml:2:13: routes[0].domain: expected a domain name such as example.com, "
                    + #"got "*.example.com" (wildcards are not supported)"#),
        BadCase(name: "unquoted wildcard domain", yaml: "routes:\n  - domain: *.example.com\n    next_hop: smtp.example.net:25",
                error: "t.yaml:2:14: YAML syntax error: did not find expected alphabetic or numeric character "
                    + "(while scanning an alias at 2:13); quote values that start with * or &"),
        BadCase(name: "bad tenant name", yaml: "tenants:\n  Acme: {}",
                error: "t.yaml:2:3: tenants.Acme: expected a tenant name matching [a-z0-9][a-z0-9_-]{0,47} "
                    + #"(it becomes part of Kafka topic names), got "Acme""#),
        BadCase(name: "a password instead of its hash",
                yaml: "tenants:\n  acme:\n    credentials:\n      - username: app\n        password_hash: hunter2",
                error: "t.yaml:5:24: tenants.acme.credentials[0].password_hash: expected a scrypt hash such as "
                    + "$scrypt$ln=14,r=8,p=1$<salt>$<hash> (see `smarthost hash-password`)"),
        BadCase(name: "a hash asking for too much memory",
                yaml: "tenants:\n  acme:\n    credentials:\n      - username: app\n        password_hash: "
                    + "$scrypt$ln=20,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                error: "t.yaml:5:24: tenants.acme.credentials[0].password_hash: scrypt parameters out of range "
                    + "(ln 10-24, r 1-32, p 1-16, at most 256 MiB)"),
        BadCase(name: "a login without a hash", yaml: "tenants:\n  acme:\n    credentials:\n      - username: app",
                error: #"t.yaml:4:9: tenants.acme.credentials[0]: missing required key "password_hash""#),
        BadCase(name: "a username with a space",
                yaml: "tenants:\n  acme:\n    credentials:\n      - username: my app\n        password_hash: "
                    + "$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                error: "t.yaml:4:19: tenants.acme.credentials[0].username: expected a username of 1 to 128 characters "
                    + #"from A-Z a-z 0-9 . _ @ + -, got "my app""#),
        BadCase(name: "one username in two tenants",
                yaml: "tenants:\n  acme:\n    credentials:\n      - username: app\n        password_hash: "
                    + "$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n  globex:\n    credentials:\n"
                    + "      - username: app\n        password_hash: $scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                error: "t.yaml:8:19: tenants.globex.credentials[0].username: duplicate username: \"app\" is already "
                    + "a login of tenants.acme.credentials[0]"),
        BadCase(name: "auth failure limit out of range", yaml: "ingress:\n  auth_failure_limit: 0",
                error: #"t.yaml:2:23: ingress.auth_failure_limit: expected an integer between 1 and 1000, got "0""#),
        BadCase(name: "command timeout out of range", yaml: "ingress:\n  command_timeout: 2h",
                error: #"t.yaml:2:20: ingress.command_timeout: expected a duration between 1s and 1h, got "2h""#),
        BadCase(name: "auth over plaintext not a boolean",
                yaml: "ingress:\n  listeners:\n    - address: 127.0.0.1:2525\n      auth_over_plaintext: yes",
                error: #"t.yaml:4:28: ingress.listeners[0].auth_over_plaintext: expected true or false, got "yes""#),
        BadCase(name: "integer out of range", yaml: "tenants:\n  acme:\n    max_recipients: 0",
                error: #"t.yaml:3:21: tenants.acme.max_recipients: expected an integer between 1 and 10000, got "0""#),
        BadCase(name: "integer overflow", yaml: "redis:\n  address: r:6379\n  database: 99999999999999999999",
                error: #"t.yaml:3:13: redis.database: expected an integer between 0 and 15, got "99999999999999999999""#),
        BadCase(name: "retry multiplier below 1", yaml: "traffic_classes:\n  bulk:\n    retry_multiplier: 0.5",
                error: #"t.yaml:3:23: traffic_classes.bulk.retry_multiplier: expected a number between 1.0 and 10.0, got "0.5""#),
        BadCase(name: "empty brokers list", yaml: "kafka:\n  brokers: []",
                error: "t.yaml:2:12: kafka.brokers: expected a non-empty list of host:port addresses, got an empty list"),
        BadCase(name: "managed librdkafka options",
                yaml: "kafka:\n  brokers: [k:9092]\n  client_options:\n    acks: \"1\"\n    bootstrap.servers: x:1",
                error: "t.yaml:4:5: kafka.client_options.acks: cannot be changed: ingress nodes answer 250 only after "
                    + "all in-sync replicas have the message\n"
                    + "t.yaml:5:5: kafka.client_options.bootstrap.servers: is set from kafka.brokers; remove it here"),

        // Across sections
        BadCase(name: "events topic among the tenant topics", yaml: "kafka:\n  brokers: [k:9092]\n  events_topic: smarthost.events",
                error: "t.yaml:3:17: kafka.events_topic: expected a topic name that does not start with \"smarthost.\" "
                    + #"(delivery nodes consume every topic matching ^smarthost\..*), got "smarthost.events""#),
        BadCase(name: "unknown pool", yaml: "tenants:\n  acme:\n    pool: missing-pool",
                error: #"t.yaml:3:11: tenants.acme.pool: expected a pool defined under pools (none are defined), got "missing-pool""#),
        BadCase(name: "unknown traffic class", yaml: "tenants:\n  acme:\n    traffic_class: transactionl",
                error: "t.yaml:3:20: tenants.acme.traffic_class: expected a traffic class defined under traffic_classes "
                    + #"(bulk, transactional), got "transactionl" (did you mean "transactional"?)"#),
        BadCase(name: "unknown tenant in a limit", yaml: "limits:\n  - tenant: globex\n    max_message_rate: 5/s",
                error: #"t.yaml:2:13: limits[0].tenant: expected a tenant defined under tenants (acme), got "globex""#),
        BadCase(name: "message size not below the record size",
                yaml: "kafka:\n  brokers: [k:9092]\n  max_record_size: 16MiB\ntenants:\n  acme:\n    max_message_size: 20MiB\n  beta: {}",
                error: "t.yaml:6:23: tenants.acme.max_message_size: expected a byte size smaller than "
                    + "kafka.max_record_size (16MiB) because a message travels in one Kafka record with its envelope, "
                    + "got \"20MiB\"\n"
                    + "t.yaml:7:9: tenants.beta.max_message_size: expected a byte size smaller than "
                    + "kafka.max_record_size (16MiB) because a message travels in one Kafka record with its envelope, "
                    + "got 25MiB (the default)"),
        BadCase(name: "first retry after the longest retry interval", yaml: "traffic_classes:\n  bulk:\n    first_retry: 2h",
                error: "t.yaml:3:18: traffic_classes.bulk.first_retry: expected a duration of at most max_retry_interval "
                    + #"(1h), got "2h""#),
        BadCase(name: "no tenants", yaml: "tenants: {}",
                error: "t.yaml:1:10: tenants: expected at least one tenant, got an empty map"),
        BadCase(name: "duplicate route domain",
                yaml: "routes:\n  - domain: example.com\n    next_hop: a.example.net:25\n  - domain: Example.COM\n    next_hop: b.example.net:25",
                error: #"t.yaml:4:13: routes[1].domain: duplicate route: "example.com" is already routed by routes[0]"#),
        BadCase(name: "duplicate ingress listener",
                yaml: "ingress:\n  listeners:\n    - address: 127.0.0.1:2525\n    - address: 127.0.0.1:2525",
                error: "t.yaml:4:16: ingress.listeners[1].address: duplicate listener: 127.0.0.1:2525 is already used by ingress.listeners[0]"),
        BadCase(name: "ingress listener without an address", yaml: "ingress:\n  listeners:\n    - proxy_protocol: true",
                error: #"t.yaml:3:7: ingress.listeners[0]: missing required key "address""#),
        BadCase(name: "ingress proxy_protocol not a boolean",
                yaml: "ingress:\n  listeners:\n    - {address: 127.0.0.1:2525, proxy_protocol: yes}",
                error: #"t.yaml:3:49: ingress.listeners[0].proxy_protocol: expected true or false, got "yes""#),
        BadCase(name: "certificate without a key",
                yaml: "ingress:\n  listeners:\n    - {address: 127.0.0.1:2525, certificate_file: /etc/smarthost/cert.pem}",
                error: "t.yaml:3:7: ingress.listeners[0]: expected both certificate_file and private_key_file, or neither"),
        BadCase(name: "implicit TLS without a certificate",
                yaml: "ingress:\n  listeners:\n    - {address: 127.0.0.1:465, implicit_tls: true}",
                error: "t.yaml:3:7: ingress.listeners[0]: implicit_tls needs certificate_file and private_key_file"),
        BadCase(name: "require_auth without TLS",
                yaml: "ingress:\n  listeners:\n    - {address: 127.0.0.1:587, require_auth: true}",
                error: "t.yaml:3:7: ingress.listeners[0]: require_auth needs certificate_file and private_key_file "
                    + "(AUTH is offered only inside TLS), or auth_over_plaintext"),
        BadCase(name: "require_auth not a boolean",
                yaml: "ingress:\n  listeners:\n    - {address: 127.0.0.1:587, require_auth: yes}",
                error: #"t.yaml:3:46: ingress.listeners[0].require_auth: expected true or false, got "yes""#),
        BadCase(name: "delivery tls not a mode", yaml: "delivery:\n  tls: required",
                error: #"t.yaml:2:8: delivery.tls: expected one of opportunistic, disabled, got "required""#),
        BadCase(name: "ready queue of zero", yaml: "delivery:\n  ready_queue_size: 0",
                error: #"t.yaml:2:21: delivery.ready_queue_size: expected an integer between 1 and 100000, got "0""#),
        BadCase(name: "connect timeout too short", yaml: "delivery:\n  connect_timeout: 10ms",
                error: #"t.yaml:2:20: delivery.connect_timeout: expected a duration between 100ms and 5m, got "10ms""#),
        BadCase(name: "event log too small", yaml: "delivery:\n  event_log_max_size: 1KiB",
                error: #"t.yaml:2:23: delivery.event_log_max_size: expected a byte size between 64KiB and 16GiB, got "1KiB""#),
        BadCase(name: "limit without a selector", yaml: "limits:\n  - max_connections: 5",
                error: "t.yaml:2:5: limits[0]: expected at least one of pool, site, domain or tenant to select the traffic "
                    + "to limit, got none"),
        BadCase(name: "connection limit per tenant", yaml: "limits:\n  - {tenant: acme, max_connections: 5}",
                error: "t.yaml:2:14: limits[0].tenant: max_connections cannot be limited per tenant (a connection carries several tenants' mail); put it in an entry without tenant"),
        BadCase(name: "burst without a rate", yaml: "limits:\n  - {domain: a.test, max_connections: 5, message_rate_burst: 3}",
                error: "t.yaml:2:62: limits[0].message_rate_burst: message_rate_burst needs max_message_rate in the same entry"),
        BadCase(name: "shaping rule without a condition", yaml: "shaping:\n  - {action: suspend, duration: 1m}",
                error: "t.yaml:2:5: shaping[0]: expected at least one of code, enhanced or text to match replies, got none"),
        BadCase(name: "shaping message_rate without a rate", yaml: "shaping:\n  - {code: 421, action: message_rate, duration: 1m}",
                error: "t.yaml:2:5: shaping[0]: action message_rate needs message_rate"),
        BadCase(name: "shaping suspend with a stray key", yaml: "shaping:\n  - {code: 421, action: suspend, max_connections: 1, duration: 1m}",
                error: "t.yaml:2:51: shaping[0].max_connections: action suspend takes no max_connections; remove it"),
        BadCase(name: "shaping without a duration", yaml: "shaping:\n  - {code: 421, action: suspend}",
                error: #"t.yaml:2:5: shaping[0]: missing required key "duration""#),
        BadCase(name: "shaping threshold zero", yaml: "shaping:\n  - {code: 421, action: suspend, threshold: 0, duration: 1m}",
                error: #"t.yaml:2:45: shaping[0].threshold: expected an integer between 1 and 1000000, got "0""#),
        BadCase(name: "reconciliation unknown key", yaml: "reconciliation:\n  sweep: 1m",
                error: "t.yaml:2:3: reconciliation.sweep: unknown key (expected one of sweep_every, orphan_grace, unaccounted_after, ledger_every, ledger_dir, report_dir)"),
        BadCase(name: "orphan grace zero", yaml: "reconciliation:\n  orphan_grace: 0s",
                error: #"t.yaml:2:17: reconciliation.orphan_grace: expected a positive duration, got "0s""#),
        BadCase(name: "relative ledger directory", yaml: "reconciliation:\n  ledger_dir: ledger",
                error: #"t.yaml:2:15: reconciliation.ledger_dir: expected an absolute path such as /var/lib/smarthost/ledger, got "ledger""#),
        BadCase(name: "fault injection not a boolean", yaml: "testing:\n  fault_injection: yes",
                error: #"t.yaml:2:20: testing.fault_injection: expected true or false, got "yes""#),
        BadCase(name: "admin token too short", yaml: "node:\n  id: n1\n  admin_token: short",
                error: "t.yaml:3:16: node.admin_token: expected a token of 16 to 256 printable ASCII characters without spaces, got one of 5"),
        BadCase(name: "admin token with a space", yaml: "node:\n  id: n1\n  admin_token: \"0123456789 abcdefgh\"",
                error: #"t.yaml:3:16: node.admin_token: expected a token of 16 to 256 printable ASCII characters without spaces, got the quoted string "0123456789 abcdefgh""#),
        BadCase(name: "limit without a limit", yaml: "limits:\n  - domain: gmail.com",
                error: "t.yaml:2:5: limits[0]: expected at least one of max_connections, max_message_rate, "
                    + "max_messages_per_connection, max_messages_per_hour, max_messages_per_day, got none"),
        BadCase(name: "two limits with the same scope",
                yaml: "limits:\n  - domain: gmail.com\n    max_connections: 5\n  - domain: gmail.com\n    max_message_rate: 10/s",
                error: "t.yaml:4:5: limits[1]: the same scope (domain=gmail.com) as limits[0]; merge the two entries"),

        // Whole files
        BadCase(name: "YAML syntax error", yaml: "node: [\n  id: n1",
                error: "t.yaml:3:6: YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence at 1:7)"),
        BadCase(name: "two documents", yaml: "node:\n  id: n1\n---\nnode:\n  id: n2",
                error: "t.yaml:3:1: YAML syntax error: expected a single document, but found another one"),
        BadCase(name: "empty file", yaml: "",
                error: "t.yaml: expected a map of sections (\(sections)), got an empty file", completed: false),
        BadCase(name: "only a comment", yaml: "# nothing here\n",
                error: "t.yaml: expected a map of sections (\(sections)), got an empty file", completed: false),
        BadCase(name: "a scalar instead of a map", yaml: "hello",
                error: "t.yaml:1:1: expected a map of sections (\(sections)), got \"hello\"", completed: false),
        BadCase(name: "a list instead of a map", yaml: "- node\n- kafka",
                error: "t.yaml:1:1: expected a map of sections (\(sections)), got a list", completed: false),

        // Hostile input
        BadCase(name: "a long key", yaml: "node:\n  id: n1\n  " + String(repeating: "x", count: 200) + ": 1",
                error: "t.yaml:3:3: node[\"" + String(repeating: "x", count: 40) + "…\"]: unknown key "
                    + "(expected one of id, log_level, log_format, admin_listen, spool_dir, admin_token)"),
        BadCase(name: "a key longer than YAML allows", yaml: "node:\n  id: n1\n  " + String(repeating: "x", count: 2_000) + ": 1",
                error: "t.yaml:3:2003: YAML syntax error: could not find expected ':' (while scanning a simple key at 3:3)"),
        BadCase(name: "a NUL byte", yaml: "node:\n  id: n\u{0}1",
                error: "t.yaml:2:8: YAML syntax error: control characters are not allowed (found U+0000)"),
        BadCase(name: "an escaped NUL in a quoted string", yaml: "node:\n  id: \"n1\"\n  spool_dir: \"/var/\\0spool\"",
                error: "t.yaml:3:14: node.spool_dir: expected an absolute path such as /var/spool/smarthost, "
                    + #"got the quoted string "/var/\u{0000}spool""#),
        BadCase(name: "nesting deeper than YAML allows", yaml: String(repeating: "[", count: 1_200),
                error: "t.yaml:1:1: YAML syntax error: maximum nesting level reached", completed: false),
        BadCase(name: "deeply nested maps under an unknown key",
                yaml: "node:\n  id: n1\n  deep: " + String(repeating: "{a: ", count: 900) + String(repeating: "}", count: 900),
                error: "t.yaml:3:3: node.deep: unknown key (expected one of id, log_level, log_format, admin_listen, spool_dir, admin_token)"),
        BadCase(name: "an anchor", yaml: "node: &n\n  id: a",
                error: "t.yaml:1:7: node: \(anchors) (found &n)"),
        BadCase(name: "an alias to no anchor", yaml: "node:\n  id: *x",
                error: "t.yaml:2:7: \(anchors)"),
        BadCase(name: "an alias bomb", yaml: aliasBomb,
                error: (1...7).map { line -> String in
                    let name = ["a", "b", "c", "d", "e", "f", "g"][line - 1]
                    return "t.yaml:\(line):4: \(name): \(anchors) (found &\(name))"
                }.joined(separator: "\n")),
        BadCase(name: "an alias bomb used as keys", yaml: aliasBomb + "\n? *g\n: 1\n? *g\n: 2",
                error: "t.yaml:8:3: \(anchors)"),
    ]

    /// Seven levels of ten aliases: 10 million nodes if expanded.
    static let aliasBomb: String = (["a: &a [x, x, x, x, x, x, x, x, x, x]"] + zip("bcdefg", "abcdef").map {
        name, previous -> String in
        "\(name): &\(name) [" + [String](repeating: "*\(previous)", count: 10).joined(separator: ", ") + "]"
    }).joined(separator: "\n")

    @Test func thereAreAtLeast35Cases() {
        #expect(Self.cases.count >= 35)
    }

    @Test(.timeLimit(.minutes(1)), arguments: cases)
    func reportsExactly(_ badCase: BadCase) {
        #expect(errorText(badCase.text) == badCase.error)
    }

    @Test func reportsEveryProblemInFileOrder() {
        let yaml = """
            tenants:
              acme:
                max_recipients: "25"
                pool: nowhere
            node:
              log_level: loud
            kafka:
              brokers: [localhost:9092, localhost]
              delivery_timeout: ten
            redis:
              adress: localhost:6379
              database: 16
            pools:
              shared:
                source_address: 192.0.2.300
            routes:
              - domain: example.com
            limits:
              - domain: gmail.com
            """
        #expect(errorText(yaml) == """
            t.yaml:3:21: tenants.acme.max_recipients: expected an integer between 1 and 10000, got the quoted string "25"
            t.yaml:4:11: tenants.acme.pool: expected a pool defined under pools (shared), got "nowhere"
            t.yaml:6:3: node: missing required key "id"
            t.yaml:6:14: node.log_level: expected one of trace, debug, info, notice, warning, error, critical, got "loud"
            t.yaml:8:29: kafka.brokers[1]: expected host:port such as mail.example.com:25, 192.0.2.1:25 or [2001:db8::1]:25, got "localhost" (missing :port)
            t.yaml:9:21: kafka.delivery_timeout: expected a duration such as 500ms, 10s, 5m, 6h or 2d, got "ten"
            t.yaml:11:3: redis.adress: unknown key (did you mean "address"?)
            t.yaml:11:3: redis: missing required key "address"
            t.yaml:12:13: redis.database: expected an integer between 0 and 15, got "16"
            t.yaml:15:5: pools.shared: missing required key "ehlo_name"
            t.yaml:15:21: pools.shared.source_address: expected an IP address such as 192.0.2.1 or 2001:db8::1, got "192.0.2.300"
            t.yaml:17:5: routes[0]: missing required key "next_hop"
            t.yaml:19:5: limits[0]: expected at least one of max_connections, max_message_rate, max_messages_per_connection, max_messages_per_hour, max_messages_per_day, got none
            """)
    }

    @Test func duplicateKeysBeyondTheLimitStopTheReading() {
        let yaml = "node:\n  id: n1\n" + String(repeating: "  id: n1\n", count: 25)
        #expect(errorText(yaml) == #"t.yaml:22:3: duplicate key "id" (each key may appear only once in a map)"#)
    }
}

@Suite("Loading files")
struct LoadingTests {
    private func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("config-\(UUID().uuidString).yaml").path
    }

    private func loadError(_ path: String) -> String? {
        do {
            _ = try Configuration.load(path: path)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func aMissingFileNamesTheFileAndTheReason() {
        #expect(loadError("/nonexistent/cluster.yaml") ==
                "/nonexistent/cluster.yaml: cannot open the file: No such file or directory")
    }

    @Test func aDirectoryIsNotAFile() {
        let directory = FileManager.default.temporaryDirectory.path
        #expect(loadError(directory) == "\(directory): cannot read the file: Is a directory")
    }

    @Test func errorsNameTheFileAsGiven() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data("node:\n  id: n1\n  log_level: loud\n".utf8).write(to: URL(fileURLWithPath: path))
        #expect(loadError(path) == """
            \(path):1:1: missing required key "kafka"
            \(path):1:1: missing required key "redis"
            \(path):1:1: missing required key "tenants"
            \(path):3:14: node.log_level: expected one of trace, debug, info, notice, warning, error, critical, got "loud"
            """)
    }

    @Test func invalidUTF8IsReportedWhereItIs() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data([UInt8]("node:\n  id: ".utf8) + [0xFF, 0x0A]).write(to: URL(fileURLWithPath: path))
        #expect(loadError(path) == "\(path):2:7: the file is not UTF-8 text (invalid byte sequence)")
    }

    @Test func hugeFilesAreRefused() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(17 << 20))
        try handle.close()
        #expect(loadError(path) == "\(path): the file is larger than 16MiB, the limit for a configuration file")
    }
}

@Suite("Error type")
struct ConfigErrorTests {
    @Test func diagnosticsAreSortedByPositionAndFormatted() {
        let error = ConfigError(diagnostics: [
            .init(fileName: "f.yaml", line: 3, column: 1, path: "b", message: "second"),
            .init(fileName: "f.yaml", line: 1, column: 9, path: "a", message: "first"),
            .init(fileName: "f.yaml", line: 3, column: 1, path: "", message: "third, found after second"),
            .init(fileName: "f.yaml", line: nil, column: nil, path: "", message: "no position"),
        ])
        #expect(error.description == """
            f.yaml: no position
            f.yaml:1:9: a: first
            f.yaml:3:1: b: second
            f.yaml:3:1: third, found after second
            """)
    }
}
