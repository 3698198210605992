import SMTPProtocol

/// Why a delivery connection failed. Every case is transient for the messages on it: their
/// recipients get `reply` as their TransientFailure and are retried on schedule.
public struct SMTPClientError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Stage: String, Sendable {
        case connect, greeting, ehlo, starttls, mail, rcpt, data, dataBlock = "data-block", dataEnd = "data-end", rset, quit
    }

    public enum Kind: Sendable, Equatable {
        /// TCP connect failed (refused, unreachable, timed out).
        case connectFailed(String)
        /// The server said no at a stage the connection cannot go on from (a 4xx/5xx greeting,
        /// EHLO and HELO both refused, STARTTLS refused when required).
        case refused(SMTPReply)
        /// The server did not answer in time.
        case timeout
        /// The connection closed (or TLS failed) before the reply.
        case connectionLost(String)
        /// The server's bytes were not SMTP.
        case protocolViolation(String)
        /// TLS is required for this route and the server does not offer STARTTLS.
        case tlsNotOffered
    }

    public var kind: Kind
    public var stage: Stage

    /// Whether `reply` is the server's own (a refusal, a 421 before it closed) rather than one
    /// this side made up for a network or protocol failure.
    public var isServerReply: Bool {
        if case .refused = kind { return true }
        return false
    }

    public init(_ kind: Kind, at stage: Stage) {
        self.kind = kind
        self.stage = stage
    }

    /// The reply each recipient's TransientFailure carries: the server's own when it gave one,
    /// otherwise a 4xx saying what happened (4.4.x network, 4.7.10 TLS: RFC 3463, RFC 7672).
    public var reply: SMTPReply {
        switch kind {
        case .refused(let reply) where reply.isTransient:
            return reply
        case .refused(let reply):
            // A 5xx outside a transaction (greeting, EHLO) concerns the connection, not the
            // recipients: retried, like Postfix's "host refused to talk to me".
            return SMTPReply(451, EnhancedStatusCode(4, 4, 0), "\(stage.rawValue): \(reply.code) \(reply.lines.joined(separator: " "))")
        case .connectFailed(let reason):
            return SMTPReply(451, EnhancedStatusCode(4, 4, 1), "Connection failed: \(reason)")
        case .timeout:
            return SMTPReply(451, EnhancedStatusCode(4, 4, 2), "Timed out waiting for the \(stage.rawValue) reply")
        case .connectionLost(let reason):
            return SMTPReply(451, EnhancedStatusCode(4, 4, 2), "Connection lost at \(stage.rawValue): \(reason)")
        case .protocolViolation(let reason):
            return SMTPReply(451, EnhancedStatusCode(4, 5, 0), "Protocol error at \(stage.rawValue): \(reason)")
        case .tlsNotOffered:
            return SMTPReply(451, EnhancedStatusCode(4, 7, 10), "TLS is required for this destination and the server does not offer STARTTLS")
        }
    }

    public var description: String { reply.description }
}
