/// Reads a server's replies on the client side (RFC 5321 4.2): `250-first` ... `250 last`,
/// each line a three-digit code, then `-` or a space (or nothing), then text. Replies come
/// from the Internet, so everything is bounded and checked: a line of more than
/// `maximumLineOctets`, more than `maximumLines` lines, a code outside 2xx-5xx, or a
/// continuation line with another code is a protocol error, never a crash or unbounded memory.
/// A bare LF is accepted as a line end: the client only reads replies, it does not relay them,
/// and real servers send it. After a failure the stream cannot be trusted: close the connection.
public struct ReplyReader: Sendable {
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case lineTooLong
        case tooManyLines
        case badCode(String)
        case mixedCodes(first: Int, then: Int)

        public var description: String {
            switch self {
            case .lineTooLong: return "a reply line longer than the limit"
            case .tooManyLines: return "a reply of too many lines"
            case .badCode(let line): return "not an SMTP reply line: \(line.prefix(60).debugDescription)"
            case .mixedCodes(let first, let then): return "a multi-line reply mixing codes \(first) and \(then)"
            }
        }
    }

    public let maximumLineOctets: Int
    public let maximumLines: Int
    private var line: [UInt8] = []
    private var code: Int?
    private var texts: [String] = []

    /// RFC 5321 4.5.3.1.5 allows 512 octets per reply line; servers exceed it, so the default
    /// is more lenient, and still bounded.
    public init(maximumLineOctets: Int = 2048, maximumLines: Int = 100) {
        self.maximumLineOctets = maximumLineOctets
        self.maximumLines = maximumLines
    }

    /// Consumes bytes until one reply is complete; returns it and how many bytes it took (the
    /// rest of `input` belongs to the next reply, as with PIPELINING).
    public mutating func next(from input: some Collection<UInt8>) -> (consumed: Int, reply: Result<SMTPReply, Failure>?) {
        var consumed = 0
        for byte in input {
            consumed += 1
            guard byte == 10 else {
                guard line.count < maximumLineOctets else { return (consumed, .failure(.lineTooLong)) }
                line.append(byte)
                continue
            }
            if line.last == 13 { line.removeLast() }
            let finished = finishLine()
            line.removeAll(keepingCapacity: true)
            if let finished { return (consumed, finished) }
        }
        return (consumed, nil)
    }

    /// Takes one complete line; returns the reply when it was the last one.
    private mutating func finishLine() -> Result<SMTPReply, Failure>? {
        let text = String(decoding: line, as: UTF8.self)
        let digits = line.prefix(3)
        guard digits.count == 3, digits.allSatisfy({ (48...57).contains($0) }), let value = Int(text.prefix(3)),
              (200...599).contains(value), line.count == 3 || line[3] == 32 || line[3] == 45 else {
            return .failure(.badCode(text))
        }
        if let code, code != value { return .failure(.mixedCodes(first: code, then: value)) }
        code = value
        texts.append(line.count > 4 ? String(text.dropFirst(4)) : "")
        guard texts.count <= maximumLines else { return .failure(.tooManyLines) }
        let isLast = line.count == 3 || line[3] == 32
        guard isLast else { return nil }
        defer { code = nil; texts = [] }
        return .success(Self.reply(code: value, texts: texts))
    }

    /// RFC 2034: the enhanced code starts every line's text; kept once, removed from the text.
    private static func reply(code: Int, texts: [String]) -> SMTPReply {
        let first = texts[0].split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
        guard let enhanced = first.first.flatMap({ EnhancedStatusCode(parsing: $0) }),
              enhanced.class == code / 100 else {
            return SMTPReply(code, nil, texts)
        }
        let prefix = "\(first[0])"
        let stripped = texts.map { text -> String in
            guard text.hasPrefix(prefix) else { return text }
            return String(text.dropFirst(prefix.count).drop { $0 == " " })
        }
        return SMTPReply(code, enhanced, stripped)
    }
}

/// What a server offers in its EHLO reply (RFC 5321 4.1.1.1 and the extensions' RFCs).
public struct ServerCapabilities: Sendable, Equatable {
    public var pipelining = false
    /// SIZE, with the server's limit if it gave one (0 or absent: no stated limit).
    public var size: Int?
    public var eightBitMIME = false
    public var smtputf8 = false
    public var startTLS = false
    public var chunking = false
    public var enhancedStatusCodes = false
    public var authMechanisms: [String] = []

    public init() {}

    /// Reads the lines after the first (the greeting line names the server, not an extension).
    public init(ehlo reply: SMTPReply) {
        for line in reply.lines.dropFirst() {
            let words = line.split(separator: " ")
            guard let keyword = words.first?.uppercased() else { continue }
            switch keyword {
            case "PIPELINING": pipelining = true
            case "SIZE": size = words.count > 1 ? Int(words[1]).map { max(0, $0) } ?? 0 : 0
            case "8BITMIME": eightBitMIME = true
            case "SMTPUTF8": smtputf8 = true
            case "STARTTLS": startTLS = true
            case "CHUNKING": chunking = true
            case "ENHANCEDSTATUSCODES": enhancedStatusCodes = true
            case "AUTH": authMechanisms = words.dropFirst().prefix(20).map { $0.uppercased() }
            default: continue
            }
        }
    }

    /// Whether a message of `octets` fits the server's stated limit.
    public func accepts(size octets: Int) -> Bool {
        guard let size, size > 0 else { return true }
        return octets <= size
    }
}
