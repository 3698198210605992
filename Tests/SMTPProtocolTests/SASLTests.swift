import Testing
@testable import SMTPProtocol

@Suite struct SASLTests {
    func base64(_ text: String) -> String {
        // Independent of the decoder under test: Foundation-free encoding of ASCII test strings.
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        let bytes = Array(text.utf8)
        var out = ""
        for start in stride(from: 0, to: bytes.count, by: 3) {
            let chunk = Array(bytes[start..<min(start + 3, bytes.count)])
            let value = chunk.enumerated().reduce(0) { $0 | Int($1.element) << (16 - 8 * $1.offset) }
            for index in 0..<4 {
                out.append(index <= chunk.count ? table[(value >> (18 - 6 * index)) & 63] : "=")
            }
        }
        return out
    }

    @Test func plainWithAnInitialResponse() {
        var exchange = SASLExchange(mechanism: "PLAIN")
        #expect(exchange.start(initialResponse: base64("\0alice\0s3cret pass")) == .credentials(username: "alice", password: "s3cret pass"))
        #expect(exchange.respond(base64("\0alice\0x")) == .failed(SMTPReply(503, EnhancedStatusCode(5, 5, 1), "Error: no authentication in progress")))
    }

    @Test func plainAfterAnEmptyChallengeAndWithAnAuthorizationIdentity() {
        var exchange = SASLExchange(mechanism: "PLAIN")
        #expect(exchange.start(initialResponse: nil) == .challenge(""))
        #expect(exchange.respond(base64("alice\0alice\0pw")) == .credentials(username: "alice", password: "pw"))
        var other = SASLExchange(mechanism: "PLAIN")
        #expect(other.start(initialResponse: base64("root\0alice\0pw")) == .failed(SMTPReply(535, EnhancedStatusCode(5, 7, 8), "Authentication credentials invalid")),
                "acting as another identity is refused")
    }

    @Test func loginAsksForTheUsernameThenThePassword() {
        var exchange = SASLExchange(mechanism: "LOGIN")
        #expect(exchange.start(initialResponse: nil) == .challenge("VXNlcm5hbWU6"))
        #expect(exchange.respond(base64("alice")) == .challenge("UGFzc3dvcmQ6"))
        #expect(exchange.respond(base64("pw")) == .credentials(username: "alice", password: "pw"))
        var initial = SASLExchange(mechanism: "LOGIN")
        #expect(initial.start(initialResponse: base64("bob")) == .challenge("UGFzc3dvcmQ6"))
    }

    @Test(arguments: [
        ("*", "501 5.7.0 Authentication cancelled"),
        ("not base64!", "501 5.5.2 Cannot decode the response (base64 expected)"),
        ("YWJj\u{0}", "501 5.5.2 Cannot decode the response (base64 expected)"),
        ("YW=j", "501 5.5.2 Cannot decode the response (base64 expected)"),
        ("YWJ", "501 5.5.2 Cannot decode the response (base64 expected)"),
        (" YWJj", "501 5.5.2 Cannot decode the response (base64 expected)"),
        ("", "501 5.5.2 Malformed PLAIN response"),
        ("YWxpY2U=", "501 5.5.2 Malformed PLAIN response"),  // "alice": no NULs
        ("AGFsaWNlAHAKdw==", "501 5.5.2 Malformed PLAIN response"),  // a newline in the password
        ("AABwdw==", "501 5.5.2 Malformed PLAIN response"),  // an empty username
        ("/w==", "501 5.5.2 Malformed PLAIN response"),  // 0xFF: not UTF-8
    ])
    func hostilePlainResponsesFailWithAClearReply(line: String, reply: String) {
        var exchange = SASLExchange(mechanism: "PLAIN")
        _ = exchange.start(initialResponse: nil)
        guard case .failed(let refusal) = exchange.respond(line) else {
            Issue.record("\(line.debugDescription) was not refused")
            return
        }
        #expect(refusal.description == reply)
    }

    @Test func anOverlongUsernameIsRefused() {
        var exchange = SASLExchange(mechanism: "LOGIN")
        _ = exchange.start(initialResponse: nil)
        #expect(exchange.respond(base64(String(repeating: "a", count: 256))) == .failed(SMTPReply(501, EnhancedStatusCode(5, 5, 2), "Malformed LOGIN username")))
    }

    @Test func base64DecodesPaddingStrictly() {
        #expect(Base64.decode("") == [])
        #expect(Base64.decode("YQ==") == Array("a".utf8))
        #expect(Base64.decode("YWI=") == Array("ab".utf8))
        #expect(Base64.decode("YWJj") == Array("abc".utf8))
        #expect(Base64.decode("YQ==YWJj") == nil, "padding only at the end")
        #expect(Base64.decode("Y===") == nil)
    }
}
