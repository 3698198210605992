import SMTPServer
import SmarthostConfig

extension SmarthostConfiguration {
    /// The tenant whose trusted networks contain the client, for clients that do not log in.
    /// Tenants are tried in name order, so overlapping networks resolve the same way on every node.
    public var trustedNetworkResolver: TenantResolver {
        let networks = tenants.keys.sorted().flatMap { name in tenants[name]!.trustedNetworks.map { (tenants[name]!, $0) } }
        return { clientIP in
            guard let bytes = CIDRNetwork.addressBytes(clientIP) else { return nil }
            return networks.first { $0.1.contains(addressBytes: bytes) }.map { $0.0.grant }
        }
    }
}

extension SmarthostConfiguration.Tenant {
    /// What an SMTP session enforces for this tenant.
    var grant: TenantGrant { TenantGrant(name, maximumRecipients: maxRecipients) }
}
