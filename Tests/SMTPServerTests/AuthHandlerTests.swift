import NIOCore
import NIOEmbedded
import SMTPProtocol
import Testing
@testable import SMTPServer

/// Knows one login; counts the checks it was asked for. A test double for the handler's own
/// logic (the real authenticator, scrypt hashes and failure limits, is tested in IngressTests).
actor OneUserAuthenticator: Authenticator {
    private(set) var checks: [String] = []
    var throttled = false

    func authenticate(username: String, password: String, clientIP: String?) async -> AuthenticationResult {
        checks.append(username)
        if throttled { return .throttled }
        return username == "alice" && password == "pw" ? .accepted(TenantGrant("acme")) : .rejected
    }

    func throttle() { throttled = true }
}

@Suite struct AuthHandlerTests {
    let policy = SessionPolicy(hostname: "mx.test", maximumBadCommands: 5, authOverPlaintext: true)

    /// A connection from an untrusted address on a listener that allows AUTH in plaintext.
    /// An async testing channel: the handler's tasks hand their results back to its event loop
    /// from other threads, which this loop (unlike EmbeddedEventLoop) allows.
    func channel(_ sink: RecordingSink, _ authenticator: OneUserAuthenticator) async throws -> NIOAsyncTestingChannel {
        let channel = try await NIOAsyncTestingChannel { channel in
            try channel.pipeline.syncOperations.addHandler(SMTPServerHandler(
                policy: policy, sink: sink, resolveTenant: { _ in nil }, authenticator: authenticator))
        }
        try await channel.connect(to: SocketAddress(ipAddress: "192.0.2.9", port: 4000)).get()
        return channel
    }

    /// Lets the authenticator's or the sink's task finish and the event loop take its answer.
    func settle(_ channel: NIOAsyncTestingChannel, until done: () async -> Bool) async throws {
        for _ in 0..<200 where !(await done()) {
            await channel.testingEventLoop.run()
            try await Task.sleep(for: .milliseconds(5))
        }
        try await Task.sleep(for: .milliseconds(5))
        await channel.testingEventLoop.run()
    }

    @Test func aLoginPermitsRelayAndTheTenantAndUserReachTheSink() async throws {
        let sink = RecordingSink()
        let authenticator = OneUserAuthenticator()
        let channel = try await channel(sink, authenticator)
        try await send(channel, "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRSET\r\n")
        let before = try await replies(channel)
        #expect(before.contains("250 AUTH PLAIN LOGIN\r\n"))
        #expect(before.hasSuffix("554 5.7.1 Relay access denied: authenticate or send from a trusted network\r\n250 2.0.0 OK\r\n"))
        // The whole transaction pipelined behind AUTH: nothing is read until the login is checked.
        try await send(channel, "AUTH PLAIN AGFsaWNlAHB3\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nhi\r\n.\r\n")
        try await settle(channel) { await sink.count == 1 }
        #expect(try await replies(channel) == "235 2.7.0 Authentication successful\r\n250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 queued\r\n")
        let connection = try #require(await sink.connections.first)
        #expect(connection.tenant == "acme" && connection.authenticatedUser == "alice")
    }

    @Test func loginMechanismWithChallenges() async throws {
        let authenticator = OneUserAuthenticator()
        let channel = try await channel(RecordingSink(), authenticator)
        try await send(channel, "EHLO c\r\nAUTH LOGIN\r\n")
        #expect(try await replies(channel).hasSuffix("334 VXNlcm5hbWU6\r\n"))
        try await send(channel, "YWxpY2U=\r\n")
        #expect(try await replies(channel) == "334 UGFzc3dvcmQ6\r\n")
        try await send(channel, "cHc=\r\n")
        try await settle(channel) { await authenticator.checks.count == 1 }
        #expect(try await replies(channel) == "235 2.7.0 Authentication successful\r\n")
        try await send(channel, "AUTH PLAIN\r\n")
        #expect(try await replies(channel) == "503 5.5.1 Error: already authenticated\r\n")
    }

    @Test func wrongCredentialsCancelAndGarbageAreRefusedAndTheSessionGoesOn() async throws {
        let sink = RecordingSink()
        let authenticator = OneUserAuthenticator()
        let channel = try await channel(sink, authenticator)
        try await send(channel, "EHLO c\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\n")
        try await settle(channel) { await authenticator.checks.count == 1 }
        #expect(try await replies(channel).hasSuffix("535 5.7.8 Authentication credentials invalid\r\n"))
        try await send(channel, "AUTH PLAIN\r\n*\r\nAUTH LOGIN\r\n!!!!\r\nNOOP\r\n")
        #expect(try await replies(channel) == "334 \r\n501 5.7.0 Authentication cancelled\r\n334 VXNlcm5hbWU6\r\n501 5.5.2 Cannot decode the response (base64 expected)\r\n250 2.0.0 OK\r\n")
        try await send(channel, "AUTH PLAIN\r\n" + String(repeating: "A", count: 600) + "\r\nNOOP\r\n")
        #expect(try await replies(channel) == "334 \r\n501 5.5.2 Cannot decode the response (base64 expected)\r\n250 2.0.0 OK\r\n", "an overlong response fails the exchange only")
        #expect(await authenticator.checks.count == 1, "only well-formed credentials are checked")
        #expect(await sink.count == 0)
        #expect(channel.isActive)
    }

    @Test func aThrottledClientIsDisconnected() async throws {
        let authenticator = OneUserAuthenticator()
        await authenticator.throttle()
        let channel = try await channel(RecordingSink(), authenticator)
        try await send(channel, "EHLO c\r\nAUTH PLAIN AGFsaWNlAHB3\r\nNOOP\r\n")
        try await settle(channel) { await authenticator.checks.count == 1 }
        #expect(try await replies(channel).hasSuffix("421 4.7.0 mx.test Error: too many failed authentications, try again later\r\n"))
        #expect(!channel.isActive)
    }
}
