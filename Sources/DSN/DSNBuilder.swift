import SMTPProtocol

/// Writes delivery status notifications (RFC 3464) for the messages this node reports on:
/// multipart/report (RFC 6522) with a text/plain explanation, the message/delivery-status
/// report and the original header section (text/rfc822-headers). When anything it quotes is
/// not ASCII, the report and the headers are RFC 6533's message/global-delivery-status and
/// message/global-headers, 8bit. No clock, no I/O: the same input gives the same octets.
public struct DSNBuilder: Sendable {
    /// This node's host name: Reporting-MTA, and the first line of the explanation.
    public let reportingMTA: String
    /// The From: address, such as `MAILER-DAEMON@` the reporting MTA.
    public let postmaster: Mailbox
    /// The domain of the DSNs' Message-IDs.
    public let messageIDDomain: String

    public init(reportingMTA: String, postmaster: Mailbox, messageIDDomain: String) {
        self.reportingMTA = MessageText.fieldText(reportingMTA)
        self.postmaster = postmaster
        self.messageIDDomain = messageIDDomain
    }

    /// A reply text longer than this (a server may send 100 lines of 2 KiB) is cut: the DSN
    /// quotes it for each recipient.
    public static let maximumDiagnosticOctets = 4096

    /// The DSN about `original` for `recipients`, to be sent from `<>` to the original envelope
    /// sender. `messageIDLocalPart` (a dot-atom, at most 64 octets) makes its Message-ID with
    /// `messageIDDomain` and its MIME boundary: derive it from the message id and the report
    /// (for example `<id>.<attempt>.bounce`), so that building the same DSN again (after a
    /// restart) gives the same Message-ID. `now` is the Date:, in milliseconds since the epoch.
    public func build(about original: OriginalMessage, recipients: [RecipientStatus], messageIDLocalPart: String,
                      now: UInt64) throws(DSNError) -> DeliveryStatusNotification {
        if let suppression = original.dsnSuppression { throw .suppressed(suppression) }
        let sender = original.envelopeSender!  // dsnSuppression refuses <>
        guard !recipients.isEmpty else { throw .noRecipients }
        let messageID = "\(messageIDLocalPart)@\(messageIDDomain)"
        // A Mailbox's dot-string and domain are msg-id's dot-atom-text and a host name.
        guard !messageIDLocalPart.hasPrefix("\""), (try? Mailbox(parsing: Substring(messageID), allowUTF8: false)) != nil else {
            throw .invalidMessageID(messageID)
        }

        let explanation = explanation(of: original, recipients: recipients)
        let report = report(on: original, recipients: recipients)
        let headers = original.headers.octets
        let international = ![explanation, report, headers].allSatisfy { $0.allSatisfy { $0 < 0x80 } }
        let boundary = Self.boundary(base: "=_" + Self.boundaryText(messageIDLocalPart), avoiding: [explanation, report, headers])
        let encoding = international ? MessageText.field("Content-Transfer-Encoding", "8bit") : []
        let reportType = international ? "global-delivery-status" : "delivery-status"
        let anyFailed = recipients.contains { $0.action == .failed }

        var content = MessageText.field("From", "Mail Delivery System <\(postmaster)>")
        content += MessageText.field("To", sender.description)
        content += MessageText.field("Subject", anyFailed ? "Undelivered Mail Returned to Sender" : "Delayed Mail (still being retried)")
        content += MessageText.field("Date", MessageText.date(milliseconds: now))
        content += MessageText.field("Message-ID", "<\(messageID)>")
        // RFC 3834 5: a DSN is a direct, automatic response to the message it reports on.
        content += MessageText.field("Auto-Submitted", "auto-replied")
        content += MessageText.field("MIME-Version", "1.0")
        content += MessageText.field("Content-Type", "multipart/report; report-type=\(reportType); boundary=\"\(boundary)\"")
        content += encoding + MessageText.crlf
        content += Array("This is a delivery status notification in MIME format.".utf8) + MessageText.crlf
        let parts: [(description: String, type: String, body: [UInt8])] = [
            ("Notification", international ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii", explanation),
            ("Delivery report", "message/\(reportType)", report),
            (anyFailed ? "Undelivered message headers" : "Delayed message headers",
             international ? "message/global-headers" : "text/rfc822-headers", headers),
        ]
        for part in parts {
            // The CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1).
            content += MessageText.crlf + Array("--\(boundary)".utf8) + MessageText.crlf
            content += MessageText.field("Content-Description", part.description)
            content += MessageText.field("Content-Type", part.type) + encoding + MessageText.crlf + part.body
        }
        content += MessageText.crlf + Array("--\(boundary)--".utf8) + MessageText.crlf
        return DeliveryStatusNotification(
            recipient: sender, messageID: "<\(messageID)>", content: content,
            needsSMTPUTF8: sender.needsSMTPUTF8 || postmaster.needsSMTPUTF8, needsEightBitMIME: international)
    }

    // MARK: - The parts

    /// The text/plain part: what happened to whom, in plain words.
    private func explanation(of original: OriginalMessage, recipients: [RecipientStatus]) -> [UInt8] {
        let failed = recipients.filter { $0.action == .failed && !$0.expired }
        let expired = recipients.filter(\.expired)
        let delayed = recipients.filter { $0.action != .failed }
        var text = MessageText.wrapped("This is the mail system at host \(reportingMTA).") + MessageText.crlf
        if failed.isEmpty && expired.isEmpty {
            text += MessageText.wrapped("Your message has not been delivered yet to one or more of its recipients. "
                + "The mail system is still trying: you do not need to send it again.")
        } else {
            text += MessageText.wrapped("Your message could not be delivered to one or more of its recipients: "
                + "the mail system has given up on them." + (delayed.isEmpty ? "" : " It is still trying to deliver it to others."))
        }
        let sections = [
            (failed, "Delivery to these recipients failed permanently:"),
            (expired, "Delivery to these recipients failed temporarily until the message expired, the last time as follows:"),
            (delayed, "Delivery to these recipients has failed temporarily so far and is being retried:"),
        ]
        for (group, heading) in sections where !group.isEmpty {
            text += MessageText.crlf + MessageText.wrapped(heading)
            for status in group {
                text += MessageText.crlf + MessageText.wrapped("<\(status.recipient)>")
                let replyText = Self.replyText(status.reply)
                let reason = status.remoteMTA.map { "host \(MessageText.fieldText($0)) said: \(replyText)" }
                    ?? "this mail system reported: \(replyText)"
                text += MessageText.wrapped(reason, indent: "    ")
                if case .delayed(let until) = status.action {
                    text += MessageText.wrapped("It will be retried until \(MessageText.date(milliseconds: until)).", indent: "    ")
                }
            }
        }
        text += MessageText.crlf + MessageText.wrapped(
            "Your message was received here on \(MessageText.date(milliseconds: original.arrivalDate)), "
                + "with the identifier \(MessageText.fieldText(original.id)); quote it when you ask your postmaster "
                + "about this message. Its header section is attached.")
        if original.headers.omittedLineCount > 0 {
            text += MessageText.wrapped("\(original.headers.omittedLineCount) line(s) of it that were not header fields are left out.")
        }
        if original.headers.isTruncated {
            text += MessageText.wrapped("It was longer than \(OriginalHeaders.maximumOctets) octets and is cut at a line end.")
        }
        return text
    }

    /// The message/delivery-status part: the per-message fields, then one group per recipient.
    private func report(on original: OriginalMessage, recipients: [RecipientStatus]) -> [UInt8] {
        var report = MessageText.field("Reporting-MTA", "dns; \(reportingMTA)")
        report += MessageText.field("Arrival-Date", MessageText.date(milliseconds: original.arrivalDate))
        report += MessageText.field("X-Smarthost-Message-ID", MessageText.fieldText(original.id))
        for status in recipients {
            report += MessageText.crlf
            if let originalRecipient = status.originalRecipient {
                report += MessageText.field("Original-Recipient", Self.typedAddress(originalRecipient))
            }
            report += MessageText.field("Final-Recipient", Self.typedAddress(status.recipient))
            report += MessageText.field("Action", status.action == .failed ? "failed" : "delayed")
            report += MessageText.field("Status", status.status.description)
            if let remoteMTA = status.remoteMTA {
                report += MessageText.field("Remote-MTA", "dns; \(MessageText.fieldText(remoteMTA))")
            }
            // "smtp" says the reply came from the remote MTA; a reply made here says so too.
            report += MessageText.field("Diagnostic-Code", "\(status.remoteMTA == nil ? "X-Smarthost" : "smtp"); \(Self.replyText(status.reply))")
            if let lastAttemptDate = status.lastAttemptDate {
                report += MessageText.field("Last-Attempt-Date", MessageText.date(milliseconds: lastAttemptDate))
            }
            if case .delayed(let until) = status.action {
                report += MessageText.field("Will-Retry-Until", MessageText.date(milliseconds: until))
            }
        }
        return report
    }

    /// RFC 3464's `rfc822;` address type, or RFC 6533's `utf-8;` for an address that needs it.
    private static func typedAddress(_ address: Mailbox) -> String {
        (address.needsSMTPUTF8 ? "utf-8; " : "rfc822; ") + address.description
    }

    /// The whole reply on one line: `550 5.1.1 first line second line`, cut at
    /// `maximumDiagnosticOctets`.
    private static func replyText(_ reply: SMTPReply) -> String {
        let text = MessageText.fieldText(
            "\(reply.code) " + (reply.enhancedCode.map { "\($0) " } ?? "") + reply.lines.joined(separator: " ")).trimmingWhitespace()
        guard text.utf8.count > maximumDiagnosticOctets else { return text }
        var octets = 0
        let kept = text.unicodeScalars.prefix { scalar in
            octets += UTF8.width(scalar)
            return octets <= maximumDiagnosticOctets - 4
        }
        return String(String.UnicodeScalarView(kept)) + " ..."
    }

    // MARK: - The boundary

    /// RFC 2046 bchars from a dot-atom: the atext that is not one becomes `_`.
    private static func boundaryText(_ localPart: String) -> String {
        String(localPart.prefix(56).map { character in
            character.isASCII && (character.isLetter || character.isNumber || "'()+_,-./:=?".contains(character)) ? character : "_"
        })
    }

    /// `base`, or `base.N` with the smallest N that works, such that no line of any part starts
    /// with `--` and the boundary (RFC 2046 5.1.1). Only the original header section can hold
    /// such a line; each one rules out a few candidates, so this stays linear.
    static func boundary(base: String, avoiding parts: [[UInt8]]) -> String {
        let delimiter = Array("--\(base)".utf8)
        var baseTaken = false
        var takenNumbers: Set<Int> = []
        for part in parts {
            var lineStart = 0
            while lineStart < part.count {
                let lineEnd = part[lineStart...].firstIndex(of: 10) ?? part.count
                let line = part[lineStart..<lineEnd]
                lineStart = lineEnd + 1
                guard line.starts(with: delimiter) else { continue }
                baseTaken = true
                let suffix = line.dropFirst(delimiter.count)
                guard suffix.first == UInt8(ascii: "."), let first = suffix.dropFirst().first, first != UInt8(ascii: "0") else { continue }
                var number = 0
                // `base.12...` starts with the candidates `base.1` and `base.12`: both are out.
                for digit in suffix.dropFirst().prefix(9).prefix(while: { (48...57).contains($0) }) {
                    number = number * 10 + Int(digit - 48)
                    takenNumbers.insert(number)
                }
            }
        }
        guard baseTaken else { return base }
        return "\(base).\((1...).first { !takenNumbers.contains($0) }!)"
    }
}

/// A DSN ready to be queued: sent with `MAIL FROM:<>` to `recipient`.
public struct DeliveryStatusNotification: Sendable, Equatable {
    /// The original envelope sender: the DSN's only envelope recipient and its To:.
    public let recipient: Mailbox
    /// The Message-ID, with its angle brackets.
    public let messageID: String
    /// The whole message, header section and body, with CRLF line ends.
    public let content: [UInt8]
    /// The envelope or the DSN's own header fields hold a UTF-8 address: send with SMTPUTF8.
    public let needsSMTPUTF8: Bool
    /// The body has 8-bit octets (RFC 6533's parts): send with BODY=8BITMIME.
    public let needsEightBitMIME: Bool
}

/// Why no DSN was built.
public enum DSNError: Error, Sendable, Equatable, CustomStringConvertible {
    case suppressed(DSNSuppression)
    case noRecipients
    /// The Message-ID made of the local part and the domain is not a valid `local@domain`.
    case invalidMessageID(String)

    public var description: String {
        switch self {
        case .suppressed(let reason): return "no DSN may be sent: \(reason)"
        case .noRecipients: return "a DSN reports on at least one recipient"
        case .invalidMessageID(let id): return "not a valid Message-ID: <\(id.prefix(100))>"
        }
    }
}
