import Foundation
import Kafka
import Testing
import TestSupport

/// Every limit of the ingress's SMTP server, against the real `smarthost ingress` process: each
/// hostile conversation gets its exact reply, and none of them puts anything into Kafka (a
/// well-formed message sent last is the only record).
@Suite(.timeLimit(.minutes(3)))
struct HostileInputTests {
    struct Conversation: Sendable, CustomTestStringConvertible {
        let name: String
        let send: [UInt8]
        /// The reply the conversation must end with (after which the server closes or QUIT is answered).
        let expected: String
        var testDescription: String { name }

        init(_ name: String, _ send: String, _ expected: String) {
            self.init(name, Array(send.utf8), expected)
        }

        init(_ name: String, _ send: [UInt8], _ expected: String) {
            self.name = name
            self.send = send
            self.expected = expected
        }
    }

    static let transaction = "EHLO c\r\nMAIL FROM:<app@acme.test>\r\nRCPT TO:<b@example.com>\r\n"
    static let headers = "From: app@acme.test\r\nSubject: hostile\r\n\r\n"

    static let conversations: [Conversation] = [
        Conversation("command line over 512 octets", "EHLO c\r\nMAIL FROM:<\(String(repeating: "a", count: 600))@acme.test>\r\nQUIT\r\n",
                     "500 5.5.2 Error: line too long\r\n221 2.0.0 Bye\r\n"),
        Conversation("text line over 1000 octets", transaction + "DATA\r\n" + headers + String(repeating: "x", count: 1200) + "\r\n.\r\nQUIT\r\n",
                     "550 5.6.0 Message refused: a line is longer than 1000 octets\r\n221 2.0.0 Bye\r\n"),
        Conversation("too many recipients", "EHLO c\r\nMAIL FROM:<app@acme.test>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nRSET\r\nQUIT\r\n",
                     "452 4.5.3 Too many recipients\r\n250 2.0.0 OK\r\n221 2.0.0 Bye\r\n"),
        Conversation("SIZE announced over the limit", "EHLO c\r\nMAIL FROM:<app@acme.test> SIZE=20000000\r\nQUIT\r\n",
                     "552 5.3.4 Message size exceeds fixed limit of 10240 octets\r\n221 2.0.0 Bye\r\n"),
        Conversation("message over the limit", transaction + "DATA\r\n" + headers + String(repeating: String(repeating: "y", count: 70) + "\r\n", count: 200) + ".\r\nQUIT\r\n",
                     "552 5.3.4 Message too big for this system\r\n221 2.0.0 Bye\r\n"),
        Conversation("BDAT chunk over the limit", transaction + "BDAT 20000 LAST\r\n" + String(repeating: "z", count: 20000) + "QUIT\r\n",
                     "552 5.3.4 Message too big for this system\r\n221 2.0.0 Bye\r\n"),
        Conversation("RCPT before MAIL", "EHLO c\r\nRCPT TO:<b@example.com>\r\nQUIT\r\n", "503 5.5.1 Error: need MAIL command\r\n221 2.0.0 Bye\r\n"),
        Conversation("DATA before RCPT", "EHLO c\r\nMAIL FROM:<app@acme.test>\r\nDATA\r\nQUIT\r\n", "503 5.5.1 Error: need RCPT command\r\n221 2.0.0 Bye\r\n"),
        Conversation("MAIL before EHLO", "MAIL FROM:<app@acme.test>\r\nQUIT\r\n", "503 5.5.1 Error: send EHLO or HELO first\r\n221 2.0.0 Bye\r\n"),
        Conversation("too many bad commands", "EHLO c\r\n" + String(repeating: "FOO\r\n", count: 12),
                     "500 5.5.2 Error: command not recognized\r\n421 4.7.0 mx.test Error: too many errors\r\n"),
        Conversation("non-ASCII address without SMTPUTF8", "EHLO c\r\nMAIL FROM:<jörg@acme.test>\r\nQUIT\r\n",
                     "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n221 2.0.0 Bye\r\n"),
        Conversation("bare LF in DATA (smuggling)", transaction + "DATA\r\n" + headers + "body\n.\nMAIL FROM:<ceo@acme.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n",
                     "550 5.6.0 Message refused: bare <LF> in data (line ends must be CRLF)\r\n221 2.0.0 Bye\r\n"),
        Conversation("bare CR in DATA (smuggling)", transaction + "DATA\r\n" + headers + "body\r.\rMAIL FROM:<ceo@acme.test>\r\n.\r\nQUIT\r\n",
                     "550 5.6.0 Message refused: bare <CR> in data (line ends must be CRLF)\r\n221 2.0.0 Bye\r\n"),
        Conversation("invalid recipient address", "EHLO c\r\nMAIL FROM:<app@acme.test>\r\nRCPT TO:<no address here>\r\nQUIT\r\n",
                     "501 5.1.3 Bad recipient address"),
        Conversation("NUL in a command", Array("EHLO c\r\nNOOP \0x\r\nQUIT\r\n".utf8), "500 5.5.2 Error: control characters in command\r\n221 2.0.0 Bye\r\n"),
        Conversation("AUTH where it is not offered", "EHLO c\r\nAUTH PLAIN AGEAYg==\r\nQUIT\r\n", "502 5.5.1 Error: AUTH not available\r\n221 2.0.0 Bye\r\n"),
        Conversation("sender domain not the tenant's", "EHLO c\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nFrom: ceo@bank.example\r\n\r\nx\r\n.\r\nQUIT\r\n",
                     "550 5.7.1 Sender not allowed: envelope sender domain bank.example is not allowed for this tenant\r\n221 2.0.0 Bye\r\n"),
        Conversation("idle client", "", "421 4.4.2 mx.test Error: timeout exceeded\r\n"),
        Conversation("client stalling in DATA", transaction + "DATA\r\n" + headers + "half a mess", "421 4.4.2 mx.test Error: timeout exceeded\r\n"),
    ]

    @Test func everyLimitHasItsReplyAndNothingReachesKafka() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        let port = try Loopback.freePort()
        let node = try IngressProcess.start(broker: broker, name: "hostile-ingress", yaml: """
            tenants:
              acme: {trusted_networks: [127.0.0.0/8], max_message_size: 10KiB, max_recipients: 3, sender_domains: [acme.test]}
            ingress:
              hostname: mx.test
              command_timeout: 2s
              data_timeout: 2s
              listeners:
                - {address: "127.0.0.1:\(port)"}
            """)
        defer { node.stop() }
        try await waitForGreeting(node.process, port: port, greeting: "220 mx.test ")

        for conversation in Self.conversations {
            let answer = try await offPool {
                Loopback.exchange(port: port, request: conversation.send, timeout: .seconds(10)) {
                    String(decoding: $0, as: UTF8.self).contains(conversation.expected)
                }
            }
            let text = answer.map { String(decoding: $0, as: UTF8.self) } ?? "(no answer)"
            #expect(text.contains(conversation.expected), "\(conversation.name): got\n\(text)")
            #expect(!text.contains("queued as"), "\(conversation.name): a message was accepted")
        }
        // The node is still well: a proper message goes through, and it is the only record.
        let good = try await offPool {
            Loopback.exchange(port: port, request: Array((Self.transaction + "DATA\r\n" + Self.headers + "fine\r\n.\r\nQUIT\r\n").utf8),
                              timeout: .seconds(10)) { String(decoding: $0, as: UTF8.self).contains("221 ") }
        }
        #expect(String(decoding: good ?? [], as: UTF8.self).contains("250 2.0.0 Ok: queued as "))
        let records = try await readRecords(broker, topic: "smarthost.acme", count: 1, timeout: .seconds(60), thenWatchFor: .seconds(3))
        #expect(records.count == 1, "only the well-formed message is in Kafka")
        #expect(records.allSatisfy { String(decoding: $0.value, as: UTF8.self).contains("fine\r\n") })
    }
}
