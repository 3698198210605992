import Logging
import NIOCore
import NIOSSL
import SMTPProtocol

/// Timeouts of a session (RFC 5321 4.5.3.2 gives the usual values).
public struct SessionTimeouts: Sendable {
    /// Waiting for the next command.
    public var command: Duration = .seconds(300)
    /// Waiting for the next block of message data (DATA or BDAT).
    public var data: Duration = .seconds(180)

    public init(command: Duration = .seconds(300), data: Duration = .seconds(180)) {
        self.command = command
        self.data = data
    }
}

/// Speaks SMTP on one connection: frames commands (CRLF only, at most 512 octets), reads DATA
/// and BDAT content, drives an `SMTPSession` and hands complete messages to a `MessageSink`.
///
/// Pipelined commands are handled strictly in order and their replies sent together; while a
/// message is with the sink, later input waits, so no reply overtakes the one for the message.
public final class SMTPServerHandler: ChannelInboundHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum Mode {
        case commands
        case data(DataReader, [UInt8])
        case chunk(remaining: Int, bytes: [UInt8], last: Bool)
        /// An AUTH exchange: lines are SASL responses, not commands.
        case sasl(SASLExchange)
        /// A message is with the sink, or credentials with the authenticator; input waits.
        case waiting
        case closed
    }

    private var session: SMTPSession
    private let sink: any MessageSink
    private let timeouts: SessionTimeouts
    private let logger: Logger
    private var connection: ConnectionInfo
    private var framer = CommandLineFramer()
    private var mode = Mode.commands
    private var input: ByteBuffer?
    private var timeout: Scheduled<Void>?
    private var timeoutFiresAt = NIODeadline.distantFuture
    private var deadline = NIODeadline.distantFuture
    private var wroteSinceFlush = false

    private let resolveTenant: TenantResolver
    private let authenticator: (any Authenticator)?
    private let expectsProxyHeader: Bool
    /// Offered as STARTTLS when the session is in plaintext.
    private let tls: NIOSSLContext?
    /// Called on the event loop once the reply to a message has been written to the socket.
    private let messageReplyWritten: (@Sendable (SMTPReply) -> Void)?

    /// With `expectsProxyHeader` the session starts only once a `ProxyProtocolHandler` in front
    /// of this one announced the real client; otherwise it starts when the connection does.
    /// `tls` makes STARTTLS available; `encrypted` says the connection is already TLS
    /// (implicit TLS, port 465), with a TLS handler in front of this one. AUTH is offered with an
    /// `authenticator` (inside TLS, or in plaintext too when the policy allows it).
    /// `messageReplyWritten` (tests' fault injection) sees each reply to a message once it is
    /// written to the socket.
    public init(policy: SessionPolicy, sink: any MessageSink, resolveTenant: @escaping TenantResolver,
                authenticator: (any Authenticator)? = nil,
                expectsProxyHeader: Bool = false, tls: NIOSSLContext? = nil, encrypted: Bool = false,
                timeouts: SessionTimeouts = SessionTimeouts(), messageReplyWritten: (@Sendable (SMTPReply) -> Void)? = nil,
                logger: Logger = Logger(label: "smarthost.smtp.server")) {
        self.messageReplyWritten = messageReplyWritten
        var policy = policy
        policy.offersStartTLS = tls != nil && !encrypted
        policy.offersAuth = authenticator != nil
        self.authenticator = authenticator
        self.session = SMTPSession(policy: policy, encrypted: encrypted)
        self.tls = tls
        self.sink = sink
        self.resolveTenant = resolveTenant
        self.expectsProxyHeader = expectsProxyHeader
        self.timeouts = timeouts
        self.logger = logger
        self.connection = ConnectionInfo(clientIP: nil, isEncrypted: encrypted)
    }

    public func channelActive(context: ChannelHandlerContext) {
        if !expectsProxyHeader {
            start(clientIP: context.remoteAddress?.ipAddress, port: context.remoteAddress?.port, context: context)
        }
        context.fireChannelActive()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard expectsProxyHeader, let received = event as? ProxyHeaderReceived else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch received.header {
        case .proxied(let clientIP, let clientPort):
            start(clientIP: clientIP, port: clientPort, context: context)
        case .local:
            start(clientIP: context.remoteAddress?.ipAddress, port: context.remoteAddress?.port, context: context)
        }
    }

    /// Who the client is decides its tenant, and whether it may relay at all.
    private func start(clientIP: String?, port: Int?, context: ChannelHandlerContext) {
        connection.clientIP = clientIP
        connection.clientPort = port
        if let grant = clientIP.flatMap(resolveTenant) { permit(grant) }
        write(session.greeting, context: context)
        flush(context: context)
        armTimeout(context: context)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        mode = .closed
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if input == nil { input = bytes } else { input!.writeBuffer(&bytes) }
        armTimeout(context: context)
        process(context: context)
    }

    // MARK: - Processing input in order

    private func process(context: ChannelHandlerContext) {
        while var buffer = input, buffer.readableBytes > 0 {
            let consumed: Int
            switch mode {
            case .waiting, .closed:
                return
            case .commands, .sasl:
                let (used, line) = framer.next(from: buffer.readableBytesView)
                consumed = used
                buffer.moveReaderIndex(forwardBy: used)
                input = buffer
                if let line { handle(line, context: context) }
            case .data(var reader, var message):
                mode = .waiting  // so that `message` is the only reference and grows in place
                let (used, outcome) = reader.consume(buffer.readableBytesView, into: &message)
                consumed = used
                buffer.moveReaderIndex(forwardBy: used)
                input = buffer
                if case .finished(let problem) = outcome {
                    mode = .commands
                    perform(session.dataFinished(message: message, problem: problem), context: context)
                } else {
                    mode = .data(reader, message)
                }
            case .chunk(let remaining, var bytes, let last):
                mode = .waiting  // so that `bytes` is the only reference and grows in place
                let take = min(remaining, buffer.readableBytes)
                let chunk = buffer.readBytes(length: take)!
                // A chunk announced larger than any message is read and dropped past the limit
                // (one octet over is enough for the session to refuse it), never held whole.
                bytes += chunk.prefix(max(0, session.policy.maximumMessageSize + 1 - bytes.count))
                consumed = take
                input = buffer
                if take == remaining {
                    mode = .commands
                    perform(session.chunkReceived(bytes, last: last), context: context)
                } else {
                    mode = .chunk(remaining: remaining - take, bytes: bytes, last: last)
                }
            }
            if consumed == 0 { break }
        }
        input?.discardReadBytes()
        flush(context: context)
    }

    private func handle(_ line: CommandLineFramer.Line, context: ChannelHandlerContext) {
        if case .sasl(var exchange) = mode {
            // A response that is too long or not text cannot be base64: the exchange fails.
            let text: String
            if case .line(let bytes) = line { text = String(decoding: bytes, as: UTF8.self) } else { text = "\u{0}" }
            let step = exchange.respond(text)
            mode = .sasl(exchange)
            authenticationStep(step, context: context)
            return
        }
        switch line {
        case .tooLong:
            perform(session.refused(.lineTooLong), context: context)
        case .bareLineEnd:
            perform(session.refused(.controlCharacters), context: context)
        case .line(let bytes):
            do throws(SMTPCommandError) {
                let command = try SMTPCommand.parse(bytes, smtputf8Offered: true, utf8Transaction: session.isUTF8Transaction)
                perform(session.handle(command), context: context)
            } catch {
                perform(session.refused(error), context: context)
            }
        }
    }

    private func perform(_ action: SMTPSession.Action, context: ChannelHandlerContext) {
        switch action {
        case .reply(let reply):
            write(reply, context: context)
        case .close(let reply):
            write(reply, context: context)
            close(context: context)
        case .readData(let reply, let maximumSize):
            write(reply, context: context)
            mode = .data(DataReader(maximumMessageSize: maximumSize), [])
        case .readChunk(let size, let last):
            mode = size == 0 ? .commands : .chunk(remaining: size, bytes: [], last: last)
            if size == 0 { perform(session.chunkReceived([], last: last), context: context) }
        case .startTLS(let reply):
            guard let tls else {
                write(SMTPReply(454, EnhancedStatusCode(4, 7, 0), "TLS not available"), context: context)
                return
            }
            write(reply, context: context)
            flush(context: context)
            // RFC 3207 and CVE-2011-0411: whatever the client sent after STARTTLS in plaintext
            // is discarded, and the session starts over inside TLS.
            input = nil
            framer = CommandLineFramer()
            session.tlsStarted()
            connection.isEncrypted = true
            do {
                try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
            } catch {
                logger.warning("could not start TLS", metadata: ["error": "\(error)"])
                close(context: context)
            }
        case .authenticate(let mechanism, let initialResponse):
            var exchange = SASLExchange(mechanism: mechanism)
            let step = exchange.start(initialResponse: initialResponse)
            mode = .sasl(exchange)
            authenticationStep(step, context: context)
        case .deliver(let envelope, let message):
            let sink = self.sink
            let connection = self.connection
            waitOffLoop(context: context, { answer in sink.accept(envelope, message: message, connection: connection, reply: answer) }) {
                handler, reply, context in
                handler.write(handler.session.messageHandled(reply), context: context, then: handler.messageReplyWritten)
            }
        }
    }

    private func authenticationStep(_ step: SASLExchange.Step, context: ChannelHandlerContext) {
        switch step {
        case .challenge(let challenge):
            write(SMTPReply(334, nil, challenge), context: context)
        case .failed(let reply):
            mode = .commands
            perform(session.authenticationFailed(reply), context: context)
        case .credentials(let username, let password):
            guard let authenticator else { preconditionFailure("AUTH is offered only with an authenticator") }
            let clientIP = connection.clientIP
            waitOffLoop(context: context, { answer in
                Task { answer(await authenticator.authenticate(username: username, password: password, clientIP: clientIP)) }
            }) { handler, result, context in
                handler.authenticationChecked(result, username: username, context: context)
            }
        }
    }

    private func permit(_ grant: TenantGrant) {
        connection.tenant = grant.name
        session.permitRelay(maximumRecipients: grant.maximumRecipients)
    }

    private func authenticationChecked(_ result: AuthenticationResult, username: String, context: ChannelHandlerContext) {
        switch result {
        case .accepted(let grant):
            connection.authenticatedUser = username
            permit(grant)
            write(session.authenticated(), context: context)
        case .rejected:
            logger.notice("authentication failed", metadata: ["peer": "\(connection.clientAddress)", "user": "\(username)"])
            perform(session.authenticationFailed(), context: context)
        case .throttled:
            logger.notice("authentication throttled", metadata: ["peer": "\(connection.clientAddress)"])
            perform(session.authenticationThrottled(), context: context)
        case .unavailable:
            write(SMTPReply(454, EnhancedStatusCode(4, 7, 0), "Temporary authentication failure"), context: context)
        }
    }

    /// Starts `work` (the sink, the authenticator), which answers from any thread, then runs
    /// `done` with the answer on the event loop. Meanwhile nothing more is read: pipelined
    /// input waits in the socket, not in memory, and no reply overtakes this one.
    private func waitOffLoop<Result: Sendable>(
        context: ChannelHandlerContext, _ work: (@escaping @Sendable (Result) -> Void) -> Void,
        then done: @escaping (SMTPServerHandler, Result, ChannelHandlerContext) -> Void
    ) {
        mode = .waiting
        flush(context: context)
        try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
        let loopBound = NIOLoopBound((self, context, done), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        work { result in
            eventLoop.execute {
                let (handler, context, done) = loopBound.value
                guard case .waiting = handler.mode else { return }  // the connection closed meanwhile
                handler.mode = .commands
                try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
                done(handler, result, context)
                if case .closed = handler.mode { return }
                handler.armTimeout(context: context)  // a timer that fired meanwhile did nothing
                handler.process(context: context)
                handler.flush(context: context)
            }
        }
    }

    // MARK: - Output and timeouts

    /// `written`, if given, is called once the reply has left for the socket (after a flush).
    private func write(_ reply: SMTPReply, context: ChannelHandlerContext, then written: (@Sendable (SMTPReply) -> Void)? = nil) {
        let promise = written.map { written in
            let promise = context.eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenSuccess { written(reply) }
            return promise
        }
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: reply.encoded)), promise: promise)
        wroteSinceFlush = true
    }

    private func flush(context: ChannelHandlerContext) {
        guard wroteSinceFlush else { return }
        wroteSinceFlush = false
        context.flush()
    }

    private func close(context: ChannelHandlerContext) {
        mode = .closed
        timeout?.cancel()
        flush(context: context)
        context.close(promise: nil)
    }

    /// The session times out at `deadline`, moved on by every read. Moving it costs a clock
    /// read: the one scheduled task fires at its time and, when input came meanwhile, waits
    /// again for what is left (a task cancelled and scheduled anew per read showed in the profile).
    private func armTimeout(context: ChannelHandlerContext) {
        let limit: Duration
        switch mode {
        case .data, .chunk: limit = timeouts.data
        default: limit = timeouts.command
        }
        deadline = context.eventLoop.now + TimeAmount(limit)
        if timeout != nil && timeoutFiresAt <= deadline { return }
        timeout?.cancel()
        scheduleTimeout(context: context)
    }

    private func scheduleTimeout(context: ChannelHandlerContext) {
        timeoutFiresAt = deadline
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timeout = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = loopBound.value
            handler.timeout = nil
            switch handler.mode {
            case .waiting, .closed: return  // the sink has its own bound; re-armed after it
            default: break
            }
            if context.eventLoop.now < handler.deadline {
                handler.scheduleTimeout(context: context)
                return
            }
            handler.logger.info("session timed out", metadata: ["peer": "\(handler.connection.clientAddress)"])
            handler.write(SMTPReply(421, EnhancedStatusCode(4, 4, 2), "\(handler.session.policy.hostname) Error: timeout exceeded"), context: context)
            handler.close(context: context)
        }
    }
}
