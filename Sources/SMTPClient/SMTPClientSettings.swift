/// How a delivery connection behaves: who it says it is, where it connects from, and how it
/// treats TLS and silence.
public struct SMTPClientSettings: Sendable {
    /// What STARTTLS means for this connection.
    public enum TLSPolicy: String, Sendable, CaseIterable {
        /// Use STARTTLS when the server offers it; plaintext otherwise (RFC 3207, the default of
        /// every MTA facing the Internet).
        case opportunistic
        /// Never send mail in plaintext: a server without STARTTLS, or one whose handshake fails,
        /// is a transient failure (Postfix's `encrypt` level). Certificates are not verified: the
        /// channel is encrypted, the peer's identity is not authenticated (that needs DANE or
        /// MTA-STS, not part of this setting).
        case required
        /// Never start TLS (for a next hop on a trusted network that breaks TLS).
        case disabled
    }

    /// The name sent in EHLO/HELO: the egress pool's `ehlo_name`.
    public var ehloName: String
    /// The local address to connect from: the egress pool's `source_address`; nil lets the
    /// kernel choose.
    public var sourceAddress: String?
    public var tls: TLSPolicy
    public var timeouts: SMTPClientTimeouts

    public init(ehloName: String, sourceAddress: String? = nil, tls: TLSPolicy = .opportunistic,
                timeouts: SMTPClientTimeouts = SMTPClientTimeouts()) {
        self.ehloName = ehloName
        self.sourceAddress = sourceAddress
        self.tls = tls
        self.timeouts = timeouts
    }
}

/// How long the client waits at each stage, RFC 5321 4.5.3.2's minimums by default (a server
/// slower than these is broken or hostile, and the message is retried later).
public struct SMTPClientTimeouts: Sendable, Equatable {
    /// TCP connect, and the TLS handshake.
    public var connect: Duration = .seconds(30)
    /// The 220 greeting (4.5.3.2.1: 5 minutes).
    public var greeting: Duration = .seconds(300)
    /// EHLO, MAIL, RCPT, RSET, STARTTLS replies (4.5.3.2.2-3: 5 minutes).
    public var command: Duration = .seconds(300)
    /// The 354 after DATA (4.5.3.2.4: 2 minutes).
    public var dataInitiation: Duration = .seconds(120)
    /// Sending the message (4.5.3.2.5: 3 minutes per block; here for the whole write).
    public var dataBlock: Duration = .seconds(180)
    /// The reply after the final dot (4.5.3.2.6: 10 minutes).
    public var dataTermination: Duration = .seconds(600)

    public init() {}

    /// The same timeout everywhere, for tests and for next hops on a local network.
    public init(all timeout: Duration) {
        connect = timeout
        greeting = timeout
        command = timeout
        dataInitiation = timeout
        dataBlock = timeout
        dataTermination = timeout
    }
}
