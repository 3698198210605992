import Foundation
import NIOPosix
import SMTPProtocol
import Testing
import TestSupport
@testable import SMTPServer

/// The server against real SMTP clients: swaks and Postfix's smtp-source.
@Suite(.timeLimit(.minutes(2)))
struct RealClientTests {
    func listener(_ sink: RecordingSink) async throws -> (SMTPListener, Int) {
        let listener = try await SMTPListener.bind(host: "127.0.0.1", port: 0,
                                                   policy: SessionPolicy(hostname: "mx.test", maximumMessageSize: 1 << 20), sink: sink,
                                                   resolveTenant: { $0 == "127.0.0.1" ? TenantGrant("test") : nil })
        return (listener, listener.localAddress!.port!)
    }

    @Test func swaksWithPipeliningDeliversOneMessage() async throws {
        let sink = RecordingSink()
        let (listener, port) = try await listener(sink)
        defer { Task { try? await listener.close() } }
        let result = try await runCommand(try findExecutable("swaks"), ["--server", "127.0.0.1:\(port)", "--pipeline", "--from", "a@x.test", "--to", "b@y.test,c@y.test",
                                       "--header", "Subject: swaks test", "--body", "line one\n.leading dot\n"])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        let (envelope, message) = try #require(await sink.messages.first)
        #expect(envelope.sender?.description == "a@x.test")
        #expect(envelope.recipients.map(\.description) == ["b@y.test", "c@y.test"])
        let text = String(decoding: message, as: UTF8.self)
        #expect(text.contains("Subject: swaks test\r\n"))
        #expect(text.contains("\r\nline one\r\n.leading dot\r\n"), "dot-stuffing undone")
    }

    @Test func smtpSourceSessionsInParallelAllArrive() async throws {
        let sink = RecordingSink()
        let (listener, port) = try await listener(sink)
        defer { Task { try? await listener.close() } }
        let result = try await runCommand(try findExecutable("smtp-source"), ["-s", "5", "-m", "200", "-l", "2048", "-f", "a@x.test", "-t", "b@y.test", "127.0.0.1:\(port)"])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(await sink.count == 200)
        #expect(await sink.messages.allSatisfy { $0.1.count >= 2048 })
    }
}
