import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SMTPProtocol
import SMTPServer

/// The trace line an ingress node puts on top of each message (RFC 5321 4.4), e.g.
/// `Received: from client.test (192.0.2.7:4000) by mx.test (smarthost) with ESMTPS id 01J...;
/// Mon, 23 Nov 2026 16:00:00 +0000`.
enum ReceivedHeader {
    static func make(helo: String, connection: ConnectionInfo, hostname: String, id: String,
                     recipients: [Mailbox], date: Date) -> [UInt8] {
        // RFC 3848: ESMTP, plus S for TLS and A for an authenticated client.
        let with = "ESMTP" + (connection.isEncrypted ? "S" : "") + (connection.authenticatedUser == nil ? "" : "A")
        var line = "Received: from \(sanitized(helo)) (\(connection.clientAddress))\r\n\tby \(hostname) (smarthost) with \(with) id \(id)"
        if recipients.count == 1 { line += "\r\n\tfor <\(sanitized(recipients[0].description))>" }
        line += "; \(rfc5322Date(date))\r\n"
        return Array(line.utf8)
    }

    /// Client-supplied text goes into a header: keep it to printable characters without the
    /// parentheses, angle brackets and semicolons that structure the line.
    static func sanitized(_ text: String) -> String {
        String(text.unicodeScalars.map { scalar in
            scalar.value < 0x21 || scalar.value == 0x7f || "();<>".unicodeScalars.contains(scalar) ? "_" : Character(scalar)
        }.prefix(255))
    }

    /// Formatted from gmtime_r: Calendar and String(format:) were a thirtieth of an ingress
    /// node's CPU.
    static func rfc5322Date(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(parts.tm_mday) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
    }

    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
}
