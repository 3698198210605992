import SMTPProtocol
import Testing
@testable import QueueRecord

@Suite struct MessageIDTests {
    @Test func idsAreTimeOrderedParsableAndCarryTheirTime() throws {
        let earlier = MessageID.generate(milliseconds: 1_795_000_000_000)
        let later = MessageID.generate(milliseconds: 1_795_000_000_001)
        #expect(earlier < later)
        #expect(earlier.text.count == 26)
        #expect(earlier.milliseconds == 1_795_000_000_000)
        #expect(MessageID(parsing: earlier.text) == earlier)
        #expect(Set((0..<10_000).map { _ in MessageID.generate(milliseconds: 1) }).count == 10_000, "80 random bits per millisecond")
    }

    @Test func derivedIdsAreStablePerPurposeAndParsable() throws {
        let original = MessageID.generate(milliseconds: 1_795_000_000_000)
        let bounce = MessageID.derived(from: original, purpose: "failed a@example.com")
        #expect(bounce == MessageID.derived(from: original, purpose: "failed a@example.com"))
        #expect(bounce != MessageID.derived(from: original, purpose: "failed b@example.com"))
        #expect(bounce != MessageID.derived(from: MessageID.generate(milliseconds: 1_795_000_000_000), purpose: "failed a@example.com"))
        #expect(bounce.milliseconds == original.milliseconds && bounce != original)
        #expect(MessageID(parsing: bounce.text) == bounce)
    }

    @Test(arguments: ["", "01ARZ3NDEKTSV4RRFFQ69G5FA", "01ARZ3NDEKTSV4RRFFQ69G5FAVX", "01arz3ndektsv4rrffq69g5fav", "81ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAU", "01ARZ3NDEKTSV4RRFFQ69G5FA "])
    func malformedIdsAreRefused(_ text: String) {
        #expect(MessageID(parsing: text) == nil)
    }
}

@Suite struct AcceptedMessageTests {
    let message = AcceptedMessage(
        id: MessageID.generate(), tenant: "acme", sender: Mailbox(localPart: "a", domain: "x.test"),
        recipients: [Mailbox(localPart: "b", domain: "y.test"), Mailbox(localPart: "c", domain: "y.test")],
        receivedAt: 1_795_000_000_123, client: "192.0.2.7:4000", helo: "client.test", tls: "TLSv1.3 TLS_AES_256_GCM_SHA384",
        authenticatedUser: "app1", job: "spring-campaign", pool: "dedicated-1", lane: .high, trafficClass: "transactional",
        smtputf8: false, eightBit: true, content: Array("Subject: x\r\n\r\nbody\r\n".utf8))

    func decode(key: [UInt8]?, headers: [(String, String)], value: [UInt8] = []) throws(RecordError) -> AcceptedMessage {
        try AcceptedMessage(key: key, headers: headers.map { ($0.0, Array($0.1.utf8)) }, value: value)
    }

    @Test func everyFieldSurvivesTheRecord() throws {
        let decoded = try decode(key: Array(message.id.text.utf8), headers: message.headers, value: message.content)
        #expect(decoded == message)
    }

    @Test func theNullSenderAndUTF8AddressesSurvive() throws {
        var bounce = message
        bounce.sender = nil
        bounce.recipients = [Mailbox(localPart: "用户", domain: "例子.test")]
        bounce.smtputf8 = true
        bounce.tls = nil
        bounce.authenticatedUser = nil
        bounce.job = nil
        bounce.pool = nil
        #expect(try decode(key: nil, headers: bounce.headers, value: bounce.content) == bounce)
    }

    @Test func unknownHeadersAreIgnored() throws {
        #expect(try decode(key: nil, headers: message.headers + [("sh-future", "x")], value: message.content) == message)
    }

    /// Each way a record can be broken, and the exact error a delivery node logs for it.
    @Test(arguments: [
        ("sh-format", "2", "record format \"2\" is not supported (expected 1)"),
        ("sh-id", "not-an-id", "header sh-id: not a message id"),
        ("sh-tenant", "", "header sh-tenant: empty or too long"),
        ("sh-from", "no-at-sign", "header sh-from: the address has no @"),
        ("sh-from", "jürgen@x.test", "header sh-from: non-ASCII address without SMTPUTF8"),
        ("sh-received-at", "yesterday", "header sh-received-at: not milliseconds since the epoch"),
        ("sh-received-at", "99999999999999999999", "header sh-received-at: not milliseconds since the epoch"),
        ("sh-lane", "urgent", "header sh-lane: not high, normal or low"),
        ("sh-8bit", "yes", "header sh-8bit: expected 1"),
        ("sh-pool", "", "header sh-pool: not a pool name"),
        ("sh-pool", "Bad Pool", "header sh-pool: not a pool name"),
    ])
    func aBadHeaderValueIsNamed(_ name: String, _ value: String, _ error: String) {
        let headers = message.headers.map { $0.name == name ? ($0.name, value) : ($0.name, $0.value) }
        #expect { _ = try decode(key: nil, headers: headers) } throws: { ($0 as? RecordError)?.description == error }
    }

    @Test(arguments: ["sh-format", "sh-id", "sh-tenant", "sh-from", "sh-rcpt", "sh-received-at", "sh-client", "sh-helo", "sh-lane", "sh-class"])
    func aMissingHeaderIsNamed(_ name: String) {
        let headers = message.headers.filter { $0.name != name }.map { ($0.name, $0.value) }
        #expect(throws: RecordError.missing(header: name)) { _ = try decode(key: nil, headers: headers) }
    }

    @Test func repeatedKeyMismatchAndBinaryHeadersAreRefused() {
        let headers = message.headers.map { ($0.name, $0.value) }
        #expect(throws: RecordError.repeated(header: "sh-tenant")) { _ = try decode(key: nil, headers: headers + [("sh-tenant", "evil")]) }
        #expect(throws: RecordError.invalid(header: "key", reason: "differs from sh-id")) { _ = try decode(key: Array("other".utf8), headers: headers) }
        #expect(throws: RecordError.invalid(header: "sh-rcpt", reason: "the domain is not valid: b@y..test")) {
            _ = try decode(key: nil, headers: headers.map { $0.0 == "sh-rcpt" ? ($0.0, "b@y..test") : $0 })
        }
        #expect(throws: RecordError.notUTF8(header: "sh-helo")) {
            _ = try AcceptedMessage(key: nil, headers: headers.map { ($0.0, $0.0 == "sh-helo" ? [0xff, 0xfe] : Array($0.1.utf8)) }, value: [])
        }
        #expect(throws: RecordError.missing(header: "sh-format")) { _ = try decode(key: nil, headers: []) }
    }
}
