import SmarthostConfig

/// The traffic one message belongs to, as limits select it.
public struct MessageTraffic: Sendable, Hashable {
    public var pool: String
    /// The site's name (its MX hosts in preference order, or a next hop).
    public var site: String
    /// The host names that `site:` selectors are matched against.
    public var siteHosts: [String]
    public var domain: String
    public var tenant: String

    public init(pool: String, site: String, siteHosts: [String], domain: String, tenant: String) {
        self.pool = pool
        self.site = site
        self.siteHosts = siteHosts
        self.domain = domain
        self.tenant = tenant
    }
}

/// The traffic one connection carries: a pool to a site, for the domains routed there.
public struct ConnectionTraffic: Sendable, Hashable {
    public var pool: String
    public var site: String
    public var siteHosts: [String]
    public var domains: Set<String>

    public init(pool: String, site: String, siteHosts: [String], domains: Set<String>) {
        self.pool = pool
        self.site = site
        self.siteHosts = siteHosts
        self.domains = domains
    }
}

/// What the configured limits ask of a connection.
public struct ConnectionPlan: Sendable, Equatable {
    public var leases: [LeaseKey] = []
    public var maxMessagesPerConnection: Int?
}

/// Turns the configuration's `limits` into the Redis keys that a message or a connection
/// takes from. Pure: no I/O, no clock.
///
/// Entries with the same selectors given (the same *shape*: pool, site, domain, tenant)
/// are alternatives: for each kind of limit, the matching entry with the most concrete
/// selectors (then the first in the file) sets it, so `domain: gmail.com` overrides
/// `domain: "*"`. Entries of different shapes all apply: a connection or message must fit
/// every one. A `*` selector makes one limit per value (per domain, per site, ...).
public struct LimitPlanner: Sendable {
    typealias Limit = SmarthostConfiguration.Limit

    private struct Entry: Sendable {
        var limit: Limit
        var index: Int
        var shape: Int
        var concrete: Int
    }

    private let entries: [Entry]

    public init(limits: [SmarthostConfiguration.Limit]) {
        entries = limits.enumerated().map { index, limit in
            let selectors = [limit.scope.pool, limit.scope.site, limit.scope.domain, limit.scope.tenant]
            let shape = selectors.enumerated().reduce(0) { $0 | ($1.element == nil ? 0 : 1 << $1.offset) }
            return Entry(limit: limit, index: index, shape: shape, concrete: selectors.filter { $0 != nil && $0 != "*" }.count)
        }
    }

    public var isEmpty: Bool { entries.isEmpty }

    /// The quotas a message takes one unit from, sorted by name.
    public func quotas(for traffic: MessageTraffic) -> [QuotaKey] {
        let matching = entries.filter { messageScope($0.limit.scope, traffic) != nil }
        var quotas: [QuotaKey] = []
        for entry in chosen(matching, \.maxMessageRate) {
            let rate = entry.limit.maxMessageRate!
            let burst = entry.limit.messageRateBurst ?? Self.defaultBurst(rate)
            quotas.append(QuotaKey(name: "rate:" + messageScope(entry.limit.scope, traffic)!,
                                   quota: .rate(GCRARate(count: rate.count, per: rate.per, burst: burst))))
        }
        for entry in chosen(matching, \.maxMessagesPerHour) {
            quotas.append(QuotaKey(name: "hour:" + messageScope(entry.limit.scope, traffic)!,
                                   quota: .perWindow(count: entry.limit.maxMessagesPerHour!, window: .seconds(3_600))))
        }
        for entry in chosen(matching, \.maxMessagesPerDay) {
            quotas.append(QuotaKey(name: "day:" + messageScope(entry.limit.scope, traffic)!,
                                   quota: .perWindow(count: entry.limit.maxMessagesPerDay!, window: .seconds(86_400))))
        }
        return quotas.sorted { $0.name < $1.name }
    }

    /// The connection leases a connection takes, and the fewest messages it may carry.
    ///
    /// A connection carries mail for every domain routed to its site, so where several
    /// domains of the site have entries of one shape, each of them applies: `domain: gmail.com`
    /// and `domain: customer.example` both bound a connection to the MX hosts they share. As
    /// for a message, a more concrete entry still overrides a less concrete one of its shape
    /// (`domain: gmail.com` overrides `domain: "*"` for the site gmail.com is routed to).
    public func plan(for traffic: ConnectionTraffic) -> ConnectionPlan {
        let matching = entries.compactMap { entry -> (entry: Entry, name: String)? in
            guard entry.limit.scope.tenant == nil, let scope = connectionScope(entry.limit.scope, traffic) else { return nil }
            return (entry, "conn:" + scope)
        }
        var leases: [String: LeaseKey] = [:]
        for (entry, name) in chosenPerLimit(matching, \.maxConnections) {
            // `domain: "*"` and `site: "*"` name the same set: the lower limit holds.
            let limit = min(entry.limit.maxConnections!, leases[name]?.limit ?? .max)
            leases[name] = LeaseKey(name: name, limit: limit)
        }
        var plan = ConnectionPlan()
        plan.leases = leases.values.sorted { $0.name < $1.name }
        plan.maxMessagesPerConnection = chosenPerLimit(matching, \.maxMessagesPerConnection).map { $0.entry.limit.maxMessagesPerConnection! }.min()
        return plan
    }

    /// One second's worth of the rate, at least 1: a smooth pace, as PowerMTA's max-msg-rate.
    public static func defaultBurst(_ rate: Rate) -> Int {
        max(1, Int(rate.perSecond.rounded(.up)))
    }

    /// Per shape, the entry that sets `kind`: most concrete selectors, then first in the file.
    private func chosen<T>(_ matching: [Entry], _ kind: KeyPath<Limit, T?>) -> [Entry] {
        var best: [Int: Entry] = [:]
        for entry in matching where entry.limit[keyPath: kind] != nil {
            if let current = best[entry.shape], (current.concrete, -current.index) >= (entry.concrete, -entry.index) { continue }
            best[entry.shape] = entry
        }
        return best.values.sorted { $0.index < $1.index }
    }

    /// Per shape, the most concrete entries that set `kind`, and of those the first in the
    /// file for each limit they make (`matching` is in file order).
    private func chosenPerLimit<T>(_ matching: [(entry: Entry, name: String)], _ kind: KeyPath<Limit, T?>) -> [(entry: Entry, name: String)] {
        let setting = matching.filter { $0.entry.limit[keyPath: kind] != nil }
        let mostConcrete = Dictionary(setting.map { ($0.entry.shape, $0.entry.concrete) }, uniquingKeysWith: max)
        var seen: Set<String> = []
        return setting.filter { candidate in
            candidate.entry.concrete == mostConcrete[candidate.entry.shape]
                && seen.insert("\(candidate.entry.shape) \(candidate.name)").inserted
        }
    }

    /// The scope as a key (`*` replaced by the traffic's value), or nil when it does not match.
    private func messageScope(_ scope: Limit.Scope, _ traffic: MessageTraffic) -> String? {
        var parts: [String] = []
        guard Self.select(scope.pool, traffic.pool, "pool", &parts),
              Self.selectSite(scope.site, traffic.site, traffic.siteHosts, &parts),
              Self.select(scope.domain, traffic.domain, "domain", &parts),
              Self.select(scope.tenant, traffic.tenant, "tenant", &parts) else { return nil }
        return parts.joined(separator: " ")
    }

    /// As `messageScope`, for a connection: a concrete domain selects the site that domain is
    /// routed to; `domain: "*"` means each site (domains on the same MX hosts share connections).
    private func connectionScope(_ scope: Limit.Scope, _ traffic: ConnectionTraffic) -> String? {
        var parts: [String] = []
        guard Self.select(scope.pool, traffic.pool, "pool", &parts),
              Self.selectSite(scope.site ?? (scope.domain == "*" ? "*" : nil), traffic.site, traffic.siteHosts, &parts)
        else { return nil }
        if let domain = scope.domain, domain != "*" {
            guard traffic.domains.contains(domain) else { return nil }
            parts.append("domain=\(domain)")
        }
        return parts.joined(separator: " ")
    }

    private static func select(_ selector: String?, _ value: String, _ name: String, _ parts: inout [String]) -> Bool {
        guard let selector else { return true }
        guard selector == "*" || selector == value else { return false }
        parts.append("\(name)=\(value)")
        return true
    }

    private static func selectSite(_ selector: String?, _ site: String, _ hosts: [String], _ parts: inout [String]) -> Bool {
        guard let selector else { return true }
        if selector == "*" {
            parts.append("site=\(site)")
            return true
        }
        guard hosts.contains(where: { $0 == selector || $0.hasSuffix("." + selector) }) else { return false }
        parts.append("site=\(selector)")
        return true
    }
}
