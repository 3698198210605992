import Foundation
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

    static func rfc5322Date(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.weekday, .day, .month, .year, .hour, .minute, .second], from: date)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int?) -> String { String(format: "%02d", value ?? 0) }
        return "\(days[(parts.weekday ?? 1) - 1]), \(parts.day ?? 1) \(months[(parts.month ?? 1) - 1]) \(parts.year ?? 1970) "
            + "\(two(parts.hour)):\(two(parts.minute)):\(two(parts.second)) +0000"
    }
}
