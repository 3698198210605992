import SMTPProtocol

/// An MX host (or, for a domain without MX, the domain itself) with its addresses.
public struct MailHost: Sendable, Equatable {
    public var name: String
    public var preference: Int
    /// IPv4 first, then IPv6, each in the order DNS gave them.
    public var addresses: [String]

    public init(name: String, preference: Int, addresses: [String]) {
        self.name = name
        self.preference = preference
        self.addresses = addresses
    }

    /// The order one connection attempt tries `hosts` in: by preference, and hosts of equal
    /// preference in a random order (RFC 5321 §5.1) so that they share the load.
    public static func connectionOrder(_ hosts: [MailHost], using generator: inout some RandomNumberGenerator) -> [MailHost] {
        Dictionary(grouping: hosts, by: \.preference)
            .sorted { $0.key < $1.key }
            .flatMap { $0.value.shuffled(using: &generator) }
    }
}

/// Where a domain's mail goes, as DNS says, and until when that may be reused.
public struct MailRoute: Sendable, Equatable {
    public enum Result: Sendable, Equatable {
        /// The hosts that have addresses, by preference (equal preferences by name), at most
        /// `MailRouteResolver.hostLimit`. `site` is their names joined by "," (for a domain
        /// without MX, the domain): domains served by the same MX hosts are one site, and share
        /// its connections.
        case hosts(site: String, [MailHost])
        /// No way to the domain: a 4xx when a lookup failed (retry later), a 5xx when DNS says
        /// the domain cannot receive mail (bounce). The reply is the recipients' outcome.
        case failed(SMTPReply)
    }

    public var result: Result
    /// Milliseconds since the epoch, on the clock of the `MailRouteResolver` that made it.
    public var validUntil: UInt64

    public init(result: Result, validUntil: UInt64) {
        self.result = result
        self.validUntil = validUntil
    }
}
