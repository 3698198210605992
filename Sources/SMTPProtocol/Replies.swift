/// An RFC 3463 enhanced status code such as 5.1.1: class (2, 4, 5), subject, detail.
public struct EnhancedStatusCode: Sendable, Hashable, CustomStringConvertible {
    public var `class`: Int
    public var subject: Int
    public var detail: Int

    public init(_ class: Int, _ subject: Int, _ detail: Int) {
        self.class = `class`
        self.subject = subject
        self.detail = detail
    }

    /// Parses `class.subject.detail` (class 2, 4 or 5; subject and detail 0-999 without
    /// leading zeros, as RFC 3463 writes them). Nil for anything else.
    public init?(parsing text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let first = parts.first, ["2", "4", "5"].contains(first),
              let subject = Self.number(parts[1]), let detail = Self.number(parts[2]) else { return nil }
        self.init(Int(first)!, subject, detail)
    }

    private static func number(_ text: some StringProtocol) -> Int? {
        guard (1...3).contains(text.count), text.allSatisfy(\.isASCIIDigit),
              text.count == 1 || !text.hasPrefix("0") else { return nil }
        return Int(text)
    }

    public var description: String { "\(self.class).\(subject).\(detail)" }
}

/// An SMTP reply: a three-digit code, an optional enhanced status code, and one or more lines
/// of text.
public struct SMTPReply: Sendable, Hashable, CustomStringConvertible {
    public var code: Int
    public var enhancedCode: EnhancedStatusCode?
    public var lines: [String]

    public init(_ code: Int, _ enhancedCode: EnhancedStatusCode? = nil, _ lines: [String]) {
        precondition((200...599).contains(code), "SMTP reply codes are 2xx to 5xx")
        self.code = code
        self.enhancedCode = enhancedCode
        self.lines = lines.isEmpty ? [""] : lines
    }

    public init(_ code: Int, _ enhancedCode: EnhancedStatusCode? = nil, _ text: String) {
        self.init(code, enhancedCode, [text])
    }

    public var isPositive: Bool { code < 400 }
    public var isTransient: Bool { (400...499).contains(code) }
    public var isPermanent: Bool { code >= 500 }

    /// The reply on the wire: `250-first` ... `250 last`, each line ending in CRLF, the enhanced
    /// code repeated on every line (RFC 2034). Text is made safe to send: control characters,
    /// which could end the line or inject another reply, become spaces.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        for (index, line) in lines.enumerated() {
            out += Array(String(code).utf8)
            out.append(index == lines.count - 1 ? UInt8(ascii: " ") : UInt8(ascii: "-"))
            if let enhancedCode {
                out += Array("\(enhancedCode) ".utf8)
            }
            out += line.utf8.map { $0 < 0x20 || $0 == 0x7f ? UInt8(ascii: " ") : $0 }
            out += [13, 10]
        }
        return out
    }

    public var description: String {
        lines.map { "\(code) " + (enhancedCode.map { "\($0) " } ?? "") + $0 }.joined(separator: "\n")
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
