import Foundation
import Testing
@testable import Events

/// The hand-written `json` gives the bytes JSONEncoder gives (sorted keys, slashes as they
/// are), so that the events topic reads the same as before and any JSON reader takes it.
@Suite struct EventJSONTests {
    func encoderJSON(_ event: MessageEvent) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(event), as: UTF8.self)
    }

    var full: MessageEvent {
        var event = MessageEvent(type: .transientFailure, id: "01M84PDTVGMF2CK148JYVWVEZK", tenant: "acme", time: 1_795_000_000_000,
                                 node: "delivery-1", sender: "a/b@example.com", recipients: ["x@y.test", "z@y.test"], size: 2048,
                                 job: "spring", client: "[2001:db8::1]:25", topic: "smarthost.acme", partition: 2, offset: 77)
        event.recipient = "x@y.test"
        event.queue = "acme//y.test"
        event.site = "mx.y.test:25"
        event.attempt = 3
        event.response = .init(code: 451, enhanced: "4.7.1", text: "try \"later\"\\ please")
        event.peer = "192.0.2.1:25"
        event.pool = "default"
        event.source = "192.0.2.9"
        event.receivedAt = 1_794_999_999_000
        event.nextAttemptAt = 1_795_000_600_000
        event.tls = false
        event.rule = "gmail-4.7.28"
        event.dsn = "01M84PDTVGMF2CK148JYVWVEZL"
        event.reason = "in no queue"
        return event
    }

    @Test func everyFieldAsJSONEncoderWritesIt() throws {
        #expect(String(decoding: full.json, as: UTF8.self) == (try encoderJSON(full)))
        var bare = MessageEvent(type: .delivery, id: "i", tenant: "t", time: 0, node: "n")
        #expect(String(decoding: bare.json, as: UTF8.self) == (try encoderJSON(bare)))
        bare.response = .init(code: 250, enhanced: nil, text: "")
        bare.tls = true
        bare.recipients = []
        #expect(String(decoding: bare.json, as: UTF8.self) == (try encoderJSON(bare)))
    }

    @Test func hostileTextIsEscapedAsJSONEncoderEscapesIt() throws {
        var random: UInt64 = 0x5eed_1234
        let alphabet: [Unicode.Scalar] = (0..<0x80).compactMap(Unicode.Scalar.init) + ["é", "€", "😀", "\u{2028}", "\u{FEFF}", "\u{7F}"]
        for _ in 0..<500 {
            var text = ""
            for _ in 0..<Int(random % 24) {
                random ^= random << 13; random ^= random >> 7; random ^= random << 17
                text.unicodeScalars.append(alphabet[Int(random % UInt64(alphabet.count))])
            }
            var event = full
            event.response = .init(code: 550, enhanced: nil, text: text)
            event.sender = text
            event.recipients = [text, "plain"]
            #expect(String(decoding: event.json, as: UTF8.self) == (try encoderJSON(event)), "\(text.debugDescription)")
            #expect(try MessageEvent(json: event.json) == event)
        }
    }
}
