import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a configuration value could not be parsed: `expected ..., got "..."`.
public struct ValueError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// The `expected ...` phrases shared by the value parsers and the schema.
enum Expectation {
    static let duration = "a duration such as 500ms, 10s, 5m, 6h or 2d"
    static let byteSize = "a byte size such as 512KiB, 25MiB, 10MB or 1048576"
    static let rate = "a rate such as 20/s, 300/min, 1000/h or 50000/d"
    static let hostPort = "host:port such as mail.example.com:25, 192.0.2.1:25 or [2001:db8::1]:25"
    static let network = "a network such as 10.0.0.0/8, 2001:db8::/32 or 192.0.2.1"
    static let domain = "a domain name such as example.com"
    static let ipAddress = "an IP address such as 192.0.2.1 or 2001:db8::1"
}

// MARK: - HostPort

/// A TCP endpoint: `host:port`, `192.0.2.1:port` or `[2001:db8::1]:port`.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    /// A lowercased host name, an IPv4 address, or an IPv6 address (without brackets, in canonical form).
    public var host: String
    /// 1...65535.
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[v6]:port`. Host names are letters, digits, `-` and `_` in dot-separated
    /// labels of at most 63 characters (253 in all); a host made of digits and dots must be an IPv4
    /// address; an IPv6 address must be in brackets. The port is 1...65535.
    public init(parsing text: String) throws(ValueError) {
        func failure(_ reason: String? = nil) -> ValueError {
            ValueError("expected \(Expectation.hostPort), got \(Display.quoted(text))"
                + (reason.map { " (\($0))" } ?? ""))
        }
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw failure("missing ]") }
            let inside = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw failure("missing :port") }
            guard let bytes = IPAddress.ipv6Bytes(inside) else {
                throw failure("\(Display.quoted(String(inside))) is not an IPv6 address")
            }
            host = IPAddress.text(bytes)
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw failure("missing :port") }
            let hostText = text[..<colon]
            if hostText.contains(":") {
                throw failure("write an IPv6 address in brackets, such as [2001:db8::1]:25")
            }
            guard !hostText.isEmpty else { throw failure("missing host") }
            if hostText.unicodeScalars.allSatisfy({ Scalars.isDigit($0) || $0 == "." }) {
                guard let bytes = IPAddress.ipv4Bytes(hostText) else {
                    throw failure("\(Display.quoted(String(hostText))) is not an IPv4 address")
                }
                host = IPAddress.text(bytes)
            } else {
                if let reason = Names.hostNameProblem(hostText, allowUnderscore: true) { throw failure(reason) }
                host = hostText.lowercased()
            }
            portText = text[text.index(after: colon)...]
        }
        guard case .value(let port) = Scalars.decimal(portText), (1...65_535).contains(port) else {
            throw ValueError("expected a port between 1 and 65535, got \(Display.quoted(text))")
        }
        self.port = port
    }

    /// `host:port`, with brackets around an IPv6 address.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

// MARK: - ByteSize

/// A number of bytes: `25MiB`, `10MB`, `512KiB`, `1GiB`, `100B` or a plain `1048576`.
public struct ByteSize: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var bytes: Int

    public init(bytes: Int) {
        self.bytes = bytes
    }

    public static func kibibytes(_ count: Int) -> ByteSize { ByteSize(bytes: count << 10) }
    public static func mebibytes(_ count: Int) -> ByteSize { ByteSize(bytes: count << 20) }
    public static func gibibytes(_ count: Int) -> ByteSize { ByteSize(bytes: count << 30) }

    static let units: [(suffix: String, factor: Int)] = [
        ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10),
        ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000), ("B", 1),
    ]

    /// Parses a whole number followed by one of `B`, `KB`, `MB`, `GB` (powers of 1000) or `KiB`,
    /// `MiB`, `GiB` (powers of 1024), or a plain whole number of bytes. Units are case-sensitive.
    public init(parsing text: String) throws(ValueError) {
        let failure = ValueError("expected \(Expectation.byteSize), got \(Display.quoted(text))")
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let suffix = text.dropFirst(digits.count)
        let factor: Int
        if suffix.isEmpty {
            factor = 1
        } else if let unit = Self.units.first(where: { $0.suffix == suffix }) {
            factor = unit.factor
        } else {
            throw failure
        }
        switch Scalars.decimal(digits) {
        case .invalid:
            throw failure
        case .tooLarge:
            throw ValueError(failure.message + " (too large)")
        case .value(let count):
            let (bytes, overflow) = count.multipliedReportingOverflow(by: factor)
            if overflow { throw ValueError(failure.message + " (too large)") }
            self.bytes = bytes
        }
    }

    public static func < (lhs: ByteSize, rhs: ByteSize) -> Bool { lhs.bytes < rhs.bytes }

    /// The largest unit that divides the size exactly, binary units first: `32MiB`, `10MB`, `100B`.
    public var description: String {
        if bytes != 0, let unit = Self.units.first(where: { bytes % $0.factor == 0 }) {
            return "\(bytes / unit.factor)\(unit.suffix)"
        }
        return "\(bytes)B"
    }
}

// MARK: - Rate

/// A number of messages per period: `20/s`, `300/min`, `1000/h`, `50000/d`.
public struct Rate: Sendable, Hashable, CustomStringConvertible {
    public var count: Int
    public var per: Duration

    public init(count: Int, per: Duration) {
        self.count = count
        self.per = per
    }

    static let units: [(suffix: String, period: Duration)] = [
        ("s", .seconds(1)), ("min", .seconds(60)), ("h", .seconds(3_600)), ("d", .seconds(86_400)),
    ]

    /// The largest count accepted by `init(parsing:)`.
    public static let maximumCount = 1_000_000_000

    /// Parses `<count>/<unit>` with a whole count of 1 to 1,000,000,000 and a unit of `s`, `min`, `h`
    /// or `d`.
    public init(parsing text: String) throws(ValueError) {
        let failure = "expected \(Expectation.rate), got \(Display.quoted(text))"
        guard let slash = text.firstIndex(of: "/") else { throw ValueError(failure) }
        let unitText = text[text.index(after: slash)...]
        guard let unit = Self.units.first(where: { $0.suffix == unitText }) else {
            throw ValueError(failure + (unitText == "m" ? " (write /min for per minute)" : ""))
        }
        let count: Int
        switch Scalars.decimal(text[..<slash]) {
        case .invalid: throw ValueError(failure)
        case .tooLarge: count = .max
        case .value(let value): count = value
        }
        guard count > 0 else { throw ValueError("expected a positive rate, got \(Display.quoted(text))") }
        guard count <= Self.maximumCount else {
            throw ValueError("expected a rate of at most \(Self.maximumCount) per unit, got \(Display.quoted(text))")
        }
        self.count = count
        self.per = unit.period
    }

    /// Messages per second.
    public var perSecond: Double {
        let (seconds, attoseconds) = per.components
        return Double(count) / (Double(seconds) + Double(attoseconds) / 1e18)
    }

    /// `300/min`; a period other than 1s, 1min, 1h or 1d is written as a duration: `10/5m`.
    public var description: String {
        if let unit = Self.units.first(where: { $0.period == per }) {
            return "\(count)/\(unit.suffix)"
        }
        return "\(count)/\(ConfigSyntax.format(per))"
    }
}

// MARK: - CIDRNetwork

/// An IPv4 or IPv6 network: `10.0.0.0/8`, `2001:db8::/32`, or a single address (`192.0.2.1` is
/// `192.0.2.1/32`).
public struct CIDRNetwork: Sendable, Hashable, CustomStringConvertible {
    /// The network address in network byte order: 4 bytes for IPv4, 16 for IPv6.
    public let address: [UInt8]
    /// 0...32 for IPv4, 0...128 for IPv6.
    public let prefixLength: Int

    /// Parses `address/prefix` or a single address. The address must have no bits set after the
    /// prefix (`10.1.2.3/8` is an error that suggests `10.0.0.0/8`).
    public init(parsing text: String) throws(ValueError) {
        let failure = "expected \(Expectation.network), got \(Display.quoted(text))"
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bytes = IPAddress.ipv4Bytes(parts[0]) ?? IPAddress.ipv6Bytes(parts[0]) else {
            throw ValueError(failure)
        }
        let maximum = bytes.count * 8
        var prefixLength = maximum
        if parts.count == 2 {
            guard case .value(let length) = Scalars.decimal(parts[1]), length <= maximum else {
                throw ValueError("expected a prefix length between 0 and \(maximum), got \(Display.quoted(text))")
            }
            prefixLength = length
        }
        let network = Self.masked(bytes, prefixLength)
        guard network == bytes else {
            let suggestion = "\(IPAddress.text(network))/\(prefixLength)"
            throw ValueError("expected no address bits set after the prefix (did you mean \(suggestion)?), "
                + "got \(Display.quoted(text))")
        }
        self.address = bytes
        self.prefixLength = prefixLength
    }

    /// Whether `address` (an IPv4 or IPv6 address such as `10.1.2.3` or `2001:db8::1`) is in this
    /// network. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) is treated as the IPv4 address it
    /// carries. Anything that is not an address is in no network.
    public func contains(_ address: String) -> Bool {
        Self.addressBytes(address).map(contains(addressBytes:)) ?? false
    }

    /// An address's bytes for `contains(addressBytes:)`, nil if it is not an address: parsed
    /// once when one address is checked against many networks (a tenant's per connection).
    public static func addressBytes(_ address: String) -> [UInt8]? {
        IPAddress.ipv4Bytes(Substring(address)) ?? IPAddress.ipv6Bytes(Substring(address))
    }

    public func contains(addressBytes bytes: [UInt8]) -> Bool {
        var start = 0
        if bytes.count == 16, address.count == 4, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            start = 12
        }
        guard bytes.count - start == address.count else { return false }
        var remaining = prefixLength
        for index in address.indices where remaining > 0 {
            let mask = UInt8(0xFF) << (8 - min(remaining, 8))
            if bytes[start + index] & mask != address[index] { return false }
            remaining -= 8
        }
        return true
    }

    /// `10.0.0.0/8`, `2001:db8::/32`.
    public var description: String {
        "\(IPAddress.text(address))/\(prefixLength)"
    }

    private static func masked(_ bytes: [UInt8], _ prefixLength: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let bits = min(max(prefixLength - index * 8, 0), 8)
            return bits == 8 ? byte : byte & ~(UInt8(0xFF) >> bits)
        }
    }
}

// MARK: - Scalar value syntax

/// The parsers of the scalar values that have no type of their own.
public enum ConfigSyntax {
    static let durationUnits: [(suffix: String, milliseconds: Int)] = [
        ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1),
    ]

    /// Parses a positive whole number followed by a unit: `500ms`, `10s`, `5m`, `6h`, `2d`.
    /// Fractions (`1.5s`) are errors that suggest the exact value in a smaller unit (`1500ms`);
    /// `0s`, negative values and values beyond about 290 million years are errors.
    public static func duration(_ text: String) throws(ValueError) -> Duration {
        let got = Display.quoted(text)
        let failure = ValueError("expected \(Expectation.duration), got \(got)")
        if text.hasPrefix("-") { throw ValueError("expected a positive duration, got \(got)") }
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        var rest = text.dropFirst(digits.count)
        var fraction: Substring?
        if rest.hasPrefix(".") {
            let fractionDigits = rest.dropFirst().prefix { $0.isASCII && $0.isNumber }
            guard !fractionDigits.isEmpty else { throw failure }
            fraction = fractionDigits
            rest = rest.dropFirst(1 + fractionDigits.count)
        }
        guard let unit = durationUnits.first(where: { $0.suffix == rest }) else { throw failure }
        if let fraction {
            let exact = exactMilliseconds(whole: digits, fraction: fraction, unit: unit.milliseconds)
            let hint = exact.map { " (write \(format(.milliseconds($0))))" } ?? ""
            throw ValueError("expected a duration without a fraction\(hint), got \(got)")
        }
        switch Scalars.decimal(digits) {
        case .invalid:
            throw failure
        case .tooLarge:
            throw ValueError(failure.message + " (too large)")
        case .value(let count):
            guard count > 0 else { throw ValueError("expected a positive duration, got \(got)") }
            let (milliseconds, overflow) = count.multipliedReportingOverflow(by: unit.milliseconds)
            if overflow { throw ValueError(failure.message + " (too large)") }
            return .milliseconds(milliseconds)
        }
    }

    /// `whole.fraction` units in whole milliseconds, if that is exact and positive.
    private static func exactMilliseconds(whole: Substring, fraction: Substring, unit: Int) -> Int? {
        guard fraction.count <= 12 else { return nil }
        var scale = 1
        for _ in 0..<fraction.count { scale *= 10 }
        guard case .value(let wholeValue) = Scalars.decimal(whole.isEmpty ? "0" : whole),
              case .value(let fractionValue) = Scalars.decimal(fraction) else { return nil }
        let (scaledWhole, overflow1) = wholeValue.multipliedReportingOverflow(by: scale)
        let (value, overflow2) = scaledWhole.addingReportingOverflow(fractionValue)
        let (total, overflow3) = value.multipliedReportingOverflow(by: unit)
        guard !overflow1, !overflow2, !overflow3, total % scale == 0, total > 0 else { return nil }
        return total / scale
    }

    /// The duration in the largest unit that divides it exactly: `2d`, `90m`, `1500ms`. A duration
    /// that is not a whole number of milliseconds is written as Swift writes it.
    public static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let attosecondsPerMillisecond: Int64 = 1_000_000_000_000_000
        let (secondsInMilliseconds, overflow) = seconds.multipliedReportingOverflow(by: 1_000)
        guard attoseconds % attosecondsPerMillisecond == 0, !overflow else { return "\(duration)" }
        let milliseconds = secondsInMilliseconds + attoseconds / attosecondsPerMillisecond
        if milliseconds != 0, let unit = durationUnits.first(where: { milliseconds % Int64($0.milliseconds) == 0 }) {
            return "\(milliseconds / Int64(unit.milliseconds))\(unit.suffix)"
        }
        return "\(milliseconds)ms"
    }

    /// Validates a domain name and returns it lowercased: dot-separated labels of 1 to 63 letters,
    /// digits and hyphens, not starting or ending with a hyphen, at most 253 characters in all.
    /// Wildcards (`*.example.com`) and a trailing dot are errors.
    public static func domainName(_ text: String) throws(ValueError) -> String {
        func failure(_ reason: String?) -> ValueError {
            ValueError("expected \(Expectation.domain), got \(Display.quoted(text))"
                + (reason.map { " (\($0))" } ?? ""))
        }
        if text.hasPrefix("*.") { throw failure("wildcards are not supported") }
        if text.count > 1, text.hasSuffix(".") { throw failure("remove the trailing dot") }
        if let reason = Names.hostNameProblem(Substring(text), allowUnderscore: false) { throw failure(reason) }
        return text.lowercased()
    }

    /// Validates a regular expression (ICU syntax, as `NSRegularExpression` reads it) and
    /// returns it unchanged; the delivery nodes compile it again.
    public static func regularExpression(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty, text.utf8.count <= 1_024 else {
            throw ValueError("expected a regular expression of 1 to 1024 bytes, got \(Display.quoted(text))")
        }
        do {
            _ = try NSRegularExpression(pattern: text)
        } catch {
            throw ValueError("expected a regular expression, got \(Display.quoted(text)), which does not compile")
        }
        return text
    }

    /// Validates a tenant name: `[a-z0-9][a-z0-9_-]{0,47}`. Tenant names become part of Kafka topic
    /// names (`<topic_prefix>.<tenant>`).
    public static func tenantName(_ text: String) throws(ValueError) -> String {
        guard Names.matches(text, maximumLength: 48, first: Names.isLowerAlphanumeric, rest: Names.isLowerName) else {
            throw ValueError("expected a tenant name matching [a-z0-9][a-z0-9_-]{0,47} "
                + "(it becomes part of Kafka topic names), got \(Display.quoted(text))")
        }
        return text
    }

    /// Validates an IPv4 or IPv6 address and returns it in canonical form (`2001:DB8:0::1` becomes
    /// `2001:db8::1`).
    public static func ipAddress(_ text: String) throws(ValueError) -> String {
        guard let bytes = IPAddress.ipv4Bytes(Substring(text)) ?? IPAddress.ipv6Bytes(Substring(text)) else {
            throw ValueError("expected \(Expectation.ipAddress), got \(Display.quoted(text))")
        }
        return IPAddress.text(bytes)
    }
}

// MARK: - Helpers

enum DecimalParse: Equatable {
    case invalid
    case tooLarge
    case value(Int)
}

enum Scalars {
    static func isDigit(_ scalar: Unicode.Scalar) -> Bool { ("0"..."9").contains(scalar) }

    /// A non-empty run of ASCII digits as an `Int`.
    static func decimal(_ text: Substring) -> DecimalParse {
        guard !text.isEmpty, text.unicodeScalars.allSatisfy(isDigit) else { return .invalid }
        guard let value = Int(text) else { return .tooLarge }
        return .value(value)
    }
}

enum Names {
    static func isLowerAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || Scalars.isDigit(scalar)
    }

    static func isLowerName(_ scalar: Unicode.Scalar) -> Bool {
        isLowerAlphanumeric(scalar) || scalar == "_" || scalar == "-"
    }

    static func isLetterOrDigit(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || Scalars.isDigit(scalar)
    }

    /// `[A-Za-z0-9._-]`: what Kafka allows in topic names.
    static func isTopicCharacter(_ scalar: Unicode.Scalar) -> Bool {
        isLetterOrDigit(scalar) || scalar == "." || scalar == "_" || scalar == "-"
    }

    /// SMTP AUTH usernames: what logins commonly are (names, email addresses).
    static func isUsernameCharacter(_ scalar: Unicode.Scalar) -> Bool {
        isTopicCharacter(scalar) || scalar == "@" || scalar == "+"
    }

    /// Whether `text` is 1 to `maximumLength` scalars, the first satisfying `first`, the others `rest`.
    static func matches(_ text: String, maximumLength: Int,
                        first: (Unicode.Scalar) -> Bool, rest: (Unicode.Scalar) -> Bool) -> Bool {
        let scalars = text.unicodeScalars
        guard let head = scalars.first, first(head), scalars.count <= maximumLength else { return false }
        return scalars.dropFirst().allSatisfy(rest)
    }

    /// Why `text` is not a host name (dot-separated labels of letters, digits, hyphens and, when
    /// allowed, underscores), or nil if it is one.
    static func hostNameProblem(_ text: Substring, allowUnderscore: Bool) -> String? {
        guard !text.isEmpty else { return "empty" }
        guard text.utf8.count <= 253 else { return "longer than 253 characters" }
        for label in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty else { return "empty label" }
            if let bad = label.unicodeScalars.first(where: {
                !(isLetterOrDigit($0) || $0 == "-" || (allowUnderscore && $0 == "_"))
            }) {
                return "\(Display.scalar(bad)) is not allowed"
            }
            guard label.utf8.count <= 63 else { return "a label is longer than 63 characters" }
            guard label.first != "-", label.last != "-" else { return "a label starts or ends with a hyphen" }
        }
        return nil
    }
}

enum IPAddress {
    private static func plausible(_ text: Substring) -> Bool {
        !text.isEmpty && text.utf8.count < 64 && text.unicodeScalars.allSatisfy {
            $0.properties.isASCIIHexDigit || $0 == "." || $0 == ":"
        }
    }

    static func ipv4Bytes(_ text: Substring) -> [UInt8]? {
        guard plausible(text) else { return nil }
        var address = in_addr()
        guard String(text).withCString({ inet_pton(AF_INET, $0, &address) }) == 1 else { return nil }
        return withUnsafeBytes(of: &address) { Array($0) }
    }

    static func ipv6Bytes(_ text: Substring) -> [UInt8]? {
        guard plausible(text) else { return nil }
        var address = in6_addr()
        guard String(text).withCString({ inet_pton(AF_INET6, $0, &address) }) == 1 else { return nil }
        return withUnsafeBytes(of: &address) { Array($0) }
    }

    /// The canonical text of a 4- or 16-byte address.
    static func text(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 {
            return bytes.map(String.init).joined(separator: ".")
        }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let written = bytes.withUnsafeBytes { raw in
            buffer.withUnsafeMutableBufferPointer { output in
                inet_ntop(AF_INET6, raw.baseAddress, output.baseAddress, socklen_t(output.count))
            }
        }
        precondition(written != nil, "inet_ntop cannot fail on 16 bytes and a buffer of INET6_ADDRSTRLEN")
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

enum Display {
    /// `text` in double quotes, with control and invisible characters escaped, cut after `limit`
    /// characters.
    static func quoted(_ text: String, limit: Int = 80) -> String {
        var result = "\""
        for (index, scalar) in text.unicodeScalars.enumerated() {
            if index == limit {
                result += "…"
                break
            }
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            default: result += visible(scalar) ? String(scalar) : escaped(scalar)
            }
        }
        return result + "\""
    }

    /// A single character for a message: `"_"`, or `U+0000` when it is invisible.
    static func scalar(_ scalar: Unicode.Scalar) -> String {
        if scalar == " " { return "a space" }
        return visible(scalar) ? "\"\(scalar)\"" : "U+" + hex(scalar)
    }

    private static func visible(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .privateUse, .surrogate, .unassigned:
            return false
        default:
            return true
        }
    }

    private static func escaped(_ scalar: Unicode.Scalar) -> String {
        "\\u{" + hex(scalar) + "}"
    }

    /// At least four upper-case hex digits.
    private static func hex(_ scalar: Unicode.Scalar) -> String {
        let digits = String(scalar.value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
