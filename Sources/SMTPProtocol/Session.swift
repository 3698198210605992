/// What a listener offers and enforces; the ingress node fills it from the configuration.
public struct SessionPolicy: Sendable {
    /// The name in the greeting and the EHLO reply.
    public var hostname: String
    /// SIZE: the largest message accepted, announced in EHLO.
    public var maximumMessageSize: Int
    public var maximumRecipients: Int
    /// After this many refused commands the session is closed (421).
    public var maximumBadCommands: Int
    /// STARTTLS is offered (until the session is encrypted).
    public var offersStartTLS: Bool
    /// AUTH PLAIN and LOGIN are offered once the session is encrypted, or always on a listener
    /// trusted for plaintext.
    public var offersAuth: Bool
    public var authOverPlaintext: Bool

    public init(hostname: String, maximumMessageSize: Int = 25 << 20, maximumRecipients: Int = 100,
                maximumBadCommands: Int = 10, offersStartTLS: Bool = false, offersAuth: Bool = false,
                authOverPlaintext: Bool = false) {
        self.hostname = hostname
        self.maximumMessageSize = maximumMessageSize
        self.maximumRecipients = maximumRecipients
        self.maximumBadCommands = maximumBadCommands
        self.offersStartTLS = offersStartTLS
        self.offersAuth = offersAuth
        self.authOverPlaintext = authOverPlaintext
    }
}

/// One mail transaction's envelope, as the client gave it.
public struct Envelope: Sendable, Equatable {
    public var helloName: String
    /// nil: the null reverse-path `<>`.
    public var sender: Mailbox?
    public var recipients: [Mailbox]
    public var parameters: MailParameters

    public init(helloName: String, sender: Mailbox?, recipients: [Mailbox], parameters: MailParameters = MailParameters()) {
        self.helloName = helloName
        self.sender = sender
        self.recipients = recipients
        self.parameters = parameters
    }
}

/// The SMTP server's session state machine (RFC 5321 4.1.4 and 4.3.2, RFC 3030 for BDAT),
/// without I/O: the connection handler feeds it commands and finished message data, and does
/// what the returned `Action` says. Commands are handled strictly in order, which is what
/// PIPELINING needs.
public struct SMTPSession: Sendable {
    public enum Action: Sendable, Equatable {
        case reply(SMTPReply)
        /// Send the reply, then close the connection.
        case close(SMTPReply)
        /// Send the 354 and read the DATA stream with a `DataReader` of this size limit.
        case readData(SMTPReply, maximumSize: Int)
        /// Read exactly `size` octets of BDAT chunk, then call `chunkReceived` with `last`.
        case readChunk(size: Int, last: Bool)
        /// Send the 220, then start TLS before reading anything else (discarding whatever the
        /// client sent after STARTTLS), then call `tlsStarted`.
        case startTLS(SMTPReply)
        /// Run the SASL exchange for `mechanism`, then call `authenticated` or `authenticationFailed`.
        case authenticate(mechanism: String, initialResponse: String?)
        /// The message is complete: enqueue it and answer with what `messageHandled` returns.
        case deliver(Envelope, message: [UInt8])
    }

    private enum Phase: Sendable, Equatable {
        case greeted, ready, mail, recipients, data, chunks
    }

    public let policy: SessionPolicy
    private var phase = Phase.greeted
    private var helloName: String?
    private var isEncrypted: Bool
    public private(set) var isAuthenticated = false
    /// Whether this client may send mail on (a trusted network, or logged in). Without it every
    /// recipient is refused: no open relay.
    public private(set) var isRelayPermitted = false
    /// The tenant's own limit when lower than the listener's.
    private var maximumRecipients: Int
    private var sender: Mailbox?
    private var parameters = MailParameters()
    private var recipients: [Mailbox] = []
    private var chunks: [UInt8] = []
    private var chunkProblem: DataReader.Problem?
    private var badCommands = 0

    public init(policy: SessionPolicy, encrypted: Bool = false, relayPermitted: Bool = false) {
        self.policy = policy
        self.isEncrypted = encrypted
        self.isRelayPermitted = relayPermitted
        self.maximumRecipients = policy.maximumRecipients
    }

    /// The client sends for a tenant (its network is trusted, or it logged in) whose messages
    /// may have at most `maximumRecipients`.
    public mutating func permitRelay(maximumRecipients: Int = .max) {
        isRelayPermitted = true
        self.maximumRecipients = min(policy.maximumRecipients, maximumRecipients)
    }

    public var greeting: SMTPReply {
        SMTPReply(220, nil, "\(policy.hostname) ESMTP smarthost")
    }

    /// Whether RCPT addresses may be UTF-8 (the transaction's MAIL said SMTPUTF8).
    public var isUTF8Transaction: Bool { parameters.smtputf8 }

    /// Whether the next bytes are message data rather than commands.
    public var expectsData: Bool { phase == .data || phase == .chunks }

    /// Handles one parsed command.
    public mutating func handle(_ command: SMTPCommand) -> Action {
        switch command {
        case .ehlo(let name), .helo(let name):
            resetTransaction()
            helloName = name
            phase = .ready
            if case .helo = command { return .reply(SMTPReply(250, nil, "\(policy.hostname)")) }
            return .reply(SMTPReply(250, nil, ["\(policy.hostname) greets \(name)"] + extensions))
        case .mail(let from, let mailParameters):
            guard phase != .greeted else { return refuse(503, 5, 5, 1, "Error: send EHLO or HELO first") }
            guard phase == .ready else { return refuse(503, 5, 5, 1, "Error: nested MAIL command") }
            if let size = mailParameters.size, size > policy.maximumMessageSize {
                return .reply(SMTPReply(552, EnhancedStatusCode(5, 3, 4), "Message size exceeds fixed limit of \(policy.maximumMessageSize) octets"))
            }
            sender = from
            parameters = mailParameters
            // RFC 4954 5: AUTH= from an unauthenticated client is dropped, not trusted.
            if !isAuthenticated { parameters.auth = nil }
            phase = .mail
            return .reply(SMTPReply(250, EnhancedStatusCode(2, 1, 0), "Sender OK"))
        case .rcpt(let recipient):
            guard phase == .mail || phase == .recipients else { return refuse(503, 5, 5, 1, "Error: need MAIL command") }
            guard isRelayPermitted else {
                return refuse(554, 5, 7, 1, "Relay access denied: authenticate or send from a trusted network")
            }
            guard recipients.count < maximumRecipients else {
                return .reply(SMTPReply(452, EnhancedStatusCode(4, 5, 3), "Too many recipients"))
            }
            recipients.append(recipient)
            phase = .recipients
            return .reply(SMTPReply(250, EnhancedStatusCode(2, 1, 5), "Recipient OK"))
        case .data:
            guard phase == .recipients else {
                switch phase {
                case .mail: return refuse(503, 5, 5, 1, "Error: need RCPT command")
                case .chunks: return refuse(503, 5, 5, 1, "Error: DATA in a BDAT transaction")
                default: return refuse(503, 5, 5, 1, "Error: need MAIL command")
                }
            }
            phase = .data
            return .readData(SMTPReply(354, nil, "End data with <CR><LF>.<CR><LF>"), maximumSize: policy.maximumMessageSize)
        case .bdat(let size, let last):
            guard phase == .recipients || phase == .chunks else {
                // The chunk's bytes follow the command whatever the answer: read and drop them.
                return .readChunk(size: size, last: last)
            }
            phase = .chunks
            return .readChunk(size: size, last: last)
        case .rset:
            resetTransaction()
            if phase != .greeted { phase = .ready }
            return .reply(SMTPReply(250, EnhancedStatusCode(2, 0, 0), "OK"))
        case .noop:
            return .reply(SMTPReply(250, EnhancedStatusCode(2, 0, 0), "OK"))
        case .quit:
            return .close(SMTPReply(221, EnhancedStatusCode(2, 0, 0), "Bye"))
        case .vrfy:
            return .reply(SMTPReply(252, EnhancedStatusCode(2, 1, 5), "Cannot VRFY user, but will accept message and attempt delivery"))
        case .help:
            return .reply(SMTPReply(214, EnhancedStatusCode(2, 0, 0), "See RFC 5321"))
        case .starttls:
            guard policy.offersStartTLS, !isEncrypted else { return refuse(502, 5, 5, 1, "Error: STARTTLS not available") }
            guard phase == .ready || phase == .greeted else { return refuse(503, 5, 5, 1, "Error: STARTTLS in a mail transaction") }
            return .startTLS(SMTPReply(220, EnhancedStatusCode(2, 0, 0), "Ready to start TLS"))
        case .auth(let mechanism, let initialResponse):
            guard policy.offersAuth else { return refuse(502, 5, 5, 1, "Error: AUTH not available") }
            guard isEncrypted || policy.authOverPlaintext else {
                return refuse(530, 5, 7, 0, "Must issue a STARTTLS command first")
            }
            guard !isAuthenticated else { return refuse(503, 5, 5, 1, "Error: already authenticated") }
            guard phase == .ready else { return refuse(503, 5, 5, 1, phase == .greeted ? "Error: send EHLO first" : "Error: AUTH in a mail transaction") }
            guard ["PLAIN", "LOGIN"].contains(mechanism) else {
                return refuse(504, 5, 5, 4, "Unrecognized authentication type")
            }
            return .authenticate(mechanism: mechanism, initialResponse: initialResponse)
        }
    }

    /// A line that did not parse as a command. Counts toward the limit of bad commands.
    public mutating func refused(_ error: SMTPCommandError) -> Action {
        countBadCommand(error.reply)
    }

    /// The DATA stream ended (see `DataReader`).
    public mutating func dataFinished(message: [UInt8], problem: DataReader.Problem?) -> Action {
        precondition(phase == .data, "data finished outside DATA")
        return finishMessage(message, problem: problem)
    }

    /// A BDAT chunk has been read; `last` says whether it was BDAT ... LAST.
    public mutating func chunkReceived(_ bytes: [UInt8], last: Bool) -> Action {
        guard phase == .chunks else {
            return refuse(503, 5, 5, 1, "Error: need RCPT command before BDAT")
        }
        if chunkProblem == nil {
            if chunks.count + bytes.count > policy.maximumMessageSize {
                chunkProblem = .messageTooLarge
                chunks.removeAll()
            } else {
                chunks += bytes
            }
        }
        guard last else { return .reply(SMTPReply(250, EnhancedStatusCode(2, 0, 0), "\(bytes.count) octets received")) }
        let message = chunks
        return finishMessage(message, problem: chunkProblem)
    }

    /// The outcome of enqueueing a message: the reply to send, and the session is ready for
    /// the next transaction either way.
    public mutating func messageHandled(_ reply: SMTPReply) -> SMTPReply {
        resetTransaction()
        phase = .ready
        return reply
    }

    public mutating func tlsStarted() {
        // RFC 3207 4.2: forget everything the client said before TLS; it must EHLO again.
        isEncrypted = true
        resetTransaction()
        helloName = nil
        phase = .greeted
    }

    /// The client logged in: it may relay from now on.
    public mutating func authenticated() -> SMTPReply {
        isAuthenticated = true
        return SMTPReply(235, EnhancedStatusCode(2, 7, 0), "Authentication successful")
    }

    /// Wrong credentials, or an exchange that failed with `reply`; counts as a bad command.
    public mutating func authenticationFailed(
        _ reply: SMTPReply = SMTPReply(535, EnhancedStatusCode(5, 7, 8), "Authentication credentials invalid")
    ) -> Action {
        countBadCommand(reply)
    }

    /// Too many failed logins from this client: the session ends (RFC 4954 allows closing
    /// after failures; the client's later attempts are refused the same way for a while).
    public func authenticationThrottled() -> Action {
        .close(SMTPReply(421, EnhancedStatusCode(4, 7, 0), "\(policy.hostname) Error: too many failed authentications, try again later"))
    }

    // MARK: -

    private var extensions: [String] {
        var lines = ["PIPELINING", "SIZE \(policy.maximumMessageSize)", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING"]
        if policy.offersStartTLS && !isEncrypted { lines.append("STARTTLS") }
        if policy.offersAuth && (isEncrypted || policy.authOverPlaintext) { lines.append("AUTH PLAIN LOGIN") }
        return lines
    }

    private mutating func finishMessage(_ message: [UInt8], problem: DataReader.Problem?) -> Action {
        if let problem {
            resetTransaction()
            phase = .ready
            return .reply(problem.reply)
        }
        let envelope = Envelope(helloName: helloName ?? "", sender: sender, recipients: recipients, parameters: parameters)
        return .deliver(envelope, message: message)
    }

    private mutating func refuse(_ code: Int, _ c: Int, _ s: Int, _ d: Int, _ text: String) -> Action {
        countBadCommand(SMTPReply(code, EnhancedStatusCode(c, s, d), text))
    }

    private mutating func countBadCommand(_ reply: SMTPReply) -> Action {
        badCommands += 1
        if badCommands >= policy.maximumBadCommands {
            return .close(SMTPReply(421, EnhancedStatusCode(4, 7, 0), "\(policy.hostname) Error: too many errors"))
        }
        return .reply(reply)
    }

    private mutating func resetTransaction() {
        sender = nil
        parameters = MailParameters()
        recipients = []
        chunks = []
        chunkProblem = nil
    }
}
