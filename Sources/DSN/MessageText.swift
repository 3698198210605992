/// The small pieces of RFC 5322 and MIME text a DSN is written with: line lengths, folding,
/// text made safe for a header field, dates.
enum MessageText {
    /// RFC 5322 2.1.1: no line may be longer than 998 octets (without its CRLF).
    static let maximumLineOctets = 998
    /// RFC 5322 2.1.1: lines should not be longer than 78 octets.
    static let preferredLineOctets = 78

    static let crlf: [UInt8] = [13, 10]

    static func isWhitespace(_ byte: UInt8) -> Bool { byte == 32 || byte == 9 }

    /// Splits a line longer than `width` octets into a first line and continuation lines, each
    /// continuation starting with the whitespace it was split before: the RFC 5322 fold, which
    /// unfolding undoes exactly. A run without whitespace is split only where it would pass
    /// `hardWidth`, at a UTF-8 character boundary, with a space inserted before the rest.
    static func fold(_ line: some Collection<UInt8>, width: Int, hardWidth: Int = maximumLineOctets) -> [[UInt8]] {
        let line = Array(line)
        var pieces: [[UInt8]] = []
        var start = 0
        var insertedSpace = false
        while true {
            let room = width - (insertedSpace ? 1 : 0)
            let hardRoom = hardWidth - (insertedSpace ? 1 : 0)
            let remaining = line.count - start
            var cut: Int?
            if remaining > room {
                // The first octet is never a cut: a piece holds more than its leading whitespace.
                cut = line[(start + 1)...(start + room)].lastIndex(where: isWhitespace)
                    ?? line[(start + room + 1)..<min(line.count, start + hardRoom + 1)].firstIndex(where: isWhitespace)
            }
            if cut == nil && remaining <= hardRoom {
                pieces.append((insertedSpace ? [32] : []) + line[start...])
                return pieces
            }
            let isHardCut = cut == nil
            let end = cut ?? characterBoundary(in: line, atOrBefore: start + hardRoom, after: start)
            pieces.append((insertedSpace ? [32] : []) + line[start..<end])
            start = end
            insertedSpace = isHardCut
        }
    }

    /// The last index at or before `index` that does not fall inside a UTF-8 sequence (or
    /// `index` itself when the octets there are not UTF-8 at all), never `lowerBound` itself.
    private static func characterBoundary(in line: [UInt8], atOrBefore index: Int, after lowerBound: Int) -> Int {
        var boundary = index
        while boundary > lowerBound + 1, line[boundary] & 0xC0 == 0x80 { boundary -= 1 }
        return line[boundary] & 0xC0 == 0x80 ? index : boundary
    }

    /// `Name: value` folded to the preferred width, as lines ending in CRLF.
    static func field(_ name: String, _ value: String) -> [UInt8] {
        fold(Array("\(name): \(value)".utf8), width: preferredLineOctets).flatMap { $0 + crlf }
    }

    /// Plain text wrapped at `width` octets, each line after `indent`, each ending in CRLF.
    static func wrapped(_ text: String, width: Int = 72, indent: String = "") -> [UInt8] {
        let indent = Array(indent.utf8)
        return fold(Array(text.utf8), width: width - indent.count, hardWidth: maximumLineOctets - indent.count)
            .flatMap { indent + $0.drop(while: isWhitespace) + crlf }
    }

    /// Text from elsewhere (a server's reply, a host name) made safe for one header field:
    /// control characters, which could end the field or start another, become spaces.
    static func fieldText(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : $0 }))
    }

    /// Octets from the original message as valid UTF-8 that MIME's 8bit allows: invalid
    /// sequences, NUL and a CR that is not part of a line end become U+FFFD.
    static func validUTF8(_ octets: some Collection<UInt8>) -> [UInt8] {
        if octets.allSatisfy({ $0 < 0x80 && $0 != 0 && $0 != 13 }) { return Array(octets) }
        let replacement: Unicode.Scalar = "\u{FFFD}"
        let scalars = String(decoding: octets, as: UTF8.self).unicodeScalars.map { $0 == "\0" || $0 == "\r" ? replacement : $0 }
        return Array(String(String.UnicodeScalarView(scalars)).utf8)
    }

    private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// RFC 5322 3.3 date-time in UTC, such as `Tue, 14 Nov 2023 22:13:20 +0000`, from
    /// milliseconds since the epoch (the time unit of the whole code base).
    static func date(milliseconds: UInt64) -> String {
        let seconds = Int(milliseconds / 1000)
        let days = seconds / 86_400, secondOfDay = seconds % 86_400
        // Days to the civil calendar: H. Hinnant's days_from_civil inverse, for days >= 0.
        let shifted = days + 719_468
        let era = shifted / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func twoDigits(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(weekdays[(days + 4) % 7]), \(twoDigits(day)) \(months[month - 1]) \(year) "
            + "\(twoDigits(secondOfDay / 3600)):\(twoDigits(secondOfDay / 60 % 60)):\(twoDigits(secondOfDay % 60)) +0000"
    }
}
