import DSN
import SMTPProtocol
import Testing

/// What every test builds on: a node, a sender, a normal message.
enum Fixture {
    static let builder = DSNBuilder(reportingMTA: "mta1.example.net",
                                    postmaster: Mailbox(localPart: "MAILER-DAEMON", domain: "mta1.example.net"),
                                    messageIDDomain: "mta1.example.net")
    static let sender = Mailbox(localPart: "alice", domain: "example.com")
    static let messageID = "01HF5R8ZK3Q9W7X2M4N6P8R0TV"
    /// Tue, 14 Nov 2023 22:13:20 +0000
    static let arrival: UInt64 = 1_700_000_000_000
    static let now: UInt64 = arrival + 3_600_000
    static let headerSection = """
        Received: from client.example.com (client.example.com [192.0.2.7])\r
        \tby ingress1.example.net with ESMTPS id 01HF5R8ZK3Q9W7X2M4N6P8R0TV\r
        \tfor <bob@example.org>; Tue, 14 Nov 2023 22:13:20 +0000\r
        From: Alice <alice@example.com>\r
        To: Bob <bob@example.org>, Carol <carol@example.org>\r
        Subject: Quarterly report\r
        Date: Tue, 14 Nov 2023 22:13:19 +0000\r
        Message-ID: <report-42@example.com>\r
        MIME-Version: 1.0\r
        Content-Type: text/plain; charset=us-ascii\r

        """
    static let content = Array((headerSection + "\r\nHello Bob,\r\nthe report is attached.\r\n").utf8)

    static func original(sender: Mailbox? = sender, content: [UInt8] = content) -> OriginalMessage {
        OriginalMessage(id: messageID, envelopeSender: sender, arrivalDate: arrival, content: content)
    }

    static func build(_ recipients: [RecipientStatus], about original: OriginalMessage = original(),
                      localPart: String = "01HF5R8ZK3Q9W7X2M4N6P8R0TV.1.bounce") throws -> DeliveryStatusNotification {
        try builder.build(about: original, recipients: recipients, messageIDLocalPart: localPart, now: now)
    }

    static let bob = RecipientStatus(
        recipient: Mailbox(localPart: "bob", domain: "example.org"), action: .failed,
        reply: SMTPReply(550, EnhancedStatusCode(5, 1, 1), ["<bob@example.org>: Recipient address rejected:", "no such user here"]),
        remoteMTA: "mx.example.org", lastAttemptDate: now - 1000)
    static let carol = RecipientStatus(
        recipient: Mailbox(localPart: "carol", domain: "example.org"), action: .failed,
        reply: SMTPReply(554, nil, "Transaction failed"), remoteMTA: "mx.example.org", lastAttemptDate: now - 1000)
}

@Suite struct DSNBuilderTests {
    @Test func aBounceForTwoRecipientsParsesBackWithEveryField() async throws {
        let dsn = try Fixture.build([Fixture.bob, Fixture.carol])
        #expect(dsn.recipient == Fixture.sender)
        #expect(dsn.messageID == "<01HF5R8ZK3Q9W7X2M4N6P8R0TV.1.bounce@mta1.example.net>")
        #expect(!dsn.needsSMTPUTF8 && !dsn.needsEightBitMIME)
        #expect(dsn.content.allSatisfy { $0 < 0x80 })

        let parsed = try await PythonParsedDSN.parse(dsn)
        #expect(parsed.defects == [])
        #expect(parsed.headerDefects == [])
        #expect(parsed.contentType == "multipart/report")
        #expect(parsed.reportType == "delivery-status")
        #expect(parsed.partTypes == ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        #expect(parsed.parts[0].charset == "us-ascii")
        #expect(parsed.from == "Mail Delivery System <MAILER-DAEMON@mta1.example.net>")
        #expect(parsed.to == "alice@example.com")
        #expect(parsed.subject == "Undelivered Mail Returned to Sender")
        #expect(parsed.date == "Tue, 14 Nov 2023 23:13:20 +0000")
        #expect(parsed.messageId == dsn.messageID)
        #expect(parsed.autoSubmitted == "auto-replied")
        #expect(parsed.mimeVersion == "1.0")

        #expect(parsed.perMessage == [
            "Reporting-MTA": "dns; mta1.example.net",
            "Arrival-Date": "Tue, 14 Nov 2023 22:13:20 +0000",
            "X-Smarthost-Message-ID": Fixture.messageID,
        ])
        #expect(parsed.perRecipient == [
            [
                "Final-Recipient": "rfc822; bob@example.org",
                "Action": "failed",
                "Status": "5.1.1",
                "Remote-MTA": "dns; mx.example.org",
                "Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: no such user here",
                "Last-Attempt-Date": "Tue, 14 Nov 2023 23:13:19 +0000",
            ],
            [
                "Final-Recipient": "rfc822; carol@example.org",
                "Action": "failed",
                "Status": "5.0.0",
                "Remote-MTA": "dns; mx.example.org",
                "Diagnostic-Code": "smtp; 554 Transaction failed",
                "Last-Attempt-Date": "Tue, 14 Nov 2023 23:13:19 +0000",
            ],
        ])
        #expect(parsed.text?.hasPrefix("This is the mail system at host mta1.example.net.\r\n") == true)
        #expect(parsed.flatText.contains("Delivery to these recipients failed permanently: <bob@example.org> host mx.example.org said: "
            + "550 5.1.1 <bob@example.org>: Recipient address rejected: no such user here "
            + "<carol@example.org> host mx.example.org said: 554 Transaction failed"))
        #expect(parsed.flatText.contains("with the identifier \(Fixture.messageID);"))
    }

    @Test func theOriginalHeaderSectionIsAttachedOctetForOctet() async throws {
        let dsn = try Fixture.build([Fixture.bob])
        let parsed = try await PythonParsedDSN.parse(dsn)
        let boundary = try #require(parsed.boundary)
        let attached = "Content-Type: text/rfc822-headers\r\n\r\n\(Fixture.headerSection)\r\n--\(boundary)--\r\n"
        #expect(dsn.content.suffix(attached.utf8.count).elementsEqual(attached.utf8))
        #expect(parsed.originalHeaders?.map { $0[0] } == ["Received", "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"])
        #expect(parsed.originalHeaders?[3] == ["Subject", "Quarterly report"])
        #expect(parsed.subject != "Quarterly report", "the body was not read as the DSN's own header")
    }

    /// A message that expired after transient failures is `failed`, with the last transient
    /// status (RFC 3463's class 4 covers abandonment; Postfix does it too).
    @Test func anExpiredRecipientIsFailedWithItsLastTransientStatus() async throws {
        let expired = RecipientStatus(
            recipient: Mailbox(localPart: "dave", domain: "example.net"), action: .failed,
            reply: SMTPReply(451, EnhancedStatusCode(4, 4, 1), "Connection timed out"), remoteMTA: nil, lastAttemptDate: Fixture.now)
        let dsn = try Fixture.build([expired])
        let parsed = try await PythonParsedDSN.parse(dsn)
        #expect(parsed.defects == [])
        #expect(parsed.subject == "Undelivered Mail Returned to Sender")
        #expect(parsed.perRecipient == [[
            "Final-Recipient": "rfc822; dave@example.net",
            "Action": "failed",
            "Status": "4.4.1",
            "Diagnostic-Code": "X-Smarthost; 451 4.4.1 Connection timed out",
            "Last-Attempt-Date": "Tue, 14 Nov 2023 23:13:20 +0000",
        ]], "no Remote-MTA: the reply was made here")
        #expect(parsed.flatText.contains("until the message expired, the last time as follows: "
            + "<dave@example.net> this mail system reported: 451 4.4.1 Connection timed out"))
    }

    @Test func aDelayNoticeSaysUntilWhenItRetries() async throws {
        let delayed = RecipientStatus(
            recipient: Mailbox(localPart: "erin", domain: "example.net"), action: .delayed(willRetryUntil: Fixture.arrival + 5 * 86_400_000),
            reply: SMTPReply(421, EnhancedStatusCode(4, 7, 0), "Try again later"), remoteMTA: "mx.example.net", lastAttemptDate: Fixture.now)
        let dsn = try Fixture.build([delayed], localPart: "01HF5R8ZK3Q9W7X2M4N6P8R0TV.4.delay")
        let parsed = try await PythonParsedDSN.parse(dsn)
        #expect(parsed.defects == [])
        #expect(parsed.subject == "Delayed Mail (still being retried)")
        #expect(parsed.parts.map(\.description) == ["Notification", "Delivery report", "Delayed message headers"])
        #expect(parsed.perRecipient == [[
            "Final-Recipient": "rfc822; erin@example.net",
            "Action": "delayed",
            "Status": "4.7.0",
            "Remote-MTA": "dns; mx.example.net",
            "Diagnostic-Code": "smtp; 421 4.7.0 Try again later",
            "Last-Attempt-Date": "Tue, 14 Nov 2023 23:13:20 +0000",
            "Will-Retry-Until": "Sun, 19 Nov 2023 22:13:20 +0000",
        ]])
        #expect(parsed.flatText.contains("you do not need to send it again"))
        #expect(parsed.flatText.contains("It will be retried until Sun, 19 Nov 2023 22:13:20 +0000."))
    }

    @Test func failuresAndDelaysShareOneReportWhenTheCallerWantsThem() async throws {
        let delayed = RecipientStatus(
            recipient: Mailbox(localPart: "erin", domain: "example.net"), action: .delayed(willRetryUntil: Fixture.now + 86_400_000),
            reply: SMTPReply(450, nil, "Mailbox busy"), remoteMTA: "mx.example.net", lastAttemptDate: nil,
            originalRecipient: Mailbox(localPart: "Erin", domain: "Example.net"))
        let parsed = try await PythonParsedDSN.parse(try Fixture.build([Fixture.bob, delayed]))
        #expect(parsed.defects == [])
        #expect(parsed.subject == "Undelivered Mail Returned to Sender")
        #expect(parsed.perRecipient.map { $0["Action"] } == ["failed", "delayed"])
        #expect(parsed.perRecipient[1]["Status"] == "4.0.0")
        #expect(parsed.perRecipient[1]["Original-Recipient"] == "rfc822; Erin@Example.net")
        #expect(parsed.perRecipient[1]["Last-Attempt-Date"] == nil)
        #expect(parsed.flatText.contains("It is still trying to deliver it to others."))
    }

    @Test func utf8AddressesMakeAnRFC6533ReportThatNeedsSMTPUTF8() async throws {
        let sender = Mailbox(localPart: "用户", domain: "例子.test")
        let headers = "From: 用户 <用户@例子.test>\r\nTo: 收件人@例子.test\r\nSubject: Grüße aus Köln\r\n"
        let original = Fixture.original(sender: sender, content: Array((headers + "\r\nbody\r\n").utf8))
        let recipient = RecipientStatus(
            recipient: Mailbox(localPart: "收件人", domain: "例子.test"), action: .failed,
            reply: SMTPReply(550, EnhancedStatusCode(5, 1, 1), "no such user"), remoteMTA: "mx.例子.test", lastAttemptDate: Fixture.now)
        let dsn = try Fixture.build([recipient], about: original)
        #expect(dsn.needsSMTPUTF8 && dsn.needsEightBitMIME)

        let parsed = try await PythonParsedDSN.parse(dsn)
        #expect(parsed.defects == [])
        #expect(parsed.reportType == "global-delivery-status")
        #expect(parsed.transferEncoding == "8bit")
        #expect(parsed.partTypes == ["text/plain", "message/global-delivery-status", "message/global-headers"])
        #expect(parsed.parts.map(\.transferEncoding) == ["8bit", "8bit", "8bit"])
        #expect(parsed.parts[0].charset == "utf-8")
        #expect(parsed.to == "用户@例子.test")
        #expect(parsed.perMessage?["Reporting-MTA"] == "dns; mta1.example.net")
        #expect(parsed.perRecipient == [[
            "Final-Recipient": "utf-8; 收件人@例子.test",
            "Action": "failed",
            "Status": "5.1.1",
            "Remote-MTA": "dns; mx.例子.test",
            "Diagnostic-Code": "smtp; 550 5.1.1 no such user",
            "Last-Attempt-Date": "Tue, 14 Nov 2023 23:13:20 +0000",
        ]])
        #expect(parsed.originalHeaders == [["From", "用户 <用户@例子.test>"], ["To", "收件人@例子.test"], ["Subject", "Grüße aus Köln"]])
        #expect(parsed.flatText.contains("<收件人@例子.test> host mx.例子.test said: 550 5.1.1 no such user"))
        let attached = "Content-Type: message/global-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\(headers)\r\n"
        #expect(String(decoding: dsn.content, as: UTF8.self).contains(attached))
    }

    @Test func utf8OnlyInTheOriginalHeadersNeedsEightBitMIMEButNotSMTPUTF8() async throws {
        let content = Array("Subject: Grüße\r\nFrom: alice@example.com\r\n\r\nbody\r\n".utf8)
        let dsn = try Fixture.build([Fixture.bob], about: Fixture.original(content: content))
        #expect(!dsn.needsSMTPUTF8 && dsn.needsEightBitMIME)
        let parsed = try await PythonParsedDSN.parse(dsn)
        #expect(parsed.defects == [])
        #expect(parsed.partTypes == ["text/plain", "message/global-delivery-status", "message/global-headers"])
        #expect(parsed.perRecipient.first?["Final-Recipient"] == "rfc822; bob@example.org")
        #expect(parsed.originalHeaders?.first == ["Subject", "Grüße"])
    }

    @Test func theSameInputGivesTheSameOctets() throws {
        #expect(try Fixture.build([Fixture.bob]).content == Fixture.build([Fixture.bob]).content)
    }

    @Test func aLongDiagnosticIsFoldedAndUnfoldsToTheReplyText() async throws {
        let lines = (1...12).map { "line \($0) of a reply that explains at length why the message was refused" }
        let verbose = RecipientStatus(
            recipient: Mailbox(localPart: "bob", domain: "example.org"), action: .failed,
            reply: SMTPReply(550, EnhancedStatusCode(5, 7, 1), lines), remoteMTA: "mx.example.org", lastAttemptDate: nil)
        let dsn = try Fixture.build([verbose])
        #expect(Self.longestLine(dsn.content) <= 78)
        let parsed = try await PythonParsedDSN.parse(dsn)
        #expect(parsed.perRecipient.first?["Diagnostic-Code"] == "smtp; 550 5.7.1 " + lines.joined(separator: " "))
    }

    @Test func aHugeReplyIsCut() async throws {
        let huge = RecipientStatus(
            recipient: Mailbox(localPart: "bob", domain: "example.org"), action: .failed,
            reply: SMTPReply(550, nil, Array(repeating: String(repeating: "x", count: 2000), count: 100)),
            remoteMTA: "mx.example.org", lastAttemptDate: nil)
        let dsn = try Fixture.build([huge])
        #expect(Self.longestLine(dsn.content) <= 998)
        let parsed = try await PythonParsedDSN.parse(dsn)
        #expect(parsed.defects == [])
        let diagnostic = try #require(parsed.perRecipient.first?["Diagnostic-Code"])
        #expect(diagnostic.hasSuffix(" ..."))
        #expect(diagnostic.utf8.count < DSNBuilder.maximumDiagnosticOctets + 20)
    }

    @Test func controlCharactersInARemoteReplyCannotAddFields() async throws {
        let sneaky = RecipientStatus(
            recipient: Mailbox(localPart: "bob", domain: "example.org"), action: .failed,
            reply: SMTPReply(550, nil, "no\r\nAction: delivered\u{0}"), remoteMTA: "mx\r\nStatus: 2.0.0", lastAttemptDate: nil)
        let parsed = try await PythonParsedDSN.parse(try Fixture.build([sneaky]))
        #expect(parsed.defects == [])
        #expect(parsed.perRecipient.first?["Action"] == "failed")
        #expect(parsed.perRecipient.first?["Status"] == "5.0.0")
        #expect(parsed.perRecipient.first?["Diagnostic-Code"] == "smtp; 550 no  Action: delivered")
    }

    @Test(arguments: ["has space", "\"quoted\"", "", String(repeating: "a", count: 65), "a..b"])
    func anInvalidMessageIDLocalPartIsRefused(_ localPart: String) {
        #expect(throws: DSNError.invalidMessageID("\(localPart)@mta1.example.net")) {
            try Fixture.build([Fixture.bob], localPart: localPart)
        }
    }

    @Test func aReportNeedsARecipient() {
        #expect(throws: DSNError.noRecipients) { try Fixture.build([]) }
    }

    /// The longest line in octets, without its CRLF.
    static func longestLine(_ content: [UInt8]) -> Int {
        content.split(separator: 10, omittingEmptySubsequences: false).map { $0.last == 13 ? $0.count - 1 : $0.count }.max() ?? 0
    }
}
