import SMTPProtocol

/// What became of one recipient, as a DSN reports it (RFC 3464 2.3).
public struct RecipientStatus: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// Given up on: a permanent failure, or transient failures until the message expired.
        /// Then the status stays the last transient one: RFC 3463's class 4 is a temporary
        /// condition whose persistence "has caused abandonment or delay" (Postfix does the same).
        case failed
        /// Still being retried, until at most this time (milliseconds since the epoch).
        case delayed(willRetryUntil: UInt64)
    }

    /// Final-Recipient: the address the delivery was attempted to.
    public let recipient: Mailbox
    public let action: Action
    /// The last reply for this recipient: the remote server's, or the one this system gave it
    /// when no server answered (a connection failure, a message the server cannot take).
    public let reply: SMTPReply
    /// The host name (or address literal) of the server that sent `reply`; nil when the reply
    /// was made here, which the Diagnostic-Code then says.
    public let remoteMTA: String?
    /// When delivery to this recipient was last attempted (milliseconds since the epoch).
    public let lastAttemptDate: UInt64?
    /// Original-Recipient: the address the client gave in ORCPT (RFC 3461), when it gave one.
    public let originalRecipient: Mailbox?

    /// A 2xx reply, or a 5xx one for a delayed recipient, is a programming error.
    public init(recipient: Mailbox, action: Action, reply: SMTPReply, remoteMTA: String?, lastAttemptDate: UInt64?,
                originalRecipient: Mailbox? = nil) {
        precondition(!reply.isPositive, "a DSN reports failures and delays, not deliveries")
        if case .delayed = action { precondition(reply.isTransient, "a delayed recipient's last reply is transient") }
        self.recipient = recipient
        self.action = action
        self.reply = reply
        self.remoteMTA = remoteMTA
        self.lastAttemptDate = lastAttemptDate
        self.originalRecipient = originalRecipient
    }

    /// The reply's enhanced status code, or the bare class (5.0.0, 4.0.0) when it had none.
    public var status: EnhancedStatusCode {
        reply.enhancedCode ?? EnhancedStatusCode(reply.code / 100, 0, 0)
    }

    /// True for a failure after transient errors only: the message expired.
    var expired: Bool { action == .failed && reply.isTransient }
}
