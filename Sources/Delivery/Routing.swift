import SmarthostConfig

/// Where mail for a domain goes. Static routes and the default next hop today; MX resolution
/// (its own issue) will be another resolver behind the same seam.
public protocol NextHopResolver: Sendable {
    func route(domain: String) -> RouteDecision
}

public enum RouteDecision: Sendable, Equatable {
    case nextHop(NextHop)
    /// No way to deliver now: the entry waits in the held set with this reason (never dropped).
    case hold(reason: String)
    /// The next hop is backing off after failed connections: entries stay in their scheduled
    /// queue, not attempted, until it is tried again.
    case wait
}

/// `routes` (exact domain match, case-insensitive), then `delivery.default_next_hop`.
public struct StaticRoutes: NextHopResolver {
    private let routes: [String: NextHop]
    private let defaultNextHop: NextHop?

    public init(configuration: SmarthostConfiguration) {
        var routes: [String: NextHop] = [:]
        for route in configuration.routes {
            routes[route.domain.lowercased()] = NextHop(host: route.nextHop.host, port: route.nextHop.port, requireTLS: route.requireTLS)
        }
        self.routes = routes
        defaultNextHop = configuration.delivery.defaultNextHop.map { NextHop(host: $0.host, port: $0.port) }
    }

    public func route(domain: String) -> RouteDecision {
        if let hop = routes[domain] ?? defaultNextHop { return .nextHop(hop) }
        return .hold(reason: "no route for \(domain) and no delivery.default_next_hop (MX resolution is not configured)")
    }
}
