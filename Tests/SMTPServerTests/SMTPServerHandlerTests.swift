import NIOCore
import NIOEmbedded
import SMTPProtocol
import Testing
@testable import SMTPServer

/// Records what it is given; answers with a fixed reply. Pure test double for the handler's
/// own logic; the real sink (Kafka) has its own tests.
actor RecordingSink: MessageSink {
    private(set) var messages: [(Envelope, [UInt8])] = []
    private(set) var connections: [ConnectionInfo] = []
    let reply: SMTPReply

    /// With `holding`, each message waits in `accept` until `release()`.
    private let holding: Bool
    private var held: [CheckedContinuation<Void, Never>] = []

    init(reply: SMTPReply = SMTPReply(250, EnhancedStatusCode(2, 0, 0), "queued"), holding: Bool = false) {
        self.reply = reply
        self.holding = holding
    }

    func accept(_ envelope: Envelope, message: [UInt8], connection: ConnectionInfo) async -> SMTPReply {
        messages.append((envelope, message))
        connections.append(connection)
        if holding { await withCheckedContinuation { held.append($0) } }
        return reply
    }

    func release() {
        for continuation in held { continuation.resume() }
        held = []
    }

    var count: Int { messages.count }
}

@Suite struct SMTPServerHandlerTests {
    let policy = SessionPolicy(hostname: "mx.test", maximumMessageSize: 10_000, maximumRecipients: 10)

    /// A channel from 192.0.2.7, which `trusted` decides about (by default: trusted).
    func channel(_ sink: RecordingSink, timeouts: SessionTimeouts = SessionTimeouts(),
                 trusted: @escaping TenantResolver = { _ in TenantGrant("test") }) async throws -> NIOAsyncTestingChannel {
        let policy = self.policy
        return try await Self.connected { SMTPServerHandler(policy: policy, sink: sink, resolveTenant: trusted, timeouts: timeouts) }
    }

    /// An async testing channel: the handler's sink task hands its reply back to the event
    /// loop from another thread, which this loop (unlike EmbeddedEventLoop) allows.
    static func connected(_ handler: @escaping @Sendable () -> SMTPServerHandler) async throws -> NIOAsyncTestingChannel {
        let channel = try await NIOAsyncTestingChannel { try $0.pipeline.syncOperations.addHandler(handler()) }
        try await channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 4000)).get()
        return channel
    }

    /// Lets the sink's task finish and the event loop deliver its reply.
    func settle(_ channel: NIOAsyncTestingChannel, _ sink: RecordingSink, messages: Int) async throws {
        for _ in 0..<200 where await sink.count < messages {
            await channel.testingEventLoop.run()
            try await Task.sleep(for: .milliseconds(5))
        }
        try await Task.sleep(for: .milliseconds(5))
        await channel.testingEventLoop.run()
    }

    @Test func aPipelinedTransactionGetsItsRepliesInOrderAndTheMessageIsDelivered() async throws {
        let sink = RecordingSink()
        let channel = try await channel(sink)
        #expect(try await replies(channel) == "220 mx.test ESMTP smarthost\r\n")
        try await send(channel, "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n")
        #expect(try await replies(channel).hasSuffix("250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"))
        try await send(channel, "Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n")
        try await settle(channel, sink, messages: 1)
        #expect(try await replies(channel) == "250 2.0.0 queued\r\n221 2.0.0 Bye\r\n", "QUIT is answered only after the message's reply")
        let (envelope, message) = try #require(await sink.messages.first)
        #expect(envelope.recipients.map(\.description) == ["b@y.test", "c@y.test"])
        #expect(String(decoding: message, as: UTF8.self) == "Subject: hi\r\n\r\n.dot\r\n")
    }

    @Test func smugglingAttemptsNeverStartASecondTransaction() async throws {
        let sink = RecordingSink()
        let channel = try await channel(sink)
        try await send(channel, "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        _ = try await replies(channel)
        try await send(channel, "Subject: x\r\n\r\nbody\n.\nMAIL FROM:<admin@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n.\r\n")
        #expect(try await replies(channel) == "550 5.6.0 Message refused: bare <LF> in data (line ends must be CRLF)\r\n")
        #expect(await sink.count == 0, "nothing reached the sink")
        try await send(channel, "NOOP\r\n")
        #expect(try await replies(channel) == "250 2.0.0 OK\r\n", "the session is still usable")
    }

    @Test func anUntrustedClientCannotRelay() async throws {
        let sink = RecordingSink()
        let channel = try await channel(sink, trusted: { $0 == "10.0.0.1" ? TenantGrant("test") : nil })
        _ = try await replies(channel)
        try await send(channel, "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        #expect(try await replies(channel).hasSuffix("250 2.1.0 Sender OK\r\n554 5.7.1 Relay access denied: authenticate or send from a trusted network\r\n503 5.5.1 Error: need RCPT command\r\n"))
        #expect(await sink.count == 0)
    }

    @Test func bdatChunksSplitAcrossReadsMakeOneMessage() async throws {
        let sink = RecordingSink()
        let channel = try await channel(sink)
        try await send(channel, "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 5\r\nab")
        try await send(channel, "cdeBDAT 3 LAST\r\nf\r\n")
        try await settle(channel, sink, messages: 1)
        #expect(try await replies(channel).hasSuffix("250 2.0.0 5 octets received\r\n250 2.0.0 queued\r\n"))
        #expect(await sink.messages.first?.1 == Array("abcdef\r\n".utf8))
    }

    @Test func anOverLongCommandLineIsRefusedAndTheNextOneWorks() async throws {
        let channel = try await channel(RecordingSink())
        _ = try await replies(channel)
        try await send(channel, "NOOP " + String(repeating: "x", count: 600) + "\r\nNOOP\r\n")
        #expect(try await replies(channel) == "500 5.5.2 Error: line too long\r\n250 2.0.0 OK\r\n")
    }

    @Test func anIdleClientIsDisconnectedWithA421() async throws {
        let channel = try await channel(RecordingSink(), timeouts: SessionTimeouts(command: .seconds(30)))
        _ = try await replies(channel)
        await channel.testingEventLoop.advanceTime(by: .seconds(31))
        #expect(try await replies(channel) == "421 4.4.2 mx.test Error: timeout exceeded\r\n")
        #expect(!channel.isActive)
    }

    @Test func aTransientSinkFailureIsPassedOnAndTheSessionGoesOn() async throws {
        let sink = RecordingSink(reply: SMTPReply(451, EnhancedStatusCode(4, 3, 0), "queue unavailable, try again"))
        let channel = try await channel(sink)
        try await send(channel, "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\nMAIL FROM:<a@x.test>\r\n")
        try await settle(channel, sink, messages: 1)
        #expect(try await replies(channel).hasSuffix("451 4.3.0 queue unavailable, try again\r\n250 2.1.0 Sender OK\r\n"))
    }
}

extension SMTPServerHandlerTests {
    @Test func aClientIdleAfterItsMessageIsStillTimedOut() async throws {
        let sink = RecordingSink(holding: true)
        let channel = try await channel(sink, timeouts: SessionTimeouts(command: .seconds(30)))
        try await send(channel, "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\n")
        try await settle(channel, sink, messages: 1)
        await channel.testingEventLoop.advanceTime(by: .seconds(31))  // fires while the sink works: ignored
        #expect(channel.isActive)
        await sink.release()
        try await Task.sleep(for: .milliseconds(20))
        await channel.testingEventLoop.run()
        #expect(try await replies(channel).hasSuffix("250 2.0.0 queued\r\n"))
        #expect(channel.isActive)
        await channel.testingEventLoop.advanceTime(by: .seconds(31))
        #expect(try await replies(channel) == "421 4.4.2 mx.test Error: timeout exceeded\r\n")
        #expect(!channel.isActive)
    }
}

extension SMTPServerHandlerTests {
    /// Without a TLS context STARTTLS is not offered, and without an authenticator AUTH is
    /// not, whatever the policy says; a client's command must never bring the server down.
    @Test func startTLSAndAuthOnAListenerWithoutThemAreRefused() async throws {
        let policy = SessionPolicy(hostname: "mx.test", offersStartTLS: true, offersAuth: true, authOverPlaintext: true)
        let channel = try await Self.connected { SMTPServerHandler(policy: policy, sink: RecordingSink(), resolveTenant: { _ in nil }) }
        _ = try await replies(channel)
        try await send(channel, "EHLO c\r\nAUTH PLAIN\r\nSTARTTLS\r\nNOOP\r\n")
        let text = try await replies(channel)
        #expect(!text.contains("250-STARTTLS") && !text.contains("250 STARTTLS"), "not offered")
        #expect(!text.contains("250-AUTH") && !text.contains("250 AUTH"), "not offered")
        #expect(text.hasSuffix("502 5.5.1 Error: AUTH not available\r\n502 5.5.1 Error: STARTTLS not available\r\n250 2.0.0 OK\r\n"))
    }
}

extension SMTPServerHandlerTests {
    /// A chunk far over the limit is read to its end (the next command is still understood)
    /// and refused; the handler keeps at most the limit plus one octet of it.
    @Test func anOversizedBdatChunkIsReadToItsEndAndRefused() async throws {
        let sink = RecordingSink()
        let channel = try await channel(sink)
        try await send(channel, "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 200000 LAST\r\n")
        _ = try await replies(channel)
        for _ in 0..<20 { try await send(channel, String(repeating: "x", count: 10_000)) }
        try await send(channel, "NOOP\r\n")
        #expect(try await replies(channel) == "552 5.3.4 Message too big for this system\r\n250 2.0.0 OK\r\n")
        #expect(await sink.count == 0)
    }
}
