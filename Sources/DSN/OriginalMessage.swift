import SMTPProtocol

/// The message a DSN reports on: what the DSN says about it and whom it goes to.
public struct OriginalMessage: Sendable, Equatable {
    /// The message's id in this system (the ingress's message id), quoted in the DSN so that
    /// the sender's postmaster can ask about it.
    public let id: String
    /// The envelope sender: the DSN goes to it; nil for `<>`, which gets none.
    public let envelopeSender: Mailbox?
    /// When the ingress accepted it, in milliseconds since the epoch.
    public let arrivalDate: UInt64
    public let headers: OriginalHeaders

    /// `content` is the message as accepted; only its header section is read.
    public init(id: String, envelopeSender: Mailbox?, arrivalDate: UInt64, content: [UInt8]) {
        self.id = id
        self.envelopeSender = envelopeSender
        self.arrivalDate = arrivalDate
        headers = OriginalHeaders(content: content)
    }

    /// Why no DSN may be sent about this message, or nil when one may.
    ///
    /// Only loops are prevented: no DSN to the null sender (RFC 5321 4.5.5; every DSN, ours
    /// included, is sent from `<>`, RFC 3461 6.1), nor about a DSN that came with a sender
    /// anyway. `Auto-Submitted:` and `Precedence: bulk/junk/list` mail is still reported:
    /// RFC 3834 keeps automatic *responders* from answering it, and DSNs are not such
    /// responses; its sender asked for delivery and needs to know it failed (Postfix too).
    public var dsnSuppression: DSNSuppression? {
        guard envelopeSender != nil else { return .nullSender }
        if let contentType = headers.value(of: "Content-Type"), Self.isDeliveryReport(contentType: contentType) {
            return .originalIsDeliveryReport
        }
        return nil
    }

    /// `multipart/report; report-type=delivery-status` (RFC 3464) or `global-delivery-status`
    /// (RFC 6533), in any case, the parameter quoted or not.
    static func isDeliveryReport(contentType: String) -> Bool {
        let segments = splitOutsideQuotes(contentType, at: ";")
        guard segments.first?.trimmingWhitespace().lowercased() == "multipart/report" else { return false }
        return segments.dropFirst().contains { parameter in
            let nameAndValue = parameter.split(separator: "=", maxSplits: 1)
            guard nameAndValue.count == 2, String(nameAndValue[0]).trimmingWhitespace().lowercased() == "report-type" else {
                return false
            }
            var value = String(nameAndValue[1]).trimmingWhitespace()
            if value.count >= 2, value.first == "\"", value.last == "\"" { value = String(value.dropFirst().dropLast()) }
            return ["delivery-status", "global-delivery-status"].contains(value.lowercased())
        }
    }

    /// Splits at `separator` where it is not inside a quoted string (a boundary may hold one).
    private static func splitOutsideQuotes(_ text: String, at separator: Character) -> [String] {
        var segments: [String] = [], current = "", quoted = false, escaped = false
        for character in text {
            if escaped { escaped = false }
            else if quoted && character == "\\" { escaped = true }
            else if character == "\"" { quoted.toggle() }
            else if character == separator && !quoted {
                segments.append(current)
                current = ""
                continue
            }
            current.append(character)
        }
        return segments + [current]
    }
}

/// Why no DSN is sent about a message.
public enum DSNSuppression: Sendable, Equatable, CustomStringConvertible {
    /// The envelope sender is `<>`: nobody to send it to, and the message may itself be a DSN.
    case nullSender
    /// The message is a DSN (multipart/report with report-type delivery-status).
    case originalIsDeliveryReport

    public var description: String {
        switch self {
        case .nullSender: return "the envelope sender is <>"
        case .originalIsDeliveryReport: return "the message is itself a delivery status notification"
        }
    }
}
