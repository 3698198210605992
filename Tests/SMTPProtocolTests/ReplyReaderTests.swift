import Testing
@testable import SMTPProtocol

@Suite struct ReplyReaderTests {
    func read(_ text: String, _ reader: inout ReplyReader) -> [Result<SMTPReply, ReplyReader.Failure>] {
        var bytes = Array(text.utf8)[...]
        var results: [Result<SMTPReply, ReplyReader.Failure>] = []
        while !bytes.isEmpty {
            let (used, reply) = reader.next(from: bytes)
            bytes = bytes.dropFirst(used)
            if let reply { results.append(reply) }
        }
        return results
    }

    @Test func pipelinedRepliesIncludingMultiLineOnesArriveInOrder() throws {
        var reader = ReplyReader()
        let replies = read("250-mx.example greets you\r\n250-PIPELINING\r\n250 SIZE 1000\r\n250 2.1.0 Ok\r\n354 go ahead\r\n", &reader)
        #expect(try replies.map { try $0.get().code } == [250, 250, 354])
        #expect(try replies[0].get().lines == ["mx.example greets you", "PIPELINING", "SIZE 1000"])
        #expect(try replies[1].get().enhancedCode == EnhancedStatusCode(2, 1, 0))
        #expect(try replies[1].get().lines == ["Ok"])
    }

    @Test func aReplySplitAcrossReadsAndBareLineFeedsAndCodeOnlyLines() throws {
        var reader = ReplyReader()
        #expect(read("550-5.1.1 The email account", &reader).isEmpty)
        let replies = read(" that you tried to reach does not exist.\n550 5.1.1 https://support.example/?p=NoSuchUser\r\n220\r\n", &reader)
        let bounce = try replies[0].get()
        #expect(bounce.code == 550 && bounce.enhancedCode == EnhancedStatusCode(5, 1, 1))
        #expect(bounce.lines == ["The email account that you tried to reach does not exist.", "https://support.example/?p=NoSuchUser"])
        #expect(try replies[1].get() == SMTPReply(220, nil, [""]))
    }

    @Test func anEnhancedCodeOfAnotherClassIsKeptAsText() throws {
        var reader = ReplyReader()
        let reply = try read("421 5.7.0 odd\r\n", &reader)[0].get()
        #expect(reply.enhancedCode == nil && reply.lines == ["5.7.0 odd"])
    }

    @Test(arguments: [
        ("hello\r\n", ReplyReader.Failure.badCode("hello")),
        ("25\r\n", .badCode("25")),
        ("199 too low\r\n", .badCode("199 too low")),
        ("600 too high\r\n", .badCode("600 too high")),
        ("250x\r\n", .badCode("250x")),
        ("\r\n", .badCode("")),
        ("250-a\r\n251 b\r\n", .mixedCodes(first: 250, then: 251)),
    ])
    func malformedRepliesAreProtocolErrors(text: String, failure: ReplyReader.Failure) {
        var reader = ReplyReader()
        let results = read(text, &reader)
        #expect(results.first == .failure(failure))
    }

    @Test func endlessLinesAndEndlessRepliesAreCutOff() {
        var long = ReplyReader(maximumLineOctets: 100)
        let (used, result) = long.next(from: Array(repeating: UInt8(ascii: "2"), count: 10_000))
        #expect(result == .failure(.lineTooLong) && used == 101, "stops reading at the limit")
        var many = ReplyReader(maximumLines: 5)
        #expect(read(String(repeating: "250-x\r\n", count: 10), &many).first == .failure(.tooManyLines))
    }

    @Test func capabilitiesAreReadFromTheEHLOReply() {
        let reply = SMTPReply(250, nil, ["mx.example", "PIPELINING", "SIZE 35882577", "8BITMIME", "STARTTLS", "ENHANCEDSTATUSCODES",
                                         "AUTH LOGIN PLAIN XOAUTH2", "CHUNKING", "SMTPUTF8", "X-UNKNOWN stuff"])
        let capabilities = ServerCapabilities(ehlo: reply)
        #expect(capabilities.pipelining && capabilities.eightBitMIME && capabilities.startTLS && capabilities.chunking)
        #expect(capabilities.smtputf8 && capabilities.enhancedStatusCodes)
        #expect(capabilities.size == 35_882_577 && capabilities.accepts(size: 35_882_577) && !capabilities.accepts(size: 35_882_578))
        #expect(capabilities.authMechanisms == ["LOGIN", "PLAIN", "XOAUTH2"])
        let bare = ServerCapabilities(ehlo: SMTPReply(250, nil, ["mx.example", "SIZE", "SIZE nonsense"]))
        #expect(bare.size == 0 && bare.accepts(size: .max) && !bare.pipelining, "a SIZE without a number states no limit")
        #expect(ServerCapabilities(ehlo: SMTPReply(250, nil, ["PIPELINING"])) == ServerCapabilities(), "the first line is the greeting")
    }
}
