import NIOCore
import NIOPosix
import Foundation
import SMTPClient
import SMTPProtocol
import TestSupport
import Testing

/// The client against a real SMTP server (aiosmtpd, scripted), over real sockets.
@Suite(.serialized) struct SMTPClientSessionTests {
    let settings = SMTPClientSettings(ehloName: "relay.smarthost.test", timeouts: SMTPClientTimeouts(all: .seconds(10)))
    let sender = Mailbox(localPart: "app", domain: "acme.test")

    func message(_ recipients: [String], content: String = "Subject: hi\r\n\r\nHello\r\n", smtputf8: Bool = false) -> OutboundMessage {
        OutboundMessage(sender: sender, recipients: recipients.map { try! Mailbox(parsing: Substring($0), allowUTF8: true) },
                        content: Array(content.utf8), smtputf8: smtputf8)
    }

    @Test func pipelinedTransactionWithPerRecipientOutcomesAndExactContent() async throws {
        let server = try await ScriptedSMTPServer.start(script: #"{"rules": [{"when": "rcpt", "domain": "bounce.test", "reply": "550 5.1.1 no such user"}, {"when": "rcpt", "address": "later@dest.test", "reply": "451 4.3.0 try later"}]}"#)
        defer { server.stop() }
        // A line starting with a dot, a bare LF, and 8-bit text: the server must see the dot
        // once (un-stuffed) and CRLF everywhere.
        let content = "Subject: dots\r\n\r\n.hidden line\r\n..two dots\nbare LF\r\ncaf\u{e9}\r\n"
        let outcomes = try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: settings) { session in
            #expect(session.capabilities.pipelining)
            return try await session.send(message(["a@dest.test", "x@bounce.test", "later@dest.test"], content: content))
        }
        #expect(outcomes.count == 3)
        guard outcomes.count == 3 else { return }
        #expect({ if case .delivered = outcomes[0] { true } else { false } }())
        #expect(outcomes[1] == .permanentFailure(SMTPReply(550, EnhancedStatusCode(5, 1, 1), "no such user")))
        #expect(outcomes[2] == .transientFailure(SMTPReply(451, EnhancedStatusCode(4, 3, 0), "try later")))
        let messages = try server.messages()
        #expect(messages.count == 1)
        #expect(messages.first?.recipients == ["a@dest.test"])
        let received = try server.content(of: try #require(messages.first))
        #expect(received == Array("Subject: dots\r\n\r\n.hidden line\r\n..two dots\r\nbare LF\r\ncaf\u{e9}\r\n".utf8))
    }

    @Test func oneConnectionCarriesManyMessages() async throws {
        let server = try await ScriptedSMTPServer.start()
        defer { server.stop() }
        let sent = try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: settings) { session in
            for number in 0..<5 { _ = try await session.send(message(["user\(number)@dest.test"])) }
            return session.messagesSent
        }
        #expect(sent == 5)
        let records = try server.records()
        #expect(records.filter { $0.event == "connect" }.count == 1)
        #expect(records.filter { $0.event == "message" }.count == 5)
    }

    @Test func startTLSIsUsedWhenOffered() async throws {
        let certificate = try await TestCertificate.make(commonName: "destination.test")
        let server = try await ScriptedSMTPServer.start(certificate: certificate)
        defer { server.stop() }
        let tls = try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: settings) { session in
            _ = try await session.send(message(["a@dest.test"]))
            return session.tlsActive
        }
        #expect(tls)
        #expect(try server.messages().first?.tls == true)
    }

    @Test func requiredTLSWithoutSTARTTLSIsATransientFailureBeforeAnyMail() async throws {
        let server = try await ScriptedSMTPServer.start()
        defer { server.stop() }
        var required = settings
        required.tls = .required
        let error = await #expect(throws: SMTPClientError.self) {
            try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: required) { _ in }
        }
        #expect(error?.kind == .tlsNotOffered)
        #expect(error?.reply.code == 451 && error?.reply.enhancedCode == EnhancedStatusCode(4, 7, 10))
        #expect(try server.messages().isEmpty)
    }

    @Test func requiredTLSIsNegotiatedWithAServerThatRequiresIt() async throws {
        let certificate = try await TestCertificate.make(commonName: "destination.test")
        let server = try await ScriptedSMTPServer.start(certificate: certificate, requireTLS: true)
        defer { server.stop() }
        var required = settings
        required.tls = .required
        let outcomes = try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: required) { session in
            try await session.send(message(["a@dest.test"]))
        }
        #expect(outcomes.allSatisfy { if case .delivered = $0 { true } else { false } })
        #expect(try server.messages().first?.tls == true)
    }

    @Test func heloWhenEHLOIsRefused() async throws {
        let server = try await ScriptedSMTPServer.start(script: #"{"rules": [{"when": "ehlo", "times": 1, "reply": "502 5.5.2 EHLO not here"}]}"#)
        defer { server.stop() }
        let capabilities = try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: settings) { session in
            _ = try await session.send(message(["a@dest.test"]))
            return session.capabilities
        }
        #expect(capabilities == ServerCapabilities())
        #expect(try server.messages().count == 1)
    }

    @Test func smtputf8MessageToAServerWithoutItFailsPermanentlyWithoutBeingSent() async throws {
        let server = try await ScriptedSMTPServer.start(script: #"{"smtputf8": false, "rules": []}"#)
        defer { server.stop() }
        let outcomes = try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: settings) { session in
            try await session.send(message(["j\u{f6}rg@dest.test"], smtputf8: true))
        }
        #expect(outcomes == [.permanentFailure(SMTPReply(553, EnhancedStatusCode(5, 6, 7), "The message needs SMTPUTF8, which the destination does not offer"))])
        #expect(try server.messages().isEmpty)
    }

    @Test func disconnectInTheMiddleOfDataIsAConnectionLossNotADelivery() async throws {
        let server = try await ScriptedSMTPServer.start(script: #"{"rules": [{"when": "data_end", "action": "disconnect_mid_data"}]}"#)
        defer { server.stop() }
        let error = await #expect(throws: SMTPClientError.self) {
            try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: settings) { session in
                _ = try await session.send(message(["a@dest.test"]))
            }
        }
        #expect(error?.stage == .dataEnd)
        #expect(error?.reply.isTransient == true)
        #expect(try server.messages().isEmpty)
    }

    @Test func aSilentServerTimesOutAtTheStageItIsSilentIn() async throws {
        let server = try await ScriptedSMTPServer.start(script: #"{"rules": [{"when": "mail", "action": "delay", "seconds": 5}]}"#)
        defer { server.stop() }
        var impatient = settings
        impatient.timeouts = SMTPClientTimeouts(all: .milliseconds(500))
        let error = await #expect(throws: SMTPClientError.self) {
            try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: impatient) { session in
                _ = try await session.send(message(["a@dest.test"]))
            }
        }
        #expect(error?.kind == .timeout)
        #expect(error?.stage == .mail)
    }

    @Test func aRefusedConnectionAndARefusingGreetingAreTransient() async throws {
        let closedPort = try Loopback.freePort()
        let refused = await #expect(throws: SMTPClientError.self) {
            try await SMTPClientSession.withSession(host: "127.0.0.1", port: closedPort, settings: settings) { _ in }
        }
        #expect(refused?.stage == .connect && refused?.reply.code == 451)

        let server = try await ScriptedSMTPServer.start(script: #"{"rules": [{"when": "connect", "action": "refuse"}]}"#)
        defer { server.stop() }
        let greeting = await #expect(throws: SMTPClientError.self) {
            try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: settings) { _ in }
        }
        #expect(greeting?.stage == .greeting && greeting?.reply.isTransient == true)
    }
}

/// Servers that do not speak SMTP, or speak it with hostile replies: every case is a
/// transient `SMTPClientError` naming the stage, never a crash or unbounded memory.
@Suite struct HostileServerTests {
    /// A TCP server on loopback that sends `greeting` to each connection, then answers every
    /// line it reads with `answer` (or closes, when nil).
    final class RawServer: Sendable {
        let channel: any Channel
        var port: Int { channel.localAddress?.port ?? 0 }

        init(greeting: [UInt8], answer: [UInt8]?) async throws {
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { child in
                    child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(Responder(greeting: greeting, answer: answer))
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
        }

        func close() async { try? await channel.close() }
    }

    final class Responder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let greeting: [UInt8]
        let answer: [UInt8]?

        init(greeting: [UInt8], answer: [UInt8]?) {
            self.greeting = greeting
            self.answer = answer
        }

        func channelActive(context: ChannelHandlerContext) {
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: greeting)), promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let answer else { return context.close(promise: nil) }
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: answer)), promise: nil)
        }
    }

    static let settings = SMTPClientSettings(ehloName: "relay.test", timeouts: SMTPClientTimeouts(all: .seconds(2)))

    static let cases: [(String, [UInt8], [UInt8]?, SMTPClientError.Stage)] = [
        ("not SMTP at all", Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8), nil, .greeting),
        ("a reply line of 100 kB", Array(repeating: UInt8(ascii: "2"), count: 100_000) + [13, 10], nil, .greeting),
        ("endless continuation lines", Array(String(repeating: "220-more\r\n", count: 500).utf8), nil, .greeting),
        ("a multi-line reply mixing codes", Array("220-a\r\n250 b\r\n".utf8), nil, .greeting),
        ("a code outside 2xx-5xx", Array("999 hello\r\n".utf8), nil, .greeting),
        ("a 554 greeting", Array("554 5.7.1 go away\r\n".utf8), nil, .greeting),
        ("a greeting then silence-closing", Array("220 ok\r\n".utf8), nil, .ehlo),
        ("an EHLO answer that is garbage", Array("220 ok\r\n".utf8), Array("\u{0}\u{1}binary\r\n".utf8), .ehlo),
        ("a NUL-laden greeting", [50, 50, 48, 0, 0, 0, 13, 10] + Array("220 ok\r\n".utf8), nil, .greeting),
    ]

    @Test(arguments: cases.indices)
    func aHostileServerIsATransientErrorAtItsStage(_ index: Int) async throws {
        let (name, greeting, answer, stage) = Self.cases[index]
        let server = try await RawServer(greeting: greeting, answer: answer)
        let error = await #expect(throws: SMTPClientError.self, "\(name)") {
            try await SMTPClientSession.withSession(host: "127.0.0.1", port: server.port, settings: Self.settings) { _ in }
        }
        await server.close()
        #expect(error?.stage == stage, "\(name): \(error.map(String.init(describing:)) ?? "no error")")
        #expect(error?.reply.isTransient == true, "\(name)")
    }
}
