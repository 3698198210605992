/// One message's SMTP transaction on the client side, without I/O: what to send after EHLO
/// (MAIL, the RCPTs and DATA, pipelined when the server offers PIPELINING, RFC 2920), and what
/// the replies mean for each recipient. The delivery node's connection drives it.
///
/// A message the server cannot take as it is fails before anything is sent, with the code
/// the delivery would have got: over the server's SIZE (552 5.3.4), or needing SMTPUTF8 from a
/// server without it (553 5.6.7, RFC 6531 3.4: never downgraded).
public struct ClientTransaction: Sendable {
    /// What became of a recipient.
    public enum Outcome: Sendable, Equatable {
        case delivered(SMTPReply)
        case transientFailure(SMTPReply)
        case permanentFailure(SMTPReply)

        public init(_ reply: SMTPReply) {
            if reply.isPositive { self = .delivered(reply) }
            else if reply.isTransient { self = .transientFailure(reply) }
            else { self = .permanentFailure(reply) }
        }
    }

    /// What the connection does next.
    public enum Step: Sendable, Equatable {
        /// Send these command lines (each ends in CRLF) at once, then feed the replies, one per
        /// line, in order, to `handle`.
        case send([String])
        /// Nothing to send: feed the next reply of the batch already sent.
        case awaitReply
        /// MAIL or every RCPT was refused, yet the pipelining server answered DATA with 354:
        /// send a lone `.` line to end the empty data (RFC 2920 3.1), ignore its reply, RSET.
        case endEmptyData([Outcome])
        /// Send the message, dot-stuffed and ended with CRLF.CRLF (`DotStuffing.encode`), then
        /// feed the one reply to `handle`.
        case sendData
        /// The transaction is over: an outcome per recipient, in the envelope's order. With
        /// `reset`, the session needs RSET before the next transaction.
        case finished([Outcome], reset: Bool)
    }

    private enum Phase: Sendable {
        case envelope(expecting: Int), data, finished
    }

    public let sender: Mailbox?
    public let recipients: [Mailbox]
    private let pipelined: Bool
    private var phase: Phase
    private var pending: [String]
    private var mailReply: SMTPReply?
    private var recipientReplies: [SMTPReply] = []

    /// Prepares the transaction, or says at once why it cannot happen (`finished` with the
    /// same failure for every recipient).
    public static func start(sender: Mailbox?, recipients: [Mailbox], size: Int, eightBit: Bool, smtputf8: Bool,
                             capabilities: ServerCapabilities) -> (ClientTransaction?, Step) {
        precondition(!recipients.isEmpty, "a transaction has at least one recipient")
        if smtputf8 && !capabilities.smtputf8 {
            let reply = SMTPReply(553, EnhancedStatusCode(5, 6, 7), "The message needs SMTPUTF8, which the destination does not offer")
            return (nil, .finished(recipients.map { _ in .permanentFailure(reply) }, reset: false))
        }
        if !capabilities.accepts(size: size) {
            let reply = SMTPReply(552, EnhancedStatusCode(5, 3, 4), "Message of \(size) octets exceeds the destination's limit of \(capabilities.size ?? 0)")
            return (nil, .finished(recipients.map { _ in .permanentFailure(reply) }, reset: false))
        }
        var mail = "MAIL FROM:<\(sender?.description ?? "")>"
        if capabilities.size != nil { mail += " SIZE=\(size)" }
        if eightBit && capabilities.eightBitMIME { mail += " BODY=8BITMIME" }
        if smtputf8 { mail += " SMTPUTF8" }
        let commands = [mail] + recipients.map { "RCPT TO:<\($0)>" } + ["DATA"]
        var transaction = ClientTransaction(sender: sender, recipients: recipients, pipelined: capabilities.pipelining,
                                            phase: .envelope(expecting: 0), pending: commands)
        let first = transaction.nextBatch()
        return (transaction, first)
    }

    private init(sender: Mailbox?, recipients: [Mailbox], pipelined: Bool, phase: Phase, pending: [String]) {
        self.sender = sender
        self.recipients = recipients
        self.pipelined = pipelined
        self.phase = phase
        self.pending = pending
    }

    /// The commands to send now: all of them with PIPELINING, otherwise one at a time.
    private mutating func nextBatch() -> Step {
        let batch = pipelined ? pending : [pending[0]]
        pending.removeFirst(batch.count)
        phase = .envelope(expecting: batch.count)
        return .send(batch)
    }

    /// Takes the reply to the oldest command or data sent.
    public mutating func handle(_ reply: SMTPReply) -> Step {
        switch phase {
        case .finished:
            preconditionFailure("no reply is expected after the transaction finished")
        case .data:
            phase = .finished
            let outcome = Outcome(reply)
            return .finished(zip(recipients, recipientReplies).map { $1.isPositive ? outcome : Outcome($1) }, reset: false)
        case .envelope(let expecting):
            if mailReply == nil {
                mailReply = reply
            } else if recipientReplies.count < recipients.count {
                recipientReplies.append(reply)
            } else {
                return dataCommandAnswered(reply)
            }
            if expecting > 1 {
                phase = .envelope(expecting: expecting - 1)
                return .awaitReply
            }
            // Without PIPELINING: stop at a refused MAIL, or after the RCPTs when none was accepted.
            if let mailReply, !mailReply.isPositive { return finishedBeforeData() }
            if recipientReplies.count == recipients.count && !recipientReplies.contains(where: \.isPositive) {
                return finishedBeforeData()
            }
            return nextBatch()
        }
    }

    /// The reply to DATA: 354 means send the message, unless MAIL or every RCPT was refused.
    private mutating func dataCommandAnswered(_ reply: SMTPReply) -> Step {
        let anyRecipient = recipientReplies.contains(where: \.isPositive)
        guard let mailReply, mailReply.isPositive, anyRecipient else {
            phase = .finished
            return reply.code == 354 ? .endEmptyData(finishedOutcomes()) : .finished(finishedOutcomes(), reset: true)
        }
        guard reply.code == 354 else {
            phase = .finished
            let outcome = Outcome(reply)
            return .finished(zip(recipients, recipientReplies).map { $1.isPositive ? outcome : Outcome($1) }, reset: true)
        }
        phase = .data
        return .sendData
    }

    private mutating func finishedBeforeData() -> Step {
        phase = .finished
        return .finished(finishedOutcomes(), reset: true)
    }

    /// Each recipient's outcome when no data was sent: the MAIL refusal for all, or its RCPT
    /// reply (a recipient accepted but not sent to is a transient failure).
    private func finishedOutcomes() -> [Outcome] {
        if let mailReply, !mailReply.isPositive { return recipients.map { _ in Outcome(mailReply) } }
        let notSent = SMTPReply(451, EnhancedStatusCode(4, 3, 0), "No message data was sent in this transaction")
        return recipients.indices.map { index in
            guard index < recipientReplies.count else { return .transientFailure(notSent) }
            let reply = recipientReplies[index]
            return reply.isPositive ? .transientFailure(notSent) : Outcome(reply)
        }
    }
}
