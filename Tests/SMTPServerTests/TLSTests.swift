import Foundation
import NIOCore
import NIOEmbedded
import NIOSSL
import SMTPProtocol
import Testing
import TestSupport
@testable import SMTPServer

@Suite(.timeLimit(.minutes(1)))
struct TLSTests {
    func context() async throws -> NIOSSLContext {
        let certificate = try await TestCertificate.make(commonName: "mx.test")
        let configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificate.certificatePath).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: certificate.privateKeyPath, format: .pem)))
        return try NIOSSLContext(configuration: configuration)
    }

    @Test func startTLSWithSwaksDeliversAnEncryptedMessage() async throws {
        let sink = RecordingSink()
        let listener = try await SMTPListener.bind(host: "127.0.0.1", port: 0, policy: SessionPolicy(hostname: "mx.test"), sink: sink,
                                                   resolveTenant: { _ in TenantGrant("t") }, tls: try await context())
        defer { Task { try? await listener.close() } }
        let port = try #require(listener.localAddress?.port)
        let result = try await runCommand(try findExecutable("swaks"), [
            "--server", "127.0.0.1:\(port)", "--tls", "--from", "a@x.test", "--to", "b@y.test"])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("250 STARTTLS") || result.output.contains("250-STARTTLS"))
        #expect(result.output.contains("TLS started"))
        #expect(await sink.connections.map(\.isEncrypted) == [true])
    }

    @Test func implicitTLSWithSwaksDeliversAnEncryptedMessage() async throws {
        let sink = RecordingSink()
        let listener = try await SMTPListener.bind(host: "127.0.0.1", port: 0, policy: SessionPolicy(hostname: "mx.test"), sink: sink,
                                                   resolveTenant: { _ in TenantGrant("t") }, tls: try await context(), implicitTLS: true)
        defer { Task { try? await listener.close() } }
        let port = try #require(listener.localAddress?.port)
        let result = try await runCommand(try findExecutable("swaks"), [
            "--server", "127.0.0.1:\(port)", "--tlsc", "--from", "a@x.test", "--to", "b@y.test"])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(!result.output.contains("STARTTLS"), "no STARTTLS inside TLS")
        #expect(await sink.connections.map(\.isEncrypted) == [true])
    }

    /// CVE-2011-0411: commands pipelined in plaintext after STARTTLS must not be executed.
    @Test func plaintextAfterStartTLSIsDiscarded() async throws {
        let sink = RecordingSink()
        let channel = EmbeddedChannel(handler: SMTPServerHandler(policy: SessionPolicy(hostname: "mx.test"), sink: sink,
                                                                 resolveTenant: { _ in TenantGrant("t") }, tls: try await context()))
        try await channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 4000)).get()
        try channel.writeInbound(channel.allocator.buffer(string: "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<b@y.test>\r\n"))
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        #expect(text.hasSuffix("250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n"), "nothing answered after the 220: \(text)")
        // Throws when there is no such handler: TLS must be in the pipeline now.
        _ = try channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
    }
}
