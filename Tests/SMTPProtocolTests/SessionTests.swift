import Testing
@testable import SMTPProtocol

/// The session state machine, driven the way the connection handler drives it.
@Suite struct SessionTests {
    let policy = SessionPolicy(hostname: "mx.test", maximumMessageSize: 1000, maximumRecipients: 2, maximumBadCommands: 3,
                               offersStartTLS: true, offersAuth: true)

    /// Feeds command lines; returns the text of each reply (or the action's name).
    func run(_ session: inout SMTPSession, _ lines: [String]) -> [String] {
        lines.map { line in
            let parsed = Result { () throws(SMTPCommandError) -> SMTPCommand in
                try SMTPCommand.parse(Array(line.utf8), smtputf8Offered: true, utf8Transaction: session.isUTF8Transaction)
            }
            switch parsed {
            case .success(let command): return describe(session.handle(command))
            case .failure(let error): return describe(session.refused(error))
            }
        }
    }

    func describe(_ action: SMTPSession.Action) -> String {
        switch action {
        case .reply(let reply): return reply.description
        case .close(let reply): return "close: \(reply)"
        case .readData(let reply, let size): return "data(\(size)): \(reply)"
        case .readChunk(let size, let last): return "chunk(\(size)\(last ? " last" : ""))"
        case .startTLS(let reply): return "tls: \(reply)"
        case .authenticate(let mechanism, let initial): return "auth \(mechanism) \(initial ?? "-")"
        case .deliver(let envelope, let message): return "deliver \(envelope.sender?.description ?? "<>") -> \(envelope.recipients.map(\.description)) \(message.count)"
        }
    }

    @Test func aWholeTransaction() {
        var session = SMTPSession(policy: policy, relayPermitted: true)
        #expect(session.greeting.description == "220 mx.test ESMTP smarthost")
        let replies = run(&session, ["EHLO client.test", "MAIL FROM:<a@x.test> SIZE=500", "RCPT TO:<b@y.test>", "DATA"])
        #expect(replies == [
            "250 mx.test greets client.test\n250 PIPELINING\n250 SIZE 1000\n250 8BITMIME\n250 SMTPUTF8\n250 ENHANCEDSTATUSCODES\n250 CHUNKING\n250 STARTTLS",
            "250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "data(1000): 354 End data with <CR><LF>.<CR><LF>",
        ])
        #expect(session.expectsData)
        let action = session.dataFinished(message: Array("Subject: t\r\n\r\nhi\r\n".utf8), problem: nil)
        #expect(describe(action) == "deliver a@x.test -> [\"b@y.test\"] 18")
        #expect(session.messageHandled(SMTPReply(250, EnhancedStatusCode(2, 0, 0), "queued")).code == 250)
        #expect(run(&session, ["MAIL FROM:<>", "RCPT TO:<c@y.test>"]) == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"], "the next transaction starts clean")
    }

    @Test func commandsOutOfSequenceAreRefusedAndTheSessionStaysUsable() {
        var session = SMTPSession(policy: SessionPolicy(hostname: "mx.test"), relayPermitted: true)
        #expect(run(&session, ["MAIL FROM:<a@x.test>", "EHLO c", "RCPT TO:<b@y.test>", "DATA", "MAIL FROM:<a@x.test>", "MAIL FROM:<a@x.test>", "DATA", "RCPT TO:<b@y.test>", "DATA"]).map { String($0.prefix(30)) } == [
            "503 5.5.1 Error: send EHLO or ", "250 mx.test greets c\n250 PIPEL", "503 5.5.1 Error: need MAIL com", "503 5.5.1 Error: need MAIL com",
            "250 2.1.0 Sender OK", "503 5.5.1 Error: nested MAIL c", "503 5.5.1 Error: need RCPT com", "250 2.1.5 Recipient OK", "data(26214400): 354 End data w",
        ])
    }

    @Test func tooManyRecipientsGetA452AndTheOthersStay() {
        var session = SMTPSession(policy: policy, relayPermitted: true)
        #expect(run(&session, ["EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<1@y.test>", "RCPT TO:<2@y.test>", "RCPT TO:<3@y.test>", "DATA"]).suffix(3) == [
            "250 2.1.5 Recipient OK", "452 4.5.3 Too many recipients", "data(1000): 354 End data with <CR><LF>.<CR><LF>",
        ])
        #expect(describe(session.dataFinished(message: [65], problem: nil)) == "deliver a@x.test -> [\"1@y.test\", \"2@y.test\"] 1")
    }

    @Test func anAnnouncedSizeOverTheLimitIsRefusedAtMail() {
        var session = SMTPSession(policy: policy, relayPermitted: true)
        #expect(run(&session, ["EHLO c", "MAIL FROM:<a@x.test> SIZE=1001"]).last == "552 5.3.4 Message size exceeds fixed limit of 1000 octets")
    }

    @Test func tooManyBadCommandsCloseTheSession() {
        var session = SMTPSession(policy: policy, relayPermitted: true)
        #expect(run(&session, ["FOO", "RCPT TO:<a@b.test>", "BAR"]) == [
            "500 5.5.2 Error: command not recognized", "503 5.5.1 Error: need MAIL command", "close: 421 4.7.0 mx.test Error: too many errors",
        ])
    }

    @Test func authNeedsTLSUnlessTheListenerTrustsPlaintext() {
        var plain = SMTPSession(policy: policy, relayPermitted: true)
        #expect(run(&plain, ["EHLO c", "AUTH PLAIN AGEAYg=="]).last == "530 5.7.0 Must issue a STARTTLS command first")
        var trusted = SMTPSession(policy: SessionPolicy(hostname: "mx.test", offersAuth: true, authOverPlaintext: true), relayPermitted: true)
        #expect(run(&trusted, ["EHLO c", "AUTH PLAIN AGEAYg==", ]).last == "auth PLAIN AGEAYg==")
        #expect(run(&trusted, ["AUTH CRAM-MD5"]).last == "504 5.5.4 Unrecognized authentication type")
    }

    @Test func startTLSResetsTheSessionAndOffersAuthAfterwards() {
        var lenient = policy
        lenient.maximumBadCommands = 10
        var session = SMTPSession(policy: lenient, relayPermitted: true)
        #expect(run(&session, ["EHLO c", "STARTTLS"]).last == "tls: 220 2.0.0 Ready to start TLS")
        session.tlsStarted()
        #expect(run(&session, ["MAIL FROM:<a@x.test>"]) == ["503 5.5.1 Error: send EHLO or HELO first"], "RFC 3207: the client must EHLO again")
        let ehlo = run(&session, ["EHLO c"])[0]
        #expect(!ehlo.contains("STARTTLS"))
        #expect(ehlo.hasSuffix("250 AUTH PLAIN LOGIN"))
        #expect(run(&session, ["STARTTLS"]) == ["502 5.5.1 Error: STARTTLS not available"])
        #expect(run(&session, ["AUTH LOGIN"]) == ["auth LOGIN -"])
        #expect(session.authenticated().description == "235 2.7.0 Authentication successful")
        #expect(run(&session, ["AUTH PLAIN"]) == ["503 5.5.1 Error: already authenticated"])
    }

    @Test func bdatChunksMakeOneMessage() {
        var session = SMTPSession(policy: policy, relayPermitted: true)
        #expect(run(&session, ["EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>", "BDAT 3"]).last == "chunk(3)")
        #expect(describe(session.chunkReceived(Array("abc".utf8), last: false)) == "250 2.0.0 3 octets received")
        #expect(run(&session, ["BDAT 2 LAST"]) == ["chunk(2 last)"])
        #expect(describe(session.chunkReceived(Array("de".utf8), last: true)) == "deliver a@x.test -> [\"b@y.test\"] 5")
    }

    @Test func bdatChunksOverTheLimitAreReadAndRefused() {
        var session = SMTPSession(policy: policy, relayPermitted: true)
        _ = run(&session, ["EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>", "BDAT 800"])
        _ = session.chunkReceived([UInt8](repeating: 65, count: 800), last: false)
        _ = run(&session, ["BDAT 800 LAST"])
        #expect(describe(session.chunkReceived([UInt8](repeating: 65, count: 800), last: true)) == "552 5.3.4 Message too big for this system")
        #expect(run(&session, ["MAIL FROM:<a@x.test>"]) == ["250 2.1.0 Sender OK"], "the session goes on")
    }

    @Test func bdatWithoutRecipientsIsReadThenRefused() {
        var session = SMTPSession(policy: policy, relayPermitted: true)
        #expect(run(&session, ["EHLO c", "BDAT 4"]).last == "chunk(4)")
        #expect(describe(session.chunkReceived(Array("junk".utf8), last: true)) == "503 5.5.1 Error: need RCPT command before BDAT")
    }

    @Test func aDataProblemRefusesTheMessageAndResetsTheTransaction() {
        var session = SMTPSession(policy: policy, relayPermitted: true)
        _ = run(&session, ["EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>", "DATA"])
        #expect(describe(session.dataFinished(message: [], problem: .bareLineFeed)).hasPrefix("550 5.6.0 Message refused: bare <LF>"))
        #expect(run(&session, ["RCPT TO:<b@y.test>"]) == ["503 5.5.1 Error: need MAIL command"])
    }

    @Test func noRelayWithoutPermission() {
        var session = SMTPSession(policy: policy)
        #expect(run(&session, ["EHLO c", "MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>", "DATA"]).suffix(2) == [
            "554 5.7.1 Relay access denied: authenticate or send from a trusted network", "503 5.5.1 Error: need RCPT command",
        ])
    }

    @Test func authParameterFromAnUnauthenticatedClientIsDropped() {
        var session = SMTPSession(policy: policy, relayPermitted: true)
        _ = run(&session, ["EHLO c", "MAIL FROM:<a@x.test> AUTH=a@x.test", "RCPT TO:<b@y.test>", "DATA"])
        guard case .deliver(let envelope, _) = session.dataFinished(message: [], problem: nil) else {
            Issue.record("no delivery")
            return
        }
        #expect(envelope.parameters.auth == nil)
    }
}
