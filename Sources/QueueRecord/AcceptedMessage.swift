import SMTPProtocol

/// A message an ingress node accepted, as it travels through Kafka to the delivery nodes.
///
/// On the wire (one Kafka record per message) the value is the message itself, exactly as it
/// will be delivered (with the ingress's Received: line on top), the key is the message id (so
/// a message always lands in the same partition), and everything else is in headers, readable
/// with any Kafka tool:
///
/// | header | value |
/// | --- | --- |
/// | `sh-format` | `1` |
/// | `sh-id` | the message id (26 characters) |
/// | `sh-tenant` | the tenant |
/// | `sh-from` | the envelope sender, empty for `<>` |
/// | `sh-rcpt` | one header per recipient, in order |
/// | `sh-received-at` | milliseconds since the epoch |
/// | `sh-client` | the client's address |
/// | `sh-helo` | the client's EHLO/HELO name |
/// | `sh-tls` | the TLS protocol and cipher, absent for plaintext |
/// | `sh-auth` | the authenticated user, absent otherwise |
/// | `sh-job` | the job or campaign id (from X-Job), absent if none |
/// | `sh-pool` | the egress pool chosen for this message (from X-Smarthost-Pool), absent for the tenant's |
/// | `sh-lane` | the priority lane: `high`, `normal` or `low` |
/// | `sh-class` | the traffic class |
/// | `sh-smtputf8` | `1` when the envelope needs SMTPUTF8, absent otherwise |
/// | `sh-8bit` | `1` when the client declared BODY=8BITMIME, absent otherwise |
public struct AcceptedMessage: Sendable, Equatable {
    public enum Lane: String, Sendable, CaseIterable {
        case high, normal, low
    }

    public var id: MessageID
    public var tenant: String
    public var sender: Mailbox?
    public var recipients: [Mailbox]
    public var receivedAt: UInt64
    public var client: String
    public var helo: String
    public var tls: String?
    public var authenticatedUser: String?
    public var job: String?
    /// The egress pool this message asked for, overriding its tenant's.
    public var pool: String?
    public var lane: Lane
    public var trafficClass: String
    public var smtputf8: Bool
    public var eightBit: Bool
    /// The message as it will be delivered.
    public var content: [UInt8]

    public init(id: MessageID, tenant: String, sender: Mailbox?, recipients: [Mailbox], receivedAt: UInt64,
                client: String, helo: String, tls: String? = nil, authenticatedUser: String? = nil, job: String? = nil,
                pool: String? = nil, lane: Lane = .normal, trafficClass: String, smtputf8: Bool = false, eightBit: Bool = false, content: [UInt8]) {
        self.id = id
        self.tenant = tenant
        self.sender = sender
        self.recipients = recipients
        self.receivedAt = receivedAt
        self.client = client
        self.helo = helo
        self.tls = tls
        self.authenticatedUser = authenticatedUser
        self.job = job
        self.pool = pool
        self.lane = lane
        self.trafficClass = trafficClass
        self.smtputf8 = smtputf8
        self.eightBit = eightBit
        self.content = content
    }

    public static let formatVersion = "1"

    /// The record's headers, in a fixed order.
    public var headers: [(name: String, value: String)] {
        var headers: [(String, String)] = [
            ("sh-format", Self.formatVersion), ("sh-id", id.text), ("sh-tenant", tenant),
            ("sh-from", sender?.description ?? ""),
        ]
        headers += recipients.map { ("sh-rcpt", $0.description) }
        headers += [("sh-received-at", String(receivedAt)), ("sh-client", client), ("sh-helo", helo)]
        if let tls { headers.append(("sh-tls", tls)) }
        if let authenticatedUser { headers.append(("sh-auth", authenticatedUser)) }
        if let job { headers.append(("sh-job", job)) }
        if let pool { headers.append(("sh-pool", pool)) }
        headers += [("sh-lane", lane.rawValue), ("sh-class", trafficClass)]
        if smtputf8 { headers.append(("sh-smtputf8", "1")) }
        if eightBit { headers.append(("sh-8bit", "1")) }
        return headers
    }

    /// Rebuilds a message from a record's key, headers and value, checking everything: a
    /// record is input from outside this process (another version, a tool, an attacker with
    /// access to the topic). Headers it does not know are ignored, so that a newer ingress can
    /// add optional ones; a change in meaning bumps `sh-format`.
    public init(key: [UInt8]?, headers: [(name: String, value: [UInt8])], value: [UInt8]) throws(RecordError) {
        var fields: [String: [String]] = [:]
        for (name, bytes) in headers {
            guard let text = String(validating: bytes, as: UTF8.self) else { throw .notUTF8(header: name) }
            fields[name, default: []].append(text)
        }
        func one(_ name: String) throws(RecordError) -> String {
            guard let values = fields[name] else { throw .missing(header: name) }
            guard values.count == 1 else { throw .repeated(header: name) }
            return values[0]
        }
        func optional(_ name: String) throws(RecordError) -> String? {
            fields[name] == nil ? nil : try one(name)
        }
        func flag(_ name: String) throws(RecordError) -> Bool {
            guard let value = try optional(name) else { return false }
            guard value == "1" else { throw .invalid(header: name, reason: "expected 1") }
            return true
        }
        let format = try one("sh-format")
        guard format == Self.formatVersion else { throw .unsupportedFormat(format) }
        guard let id = MessageID(parsing: try one("sh-id")) else { throw .invalid(header: "sh-id", reason: "not a message id") }
        guard key == nil || key! == Array(id.text.utf8) else { throw .invalid(header: "key", reason: "differs from sh-id") }
        let tenant = try one("sh-tenant")
        guard !tenant.isEmpty, tenant.utf8.count <= 48 else { throw .invalid(header: "sh-tenant", reason: "empty or too long") }
        let smtputf8 = try flag("sh-smtputf8")
        let fromText = try one("sh-from")
        var sender: Mailbox?
        if !fromText.isEmpty {
            do { sender = try Mailbox(parsing: Substring(fromText), allowUTF8: smtputf8) } catch {
                throw .invalid(header: "sh-from", reason: error.description)
            }
        }
        let recipientTexts = fields["sh-rcpt"] ?? []
        guard !recipientTexts.isEmpty else { throw .missing(header: "sh-rcpt") }
        var recipients: [Mailbox] = []
        for text in recipientTexts {
            do { recipients.append(try Mailbox(parsing: Substring(text), allowUTF8: smtputf8)) } catch {
                throw .invalid(header: "sh-rcpt", reason: "\(error.description): \(text.prefix(80))")
            }
        }
        let receivedText = try one("sh-received-at")
        guard receivedText.utf8.count <= 15, let receivedAt = UInt64(receivedText) else {
            throw .invalid(header: "sh-received-at", reason: "not milliseconds since the epoch")
        }
        let pool = try optional("sh-pool")
        if let pool, pool.isEmpty || pool.utf8.count > 64 || !pool.utf8.allSatisfy(Self.isPoolNameByte) {
            throw .invalid(header: "sh-pool", reason: "not a pool name")
        }
        guard let lane = Lane(rawValue: try one("sh-lane")) else { throw .invalid(header: "sh-lane", reason: "not high, normal or low") }
        self.init(id: id, tenant: tenant, sender: sender, recipients: recipients, receivedAt: receivedAt,
                  client: try one("sh-client"), helo: try one("sh-helo"), tls: try optional("sh-tls"),
                  authenticatedUser: try optional("sh-auth"), job: try optional("sh-job"), pool: pool, lane: lane,
                  trafficClass: try one("sh-class"), smtputf8: smtputf8, eightBit: try flag("sh-8bit"), content: value)
    }
}

extension AcceptedMessage {
    /// Pool names as the configuration allows them: lowercase letters, digits, `_`, `-`.
    static func isPoolNameByte(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x5F || byte == 0x2D
    }
}

/// Why a Kafka record is not a valid accepted message.
public enum RecordError: Error, Sendable, Equatable, CustomStringConvertible {
    case unsupportedFormat(String)
    case missing(header: String)
    case repeated(header: String)
    case notUTF8(header: String)
    case invalid(header: String, reason: String)

    public var description: String {
        switch self {
        case .unsupportedFormat(let format): return "record format \"\(format.prefix(20))\" is not supported (expected \(AcceptedMessage.formatVersion))"
        case .missing(let header): return "header \(header) is missing"
        case .repeated(let header): return "header \(header) appears more than once"
        case .notUTF8(let header): return "header \(header.prefix(40)) is not UTF-8"
        case .invalid(let header, let reason): return "header \(header): \(reason)"
        }
    }
}
