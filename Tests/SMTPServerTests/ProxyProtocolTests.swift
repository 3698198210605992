import Foundation
import NIOCore
import NIOEmbedded
import SMTPProtocol
import Testing
import TestSupport
@testable import SMTPServer

@Suite struct ProxyHeaderParsingTests {
    static func v2(command: UInt8 = 0x21, family: UInt8, body: [UInt8]) -> [UInt8] {
        ProxyHeader.v2Signature + [command, family, UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
    }

    static let v2TCP4 = v2(family: 0x11, body: [198, 51, 100, 9, 192, 0, 2, 1, 0xC3, 0x50, 0, 25])
    static let v2TCP6WithTLV = v2(family: 0x21, body: [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [5]
                                  + [UInt8](repeating: 0, count: 16) + [0x04, 0xD2, 0, 25] + [0x04, 0x00, 0x01, 0x00])

    static let valid: [([UInt8], ProxyHeader.ParseResult)] = [
        (Array("PROXY TCP4 198.51.100.9 192.0.2.1 50000 25\r\nEHLO".utf8), ProxyHeader.ParseResult.complete(.proxied(clientIP: "198.51.100.9", clientPort: 50000), consumed: 44)),
        (Array("PROXY TCP6 2001:db8::5 2001:db8::1 1234 25\r\n".utf8), .complete(.proxied(clientIP: "2001:db8::5", clientPort: 1234), consumed: 44)),
        (Array("PROXY UNKNOWN\r\n".utf8), .complete(.local, consumed: 15)),
        (v2TCP4 + Array("EHLO".utf8), .complete(.proxied(clientIP: "198.51.100.9", clientPort: 50000), consumed: 28)),
        (v2TCP6WithTLV, .complete(.proxied(clientIP: "2001:db8::5", clientPort: 1234), consumed: 56)),
        (v2(command: 0x20, family: 0x00, body: []), .complete(.local, consumed: 16)),
    ]

    @Test(arguments: valid)
    func validHeaders(_ bytes: [UInt8], _ expected: ProxyHeader.ParseResult) {
        #expect(ProxyHeader.parse(bytes) == expected)
    }

    @Test(arguments: [Array("PROXY TCP4 198.51.100.9 192.0.2.1 50000 25\r\n".utf8), v2TCP4, v2TCP6WithTLV])
    func everyPrefixAsksForMore(_ header: [UInt8]) {
        for length in 0..<header.count {
            #expect(ProxyHeader.parse(header.prefix(length)) == .needMoreData, "prefix of \(length)")
        }
    }

    static let malformed: [([UInt8], String)] = [
        (Array("EHLO client\r\n".utf8), "not a PROXY header"),
        (Array("PROXY TCP4 198.51.100.9 192.0.2.1 50000 25\n".utf8), "PROXY v1 line must end with CRLF"),
        (Array("PROXY TCP4 not-an-ip 192.0.2.1 50000 25\r\n".utf8), "malformed PROXY v1 addresses"),
        (Array("PROXY TCP4 198.51.100.9 192.0.2.1 70000 25\r\n".utf8), "malformed PROXY v1 addresses"),
        (Array("PROXY TCP4 2001:db8::1 192.0.2.1 1 25\r\n".utf8), "malformed PROXY v1 addresses"),
        (Array("PROXY UDP4 198.51.100.9 192.0.2.1 1 25\r\n".utf8), "malformed PROXY v1 line"),
        (Array(("PROXY TCP4 " + String(repeating: "1", count: 120)).utf8), "PROXY v1 line longer than 107 octets"),
        (Array(ProxyHeader.v2Signature.prefix(11)) + [0x00, 0x21, 0x11, 0, 0], "not a PROXY header"),
        (v2(command: 0x11, family: 0x11, body: [UInt8](repeating: 0, count: 12)), "PROXY v2 header with version 1"),
        (v2(command: 0x22, family: 0x11, body: [UInt8](repeating: 0, count: 12)), "PROXY v2 command 2 is unknown"),
        (v2(family: 0x12, body: [UInt8](repeating: 0, count: 12)), "PROXY v2 address family 18 is not TCP over IPv4 or IPv6, or too short"),
        (v2(family: 0x11, body: [1, 2, 3]), "PROXY v2 address family 17 is not TCP over IPv4 or IPv6, or too short"),
        (ProxyHeader.v2Signature + [0x21, 0x11, 0xFF, 0xFF], "PROXY v2 header longer than 528 octets"),
    ]

    @Test(arguments: malformed)
    func malformedHeadersAreInvalid(_ bytes: [UInt8], _ reason: String) {
        #expect(ProxyHeader.parse(bytes) == .invalid(reason))
    }
}

@Suite struct ProxyProtocolHandlerTests {
    func channel(trusting trusted: String) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ProxyProtocolHandler())
        try channel.pipeline.syncOperations.addHandler(SMTPServerHandler(
            policy: SessionPolicy(hostname: "mx.test"), sink: RecordingSink(), resolveTenant: { $0 == trusted ? TenantGrant("t") : nil },
            expectsProxyHeader: true))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()  // the load balancer
        return channel
    }

    func output(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    @Test func theClientInTheHeaderIsTheOneThatCountsAndBytesAfterItAreCommands() throws {
        let channel = try channel(trusting: "198.51.100.9")
        #expect(try output(channel) == "", "no greeting before the header")
        try channel.writeInbound(channel.allocator.buffer(bytes: ProxyHeaderParsingTests.v2TCP4 + Array("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n".utf8)))
        let replies = try output(channel)
        #expect(replies.hasPrefix("220 mx.test ESMTP smarthost\r\n250-mx.test greets c\r\n"))
        #expect(replies.hasSuffix("250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"), "198.51.100.9 is trusted, not the balancer's 127.0.0.1")
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: ProxyProtocolHandler.self) }
    }

    @Test func theBalancersOwnAddressDoesNotGetRelay() throws {
        let channel = try channel(trusting: "127.0.0.1")
        try channel.writeInbound(channel.allocator.buffer(bytes: ProxyHeaderParsingTests.v2TCP4 + Array("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n".utf8)))
        #expect(try output(channel).hasSuffix("554 5.7.1 Relay access denied: authenticate or send from a trusted network\r\n"))
    }

    @Test func aConnectionWithoutAHeaderIsDroppedUnanswered() throws {
        let channel = try channel(trusting: "127.0.0.1")
        try channel.writeInbound(channel.allocator.buffer(string: "EHLO sneaky\r\n"))
        #expect(try output(channel) == "")
        #expect(!channel.isActive)
    }

    @Test func aConnectionThatSendsNothingIsClosedAfterTheTimeout() throws {
        let channel = try channel(trusting: "127.0.0.1")
        channel.embeddedEventLoop.advanceTime(by: .seconds(6))
        #expect(!channel.isActive)
    }
}

/// A real HAProxy sending PROXY v2 in front of a listener.
@Suite(.timeLimit(.minutes(1)))
struct HAProxyTests {
    @Test func haproxySendProxyV2CarriesTheRealClientAddress() async throws {
        let sink = RecordingSink()
        // Only 127.0.0.5 may relay: HAProxy itself connects from 127.0.0.1.
        let listener = try await SMTPListener.bind(host: "127.0.0.1", port: 0, policy: SessionPolicy(hostname: "mx.test"), sink: sink,
                                                   resolveTenant: { $0 == "127.0.0.5" ? TenantGrant("t") : nil }, proxyProtocol: true)
        defer { Task { try? await listener.close() } }
        let backend = try #require(listener.localAddress?.port)
        let haproxy = try HAProxy.start(backends: [backend])
        let frontend = haproxy.port
        defer { haproxy.stop() }
        try await waitForGreeting(haproxy.process, port: frontend, greeting: "220 mx.test")

        let result = try await runCommand(try findExecutable("swaks"), [
            "--server", "127.0.0.1:\(frontend)", "--local-interface", "127.0.0.5", "--from", "a@x.test", "--to", "b@y.test"])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(await sink.count == 1)
        let refused = try await runCommand(try findExecutable("swaks"), ["--server", "127.0.0.1:\(frontend)", "--from", "a@x.test", "--to", "b@y.test"])
        #expect(refused.output.contains("554 5.7.1 Relay access denied"), "a client from 127.0.0.1 is not the trusted one")
    }
}
