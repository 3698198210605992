#if canImport(Glibc)
import Glibc
#endif

/// An RFC 5321 mailbox, `local-part@domain`, with RFC 6531's UTF-8 where allowed.
public struct Mailbox: Sendable, Hashable, CustomStringConvertible {
    /// As written; a quoted local part keeps its quotes, since they are part of the address.
    public var localPart: String
    /// A domain name or an address literal such as `[192.0.2.1]`, as written.
    public var domain: String

    public init(localPart: String, domain: String) {
        self.localPart = localPart
        self.domain = domain
    }

    /// Lowercased, for comparing and grouping by destination.
    public var normalizedDomain: String { domain.lowercased() }

    /// True when the address can only travel with SMTPUTF8.
    public var needsSMTPUTF8: Bool { !description.unicodeScalars.allSatisfy(\.isASCII) }

    public var description: String { "\(localPart)@\(domain)" }

    /// RFC 5321 4.5.3.1: the longest local part, domain and path (with its angle brackets).
    public static let maximumLocalPartOctets = 64
    public static let maximumDomainOctets = 255
    public static let maximumPathOctets = 256

    /// Parses a mailbox (`local@domain`, no angle brackets). `allowUTF8` admits non-ASCII in
    /// the local part and domain (RFC 6531, when the transaction said SMTPUTF8).
    public init(parsing text: Substring, allowUTF8: Bool) throws(AddressError) {
        guard let at = text.lastIndex(of: "@") else { throw .missingAt }
        let local = text[..<at]
        let domain = text[text.index(after: at)...]
        if !allowUTF8, !text.unicodeScalars.allSatisfy(\.isASCII) { throw .nonASCIIWithoutSMTPUTF8 }
        try Self.validateLocalPart(local, allowUTF8: allowUTF8)
        try Self.validateDomain(domain, allowUTF8: allowUTF8)
        self.init(localPart: String(local), domain: String(domain))
    }

    static func validateLocalPart(_ local: Substring, allowUTF8: Bool) throws(AddressError) {
        guard !local.isEmpty else { throw .emptyLocalPart }
        guard local.utf8.count <= maximumLocalPartOctets else { throw .localPartTooLong }
        if local.first == "\"" {
            // Quoted-string: DQUOTE *(qtextSMTP / "\" %d32-126) DQUOTE
            let scalars = Array(local.unicodeScalars)
            guard scalars.count >= 2, scalars.last == "\"" else { throw .badLocalPart }
            var index = 1
            while index < scalars.count - 1 {
                let scalar = scalars[index]
                if scalar == "\\" {
                    guard index + 1 < scalars.count - 1, (32...126).contains(scalars[index + 1].value) else { throw .badLocalPart }
                    index += 2
                    continue
                }
                let qtext = (32...33).contains(scalar.value) || (35...91).contains(scalar.value) || (93...126).contains(scalar.value)
                guard qtext || (allowUTF8 && scalar.value > 127) else { throw .badLocalPart }
                index += 1
            }
            return
        }
        // Dot-string: Atom *("." Atom)
        for atom in local.split(separator: ".", omittingEmptySubsequences: false) {
            guard !atom.isEmpty, atom.unicodeScalars.allSatisfy({ isAtext($0) || (allowUTF8 && $0.value > 127) }) else {
                throw .badLocalPart
            }
        }
    }

    static func validateDomain(_ domain: Substring, allowUTF8: Bool) throws(AddressError) {
        guard !domain.isEmpty else { throw .emptyDomain }
        guard domain.utf8.count <= maximumDomainOctets else { throw .domainTooLong }
        if domain.first == "[" {
            guard domain.last == "]", domain.count > 2, isAddressLiteral(domain.dropFirst().dropLast()) else {
                throw .badAddressLiteral
            }
            return
        }
        for label in domain.split(separator: ".", omittingEmptySubsequences: false) {
            guard isLabel(label, allowUTF8: allowUTF8) else { throw .badDomain }
        }
    }

    /// sub-domain = Let-dig [Ldh-str]: letters, digits and inner hyphens, 1-63 octets; with
    /// SMTPUTF8 also U-labels (non-ASCII letters), checked only for the same shape.
    static func isLabel(_ label: Substring, allowUTF8: Bool) -> Bool {
        guard !label.isEmpty, label.utf8.count <= 63, label.first != "-", label.last != "-" else { return false }
        return label.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "-": return true
            default: return allowUTF8 && scalar.value > 127
            }
        }
    }

    static func isAtext(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9": return true
        default: return "!#$%&'*+-/=?^_`{|}~".unicodeScalars.contains(scalar)
        }
    }

    /// IPv4 dotted quad, or `IPv6:` and an IPv6 address (RFC 5321 4.1.3).
    static func isAddressLiteral(_ literal: Substring) -> Bool {
        var scratch = [UInt8](repeating: 0, count: 16)
        if literal.hasPrefix("IPv6:") || literal.hasPrefix("ipv6:") {
            return inet_pton(AF_INET6, String(literal.dropFirst(5)), &scratch) == 1
        }
        let octets = literal.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets.allSatisfy { octet in
            (1...3).contains(octet.count) && octet.allSatisfy(\.isASCIIDigit) && Int(octet)! <= 255
                && (octet.count == 1 || octet.first != "0")
        }
    }
}

/// What is wrong with an address; each maps to a reply in `SMTPCommand`.
public enum AddressError: Error, Sendable, Equatable, CustomStringConvertible {
    case missingAngleBrackets, missingAt, emptyLocalPart, localPartTooLong, badLocalPart
    case emptyDomain, domainTooLong, badDomain, badAddressLiteral, pathTooLong, nonASCIIWithoutSMTPUTF8

    public var description: String {
        switch self {
        case .missingAngleBrackets: return "the address must be enclosed in <>"
        case .missingAt: return "the address has no @"
        case .emptyLocalPart: return "the address has no local part"
        case .localPartTooLong: return "the local part is longer than 64 octets"
        case .badLocalPart: return "the local part is not valid"
        case .emptyDomain: return "the address has no domain"
        case .domainTooLong: return "the domain is longer than 255 octets"
        case .badDomain: return "the domain is not valid"
        case .badAddressLiteral: return "the address literal is not valid"
        case .pathTooLong: return "the path is longer than 256 octets"
        case .nonASCIIWithoutSMTPUTF8: return "non-ASCII address without SMTPUTF8"
        }
    }
}

/// A path in MAIL or RCPT: `<mailbox>`, or `<>` (the null reverse-path of bounces).
enum Path {
    /// Parses `<[@route,@route:]mailbox>`; a source route is accepted and ignored (RFC 5321
    /// 4.1.1.3). Returns nil for `<>`.
    static func parse(_ text: Substring, allowUTF8: Bool) throws(AddressError) -> Mailbox? {
        guard text.first == "<", text.last == ">", text.count >= 2 else { throw .missingAngleBrackets }
        guard text.utf8.count <= Mailbox.maximumPathOctets else { throw .pathTooLong }
        var inner = text.dropFirst().dropLast()
        if inner.isEmpty { return nil }
        if inner.first == "@", let colon = inner.firstIndex(of: ":") {
            for hop in inner[..<colon].split(separator: ",", omittingEmptySubsequences: false) {
                guard hop.first == "@" else { throw .badDomain }
                try Mailbox.validateDomain(hop.dropFirst(), allowUTF8: allowUTF8)
            }
            inner = inner[inner.index(after: colon)...]
        }
        return try Mailbox(parsing: inner, allowUTF8: allowUTF8)
    }
}
