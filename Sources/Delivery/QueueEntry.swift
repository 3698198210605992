import QueueRecord
import SMTPProtocol

/// A message's recipients at one destination domain, as the queues hold it: metadata only
/// (the content stays in the spool until a connection is ready to send it). A message to
/// several domains has one entry per domain, each with its own queue and schedule.
public struct QueueEntry: Sendable, Equatable {
    public var id: MessageID
    public var tenant: String
    public var job: String?
    /// Lowercased: the scheduled queue's destination.
    public var domain: String
    public var sender: Mailbox?
    /// The recipients at `domain` still without a final outcome.
    public var recipients: [Mailbox]
    public var pool: String
    public var lane: AcceptedMessage.Lane
    public var trafficClass: String
    public var size: Int
    public var eightBit: Bool
    public var smtputf8: Bool
    public var receivedAt: UInt64
    /// Attempts made so far.
    public var attempts: Int
    /// Milliseconds since the epoch; the entry waits in its scheduled queue until then.
    public var dueAt: UInt64
    /// What the destination (or this node, for a connection or DNS failure) last answered
    /// about these recipients, and when (ms); nil before the first attempt since the node started.
    public var lastResponse: String?
    public var lastResponseAt: UInt64?

    public var key: Key { Key(id: id, domain: domain) }
    public var queue: ScheduledQueueName { ScheduledQueueName(tenant: tenant, job: job, domain: domain) }

    /// Identifies an entry in every queue and set.
    public struct Key: Sendable, Hashable, CustomStringConvertible {
        public var id: MessageID
        public var domain: String
        public var description: String { "\(id)@\(domain)" }
    }

    public init(id: MessageID, tenant: String, job: String?, domain: String, sender: Mailbox?, recipients: [Mailbox],
                pool: String, lane: AcceptedMessage.Lane, trafficClass: String, size: Int, eightBit: Bool, smtputf8: Bool,
                receivedAt: UInt64, attempts: Int, dueAt: UInt64, lastResponse: String? = nil, lastResponseAt: UInt64? = nil) {
        self.id = id
        self.tenant = tenant
        self.job = job
        self.domain = domain
        self.sender = sender
        self.recipients = recipients
        self.pool = pool
        self.lane = lane
        self.trafficClass = trafficClass
        self.size = size
        self.eightBit = eightBit
        self.smtputf8 = smtputf8
        self.receivedAt = receivedAt
        self.attempts = attempts
        self.dueAt = dueAt
        self.lastResponse = lastResponse
        self.lastResponseAt = lastResponseAt
    }
}

/// A scheduled queue: one per tenant, job (campaign) and destination domain, as KumoMTA and
/// PowerMTA name them. Written `tenant/job/domain`, the job empty when the message has none.
public struct ScheduledQueueName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var tenant: String
    public var job: String?
    public var domain: String

    public var description: String { "\(tenant)/\(job ?? "")/\(domain)" }

    public static func < (a: Self, b: Self) -> Bool { a.description < b.description }
}

/// Where a ready queue's connections go: a next hop, and whether it must be over TLS.
public struct NextHop: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var requireTLS: Bool

    public init(host: String, port: Int, requireTLS: Bool = false) {
        self.host = host
        self.port = port
        self.requireTLS = requireTLS
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Where a ready queue's connections go, by name: `host:port` for a configured next hop, the
/// MX host names in preference order for a resolved domain (two domains on the same MX hosts
/// share one site, its connections and its limits).
public struct Site: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var name: String
    public var requireTLS: Bool

    public init(name: String, requireTLS: Bool = false) {
        self.name = name
        self.requireTLS = requireTLS
    }

    public init(_ hop: NextHop) {
        self.init(name: hop.description, requireTLS: hop.requireTLS)
    }

    public var description: String { name }

    public static func < (a: Self, b: Self) -> Bool { a.name == b.name ? !a.requireTLS && b.requireTLS : a.name < b.name }
}

/// A ready queue: one per egress pool and site, feeding that site's connections.
public struct SiteKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var pool: String
    public var site: Site

    public init(pool: String, site: Site) {
        self.pool = pool
        self.site = site
    }

    public var description: String { "\(pool)->\(site)" }

    public static func < (a: Self, b: Self) -> Bool { a.description < b.description }
}
