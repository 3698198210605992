import DSN
import SMTPProtocol
import Testing

@Suite struct DSNPolicyTests {
    @Test func noDSNToTheNullSender() {
        let original = Fixture.original(sender: nil)
        #expect(original.dsnSuppression == .nullSender)
        #expect(throws: DSNError.suppressed(.nullSender)) { try Fixture.build([Fixture.bob], about: original) }
    }

    @Test func noDSNAboutOurOwnDSNEvenWithASender() throws {
        let dsn = try Fixture.build([Fixture.bob])
        let original = Fixture.original(content: dsn.content)
        #expect(original.dsnSuppression == .originalIsDeliveryReport)
        #expect(throws: DSNError.suppressed(.originalIsDeliveryReport)) { try Fixture.build([Fixture.bob], about: original) }
    }

    @Test(arguments: [
        "Content-Type: multipart/report; report-type=delivery-status; boundary=x",
        "content-type: Multipart/Report;\r\n\treport-type=\"Global-Delivery-Status\";\r\n boundary=\"a;b\"",
        "Content-Type:multipart/report;boundary=\"x\";REPORT-TYPE=delivery-status",
    ])
    func deliveryReportsAreRecognisedInAnySpelling(_ contentType: String) {
        let original = Fixture.original(content: Array("From: MAILER-DAEMON@x.test\r\n\(contentType)\r\n\r\nbody".utf8))
        #expect(original.dsnSuppression == .originalIsDeliveryReport)
    }

    /// RFC 3834 keeps auto-responders from answering these; a DSN is not an auto-response,
    /// and the sender still needs to know.
    @Test(arguments: [
        "Auto-Submitted: auto-generated",
        "Auto-Submitted: auto-replied",
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: list",
        "Content-Type: multipart/report; report-type=disposition-notification; boundary=x",
        "Content-Type: multipart/mixed; boundary=\"; report-type=delivery-status\"",
        "Content-Type: multipart/report; boundary=\"x; report-type=delivery-status\"",
    ])
    func otherAutomaticMailIsStillReported(_ field: String) async throws {
        let original = Fixture.original(content: Array("From: robot@example.com\r\n\(field)\r\nSubject: x\r\n\r\nbody".utf8))
        #expect(original.dsnSuppression == nil)
        let parsed = try await PythonParsedDSN.parse(try Fixture.build([Fixture.bob], about: original))
        #expect(parsed.defects == [])
    }
}
