/// An SMTP command as a client sent it, parsed and checked (RFC 5321, with ESMTP parameters of
/// SIZE, 8BITMIME, SMTPUTF8, CHUNKING and AUTH). Parsing is pure: the server's state machine
/// decides whether a command is allowed now.
public enum SMTPCommand: Sendable, Equatable {
    case helo(String)
    case ehlo(String)
    /// `nil` sender: the null reverse-path `<>` of bounces.
    case mail(from: Mailbox?, MailParameters)
    case rcpt(to: Mailbox)
    case data
    case bdat(size: Int, last: Bool)
    case rset
    case noop
    case quit
    case vrfy(String)
    case help(String?)
    case starttls
    case auth(mechanism: String, initialResponse: String?)

    /// The longest command line, CRLF included (RFC 5321 4.5.3.1.4).
    public static let maximumLineOctets = 512

    /// Parses one command line (without its CRLF). `smtputf8Offered` says whether the server
    /// announced SMTPUTF8; `utf8Transaction` whether the current transaction's MAIL asked for
    /// it (so RCPT addresses may be UTF-8).
    public static func parse(_ line: some Collection<UInt8>, smtputf8Offered: Bool, utf8Transaction: Bool = false) throws(SMTPCommandError) -> SMTPCommand {
        guard line.count <= maximumLineOctets - 2 else { throw .lineTooLong }
        guard let text = String(validating: line, as: UTF8.self) else { throw .invalidUTF8 }
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" || $0.value == 0x7f }) else {
            throw .controlCharacters
        }
        let verbEnd = text.firstIndex(of: " ") ?? text.endIndex
        let verb = text[..<verbEnd].uppercased()
        let argument = text[verbEnd...].drop { $0 == " " }

        switch verb {
        case "HELO", "EHLO":
            let name = argument.trimmingTrailingSpaces()
            guard !name.isEmpty, !name.contains(" "), name.utf8.count <= 255, name.unicodeScalars.allSatisfy(\.isASCII) else {
                throw .badHelloName
            }
            return verb == "HELO" ? .helo(String(name)) : .ehlo(String(name))
        case "MAIL":
            return try parseMail(argument, smtputf8Offered: smtputf8Offered)
        case "RCPT":
            return try parseRcpt(argument, allowUTF8: utf8Transaction)
        case "DATA", "RSET", "QUIT", "STARTTLS":
            guard argument.trimmingTrailingSpaces().isEmpty else { throw .unexpectedArgument(verb) }
            switch verb {
            case "DATA": return .data
            case "RSET": return .rset
            case "QUIT": return .quit
            default: return .starttls
            }
        case "NOOP":
            return .noop  // RFC 5321 4.1.1.9: an argument is allowed and ignored
        case "VRFY":
            guard !argument.isEmpty else { throw .missingArgument(verb) }
            return .vrfy(String(argument))
        case "HELP":
            return .help(argument.isEmpty ? nil : String(argument))
        case "BDAT":
            return try parseBdat(argument)
        case "AUTH":
            let words = argument.split(separator: " ")
            guard (1...2).contains(words.count), words[0].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }),
                  words[0].count <= 20 else { throw .badAuthArguments }
            return .auth(mechanism: words[0].uppercased(), initialResponse: words.count == 2 ? String(words[1]) : nil)
        case "":
            throw .empty
        default:
            throw .unknownCommand
        }
    }

    private static func parseMail(_ argument: Substring, smtputf8Offered: Bool) throws(SMTPCommandError) -> SMTPCommand {
        guard let rest = argument.droppingPrefix(caseInsensitive: "FROM:") else { throw .syntax("MAIL FROM:<address>") }
        let (pathText, parameterText) = splitPath(rest)
        let parameters = try MailParameters(parsing: parameterText)
        if parameters.smtputf8 && !smtputf8Offered { throw .unsupportedParameter("SMTPUTF8") }
        do {
            return .mail(from: try Path.parse(pathText, allowUTF8: parameters.smtputf8), parameters)
        } catch {
            throw .badSender(error)
        }
    }

    private static func parseRcpt(_ argument: Substring, allowUTF8: Bool) throws(SMTPCommandError) -> SMTPCommand {
        guard let rest = argument.droppingPrefix(caseInsensitive: "TO:") else { throw .syntax("RCPT TO:<address>") }
        let (pathText, parameterText) = splitPath(rest)
        if let parameter = parameterText.split(separator: " ").first {
            throw .unsupportedParameter(String(parameter.prefix { $0 != "=" }).uppercased())
        }
        let recipient: Mailbox?
        do {
            recipient = try Path.parse(pathText, allowUTF8: allowUTF8)
        } catch {
            throw .badRecipient(error)
        }
        guard let recipient else { throw .badRecipient(.missingAt) }  // <> is no recipient
        return .rcpt(to: recipient)
    }

    private static func parseBdat(_ argument: Substring) throws(SMTPCommandError) -> SMTPCommand {
        let words = argument.split(separator: " ")
        guard (1...2).contains(words.count), (1...12).contains(words[0].count), words[0].allSatisfy(\.isASCIIDigit),
              let size = Int(words[0]) else { throw .syntax("BDAT <size> [LAST]") }
        if words.count == 2 {
            guard words[1].uppercased() == "LAST" else { throw .syntax("BDAT <size> [LAST]") }
            return .bdat(size: size, last: true)
        }
        return .bdat(size: size, last: false)
    }

    /// Splits `<path> params`, tolerating spaces after the colon (common, though RFC 5321 has none).
    private static func splitPath(_ text: Substring) -> (Substring, Substring) {
        let trimmed = text.drop { $0 == " " }
        guard trimmed.first == "<", let close = trimmed.firstIndex(of: ">") else {
            let end = trimmed.firstIndex(of: " ") ?? trimmed.endIndex
            return (trimmed[..<end], trimmed[end...].drop { $0 == " " })
        }
        let pathEnd = trimmed.index(after: close)
        return (trimmed[..<pathEnd], trimmed[pathEnd...].drop { $0 == " " }.trimmingTrailingSpaces())
    }
}

/// The ESMTP parameters of MAIL FROM this server understands.
public struct MailParameters: Sendable, Equatable {
    public enum Body: String, Sendable {
        case sevenBit = "7BIT"
        case eightBitMIME = "8BITMIME"
    }

    /// SIZE= (RFC 1870): the client's estimate of the message size.
    public var size: Int?
    /// BODY= (RFC 6152).
    public var body: Body?
    /// SMTPUTF8 (RFC 6531).
    public var smtputf8 = false
    /// AUTH= (RFC 4954), as xtext; `<>` when the client does not vouch for the sender.
    public var auth: String?

    public init(size: Int? = nil, body: Body? = nil, smtputf8: Bool = false, auth: String? = nil) {
        self.size = size
        self.body = body
        self.smtputf8 = smtputf8
        self.auth = auth
    }

    init(parsing text: Substring) throws(SMTPCommandError) {
        var seen: Set<String> = []
        for word in text.split(separator: " ") {
            let keyword = word.prefix { $0 != "=" }.uppercased()
            let value = word.firstIndex(of: "=").map { word[word.index(after: $0)...] }
            guard !keyword.isEmpty, keyword.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
                throw .syntax("parameters are KEYWORD or KEYWORD=value")
            }
            guard seen.insert(keyword).inserted else { throw .duplicateParameter(keyword) }
            switch (keyword, value) {
            case ("SIZE", let value?):
                guard (1...15).contains(value.count), value.allSatisfy(\.isASCIIDigit), let size = Int(value) else {
                    throw .syntax("SIZE=<decimal number of octets>")
                }
                self.size = size
            case ("BODY", let value?):
                guard let body = Body(rawValue: value.uppercased()) else { throw .unsupportedParameter("BODY=\(value)") }
                self.body = body
            case ("SMTPUTF8", nil):
                smtputf8 = true
            case ("AUTH", let value?):
                guard !value.isEmpty, value.count <= 500, value.allSatisfy({ $0.isASCII && $0 != " " && $0 != "=" }) else {
                    throw .syntax("AUTH=<xtext mailbox> or AUTH=<>")
                }
                auth = String(value)
            default:
                throw .unsupportedParameter(keyword)
            }
        }
    }
}

/// Why a command line was refused, and the reply (RFC 5321 and RFC 3463 codes) that says so.
public enum SMTPCommandError: Error, Sendable, Equatable {
    case empty, unknownCommand, lineTooLong, invalidUTF8, controlCharacters
    case syntax(String), unexpectedArgument(String), missingArgument(String)
    case badHelloName, badAuthArguments
    case badSender(AddressError), badRecipient(AddressError)
    case unsupportedParameter(String), duplicateParameter(String)

    public var reply: SMTPReply {
        switch self {
        case .empty: return SMTPReply(500, EnhancedStatusCode(5, 5, 2), "Error: empty command")
        case .unknownCommand: return SMTPReply(500, EnhancedStatusCode(5, 5, 2), "Error: command not recognized")
        case .lineTooLong: return SMTPReply(500, EnhancedStatusCode(5, 5, 2), "Error: line too long")
        case .invalidUTF8: return SMTPReply(500, EnhancedStatusCode(5, 5, 2), "Error: command is not valid UTF-8")
        case .controlCharacters: return SMTPReply(500, EnhancedStatusCode(5, 5, 2), "Error: control characters in command")
        case .syntax(let usage): return SMTPReply(501, EnhancedStatusCode(5, 5, 4), "Syntax: \(usage)")
        case .unexpectedArgument(let verb): return SMTPReply(501, EnhancedStatusCode(5, 5, 4), "Syntax: \(verb) takes no argument")
        case .missingArgument(let verb): return SMTPReply(501, EnhancedStatusCode(5, 5, 4), "Syntax: \(verb) needs an argument")
        case .badHelloName: return SMTPReply(501, EnhancedStatusCode(5, 5, 4), "Syntax: EHLO <domain or address literal>")
        case .badAuthArguments: return SMTPReply(501, EnhancedStatusCode(5, 5, 4), "Syntax: AUTH <mechanism> [initial-response]")
        case .badSender(.nonASCIIWithoutSMTPUTF8), .badRecipient(.nonASCIIWithoutSMTPUTF8):
            return SMTPReply(553, EnhancedStatusCode(5, 6, 7), "Non-ASCII address requires SMTPUTF8")
        case .badSender(let error): return SMTPReply(501, EnhancedStatusCode(5, 1, 7), "Bad sender address: \(error)")
        case .badRecipient(let error): return SMTPReply(501, EnhancedStatusCode(5, 1, 3), "Bad recipient address: \(error)")
        case .unsupportedParameter(let name): return SMTPReply(555, EnhancedStatusCode(5, 5, 4), "Unsupported parameter \(name.prefix(40))")
        case .duplicateParameter(let name): return SMTPReply(501, EnhancedStatusCode(5, 5, 4), "Parameter \(name.prefix(40)) given twice")
        }
    }
}

extension Substring {
    func droppingPrefix(caseInsensitive prefix: String) -> Substring? {
        guard count >= prefix.count, self.prefix(prefix.count).uppercased() == prefix.uppercased() else { return nil }
        return dropFirst(prefix.count)
    }

    func trimmingTrailingSpaces() -> Substring {
        var text = self
        while text.last == " " { text = text.dropLast() }
        return text
    }
}
