/// Mail routes of domains (see `MailRouteLookup`), cached: an answer for its TTL clamped to
/// [minimumTTL, maximumTTL] (NXDOMAIN and null MX included, by their negative TTL), a failed
/// lookup for `failureTTL` only, so that a flood of messages to a domain whose DNS is down asks
/// once per `failureTTL`, not once per message. Concurrent requests for one domain share one
/// lookup.
public actor MailRouteResolver {
    public struct Settings: Sendable {
        public var minimumTTL: Duration
        public var maximumTTL: Duration
        public var failureTTL: Duration

        public init(minimumTTL: Duration = .seconds(5), maximumTTL: Duration = .seconds(3_600), failureTTL: Duration = .seconds(5)) {
            self.minimumTTL = minimumTTL
            self.maximumTTL = maximumTTL
            self.failureTTL = failureTTL
        }

        /// How long a resolution stays valid, in milliseconds.
        func lifetime(_ resolution: MailRouteLookup.Resolution) -> UInt64 {
            guard let ttl = resolution.ttl else { return Self.milliseconds(failureTTL) }
            return min(max(UInt64(ttl) * 1_000, Self.milliseconds(minimumTTL)), Self.milliseconds(maximumTTL))
        }

        private static func milliseconds(_ duration: Duration) -> UInt64 {
            UInt64(max(duration / .milliseconds(1), 0))
        }
    }

    /// MX hosts beyond this many, after sorting by preference, are not used: a domain cannot
    /// make a delivery node resolve hundreds of names for one message.
    public static let hostLimit = 10
    /// Expired entries are dropped after this many new ones.
    private static let pruneInterval = 1_000

    private let lookup: MailRouteLookup
    private let settings: Settings
    private let clock: @Sendable () -> UInt64
    private var cache: [String: MailRoute] = [:]
    private var inFlight: [String: Task<MailRoute, Never>] = [:]
    private var storedSincePrune = 0

    /// `clock`: milliseconds since the epoch. `lookup`: a `DNSResolver`'s, or a fake one.
    public init(settings: Settings = Settings(), clock: @escaping @Sendable () -> UInt64,
                lookup: @escaping @Sendable (String, DNSRecordType) async -> DNSAnswer) {
        self.settings = settings
        self.clock = clock
        self.lookup = MailRouteLookup(lookup: lookup)
    }

    public init(resolver: DNSResolver, settings: Settings = Settings(), clock: @escaping @Sendable () -> UInt64) {
        self.init(settings: settings, clock: clock) { await resolver.lookup($0, $1) }
    }

    public func route(for domain: String) async -> MailRoute {
        let domain = Self.normalized(domain)
        if let cached = cache[domain], cached.validUntil > clock() { return cached }
        if let shared = inFlight[domain] { return await shared.value }
        let (lookup, settings, clock) = (self.lookup, self.settings, self.clock)
        let resolving = Task {
            let resolution = await lookup.resolve(domain)
            return MailRoute(result: resolution.result, validUntil: clock() + settings.lifetime(resolution))
        }
        inFlight[domain] = resolving
        let route = await resolving.value
        inFlight[domain] = nil
        store(route, for: domain)
        return route
    }

    private func store(_ route: MailRoute, for domain: String) {
        cache[domain] = route
        storedSincePrune += 1
        guard storedSincePrune >= Self.pruneInterval else { return }
        storedSincePrune = 0
        let now = clock()
        cache = cache.filter { $0.value.validUntil > now }
    }

    /// Lowercased, without a final dot: one cache entry (and one site name) per domain.
    static func normalized(_ domain: String) -> String {
        let lowercased = domain.lowercased()
        return lowercased.hasSuffix(".") && lowercased.count > 1 ? String(lowercased.dropLast()) : lowercased
    }
}
