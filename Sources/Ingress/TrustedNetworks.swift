import SMTPServer
import SmarthostConfig

extension SmarthostConfiguration {
    /// The tenant whose trusted networks contain the client, for clients that do not log in.
    /// Tenants are tried in name order, so overlapping networks resolve the same way on every node.
    public var trustedNetworkResolver: TenantResolver {
        let networks = tenants.keys.sorted().flatMap { name in tenants[name]!.trustedNetworks.map { (name, $0) } }
        return { clientIP in networks.first { $0.1.contains(clientIP) }?.0 }
    }
}
