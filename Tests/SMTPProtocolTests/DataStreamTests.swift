import Testing
@testable import SMTPProtocol

/// Feeds `wire` to a reader in chunks of `chunk` bytes, as a network would.
func read(_ wire: String, chunk: Int = .max, maximumSize: Int = 1 << 20) -> (message: String, outcome: DataReader.Outcome, rest: String) {
    var reader = DataReader(maximumMessageSize: maximumSize)
    var message: [UInt8] = []
    let bytes = Array(wire.utf8)
    var offset = 0
    while offset < bytes.count {
        let end = offset + min(chunk, bytes.count - offset)
        let (consumed, outcome) = reader.consume(bytes[offset..<end], into: &message)
        offset += consumed
        if case .finished = outcome {
            return (String(decoding: message, as: UTF8.self), outcome, String(decoding: bytes[offset...], as: UTF8.self))
        }
    }
    return (String(decoding: message, as: UTF8.self), .needMoreData, "")
}

@Suite struct DataReaderTests {
    @Test(arguments: [1, 2, 3, 7, 1000])
    func dotStuffingIsRemovedAndTheEndIsFoundInAnyChunking(_ chunk: Int) {
        let result = read("Subject: x\r\n\r\n..leading dot\r\n.x\r\nbody\r\n.\r\nMAIL FROM:<next@example.com>\r\n", chunk: chunk)
        #expect(result.outcome == .finished(problem: nil))
        #expect(result.message == "Subject: x\r\n\r\n.leading dot\r\nx\r\nbody\r\n")
        #expect(result.rest == "MAIL FROM:<next@example.com>\r\n", "pipelined bytes after the end stay unread")
    }

    @Test func anEmptyMessageEndsAtOnce() {
        #expect(read(".\r\n").outcome == .finished(problem: nil))
        #expect(read(".\r\n").message == "")
    }

    /// The smuggling family: every end-of-data look-alike except CRLF.CRLF keeps the data open;
    /// the real end then refuses the whole message.
    @Test(arguments: [
        ("a\n.\nMAIL FROM:<evil@x.example>\r\n.\r\n", DataReader.Problem.bareLineFeed),
        ("a\r\n.\nRCPT TO:<victim@x.example>\r\n.\r\n", .bareLineFeed),
        ("a\n.\r\nDATA\r\n.\r\n", .bareLineFeed),
        ("a\r.\r\nQUIT\r\n.\r\n", .bareCarriageReturn),
        ("a\r\n.\r.\r\n.\r\n", .bareCarriageReturn),
        ("a\rb\r\n.\r\n", .bareCarriageReturn),
        ("a\nb\r\n.\r\n", .bareLineFeed),
    ])
    func bareLineEndsNeverEndTheDataAndRefuseTheMessage(_ wire: String, _ problem: DataReader.Problem) {
        let result = read(wire)
        #expect(result.outcome == .finished(problem: problem))
        #expect(result.rest == "", "the end must be the final CRLF.CRLF, not an earlier look-alike")
    }

    @Test func aLineOf1000OctetsIsAcceptedAnd1001IsNot() {
        let ok = String(repeating: "x", count: 998) + "\r\n.\r\n"
        #expect(read(ok).outcome == .finished(problem: nil))
        let long = String(repeating: "x", count: 999) + "\r\n.\r\n"
        #expect(read(long).outcome == .finished(problem: .lineTooLong))
    }

    @Test func anOversizeMessageIsReadToItsEndAndRefused() {
        let result = read(String(repeating: "0123456789\r\n", count: 100) + ".\r\nQUIT\r\n", chunk: 13, maximumSize: 500)
        #expect(result.outcome == .finished(problem: .messageTooLarge))
        #expect(result.rest == "QUIT\r\n")
        #expect(result.message.utf8.count <= 500)
    }

    @Test func unfinishedDataAsksForMore() {
        #expect(read("Subject: x\r\n\r\nbody\r\n.").outcome == .needMoreData)
    }

    @Test func problemsHaveTheirReplies() {
        #expect(DataReader.Problem.bareLineFeed.reply.description.hasPrefix("550 5.6.0 "))
        #expect(DataReader.Problem.messageTooLarge.reply.description == "552 5.3.4 Message too big for this system")
    }
}

@Suite struct DotStuffingTests {
    @Test(arguments: [
        ("", ".\r\n"),
        ("a\r\n", "a\r\n.\r\n"),
        ("a", "a\r\n.\r\n"),
        (".a\r\n.\r\n..\r\n", "..a\r\n..\r\n...\r\n.\r\n"),
        ("a\n.\nb", "a\r\n..\r\nb\r\n.\r\n"),
        ("a\r.\rb\r", "a\r\n..\r\nb\r\n.\r\n"),
    ])
    func messagesAreStuffedNormalisedAndTerminated(_ message: String, _ wire: String) {
        #expect(String(decoding: DotStuffing.encode(Array(message.utf8)), as: UTF8.self) == wire)
    }

    /// What the client sends, the server reads back byte for byte (for CRLF messages).
    @Test(arguments: ["Subject: t\r\n\r\n.\r\n..\r\n.x\r\nend\r\n", "\r\n", ".\r\n", "x\r\n\r\n\r\n"])
    func stuffingAndReadingRoundTrip(_ message: String) {
        let wire = String(decoding: DotStuffing.encode(Array(message.utf8)), as: UTF8.self)
        let result = read(wire, chunk: 3)
        #expect(result.outcome == .finished(problem: nil))
        #expect(result.message == message)
        #expect(result.rest == "")
    }
}

@Suite struct CommandLineFramerTests {
    func lines(_ wire: String, chunk: Int = .max, maximum: Int = 512) -> [CommandLineFramer.Line] {
        var framer = CommandLineFramer(maximumLineOctets: maximum)
        let bytes = Array(wire.utf8)
        var offset = 0, lines: [CommandLineFramer.Line] = []
        while offset < bytes.count {
            let (consumed, line) = framer.next(from: bytes[offset..<(offset + min(chunk, bytes.count - offset))])
            offset += consumed
            if let line { lines.append(line) }
        }
        return lines
    }

    @Test(arguments: [1, 5, 512])
    func pipelinedCommandsSplitOnCRLFOnly(_ chunk: Int) {
        #expect(lines("EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n", chunk: chunk) == [
            .line(Array("EHLO a".utf8)), .line(Array("MAIL FROM:<a@b.example>".utf8)), .line(Array("RCPT TO:<c@d.example>".utf8)),
        ])
    }

    @Test func bareLineEndsSpoilTheirLineAndTheNextLineIsFine() {
        #expect(lines("NOOP\nQUIT\r\nNOOP\r\n") == [.bareLineEnd, .line(Array("NOOP".utf8))])
        #expect(lines("NO\rOP\r\nQUIT\r\n") == [.bareLineEnd, .line(Array("QUIT".utf8))])
    }

    @Test func overLongLinesAreReportedOnceAndSkipped() {
        let exact = String(repeating: "x", count: 510)
        #expect(lines(exact + "\r\n") == [.line(Array(exact.utf8))])
        #expect(lines(exact + "y\r\nQUIT\r\n", chunk: 64) == [.tooLong, .line(Array("QUIT".utf8))])
    }
}

/// Bounded randomized checks with a fixed seed: what the client stuffs, the server reads back as
/// the same message with its line ends made CRLF; arbitrary bytes never crash either side.
@Suite struct DataStreamRandomTests {
    struct XorShift: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return state
        }
    }

    /// Bytes rich in what matters here: CR, LF, dots.
    func message(_ random: inout XorShift) -> [UInt8] {
        let alphabet: [UInt8] = [13, 10, 46, 46, 65, 66, 32, 0, 255]
        return (0..<Int.random(in: 0...200, using: &random)).map { _ in alphabet.randomElement(using: &random)! }
    }

    func normalised(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [], index = 0
        while index < bytes.count {
            if bytes[index] == 13 || bytes[index] == 10 {
                out += [13, 10]
                index += bytes[index] == 13 && index + 1 < bytes.count && bytes[index + 1] == 10 ? 2 : 1
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        if !out.isEmpty && out.suffix(2) != [13, 10] { out += [13, 10] }
        return out
    }

    @Test func stuffedMessagesReadBackNormalised() {
        var random = XorShift(state: 0x5eed_cafe)
        for _ in 0..<2_000 {
            let original = message(&random)
            let wire = DotStuffing.encode(original)
            var reader = DataReader(maximumMessageSize: 1 << 20)
            var received: [UInt8] = []
            let (consumed, outcome) = reader.consume(wire, into: &received)
            #expect(outcome == .finished(problem: nil))
            #expect(consumed == wire.count)
            #expect(received == normalised(original))
        }
    }

    @Test func arbitraryBytesNeverCrashAndNeverOverConsume() {
        var random = XorShift(state: 0xbad_f00d)
        for _ in 0..<2_000 {
            let input = message(&random)
            var reader = DataReader(maximumMessageSize: 64, maximumLineOctets: 16)
            var received: [UInt8] = []
            let (consumed, _) = reader.consume(input, into: &received)
            #expect(consumed <= input.count)
            #expect(received.count <= 64)
            var framer = CommandLineFramer(maximumLineOctets: 16)
            var offset = 0
            while offset < input.count {
                let (used, line) = framer.next(from: input[offset...])
                offset += used
                if case .line(let bytes)? = line { #expect(bytes.count <= 14 && !bytes.contains(10) && !bytes.contains(13)) }
            }
        }
    }
}
