import Testing
@testable import SMTPProtocol

func parse(_ line: String, smtputf8: Bool = true, utf8Transaction: Bool = false) throws(SMTPCommandError) -> SMTPCommand {
    try SMTPCommand.parse(Array(line.utf8), smtputf8Offered: smtputf8, utf8Transaction: utf8Transaction)
}

@Suite struct CommandParsingTests {
    @Test(arguments: [
        ("EHLO client.example.com", SMTPCommand.ehlo("client.example.com")),
        ("ehlo [192.0.2.1]", .ehlo("[192.0.2.1]")),
        ("HELO x", .helo("x")),
        ("MAIL FROM:<a@example.com>", .mail(from: Mailbox(localPart: "a", domain: "example.com"), MailParameters())),
        ("mail from:<a@example.com> SIZE=1000 BODY=8BITMIME", .mail(from: Mailbox(localPart: "a", domain: "example.com"), MailParameters(size: 1000, body: .eightBitMIME))),
        ("MAIL FROM: <a@example.com>", .mail(from: Mailbox(localPart: "a", domain: "example.com"), MailParameters())),
        ("MAIL FROM:<>", .mail(from: nil, MailParameters())),
        ("MAIL FROM:<@relay.example,@other.example:a@example.com>", .mail(from: Mailbox(localPart: "a", domain: "example.com"), MailParameters())),
        ("MAIL FROM:<\"john doe\"@example.com> AUTH=<>", .mail(from: Mailbox(localPart: "\"john doe\"", domain: "example.com"), MailParameters(auth: "<>"))),
        ("MAIL FROM:<jürgen@bücher.example> SMTPUTF8", .mail(from: Mailbox(localPart: "jürgen", domain: "bücher.example"), MailParameters(smtputf8: true))),
        ("RCPT TO:<b+tag@[IPv6:2001:db8::1]>", .rcpt(to: Mailbox(localPart: "b+tag", domain: "[IPv6:2001:db8::1]"))),
        ("RCPT TO:<postmaster@example.com>", .rcpt(to: Mailbox(localPart: "postmaster", domain: "example.com"))),
        ("DATA", .data), ("data ", .data), ("RSET", .rset), ("QUIT", .quit), ("STARTTLS", .starttls),
        ("NOOP", .noop), ("NOOP anything", .noop),
        ("VRFY someone", .vrfy("someone")), ("HELP", .help(nil)), ("HELP MAIL", .help("MAIL")),
        ("BDAT 1000", .bdat(size: 1000, last: false)), ("BDAT 0 LAST", .bdat(size: 0, last: true)),
        ("AUTH PLAIN", .auth(mechanism: "PLAIN", initialResponse: nil)),
        ("auth login dXNlcg==", .auth(mechanism: "LOGIN", initialResponse: "dXNlcg==")),
    ])
    func wellFormedCommands(_ line: String, _ expected: SMTPCommand) throws {
        #expect(try parse(line) == expected)
    }

    @Test func utf8RecipientsOnlyInAUTF8Transaction() throws {
        #expect(try parse("RCPT TO:<用户@例子.example>", utf8Transaction: true) == .rcpt(to: Mailbox(localPart: "用户", domain: "例子.example")))
        #expect(throws: SMTPCommandError.badRecipient(.nonASCIIWithoutSMTPUTF8)) { try parse("RCPT TO:<用户@例子.example>") }
    }

    /// Each malformed line, the error, and the exact reply a client gets.
    @Test(arguments: [
        ("", SMTPCommandError.empty, "500 5.5.2 Error: empty command"),
        ("FOO bar", .unknownCommand, "500 5.5.2 Error: command not recognized"),
        ("MAIL", .syntax("MAIL FROM:<address>"), "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL TO:<a@b.example>", .syntax("MAIL FROM:<address>"), "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL FROM:a@b.example", .badSender(.missingAngleBrackets), "501 5.1.7 Bad sender address: the address must be enclosed in <>"),
        ("MAIL FROM:<a.example>", .badSender(.missingAt), "501 5.1.7 Bad sender address: the address has no @"),
        ("MAIL FROM:<@b.example>", .badSender(.emptyLocalPart), "501 5.1.7 Bad sender address: the address has no local part"),
        ("MAIL FROM:<a..b@b.example>", .badSender(.badLocalPart), "501 5.1.7 Bad sender address: the local part is not valid"),
        ("MAIL FROM:<a@-b.example>", .badSender(.badDomain), "501 5.1.7 Bad sender address: the domain is not valid"),
        ("MAIL FROM:<a@b..example>", .badSender(.badDomain), "501 5.1.7 Bad sender address: the domain is not valid"),
        ("MAIL FROM:<a@[300.1.1.1]>", .badSender(.badAddressLiteral), "501 5.1.7 Bad sender address: the address literal is not valid"),
        ("MAIL FROM:<a@[IPv6:zz::1]>", .badSender(.badAddressLiteral), "501 5.1.7 Bad sender address: the address literal is not valid"),
        ("MAIL FROM:<\(String(repeating: "a", count: 65))@b.example>", .badSender(.localPartTooLong), "501 5.1.7 Bad sender address: the local part is longer than 64 octets"),
        ("MAIL FROM:<a@\(String(repeating: "b", count: 64)).example>", .badSender(.badDomain), "501 5.1.7 Bad sender address: the domain is not valid"),
        ("MAIL FROM:<a@\(Array(repeating: String(repeating: "b", count: 60), count: 5).joined(separator: "."))>", .badSender(.pathTooLong), "501 5.1.7 Bad sender address: the path is longer than 256 octets"),
        ("MAIL FROM:<jürgen@example.com>", .badSender(.nonASCIIWithoutSMTPUTF8), "553 5.6.7 Non-ASCII address requires SMTPUTF8"),
        ("MAIL FROM:<a@b.example> SIZE=big", .syntax("SIZE=<decimal number of octets>"), "501 5.5.4 Syntax: SIZE=<decimal number of octets>"),
        ("MAIL FROM:<a@b.example> SIZE=99999999999999999999", .syntax("SIZE=<decimal number of octets>"), "501 5.5.4 Syntax: SIZE=<decimal number of octets>"),
        ("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", .duplicateParameter("SIZE"), "501 5.5.4 Parameter SIZE given twice"),
        ("MAIL FROM:<a@b.example> BODY=BINARYMIME", .unsupportedParameter("BODY=BINARYMIME"), "555 5.5.4 Unsupported parameter BODY=BINARYMIME"),
        ("MAIL FROM:<a@b.example> RET=HDRS", .unsupportedParameter("RET"), "555 5.5.4 Unsupported parameter RET"),
        ("MAIL FROM:<a@b.example> =x", .syntax("parameters are KEYWORD or KEYWORD=value"), "501 5.5.4 Syntax: parameters are KEYWORD or KEYWORD=value"),
        ("RCPT TO:<>", .badRecipient(.missingAt), "501 5.1.3 Bad recipient address: the address has no @"),
        ("RCPT TO:<b@c.example> NOTIFY=NEVER", .unsupportedParameter("NOTIFY"), "555 5.5.4 Unsupported parameter NOTIFY"),
        ("RCPT FROM:<b@c.example>", .syntax("RCPT TO:<address>"), "501 5.5.4 Syntax: RCPT TO:<address>"),
        ("DATA now", .unexpectedArgument("DATA"), "501 5.5.4 Syntax: DATA takes no argument"),
        ("QUIT please", .unexpectedArgument("QUIT"), "501 5.5.4 Syntax: QUIT takes no argument"),
        ("EHLO", .badHelloName, "501 5.5.4 Syntax: EHLO <domain or address literal>"),
        ("EHLO two words", .badHelloName, "501 5.5.4 Syntax: EHLO <domain or address literal>"),
        ("VRFY", .missingArgument("VRFY"), "501 5.5.4 Syntax: VRFY needs an argument"),
        ("BDAT", .syntax("BDAT <size> [LAST]"), "501 5.5.4 Syntax: BDAT <size> [LAST]"),
        ("BDAT -1", .syntax("BDAT <size> [LAST]"), "501 5.5.4 Syntax: BDAT <size> [LAST]"),
        ("BDAT 10 FIRST", .syntax("BDAT <size> [LAST]"), "501 5.5.4 Syntax: BDAT <size> [LAST]"),
        ("BDAT 1234567890123", .syntax("BDAT <size> [LAST]"), "501 5.5.4 Syntax: BDAT <size> [LAST]"),
        ("AUTH", .badAuthArguments, "501 5.5.4 Syntax: AUTH <mechanism> [initial-response]"),
        ("AUTH PLAIN a b", .badAuthArguments, "501 5.5.4 Syntax: AUTH <mechanism> [initial-response]"),
        ("MAIL FROM:<a@b.example>\0", .controlCharacters, "500 5.5.2 Error: control characters in command"),
        ("RCPT TO:<a@b.example>\rDATA", .controlCharacters, "500 5.5.2 Error: control characters in command"),
        ("NOOP " + String(repeating: "x", count: 506), .lineTooLong, "500 5.5.2 Error: line too long"),
    ])
    func malformedCommandsGetTheirExactReply(_ line: String, _ error: SMTPCommandError, _ reply: String) {
        #expect(throws: error) { try parse(line, smtputf8: true) }
        #expect(error.reply.description == reply)
    }

    @Test func smtputf8NotOfferedRefusesTheParameter() {
        #expect(throws: SMTPCommandError.unsupportedParameter("SMTPUTF8")) {
            try parse("MAIL FROM:<a@b.example> SMTPUTF8", smtputf8: false)
        }
    }

    @Test func invalidUTF8IsRefused() {
        #expect(throws: SMTPCommandError.invalidUTF8) {
            try SMTPCommand.parse(Array("MAIL FROM:<".utf8) + [0xC3, 0x28] + Array("@x.example>".utf8), smtputf8Offered: true)
        }
    }

    @Test func theLongestAllowedLineIsAccepted() throws {
        let line = "NOOP " + String(repeating: "x", count: 505)  // 510 octets + CRLF = 512
        #expect(try parse(line) == .noop)
    }
}

@Suite struct ReplyTests {
    @Test func multilineRepliesRepeatTheCodeAndEnhancedCode() {
        let reply = SMTPReply(250, EnhancedStatusCode(2, 0, 0), ["first", "second"])
        #expect(reply.encoded == Array("250-2.0.0 first\r\n250 2.0.0 second\r\n".utf8))
    }

    @Test func controlCharactersInReplyTextCannotInjectLines() {
        let reply = SMTPReply(550, EnhancedStatusCode(5, 1, 1), "no such user <x>\r\n250 OK")
        #expect(reply.encoded == Array("550 5.1.1 no such user <x>  250 OK\r\n".utf8))
    }

    @Test(arguments: ["2.0.0", "4.7.28", "5.1.1", "5.7.650"])
    func enhancedCodesRoundTrip(_ text: String) throws {
        #expect(try #require(EnhancedStatusCode(parsing: text)).description == text)
    }

    @Test(arguments: ["", "1.0.0", "3.1.1", "5.1", "5.1.1.1", "5.01.1", "5.1.1000", "5.a.1", "4.7.-1"])
    func malformedEnhancedCodesAreRefused(_ text: String) {
        #expect(EnhancedStatusCode(parsing: text) == nil)
    }
}
