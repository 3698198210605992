import SMTPProtocol

/// Who the client is, as far as the server knows; handed to the sink with each message.
public struct ConnectionInfo: Sendable, Equatable {
    /// The client's IP address, after PROXY protocol if the listener uses it.
    public var clientIP: String?
    public var clientPort: Int?
    public var isEncrypted: Bool
    public var authenticatedUser: String?
    /// The tenant this client sends for (from its network, or its login); nil means it may not
    /// relay: recipients are refused.
    public var tenant: String?

    public init(clientIP: String?, clientPort: Int? = nil, isEncrypted: Bool = false,
                authenticatedUser: String? = nil, tenant: String? = nil) {
        self.clientIP = clientIP
        self.clientPort = clientPort
        self.isEncrypted = isEncrypted
        self.authenticatedUser = authenticatedUser
        self.tenant = tenant
    }

    /// `ip:port` (or `[ip]:port` for IPv6), for logs and the record.
    public var clientAddress: String {
        guard let clientIP else { return "unknown" }
        let host = clientIP.contains(":") ? "[\(clientIP)]" : clientIP
        return clientPort.map { "\(host):\($0)" } ?? host
    }
}

/// A tenant a client may send for, with the limits the session enforces for it.
public struct TenantGrant: Sendable, Equatable {
    public var name: String
    public var maximumRecipients: Int

    public init(_ name: String, maximumRecipients: Int = .max) {
        self.name = name
        self.maximumRecipients = maximumRecipients
    }
}

/// Decides which tenant, if any, a client that has not logged in sends for (trusted networks).
public typealias TenantResolver = @Sendable (_ clientIP: String) -> TenantGrant?

/// Takes responsibility for complete messages. The reply goes to the client as it is: a sink
/// answers 250 only once the message is durable (for the ingress node: acknowledged by Kafka).
public protocol MessageSink: Sendable {
    func accept(_ envelope: Envelope, message: [UInt8], connection: ConnectionInfo) async -> SMTPReply

    /// The same answer through a callback, called once from any thread. The server uses this
    /// one; by default it runs the async `accept` in a task. A sink that can answer without
    /// one (the ingress node: a Kafka produce whose delivery report calls back) saves the
    /// task's thread hops on every message.
    func accept(_ envelope: Envelope, message: [UInt8], connection: ConnectionInfo, reply: @escaping @Sendable (SMTPReply) -> Void)
}

extension MessageSink {
    public func accept(_ envelope: Envelope, message: [UInt8], connection: ConnectionInfo,
                       reply: @escaping @Sendable (SMTPReply) -> Void) {
        Task { reply(await accept(envelope, message: message, connection: connection)) }
    }
}

/// What checking a login gave.
public enum AuthenticationResult: Sendable, Equatable {
    /// The credentials are right: the client sends for `tenant`.
    case accepted(TenantGrant)
    case rejected
    /// This client failed too often lately; its credentials were not checked.
    case throttled
    /// The check could not be made (a temporary failure: 454).
    case unavailable
}

/// Checks SMTP AUTH credentials. Slow on purpose (a password hash): it runs off the event loop.
public protocol Authenticator: Sendable {
    func authenticate(username: String, password: String, clientIP: String?) async -> AuthenticationResult
}
