/// Reads the DATA stream on the server: removes dot-stuffing, ends only at CRLF.CRLF and
/// treats a bare CR or LF as an error, never as a line break (so `\n.\n` cannot end the data:
/// no SMTP smuggling, CVE-2023-51764 and relatives). Bytes after the end are left unconsumed:
/// with PIPELINING they are the next command.
///
/// After a problem the reader keeps looking for the real end of data, discarding the content,
/// so that the reply to the whole message comes at the right point of the stream.
public struct DataReader: Sendable {
    public enum Problem: Error, Sendable, Equatable {
        case bareLineFeed, bareCarriageReturn, lineTooLong, messageTooLarge

        /// The reply once the data has ended.
        public var reply: SMTPReply {
            switch self {
            case .bareLineFeed: return SMTPReply(550, EnhancedStatusCode(5, 6, 0), "Message refused: bare <LF> in data (line ends must be CRLF)")
            case .bareCarriageReturn: return SMTPReply(550, EnhancedStatusCode(5, 6, 0), "Message refused: bare <CR> in data (line ends must be CRLF)")
            case .lineTooLong: return SMTPReply(550, EnhancedStatusCode(5, 6, 0), "Message refused: a line is longer than 1000 octets")
            case .messageTooLarge: return SMTPReply(552, EnhancedStatusCode(5, 3, 4), "Message too big for this system")
            }
        }
    }

    public enum Outcome: Sendable, Equatable {
        case needMoreData
        /// The end of data was read; `problem` says why the message must be refused, if it must.
        case finished(problem: Problem?)
    }

    private enum State: Sendable {
        case lineStart, inLine, afterCR, afterLeadingDot, afterDotCR
    }

    public let maximumMessageSize: Int
    public let maximumLineOctets: Int
    private var state = State.lineStart
    private var lineOctets = 0
    public private(set) var problem: Problem?

    /// `maximumLineOctets` counts the CRLF, as RFC 5321 4.5.3.1.6 does (1000).
    public init(maximumMessageSize: Int, maximumLineOctets: Int = 1000) {
        self.maximumMessageSize = maximumMessageSize
        self.maximumLineOctets = maximumLineOctets
    }

    /// Consumes bytes from `input` up to and including the end of data, appending the message
    /// content (CRLF line ends, dot-stuffing removed) to `message`. Returns how many bytes it
    /// consumed.
    public mutating func consume(_ input: some Collection<UInt8>, into message: inout [UInt8]) -> (consumed: Int, outcome: Outcome) {
        if let result = input.withContiguousStorageIfAvailable({ consume(buffer: $0, into: &message) }) {
            return result
        }
        return Array(input).withUnsafeBufferPointer { consume(buffer: $0, into: &message) }
    }

    private mutating func consume(buffer: UnsafeBufferPointer<UInt8>, into message: inout [UInt8]) -> (consumed: Int, outcome: Outcome) {
        var index = 0
        while index < buffer.count {
            // The common case, the middle of a line: copy the run up to the next CR or LF at once.
            if state == .inLine {
                var end = index
                while end < buffer.count, buffer[end] != 13, buffer[end] != 10 { end += 1 }
                if end > index {
                    lineOctets += end - index
                    if lineOctets > maximumLineOctets { record(.lineTooLong) }
                    append(UnsafeBufferPointer(rebasing: buffer[index..<end]), to: &message)
                    index = end
                    continue
                }
            }
            let byte = buffer[index]
            index += 1
            lineOctets += 1
            if lineOctets > maximumLineOctets { record(.lineTooLong) }
            switch (state, byte) {
            case (.lineStart, UInt8(ascii: ".")):
                state = .afterLeadingDot
            case (.afterLeadingDot, UInt8(ascii: "\r")):
                state = .afterDotCR
            case (.afterDotCR, UInt8(ascii: "\n")):
                state = .lineStart
                lineOctets = 0
                return (index, .finished(problem: problem))
            case (.lineStart, UInt8(ascii: "\r")), (.inLine, UInt8(ascii: "\r")):
                state = .afterCR
            case (.afterCR, UInt8(ascii: "\n")):
                append(Self.crlf, to: &message)
                state = .lineStart
                lineOctets = 0
            case (.afterCR, _), (.afterDotCR, _):
                // The CR before this byte was bare.
                record(.bareCarriageReturn)
                state = byte == UInt8(ascii: "\r") ? .afterCR : .inLine
            case (_, UInt8(ascii: "\n")):
                // A bare LF ends no line: a dot after it is not at a line start.
                record(.bareLineFeed)
                state = .inLine
            default:
                // Includes the byte after a leading dot: that dot was stuffing and is dropped.
                append(CollectionOfOne(byte), to: &message)
                state = .inLine
            }
        }
        return (index, .needMoreData)
    }

    private static let crlf: [UInt8] = [13, 10]

    private mutating func record(_ found: Problem) {
        if problem == nil { problem = found }
    }

    private mutating func append(_ bytes: some Collection<UInt8>, to message: inout [UInt8]) {
        guard problem == nil else { return }
        if message.count + bytes.count > maximumMessageSize {
            record(.messageTooLarge)
            return
        }
        message += bytes
    }
}

/// The client side of DATA: dot-stuffs a message and terminates it.
public enum DotStuffing {
    /// The bytes to send after the 354: every line end made CRLF (a bare CR or LF becomes CRLF,
    /// so that no receiver can see an end of data inside the message), a dot doubled at the start
    /// of a line, and CRLF.CRLF at the end.
    public static func encode(_ message: some Collection<UInt8>) -> [UInt8] {
        if let encoded = message.withContiguousStorageIfAvailable(encodeContiguous) { return encoded }
        return Array(message).withUnsafeBufferPointer(encodeContiguous)
    }

    /// Copies each line's run of bytes at once (the body of a message is mostly such runs): a
    /// byte-at-a-time loop was a tenth of a delivery node's CPU.
    private static func encodeContiguous(_ message: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(message.count + message.count / 64 + 5)
        let count = message.count
        var index = 0
        var lastLineOpen = false  // the message ends without a line end
        while index < count {
            // Here a line starts.
            if message[index] == UInt8(ascii: ".") { out.append(UInt8(ascii: ".")) }
            var end = index
            while end < count, message[end] != 13, message[end] != 10 { end += 1 }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: message[index..<end]))
            if end == count {
                lastLineOpen = end > index
                break
            }
            // CRLF, a bare CR or a bare LF: each is one CRLF.
            out.append(13)
            out.append(10)
            index = message[end] == 13 && end + 1 < count && message[end + 1] == 10 ? end + 2 : end + 1
        }
        if lastLineOpen { out += [13, 10] }
        out += [UInt8(ascii: "."), 13, 10]
        return out
    }
}

/// Splits a byte stream into command lines: CRLF only, at most `maximumLineOctets` including
/// the CRLF. A bare LF is an error, never a line end; an over-long line is skipped up to its
/// CRLF and reported once.
public struct CommandLineFramer: Sendable {
    public enum Line: Sendable, Equatable {
        case line([UInt8])
        /// The line was longer than the limit; its bytes were discarded.
        case tooLong
        /// The line contained a bare LF or CR; its bytes were discarded.
        case bareLineEnd
    }

    public let maximumLineOctets: Int
    private var current: [UInt8] = []
    private var discarding: Line?
    private var afterCR = false

    public init(maximumLineOctets: Int = SMTPCommand.maximumLineOctets) {
        self.maximumLineOctets = maximumLineOctets
    }

    /// Consumes bytes until one line is complete; returns it and how many bytes it consumed
    /// (the rest of `input` is for the next call: a DATA stream, or the next command).
    public mutating func next(from input: some Collection<UInt8>) -> (consumed: Int, line: Line?) {
        var consumed = 0
        for byte in input {
            consumed += 1
            if afterCR {
                afterCR = false
                if byte == 10 {
                    defer { current.removeAll(keepingCapacity: true); discarding = nil }
                    return (consumed, discarding ?? .line(current))
                }
                discarding = discarding ?? .bareLineEnd
            }
            switch byte {
            case 13:
                afterCR = true
            case 10:
                discarding = discarding ?? .bareLineEnd
            default:
                guard discarding == nil else { continue }
                if current.count + 2 >= maximumLineOctets {
                    discarding = .tooLong
                    current.removeAll(keepingCapacity: true)
                } else {
                    current.append(byte)
                }
            }
        }
        return (consumed, nil)
    }
}
