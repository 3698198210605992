import SMTPProtocol
import Testing
@testable import DSN

/// Original messages come from clients: whatever they hold, the DSN is valid MIME that Python's
/// email package parses without a defect, no line is longer than 998 octets, and reading the
/// original stays linear.
@Suite struct HostileOriginalTests {
    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var content: [UInt8]
        /// The attached section, when the test knows it exactly.
        var attached: String?
        var omitted = 0
        var truncated = false
    }

    static let megabytes = 3 * 1024 * 1024

    static let cases: [Case] = [
        Case(description: "megabytes without a newline", content: Array(repeating: UInt8(ascii: "a"), count: megabytes), attached: "", omitted: 1),
        Case(description: "a field of megabytes without a newline or a space",
             content: Array("X-Big: ".utf8) + Array(repeating: UInt8(ascii: "b"), count: megabytes), truncated: true),
        Case(description: "a field of megabytes of words",
             content: Array("X-Words: ".utf8) + Array(repeating: Array("word ".utf8), count: megabytes / 5).flatMap { $0 }, truncated: true),
        Case(description: "a hundred thousand fields",
             content: Array(repeating: Array("X-Many: field\r\n".utf8), count: 100_000).flatMap { $0 }, truncated: true),
        Case(description: "NUL octets", content: Array("Subject: a\0b\r\nFrom: c\0@d\r\n\r\n\0".utf8),
             attached: "Subject: a\u{FFFD}b\r\nFrom: c\u{FFFD}@d\r\n"),
        Case(description: "8-bit garbage", content: [UInt8]("Subject: ".utf8) + [0xFF, 0xFE, 0x80, 0xC3, 0x28, 0xED, 0xA0, 0x80] + [13, 10, 13, 10],
             attached: "Subject: \u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}(\u{FFFD}\u{FFFD}\u{FFFD}\r\n"),
        Case(description: "lines without a colon", content: Array("no colon here\r\nSubject: x\r\nFrom y\r\n\r\nbody".utf8),
             attached: "Subject: x\r\n", omitted: 2),
        Case(description: "continuation lines first", content: Array(" leading\r\n\tcontinuation\r\nSubject: x\r\n folded\r\n\r\n".utf8),
             attached: "Subject: x\r\n folded\r\n", omitted: 2),
        Case(description: "an mbox From line and a space before the colon",
             content: Array("From alice@example.com Tue Nov 14 22:13:20 2023\r\nSubject : x\r\nTo: y\r\n".utf8),
             attached: "To: y\r\n", omitted: 2),
        Case(description: "bare LF line ends", content: Array("Subject: x\nFrom: y\n folded\n\nbody\n".utf8),
             attached: "Subject: x\r\nFrom: y\r\n folded\r\n"),
        Case(description: "no body separator and no final line end", content: Array("Subject: x\r\nFrom: y".utf8),
             attached: "Subject: x\r\nFrom: y\r\n"),
        Case(description: "a bare CR inside a line", content: Array("Subject: a\rb\r\n\r\n".utf8), attached: "Subject: a\u{FFFD}b\r\n"),
        Case(description: "an empty message", content: [], attached: ""),
        Case(description: "only an empty line", content: Array("\r\nbody".utf8), attached: ""),
        Case(description: "a field named like the boundary",
             content: Array("--=_01HF5R8ZK3Q9W7X2M4N6P8R0TV.1.bounce: x\r\n--=_01HF5R8ZK3Q9W7X2M4N6P8R0TV.1.bounce.1: y\r\n".utf8),
             attached: "--=_01HF5R8ZK3Q9W7X2M4N6P8R0TV.1.bounce: x\r\n--=_01HF5R8ZK3Q9W7X2M4N6P8R0TV.1.bounce.1: y\r\n"),
        Case(description: "a field name of 2000 octets", content: Array((String(repeating: "N", count: 2000) + ": v\r\nTo: y\r\n").utf8),
             attached: "To: y\r\n", omitted: 1),
        Case(description: "a long UTF-8 line without spaces",
             content: Array(("Subject: " + String(repeating: "é", count: 1500) + "\r\n").utf8)),
    ]

    @Test(arguments: cases)
    func aHostileOriginalStillMakesAValidDSN(_ hostile: Case) async throws {
        let started = ContinuousClock.now
        let original = Fixture.original(content: hostile.content)
        let dsn = try Fixture.build([Fixture.bob], about: original)
        #expect(ContinuousClock.now - started < .seconds(5), "linear in the octets read")

        #expect(original.headers.omittedLineCount == hostile.omitted)
        #expect(original.headers.isTruncated == hostile.truncated)
        #expect(original.headers.octets.count <= OriginalHeaders.maximumOctets)
        if let attached = hostile.attached {
            #expect(String(decoding: original.headers.octets, as: UTF8.self) == attached)
        }
        #expect(DSNBuilderTests.longestLine(dsn.content) <= 998)
        #expect(String(validating: dsn.content, as: UTF8.self) != nil)

        let parsed = try await PythonParsedDSN.parse(dsn)
        #expect(parsed.defects == [])
        #expect(parsed.headerDefects == [])
        #expect(parsed.parts.count == 3)
        #expect(parsed.perRecipient.first?["Status"] == "5.1.1")
        #expect(parsed.originalHeaders?.count == original.headers.octets.split(separator: 10).filter { ![32, 9].contains($0.first) }.count)
    }

    @Test func aFieldThatMustBeFoldedUnfoldsToItsOriginalValue() async throws {
        let words = (1...400).map { "word\($0)" }.joined(separator: " ")
        let original = Fixture.original(content: Array("Subject: \(words)\r\nTo: y\r\n\r\n".utf8))
        let attached = String(decoding: original.headers.octets, as: UTF8.self)
        #expect(attached.split(separator: "\r\n").count > 3)
        #expect(attached.replacing("\r\n ", with: " ") == "Subject: \(words)\r\nTo: y\r\n", "folded before spaces only")
        let parsed = try await PythonParsedDSN.parse(try Fixture.build([Fixture.bob], about: original))
        #expect(parsed.originalHeaders?.first == ["Subject", words])
    }

    @Test func aBoundaryTakenByTheOriginalIsAvoided() throws {
        let base = "=_01HF5R8ZK3Q9W7X2M4N6P8R0TV.1.bounce"
        let original = Fixture.original(content: Array("--\(base).1: x\r\n--\(base).12: y\r\n--\(base).3x: z\r\n".utf8))
        let dsn = try Fixture.build([Fixture.bob], about: original)
        #expect(String(decoding: dsn.content, as: UTF8.self).contains("boundary=\"\(base).2\""))
        #expect(DSNBuilder.boundary(base: "b", avoiding: [Array("x\r\n--b\r\n".utf8)]) == "b.1")
        #expect(DSNBuilder.boundary(base: "b", avoiding: [Array("--bc\r\n".utf8), Array("--b.1\r\n".utf8)]) == "b.2")
        #expect(DSNBuilder.boundary(base: "b", avoiding: [Array("-b\r\n --b\r\n".utf8)]) == "b")
    }
}

@Suite struct MessageTextTests {
    @Test(arguments: [
        (UInt64(0), "Thu, 01 Jan 1970 00:00:00 +0000"),
        (951_782_400_000, "Tue, 29 Feb 2000 00:00:00 +0000"),
        (1_700_000_000_999, "Tue, 14 Nov 2023 22:13:20 +0000"),
        (4_102_444_799_000, "Thu, 31 Dec 2099 23:59:59 +0000"),
    ])
    func datesAreRFC5322InUTC(_ milliseconds: UInt64, _ expected: String) {
        #expect(MessageText.date(milliseconds: milliseconds) == expected)
    }

    @Test func foldingSplitsBeforeWhitespaceAndOnlyThen() {
        #expect(MessageText.fold(Array("aaa bbb ccc".utf8), width: 7).map { String(decoding: $0, as: UTF8.self) } == ["aaa bbb", " ccc"])
        #expect(MessageText.fold(Array("short".utf8), width: 7).count == 1)
        // A word longer than the width stays whole up to the hard width.
        #expect(MessageText.fold(Array("a bbbbbbbbbb c".utf8), width: 5, hardWidth: 20).map { String(decoding: $0, as: UTF8.self) }
            == ["a", " bbbbbbbbbb", " c"])
        // Past the hard width: split with a space inserted, never inside a UTF-8 character.
        #expect(MessageText.fold(Array("ééééé".utf8), width: 4, hardWidth: 5).map { String(decoding: $0, as: UTF8.self) }
            == ["éé", " éé", " é"])
    }
}
