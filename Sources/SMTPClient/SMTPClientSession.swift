import Logging
import NIOCore
import NIOPosix
import NIOSSL
import SMTPProtocol
import Synchronization

/// One message to send on a session.
public struct OutboundMessage: Sendable {
    public var sender: Mailbox?
    public var recipients: [Mailbox]
    /// The message as queued; dot-stuffed on the way out.
    public var content: [UInt8]
    public var eightBit: Bool
    public var smtputf8: Bool

    public init(sender: Mailbox?, recipients: [Mailbox], content: [UInt8], eightBit: Bool = false, smtputf8: Bool = false) {
        self.sender = sender
        self.recipients = recipients
        self.content = content
        self.eightBit = eightBit
        self.smtputf8 = smtputf8
    }
}

/// An SMTP client session on SwiftNIO: greeting, EHLO (HELO fallback), STARTTLS by policy,
/// then any number of transactions, each driven by the pure `ClientTransaction`.
///
/// Open one with `SMTPClientSession.withSession`: the connection lives as long as the closure
/// and is closed (after QUIT, when the session is still usable) when it returns.
public final class SMTPClientSession {
    /// What the server offers after the (last) EHLO; empty after a HELO fallback.
    public private(set) var capabilities = ServerCapabilities()
    /// The greeting's text, for logs and events.
    public private(set) var greeting: SMTPReply?
    /// "ip:port" of the server.
    public let peer: String
    public private(set) var tlsActive = false
    /// False once an error left the stream in an unknown state: the caller must not send more.
    public private(set) var isUsable = true
    public private(set) var messagesSent = 0

    private let channel: Channel
    private var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private let settings: SMTPClientSettings
    private let serverName: String
    private var reader = ReplyReader()
    private var received: [UInt8] = []
    private var receivedStart = 0

    private init(channel: Channel, inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
                 settings: SMTPClientSettings, serverName: String) {
        self.channel = channel
        self.inbound = inbound.makeAsyncIterator()
        self.outbound = outbound
        self.settings = settings
        self.serverName = serverName
        peer = channel.remoteAddress.map(Self.describe) ?? serverName
    }

    /// Connects to `host:port`, opens the session (greeting, EHLO, STARTTLS per policy) and runs
    /// `body` with it; sends QUIT and closes the connection afterwards.
    public static func withSession<Result: Sendable>(
        host: String, port: Int, settings: SMTPClientSettings, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        _ body: (SMTPClientSession) async throws -> Result
    ) async throws -> Result {
        var bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(Int64(settings.timeouts.connect.nanoseconds)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        if let source = settings.sourceAddress {
            do {
                bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: source, port: 0))
            } catch {
                throw SMTPClientError(.connectFailed("source address \(source): \(error)"), at: .connect)
            }
        }
        let asyncChannel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            asyncChannel = try await bootstrap.connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        } catch {
            throw SMTPClientError(.connectFailed("\(host):\(port): \(error)"), at: .connect)
        }
        return try await asyncChannel.executeThenClose { inbound, outbound in
            let session = SMTPClientSession(channel: asyncChannel.channel, inbound: inbound, outbound: outbound,
                                            settings: settings, serverName: host)
            try await session.open()
            let result = try await body(session)
            await session.quit()
            return result
        }
    }

    // MARK: - Opening

    private func open() async throws {
        let greeting = try await readReply(.greeting, timeout: settings.timeouts.greeting)
        self.greeting = greeting
        guard greeting.code == 220 else { throw fail(.refused(greeting), at: .greeting) }
        try await hello()
        switch settings.tls {
        case .disabled:
            break
        case .opportunistic where capabilities.startTLS:
            try await startTLS(required: false)
        case .opportunistic:
            break
        case .required:
            guard capabilities.startTLS else { throw fail(.tlsNotOffered, at: .starttls) }
            try await startTLS(required: true)
        }
    }

    /// EHLO, or HELO when the server refuses EHLO (RFC 5321 3.2).
    private func hello() async throws {
        let ehlo = try await command("EHLO \(settings.ehloName)", .ehlo)
        if ehlo.code == 250 {
            capabilities = ServerCapabilities(ehlo: ehlo)
            return
        }
        let helo = try await command("HELO \(settings.ehloName)", .ehlo)
        guard helo.code == 250 else { throw fail(.refused(helo), at: .ehlo) }
        capabilities = ServerCapabilities()
    }

    /// STARTTLS (RFC 3207): after the 220 nothing received in plaintext may be kept (a server
    /// or a man in the middle could inject replies), the handshake, then EHLO again.
    private func startTLS(required: Bool) async throws {
        let reply = try await command("STARTTLS", .starttls)
        guard reply.code == 220 else {
            if required { throw fail(.refused(reply), at: .starttls) }
            return
        }
        guard receivedStart == received.count else {
            throw fail(.protocolViolation("data after the STARTTLS reply, before the handshake"), at: .starttls)
        }
        let serverName = self.serverName
        do {
            try await channel.eventLoop.submit { [channel] in
                var configuration = TLSConfiguration.makeClientConfiguration()
                configuration.certificateVerification = .none
                let context = try NIOSSLContext(configuration: configuration)
                // SNI only for names, never for address literals (RFC 6066 3).
                let name = (try? SocketAddress(ipAddress: serverName, port: 0)) == nil ? serverName : nil
                let handler = try NIOSSLClientHandler(context: context, serverHostname: name)
                try channel.pipeline.syncOperations.addHandler(handler, position: .first)
            }.get()
        } catch {
            throw fail(.connectionLost("TLS setup: \(error)"), at: .starttls)
        }
        tlsActive = true
        try await hello()
    }

    // MARK: - Transactions

    /// Sends one message and returns an outcome per recipient, in order. A thrown
    /// `SMTPClientError` means the connection is gone: every recipient not yet final has the
    /// error's transient reply (the caller retries them; a message whose final dot was sent
    /// may then arrive twice, the accepted cost of at-least-once delivery, RFC 1047).
    public func send(_ message: OutboundMessage) async throws -> [ClientTransaction.Outcome] {
        precondition(isUsable, "a session that failed cannot send")
        var (transaction, step) = ClientTransaction.start(
            sender: message.sender, recipients: message.recipients, size: message.content.count,
            eightBit: message.eightBit, smtputf8: message.smtputf8, capabilities: capabilities)
        var stage = SMTPClientError.Stage.mail
        while true {
            switch step {
            case .send(let lines):
                stage = lines[0].hasPrefix("MAIL") ? .mail : lines[0] == "DATA" ? .data : .rcpt
                try await write(lines.map { $0 + "\r\n" }.joined(), stage)
                let timeout = lines == ["DATA"] ? settings.timeouts.dataInitiation : settings.timeouts.command
                step = try await transaction!.handle(readReply(stage, timeout: timeout))
            case .awaitReply:
                step = try await transaction!.handle(readReply(stage, timeout: settings.timeouts.command))
            case .sendData:
                try await write(DotStuffing.encode(message.content), .dataBlock, timeout: settings.timeouts.dataBlock)
                step = try await transaction!.handle(readReply(.dataEnd, timeout: settings.timeouts.dataTermination))
            case .endEmptyData(let outcomes):
                try await write(".\r\n", .dataEnd)
                _ = try await readReply(.dataEnd, timeout: settings.timeouts.dataTermination)
                try await reset()
                return outcomes
            case .finished(let outcomes, let needsReset):
                if needsReset && closing == nil { try await reset() }
                if outcomes.contains(where: { if case .delivered = $0 { true } else { false } }) { messagesSent += 1 }
                return outcomes
            }
        }
    }

    private func reset() async throws {
        let reply = try await command("RSET", .rset)
        guard reply.code == 250 else { throw fail(.refused(reply), at: .rset) }
    }

    /// QUIT, politely and briefly: its reply changes nothing, so a slow one is not waited for.
    private func quit() async {
        guard isUsable else { return }
        _ = try? await command("QUIT", .quit, timeout: .seconds(5))
        isUsable = false
    }

    // MARK: - I/O

    private func command(_ line: String, _ stage: SMTPClientError.Stage, timeout: Duration? = nil) async throws -> SMTPReply {
        try await write(line + "\r\n", stage)
        return try await readReply(stage, timeout: timeout ?? settings.timeouts.command)
    }

    private func write(_ text: String, _ stage: SMTPClientError.Stage) async throws {
        try await write(Array(text.utf8), stage, timeout: settings.timeouts.command)
    }

    private func write(_ bytes: [UInt8], _ stage: SMTPClientError.Stage, timeout: Duration) async throws {
        let buffer = channel.allocator.buffer(bytes: bytes)
        try await withDeadline(timeout, stage) {
            try await outbound.write(buffer)
        }
    }

    /// The last 421 the server sent: it closes the connection after it.
    private var closing: SMTPReply?

    /// The next reply, from bytes already received (PIPELINING sends them together) or read now.
    private func readReply(_ stage: SMTPClientError.Stage, timeout: Duration) async throws -> SMTPReply {
        while true {
            if receivedStart < received.count {
                let (consumed, result) = reader.next(from: received[receivedStart...])
                receivedStart += consumed
                if receivedStart == received.count {
                    received.removeAll(keepingCapacity: true)
                    receivedStart = 0
                }
                switch result {
                case .success(let reply)?:
                    if reply.code == 421 {
                        // The server is closing the session (RFC 5321 §3.8): no further command.
                        closing = reply
                        isUsable = false
                    }
                    return reply
                case .failure(let failure)?: throw fail(.protocolViolation(failure.description), at: stage)
                case nil: break
                }
            }
            let buffer = try await withDeadline(timeout, stage) {
                try await inbound.next()
            }
            guard let buffer else {
                // A 421 announced the close (RFC 5321 §3.8): the server's own words are the
                // outcome, for the recipients and for the response rules.
                if let closing { throw fail(.refused(closing), at: stage) }
                throw fail(.connectionLost("closed by the server"), at: stage)
            }
            received.append(contentsOf: buffer.readableBytesView)
        }
    }

    /// Runs `body`, closing the channel if it takes longer than `timeout` (which ends any read
    /// or write in progress); I/O errors become `SMTPClientError`s that name the stage.
    private func withDeadline<T>(_ timeout: Duration, _ stage: SMTPClientError.Stage, _ body: () async throws -> T) async throws -> T {
        let expired = ExpiryFlag()
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.nanoseconds))) { [channel] in
            expired.value.store(true, ordering: .relaxed)
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        do {
            let result = try await body()
            // The timer fired as the reply came: the channel is closing either way.
            if expired.value.load(ordering: .relaxed) { throw fail(.timeout, at: stage) }
            return result
        } catch let error as SMTPClientError {
            throw error
        } catch {
            if expired.value.load(ordering: .relaxed) { throw fail(.timeout, at: stage) }
            throw fail(.connectionLost("\(error)"), at: stage)
        }
    }

    private func fail(_ kind: SMTPClientError.Kind, at stage: SMTPClientError.Stage) -> SMTPClientError {
        isUsable = false
        return SMTPClientError(kind, at: stage)
    }

    private static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

/// Set by the timer when a deadline passes, so that the resulting close reads as a timeout.
private final class ExpiryFlag: Sendable {
    let value = Atomic<Bool>(false)
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
