// libFuzzer entry point for the SMTP input path: the command framer, the command parser, the
// session state machine, the DATA reader and the client's reply reader, fed the same
// arbitrary bytes. Built by
// scripts/fuzz together with Sources/SMTPProtocol (swiftc -sanitize=fuzzer,address); the
// invariants are checked with preconditions, so a violation is a crash libFuzzer reports.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSMTPInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = Array(UnsafeBufferPointer(start: data, count: size))

    // Command lines: framed, parsed, fed to a session, as the server does.
    var framer = CommandLineFramer()
    var session = SMTPSession(policy: SessionPolicy(hostname: "fuzz.test", maximumMessageSize: 4096, maximumRecipients: 5,
                                                    offersStartTLS: true, offersAuth: true), relayPermitted: true)
    var offset = 0
    while offset < input.count {
        let (consumed, line) = framer.next(from: input[offset...])
        precondition(consumed > 0 && consumed <= input.count - offset, "the framer must make progress within its input")
        offset += consumed
        guard case .line(let bytes)? = line else { continue }
        precondition(bytes.count <= SMTPCommand.maximumLineOctets - 2 && !bytes.contains(10) && !bytes.contains(13))
        let action: SMTPSession.Action
        do throws(SMTPCommandError) {
            action = session.handle(try SMTPCommand.parse(bytes, smtputf8Offered: true, utf8Transaction: session.isUTF8Transaction))
        } catch {
            precondition((500...599).contains(error.reply.code), "a refused command gets a 5xx")
            action = session.refused(error)
        }
        if case .readData = action {
            _ = session.dataFinished(message: [], problem: nil)
        }
    }

    // The DATA stream: never consumes past the end of data, never grows past its limit, and
    // what it accepts contains no bare CR or LF.
    var reader = DataReader(maximumMessageSize: 1024)
    var message: [UInt8] = []
    let (consumed, outcome) = reader.consume(input, into: &message)
    precondition(consumed <= input.count && message.count <= 1024)
    if case .finished(problem: nil) = outcome {
        for (index, byte) in message.enumerated() where byte == 13 || byte == 10 {
            precondition(byte == 13 ? index + 1 < message.count && message[index + 1] == 10 : index > 0 && message[index - 1] == 13,
                         "accepted content has only CRLF line ends")
        }
    }

    // What the client side stuffs, the server side reads back whole. Stuffing does not fold
    // lines, so input with a line over 1000 octets (which no ingress accepts) reads back
    // with that problem, and only that one.
    let wire = DotStuffing.encode(input)
    var back = DataReader(maximumMessageSize: wire.count)
    var received: [UInt8] = []
    let (used, end) = back.consume(wire, into: &received)
    precondition(used == wire.count && (end == .finished(problem: nil) || end == .finished(problem: .lineTooLong)),
                 "stuffed data must read back to its end")

    // Replies as a client reads them: progress, bounded lines, codes in range.
    var replies = ReplyReader(maximumLineOctets: 256, maximumLines: 10)
    var position = 0
    while position < input.count {
        let (consumed, reply) = replies.next(from: input[position...])
        precondition(consumed > 0 && consumed <= input.count - position, "the reply reader must make progress within its input")
        position += consumed
        guard let reply else { continue }
        guard case .success(let parsed) = reply else { break }  // a protocol error ends the connection
        precondition((200...599).contains(parsed.code) && parsed.lines.count <= 10)
        _ = ServerCapabilities(ehlo: parsed)
    }
    return 0
}
