import Foundation

/// One step in a message's life, as a JSON record in the events topic (key: the message id).
/// Ingress nodes write Reception; delivery nodes write the outcomes; the reconciler's ledger
/// reads them all. JSON, so that any Kafka tool and any language can read the stream.
///
/// ```json
/// {"type":"Reception","id":"01M84…","tenant":"acme","time":1795000000000,"node":"ingress-1",
///  "sender":"app@acme.example","recipients":["a@example.com"],"size":2048,"job":"spring",
///  "client":"192.0.2.7:4000","topic":"smarthost.acme","partition":3,"offset":1234}
/// ```
public struct MessageEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case reception = "Reception"
        case delivery = "Delivery"
        case transientFailure = "TransientFailure"
        case bounce = "Bounce"
        case expiration = "Expiration"
        case orphanRequeued = "OrphanRequeued"
        /// An operator deleted the recipient with a DSN to the sender.
        case adminBounce = "AdminBounce"
        /// An operator deleted the recipient silently (no DSN).
        case adminDelete = "AdminDelete"
        /// A tenant-topic record that is not a message, kept in the delivery node's spool's
        /// quarantine; `id` is its `topic/partition/offset`, `reason` why.
        case quarantined = "Quarantined"
    }

    public var type: Kind
    /// The message id (`MessageID.text`).
    public var id: String
    public var tenant: String
    /// Milliseconds since the epoch, on the writing node's clock.
    public var time: Int64
    /// The node that wrote the event.
    public var node: String
    /// The envelope sender; empty for the null sender `<>`.
    public var sender: String?
    public var recipients: [String]?
    /// Octets of the message as queued.
    public var size: Int?
    public var job: String?
    public var client: String?
    /// Where the message record is in Kafka (Reception).
    public var topic: String?
    public var partition: Int32?
    public var offset: Int64?

    // Delivery attempts (Delivery, TransientFailure, Bounce, Expiration): one event per recipient.

    /// The recipient this outcome is about.
    public var recipient: String?
    /// The scheduled queue: `tenant/job/domain` (job empty when none).
    public var queue: String?
    /// The next hop the attempt went to (`host:port`), the ready queue's site.
    public var site: String?
    /// 1 for the first attempt.
    public var attempt: Int?
    /// What the server (or, for a connection failure, the delivery node) answered.
    public var response: Response?
    /// The server's address (`ip:port`) when a connection was made.
    public var peer: String?
    /// The egress pool, and its source address when it has one.
    public var pool: String?
    public var source: String?
    /// When the ingress node accepted the message (milliseconds since the epoch).
    public var receivedAt: Int64?
    /// TransientFailure: when the next attempt is due.
    public var nextAttemptAt: Int64?
    /// Whether the attempt's connection used TLS.
    public var tls: Bool?
    /// The response rule that decided what the reply meant (`response_rules` or a built-in
    /// one); absent when the reply's code alone decided.
    public var rule: String?
    /// Bounce, Expiration and TransientFailure: the id of the delivery status notification
    /// queued for the sender about this recipient, if one was.
    public var dsn: String?
    /// OrphanRequeued: why the sweep took the entry (`in no queue`, `limbo: <error>`);
    /// Quarantined: why the record is not a message.
    public var reason: String?

    public struct Response: Codable, Sendable, Equatable {
        public var code: Int
        /// The enhanced status code (RFC 3463), such as `5.1.1`, when the server gave one.
        public var enhanced: String?
        public var text: String

        public init(code: Int, enhanced: String?, text: String) {
            self.code = code
            self.enhanced = enhanced
            self.text = text
        }
    }

    public init(type: Kind, id: String, tenant: String, time: Int64, node: String, sender: String? = nil,
                recipients: [String]? = nil, size: Int? = nil, job: String? = nil, client: String? = nil,
                topic: String? = nil, partition: Int32? = nil, offset: Int64? = nil) {
        self.type = type
        self.id = id
        self.tenant = tenant
        self.time = time
        self.node = node
        self.sender = sender
        self.recipients = recipients
        self.size = size
        self.job = job
        self.client = client
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }

    /// Reads a record's value; anything that is not a well-formed event is an error saying why.
    public init(json bytes: [UInt8]) throws(EventError) {
        guard bytes.count <= Self.maximumSize else { throw EventError("event of \(bytes.count) octets, over \(Self.maximumSize)") }
        do {
            self = try JSONDecoder().decode(MessageEvent.self, from: Data(bytes))
        } catch let DecodingError.dataCorrupted(context) {
            guard !context.codingPath.isEmpty else { throw EventError("not JSON: \(context.debugDescription)") }
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw EventError("\"\(path)\": not a valid value")
        } catch let DecodingError.keyNotFound(key, _) {
            throw EventError("missing \"\(key.stringValue)\"")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw EventError("\"\(path)\": \(context.debugDescription)")
        } catch {
            throw EventError("\(error)")
        }
        guard !id.isEmpty, !tenant.isEmpty, !node.isEmpty else { throw EventError("empty id, tenant or node") }
        guard time >= 0 else { throw EventError("\"time\": \(time) is before the epoch") }
    }

    /// Events are small; a larger record is not one of ours.
    public static let maximumSize = 1 << 20
}

public struct EventError: Error, Equatable, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}
