/// The header section of the message a DSN reports on, as the DSN attaches it (RFC 6522's
/// text/rfc822-headers or RFC 6533's message/global-headers).
///
/// The content comes from a client, so nothing about it is trusted, and reading it is linear
/// in the octets it looks at:
/// - the section ends at the first empty line; a message without one is all header section;
///   lines may end in CRLF or a bare LF (attached with CRLF);
/// - a header field is a name of printable ASCII octets directly followed by `:`, then any
///   continuation lines (starting with a space or tab); other lines (no colon, a continuation
///   with no field before it, an mbox `From ` line) are left out and counted;
/// - invalid UTF-8, NUL and stray CR become U+FFFD, so the part is valid in any MIME encoding;
/// - a line longer than 998 octets is folded before a space or tab, which unfolding undoes;
///   without one it is split at 998 octets with a space inserted;
/// - at most `maximumOctets` are attached, cut at a line end; the rest is not read.
///
/// A well-formed header section with CRLF line ends and lines of at most 998 octets is
/// attached octet for octet.
public struct OriginalHeaders: Sendable, Equatable {
    /// The section as attached: lines ending in CRLF.
    public let octets: [UInt8]
    /// How many lines of the original section were not part of a header field and are left out.
    public let omittedLineCount: Int
    /// True when the section was longer than `maximumOctets` and is cut at a line end.
    public let isTruncated: Bool

    /// Enough for any real header section (big ones, with DKIM signatures and long Received:
    /// chains, stay under 20 KiB), small enough that a DSN stays small.
    public static let maximumOctets = 65_536

    public init(content: [UInt8]) {
        var attached: [UInt8] = []
        var omitted = 0
        var truncated = false
        var inField = false
        var start = 0
        reading: while start < content.count {
            let end = content[start...].firstIndex(of: 10) ?? content.count
            var line = content[start..<end]
            start = end + 1
            if line.last == 13 { line = line.dropLast() }
            if line.isEmpty { break }
            if MessageText.isWhitespace(line.first!) {
                guard inField else { omitted += 1; continue }
            } else {
                inField = Self.startsField(line)
                guard inField else { omitted += 1; continue }
            }
            // Only what can still fit is read: a line of megabytes costs no more than the cap.
            let room = Self.maximumOctets - attached.count
            for piece in MessageText.fold(MessageText.validUTF8(line.prefix(room + 1)), width: MessageText.maximumLineOctets) {
                guard attached.count + piece.count + 2 <= Self.maximumOctets else {
                    truncated = true
                    break reading
                }
                attached += piece + MessageText.crlf
            }
        }
        octets = attached
        omittedLineCount = omitted
        isTruncated = truncated
    }

    /// A field name (RFC 5322 ftext: printable ASCII but `:`) then `:`, within the first line
    /// even after folding, so that every attached field starts with its name.
    private static func startsField(_ line: ArraySlice<UInt8>) -> Bool {
        guard let colon = line.prefix(MessageText.maximumLineOctets).firstIndex(of: UInt8(ascii: ":")),
              colon > line.startIndex else { return false }
        return line[..<colon].allSatisfy { (33...126).contains($0) }
    }

    /// The unfolded value of the first field called `name` (case-insensitive), without the
    /// whitespace around it.
    func value(of name: String) -> String? {
        let wanted = Array(name.lowercased().utf8) + [UInt8(ascii: ":")]
        var value: [UInt8]?
        for line in octets.split(separator: 10) {
            let line = line.dropLast()  // the CR of the CRLF
            if value != nil {
                guard let first = line.first, MessageText.isWhitespace(first) else { break }
                value! += line
            } else if line.count >= wanted.count, zip(line, wanted).allSatisfy({ Self.asciiLowercased($0) == $1 }) {
                value = Array(line.dropFirst(wanted.count))
            }
        }
        return value.map { String(decoding: $0, as: UTF8.self).trimmingWhitespace() }
    }

    private static func asciiLowercased(_ byte: UInt8) -> UInt8 {
        (65...90).contains(byte) ? byte + 32 : byte
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let isWhitespace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        return String(drop(while: isWhitespace).reversed().drop(while: isWhitespace).reversed())
    }
}
