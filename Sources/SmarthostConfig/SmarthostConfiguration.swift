import Credentials
/// The configuration of a smarthost node and of the cluster it belongs to, read from one YAML file
/// (see docs/configuration.md). Every node of a cluster reads the same file except for `node`.
public struct SmarthostConfiguration: Sendable, Equatable {
    public var node: NodeSettings
    public var kafka: KafkaSettings
    public var redis: RedisSettings
    /// Egress pools by name.
    public var pools: [String: Pool]
    /// Traffic classes by name; always contains `transactional` and `bulk`.
    public var trafficClasses: [String: TrafficClass]
    /// Tenants by name; never empty.
    public var tenants: [String: Tenant]
    /// Static routes in file order; no two have the same domain.
    public var routes: [Route]
    public var delivery: DeliverySettings
    public var ingress: IngressSettings
    /// Cluster-wide limits in file order; no two have the same scope.
    public var limits: [Limit]
    /// How delivery nodes resolve MX hosts for domains without a route.
    public var dns: DNSSettings
    /// The operator's reply rules in file order, tried before the built-in ones.
    public var responseRules: [ResponseRule]
    /// Traffic shaping rules in file order.
    public var shaping: [ShapingRule]
    public var reconciliation: ReconciliationSettings
    public var testing: TestingSettings

    public init(node: NodeSettings, kafka: KafkaSettings, redis: RedisSettings, pools: [String: Pool] = [:],
                trafficClasses: [String: TrafficClass] = TrafficClass.builtIn, tenants: [String: Tenant],
                routes: [Route] = [], delivery: DeliverySettings = DeliverySettings(),
                ingress: IngressSettings = IngressSettings(), limits: [Limit] = [], dns: DNSSettings = DNSSettings(),
                responseRules: [ResponseRule] = [], shaping: [ShapingRule] = [],
                reconciliation: ReconciliationSettings = ReconciliationSettings(), testing: TestingSettings = TestingSettings()) {
        self.node = node
        self.kafka = kafka
        self.redis = redis
        self.pools = pools
        self.trafficClasses = trafficClasses
        self.tenants = tenants
        self.routes = routes
        self.delivery = delivery
        self.ingress = ingress
        self.limits = limits
        self.dns = dns
        self.responseRules = responseRules
        self.shaping = shaping
        self.reconciliation = reconciliation
        self.testing = testing
    }

    /// The rules a delivery node applies, in order.
    public var effectiveResponseRules: [ResponseRule] {
        responseRules + (delivery.defaultResponseRules ? ResponseRule.builtIn : [])
    }
}

extension SmarthostConfiguration {
    public enum LogLevel: String, Sendable, CaseIterable {
        case trace, debug, info, notice, warning, error, critical
    }

    public enum LogFormat: String, Sendable, CaseIterable {
        case json, text
    }

    /// The priority lane of a tenant's mail in the delivery nodes' ready queues.
    public enum Lane: String, Sendable, CaseIterable {
        case high, normal, low
    }

    /// `node`: what differs between the nodes of a cluster.
    public struct NodeSettings: Sendable, Equatable {
        /// Unique per node: `[A-Za-z0-9._-]{1,64}`.
        public var id: String
        public var logLevel: LogLevel
        public var logFormat: LogFormat
        /// The HTTP endpoint for health, readiness, metrics and admin.
        public var adminListen: HostPort
        /// An absolute path.
        public var spoolDirectory: String
        /// The bearer token the admin API (`/admin/...`) requires; without one it is off.
        public var adminToken: String?

        public init(id: String, logLevel: LogLevel = .info, logFormat: LogFormat = .json,
                    adminListen: HostPort = HostPort(host: "127.0.0.1", port: 8025),
                    spoolDirectory: String = "/var/spool/smarthost", adminToken: String? = nil) {
            self.id = id
            self.logLevel = logLevel
            self.logFormat = logFormat
            self.adminListen = adminListen
            self.spoolDirectory = spoolDirectory
            self.adminToken = adminToken
        }
    }

    /// `kafka`: the brokers, the tenant topics and the clients' bounds.
    public struct KafkaSettings: Sendable, Equatable {
        public var brokers: [HostPort]
        /// Tenant topics are `<topicPrefix>.<tenant>`.
        public var topicPrefix: String
        /// The accounting/event stream; never under `<topicPrefix>.`.
        public var eventsTopic: String
        /// How long the ingress producer waits for Kafka to acknowledge a record.
        public var deliveryTimeout: Duration
        /// How many records the ingress producer may have waiting for an acknowledgement.
        public var maxInFlight: Int
        /// The largest Kafka record; a message and its envelope travel in one record.
        public var maxRecordSize: ByteSize
        /// The delivery nodes' consumer group.
        public var consumerGroup: String
        public var sessionTimeout: Duration
        public var metadataRefresh: Duration
        /// Passed through to librdkafka as they are (for example `security.protocol`).
        public var clientOptions: [String: String]

        /// `eventsTopic` nil means `<topicPrefix>-events`.
        public init(brokers: [HostPort], topicPrefix: String = "smarthost", eventsTopic: String? = nil,
                    deliveryTimeout: Duration = .seconds(10), maxInFlight: Int = 10_000,
                    maxRecordSize: ByteSize = .mebibytes(32), consumerGroup: String = "smarthost-delivery",
                    sessionTimeout: Duration = .seconds(10), metadataRefresh: Duration = .seconds(30),
                    clientOptions: [String: String] = [:]) {
            self.brokers = brokers
            self.topicPrefix = topicPrefix
            self.eventsTopic = eventsTopic ?? "\(topicPrefix)-events"
            self.deliveryTimeout = deliveryTimeout
            self.maxInFlight = maxInFlight
            self.maxRecordSize = maxRecordSize
            self.consumerGroup = consumerGroup
            self.sessionTimeout = sessionTimeout
            self.metadataRefresh = metadataRefresh
            self.clientOptions = clientOptions
        }

        /// The topic an ingress node writes a tenant's messages to: `<topicPrefix>.<tenant>`.
        public func tenantTopic(for tenant: String) -> String {
            "\(topicPrefix).\(tenant)"
        }

        /// The regular expression delivery nodes subscribe with, matching every tenant topic and
        /// nothing else this configuration names: `^<topicPrefix with dots escaped>\..*`.
        public var tenantTopicPattern: String {
            "^" + topicPrefix.replacing(".", with: "\\.") + "\\..*"
        }
    }

    /// `redis`: where the cluster-wide throttle and connection-limit state lives.
    public struct RedisSettings: Sendable, Equatable {
        public var address: HostPort
        /// Connections per node.
        public var poolSize: Int
        public var connectTimeout: Duration
        public var commandTimeout: Duration
        /// Prepended to every key.
        public var keyPrefix: String
        public var password: String?
        /// 0...15.
        public var database: Int

        public init(address: HostPort, poolSize: Int = 4, connectTimeout: Duration = .seconds(1),
                    commandTimeout: Duration = .milliseconds(500), keyPrefix: String = "smarthost:",
                    password: String? = nil, database: Int = 0) {
            self.address = address
            self.poolSize = poolSize
            self.connectTimeout = connectTimeout
            self.commandTimeout = commandTimeout
            self.keyPrefix = keyPrefix
            self.password = password
            self.database = database
        }
    }

    /// An egress pool (a PowerMTA virtual MTA): the source address and name delivery connections use.
    public struct Pool: Sendable, Equatable {
        public var name: String
        /// The local IP address outgoing connections bind to (canonical form); nil lets the system choose.
        public var sourceAddress: String?
        /// The name sent in EHLO.
        public var ehloName: String

        public init(name: String, sourceAddress: String? = nil, ehloName: String) {
            self.name = name
            self.sourceAddress = sourceAddress
            self.ehloName = ehloName
        }
    }

    /// How often and how long a temporarily failed message is retried.
    public struct TrafficClass: Sendable, Equatable {
        public var name: String
        /// The delay before the first retry.
        public var firstRetry: Duration
        /// Each retry interval is the previous one times this (at least 1.0).
        public var retryMultiplier: Double
        /// The longest retry interval.
        public var maxRetryInterval: Duration
        /// After this long in the queue a message bounces.
        public var expiry: Duration

        public init(name: String, firstRetry: Duration = .seconds(300), retryMultiplier: Double = 2.0,
                    maxRetryInterval: Duration = .seconds(3_600), expiry: Duration = .seconds(172_800)) {
            self.name = name
            self.firstRetry = firstRetry
            self.retryMultiplier = retryMultiplier
            self.maxRetryInterval = maxRetryInterval
            self.expiry = expiry
        }

        /// The classes every configuration has unless it redefines them: `transactional` (first
        /// retry after 1m, expiry 6h) and `bulk` (expiry 2d); the other settings are the defaults.
        public static let builtIn: [String: TrafficClass] = [
            "transactional": TrafficClass(name: "transactional", firstRetry: .seconds(60), expiry: .seconds(21_600)),
            "bulk": TrafficClass(name: "bulk"),
        ]
    }

    /// A customer of the relay: who may submit, what, how much, and how it is delivered.
    public struct Tenant: Sendable, Equatable {
        public var name: String
        /// Clients in these networks may relay for this tenant.
        public var trustedNetworks: [CIDRNetwork]
        /// SMTP AUTH logins that send for this tenant.
        public var credentials: [Credential] = []
        /// Lowercased; empty means any sender domain.
        public var senderDomains: [String]
        public var maxMessageSize: ByteSize
        public var maxRecipients: Int
        /// The cluster-wide quota of accepted messages, if any.
        public var messageRate: Rate?
        public var lane: Lane
        /// Names a traffic class of the configuration.
        public var trafficClass: String
        /// Names a pool of the configuration, if set.
        public var pool: String?

        public init(name: String, trustedNetworks: [CIDRNetwork] = [], senderDomains: [String] = [],
                    maxMessageSize: ByteSize = .mebibytes(25), maxRecipients: Int = 100, messageRate: Rate? = nil,
                    lane: Lane = .normal, trafficClass: String = "bulk", pool: String? = nil) {
            self.name = name
            self.trustedNetworks = trustedNetworks
            self.senderDomains = senderDomains
            self.maxMessageSize = maxMessageSize
            self.maxRecipients = maxRecipients
            self.messageRate = messageRate
            self.lane = lane
            self.trafficClass = trafficClass
            self.pool = pool
        }
    }

    /// An SMTP AUTH login: only the password's salted hash is kept.
    public struct Credential: Sendable, Equatable {
        public var username: String
        public var passwordHash: PasswordHash

        public init(username: String, passwordHash: PasswordHash) {
            self.username = username
            self.passwordHash = passwordHash
        }
    }

    /// Mail for `domain` goes to `nextHop` instead of the domain's MX hosts.
    public struct Route: Sendable, Equatable {
        /// Lowercased.
        public var domain: String
        public var nextHop: HostPort
        /// Whether delivery must use TLS (STARTTLS) or fail temporarily.
        public var requireTLS: Bool

        public init(domain: String, nextHop: HostPort, requireTLS: Bool = false) {
            self.domain = domain
            self.nextHop = nextHop
            self.requireTLS = requireTLS
        }
    }

    /// `delivery`: how delivery nodes deliver.
    public struct DeliverySettings: Sendable, Equatable {
        /// Smarthost mode: all mail without a route goes here. When nil, MX resolution decides.
        public var defaultNextHop: HostPort?
        /// Messages sent over one SMTP connection before it is closed.
        public var maxMessagesPerConnection: Int
        /// Connections one delivery node opens at most to one site (next hop) from one pool.
        public var maxConnectionsPerSite = 16
        /// Messages waiting in one ready queue (per pool and site) before the scheduler stops
        /// moving more from the scheduled queues: the rest wait there, ordered by due time.
        public var readyQueueSize = 1_000
        public var connectTimeout: Duration = .seconds(30)
        /// How long to wait for each reply; the DATA stages get RFC 5321's longer minimums
        /// when this is longer than them.
        public var commandTimeout: Duration = .seconds(300)
        /// Entries a node holds in its queues before it stops taking more from Kafka (records
        /// wait there, in order, until the queues drain below it).
        public var maxQueued = 1_000_000
        /// STARTTLS towards next hops without a route that says `require_tls`.
        public var tls: TLSMode = .opportunistic
        /// The local event log (`events.jsonl` under the spool directory) rotates at this size...
        public var eventLogMaxSize: ByteSize = .mebibytes(64)
        /// ...keeping this many rotated files.
        public var eventLogKeep = 10
        /// The port of MX hosts (25; other values are for test and lab networks).
        public var smtpPort = 25
        /// Whether bounces and expirations send a delivery status notification to the sender.
        public var sendDSN = true
        /// A message still queued after this long sends the sender one delay notice; nil: never.
        public var delayNoticeAfter: Duration?
        /// Whether the built-in `ResponseRule.builtIn` follow the configured `response_rules`.
        public var defaultResponseRules = true

        public init(defaultNextHop: HostPort? = nil, maxMessagesPerConnection: Int = 100) {
            self.defaultNextHop = defaultNextHop
            self.maxMessagesPerConnection = maxMessagesPerConnection
        }
    }

    /// `dns`: the resolvers delivery nodes ask for MX, A and AAAA records, and the cache.
    /// `reconciliation`: the delivery nodes' orphan sweep and the reconciler's ledger.
    public struct ReconciliationSettings: Sendable, Equatable {
        /// How often each delivery node compares its spool with its queues.
        public var sweepEvery: Duration
        /// How long a spooled message may be in no queue before it is an orphan (a message
        /// just spooled is in none for a moment).
        public var orphanGrace: Duration
        /// The ledger calls a message unaccounted when it was accepted this long ago, has no
        /// terminal event and no spool holds it.
        public var unaccountedAfter: Duration
        /// How often the reconciler asks the spools and writes its report.
        public var ledgerEvery: Duration
        /// Where the reconciler keeps its ledger (absolute path).
        public var ledgerDirectory: String
        /// Where nodes write their latest sweep report and the reconciler its ledger report;
        /// nil: `<node.spool_dir>/reports` on a delivery node, `ledger_dir` on the reconciler.
        public var reportDirectory: String?

        public init(sweepEvery: Duration = .seconds(60), orphanGrace: Duration = .seconds(30),
                    unaccountedAfter: Duration = .seconds(600), ledgerEvery: Duration = .seconds(30),
                    ledgerDirectory: String = "/var/lib/smarthost/ledger", reportDirectory: String? = nil) {
            self.sweepEvery = sweepEvery
            self.orphanGrace = orphanGrace
            self.unaccountedAfter = unaccountedAfter
            self.ledgerEvery = ledgerEvery
            self.ledgerDirectory = ledgerDirectory
            self.reportDirectory = reportDirectory
        }
    }

    /// `testing`: switches that exist only for tests. `fault_injection: true` opens the
    /// admin API's `/admin/faults/...` (drop queued entries silently, fail re-inserts, skip
    /// records, crash before spooling); without it those endpoints refuse.
    public struct TestingSettings: Sendable, Equatable {
        public var faultInjection: Bool

        public init(faultInjection: Bool = false) {
            self.faultInjection = faultInjection
        }
    }

    public struct DNSSettings: Sendable, Equatable {
        /// Recursive resolvers to forward to; empty means the system's (/etc/resolv.conf).
        public var resolvers: [HostPort]
        /// How long one lookup may take before the domain's messages are deferred (4.4.3).
        public var timeout: Duration
        /// Answers are cached for their TTL, clamped to these bounds.
        public var minimumTTL: Duration
        public var maximumTTL: Duration
        /// How long a failed lookup (SERVFAIL, timeout) is remembered before asking again.
        public var failureTTL: Duration

        public init(resolvers: [HostPort] = [], timeout: Duration = .seconds(5), minimumTTL: Duration = .seconds(5),
                    maximumTTL: Duration = .seconds(3_600), failureTTL: Duration = .seconds(5)) {
            self.resolvers = resolvers
            self.timeout = timeout
            self.minimumTTL = minimumTTL
            self.maximumTTL = maximumTTL
            self.failureTTL = failureTTL
        }
    }

    public enum TLSMode: String, Sendable, CaseIterable {
        case opportunistic, disabled
    }

    /// What an ingress node listens on and how it names itself.
    public struct IngressSettings: Sendable, Equatable {
        /// The name in the greeting, EHLO reply and Received: lines; the node id when absent.
        public var hostname: String?
        public var listeners: [Listener]
        /// Failed AUTH attempts from one client address within `authFailureWindow` after which
        /// its attempts are refused unchecked until the window ends (per node).
        public var authFailureLimit = 5
        public var authFailureWindow: Duration = .seconds(300)
        /// How long a session may wait for the client's next command (RFC 5321 4.5.3.2: 5 min).
        public var commandTimeout: Duration = .seconds(300)
        /// How long a session may wait for the next block of message data (RFC 5321: 3 min).
        public var dataTimeout: Duration = .seconds(180)
        /// On SIGTERM, how long sessions in progress may go on before the node exits.
        public var shutdownGrace: Duration = .seconds(30)

        public init(hostname: String? = nil, listeners: [Listener] = []) {
            self.hostname = hostname
            self.listeners = listeners
        }
    }

    /// One SMTP listening socket of an ingress node.
    public struct Listener: Sendable, Equatable {
        public var address: HostPort
        /// Expect a PROXY protocol v1/v2 header first (behind HAProxy).
        public var proxyProtocol: Bool
        /// PEM files of the certificate chain and its private key: STARTTLS is offered when set.
        public var certificateFile: String?
        public var privateKeyFile: String?
        /// TLS from the first byte (port 465) instead of STARTTLS.
        public var implicitTLS: Bool
        /// AUTH is offered without TLS too (a listener reachable only from trusted networks).
        public var authOverPlaintext: Bool
        /// Only clients that log in may relay (a submission port): the tenants'
        /// `trusted_networks` are not consulted on this listener.
        public var requireAuth: Bool

        public init(address: HostPort, proxyProtocol: Bool = false, certificateFile: String? = nil,
                    privateKeyFile: String? = nil, implicitTLS: Bool = false, authOverPlaintext: Bool = false,
                    requireAuth: Bool = false) {
            self.authOverPlaintext = authOverPlaintext
            self.requireAuth = requireAuth
            self.address = address
            self.proxyProtocol = proxyProtocol
            self.certificateFile = certificateFile
            self.privateKeyFile = privateKeyFile
            self.implicitTLS = implicitTLS
        }
    }

    /// A cluster-wide limit on the traffic matching a scope, shared by all delivery nodes through Redis.
    public struct Limit: Sendable, Equatable {
        /// Which traffic a limit applies to; at least one selector is set. A selector is a value
        /// or `*`: one limit for each value (each domain, each site...).
        public struct Scope: Sendable, Hashable, Codable, CustomStringConvertible {
            /// Names a pool of the configuration.
            public var pool: String?
            /// A site: `*`, or a domain that the site's MX host names (or next hop) are or end in
            /// (`google.com` selects every site whose MX hosts are Google's).
            public var site: String?
            /// A lowercased destination domain.
            public var domain: String?
            /// Names a tenant of the configuration.
            public var tenant: String?

            public init(pool: String? = nil, site: String? = nil, domain: String? = nil, tenant: String? = nil) {
                self.pool = pool
                self.site = site
                self.domain = domain
                self.tenant = tenant
            }

            /// `pool=a domain=gmail.com`.
            public var description: String {
                [("pool", pool), ("site", site), ("domain", domain), ("tenant", tenant)]
                    .compactMap { key, value in value.map { "\(key)=\($0)" } }
                    .joined(separator: " ")
            }
        }

        public var scope: Scope
        /// Concurrent SMTP connections.
        public var maxConnections: Int?
        public var maxMessageRate: Rate?
        /// Messages allowed at once above the rate's pace (GCRA burst); nil: one second's worth.
        public var messageRateBurst: Int?
        public var maxMessagesPerConnection: Int?
        public var maxMessagesPerHour: Int?
        public var maxMessagesPerDay: Int?

        public init(scope: Scope, maxConnections: Int? = nil, maxMessageRate: Rate? = nil, messageRateBurst: Int? = nil,
                    maxMessagesPerConnection: Int? = nil, maxMessagesPerHour: Int? = nil,
                    maxMessagesPerDay: Int? = nil) {
            self.scope = scope
            self.maxConnections = maxConnections
            self.maxMessageRate = maxMessageRate
            self.messageRateBurst = messageRateBurst
            self.maxMessagesPerConnection = maxMessagesPerConnection
            self.maxMessagesPerHour = maxMessagesPerHour
            self.maxMessagesPerDay = maxMessagesPerDay
        }
    }
}
