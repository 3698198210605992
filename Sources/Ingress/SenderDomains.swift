import Foundation
import SMTPProtocol

/// A tenant's allowed sender domains, checked against the envelope sender and the From:
/// header, so that a tenant cannot send as another tenant's (or anyone's) domain.
enum SenderDomains {
    /// Why the message may not be sent for a tenant allowing `allowed` (empty allows any), or
    /// nil. The null sender `<>` (bounces) passes the envelope check.
    static func violation(sender: Mailbox?, message: [UInt8], allowed: [String]) -> String? {
        guard !allowed.isEmpty else { return nil }
        let allowed = Set(allowed.map { $0.lowercased() })
        if let sender, !allowed.contains(sender.normalizedDomain) {
            return "envelope sender domain \(sender.normalizedDomain) is not allowed for this tenant"
        }
        guard let from = HeaderField.value(of: "From", in: message) else {
            return "the message has no From: header"
        }
        guard let domain = domain(ofFromHeader: from) else {
            return "the From: header has no address"
        }
        guard allowed.contains(domain) else {
            return "From: header domain \(domain) is not allowed for this tenant"
        }
        return nil
    }

    /// The domain of the (first) address in a From: value: `Name <a@b>` or `a@b`.
    static func domain(ofFromHeader value: String) -> String? {
        var address = value
        if let open = value.firstIndex(of: "<"), let close = value[open...].firstIndex(of: ">") {
            address = String(value[value.index(after: open)..<close])
        } else if let first = value.split(separator: ",").first {
            address = String(first)
        }
        guard let at = address.lastIndex(of: "@") else { return nil }
        let domain = address[address.index(after: at)...].trimmingCharacters(in: .whitespaces).lowercased()
        return domain.isEmpty ? nil : domain
    }
}
