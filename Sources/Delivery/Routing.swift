import DNS
import SMTPProtocol
import SmarthostConfig

public enum RouteDecision: Sendable, Equatable {
    /// Into the ready queue of this site.
    case deliver(Site)
    /// No way to deliver now: the entry waits in the held set with this reason (never dropped).
    case hold(reason: String)
    /// The site is backing off, suspended, or its route is being resolved: entries stay in
    /// their scheduled queue, not attempted, until then.
    case wait
    /// The route itself failed (NXDOMAIN, null MX, a DNS timeout): due entries get this
    /// reply as their attempt's outcome, a bounce or a retry by its code.
    case fail(SMTPReply)
}

/// Where mail for a domain goes by configuration: `routes` (exact domain match,
/// case-insensitive), then `delivery.default_next_hop`. A domain that neither names is
/// resolved by MX when DNS is configured.
public struct StaticRoutes: Sendable {
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

    public func nextHop(domain: String) -> NextHop? {
        routes[domain] ?? defaultNextHop
    }
}

/// Resolves the mail route of a domain that no static route names: its MX hosts (or its own
/// address when it has no MX) and their addresses. The DNS module's resolver is the real one.
public protocol MailRouter: Sendable {
    func route(for domain: String) async -> MailRoute
}

extension MailRouteResolver: MailRouter {}

/// One address a connection to a site may try.
public struct ConnectionCandidate: Sendable, Equatable {
    /// The MX host name (or the next hop as configured), for logs and events.
    public var host: String
    public var address: String
    public var port: Int
}

/// How a site is reached: a configured next hop, or MX hosts.
enum SiteTargets: Sendable, Equatable {
    case nextHop(NextHop)
    case exchanges([MailHost], port: Int)

    /// The host names that `site:` selectors of limits are matched against.
    var hostNames: [String] {
        switch self {
        case .nextHop(let hop): [hop.host.lowercased()]
        case .exchanges(let exchanges, _): exchanges.map { $0.name.lowercased() }
        }
    }

    /// At most this many addresses per connection attempt (Postfix's smtp_mx_address_limit),
    /// so an unreachable site costs a bounded number of connect timeouts.
    static let addressLimit = 5

    /// The addresses one connection tries, in order: by preference, equal preferences in a
    /// random order (RFC 5321 §5.1) so that their load is shared.
    func candidates(using generator: inout some RandomNumberGenerator) -> [ConnectionCandidate] {
        switch self {
        case .nextHop(let hop):
            return [ConnectionCandidate(host: hop.host, address: hop.host, port: hop.port)]
        case .exchanges(let exchanges, let port):
            let candidates = MailHost.connectionOrder(exchanges, using: &generator).flatMap { exchange in
                exchange.addresses.map { ConnectionCandidate(host: exchange.name, address: $0, port: port) }
            }
            return Array(candidates.prefix(Self.addressLimit))
        }
    }
}
