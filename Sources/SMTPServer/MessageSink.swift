import SMTPProtocol

/// Who the client is, as far as the server knows; handed to the sink with each message.
public struct ConnectionInfo: Sendable, Equatable {
    /// The client's address (`ip:port`), after PROXY protocol if the listener uses it.
    public var remoteAddress: String?
    public var isEncrypted: Bool
    public var authenticatedUser: String?

    public init(remoteAddress: String?, isEncrypted: Bool = false, authenticatedUser: String? = nil) {
        self.remoteAddress = remoteAddress
        self.isEncrypted = isEncrypted
        self.authenticatedUser = authenticatedUser
    }
}

/// Takes responsibility for complete messages. The reply goes to the client as it is: a sink
/// answers 250 only once the message is durable (for the ingress node: acknowledged by Kafka).
public protocol MessageSink: Sendable {
    func accept(_ envelope: Envelope, message: [UInt8], connection: ConnectionInfo) async -> SMTPReply
}
