import Foundation
import Kafka
import Logging
import QueueRecord
import SMTPProtocol
import SMTPServer
import SmarthostConfig

/// The ingress node's `MessageSink`: turns each accepted message into one Kafka record in its
/// tenant's topic and answers 250 only after Kafka acknowledged it (acks=all). If Kafka cannot
/// take it in time, the client gets 451 and keeps the message: nothing is lost either way.
public struct IngressSink: MessageSink {
    private let producer: KafkaProducer
    private let configuration: SmarthostConfiguration
    private let hostname: String
    private let quotas: TenantQuotas?
    private let logger: Logger

    public init(producer: KafkaProducer, configuration: SmarthostConfiguration, hostname: String,
                quotas: TenantQuotas? = nil, logger: Logger = Logger(label: "smarthost.ingress")) {
        self.producer = producer
        self.configuration = configuration
        self.hostname = hostname
        self.quotas = quotas
        self.logger = logger
    }

    public func accept(_ envelope: Envelope, message: [UInt8], connection: ConnectionInfo) async -> SMTPReply {
        await withCheckedContinuation { continuation in
            accept(envelope, message: message, connection: connection) { continuation.resume(returning: $0) }
        }
    }

    /// Answers on the producer's delivery report, without a task, unless the tenant has a
    /// quota (a Redis round trip first).
    public func accept(_ envelope: Envelope, message: [UInt8], connection: ConnectionInfo,
                       reply: @escaping @Sendable (SMTPReply) -> Void) {
        let prepared: Prepared
        switch prepare(envelope, message: message, connection: connection) {
        case .refused(let refusal): return reply(refusal)
        case .ready(let ready): prepared = ready
        }
        guard let quotas, quotas.hasQuota(prepared.accepted.tenant) else { return enqueue(prepared, reply: reply) }
        Task {
            if case .exceeded(let rate, let retryAfter) = await quotas.admit(prepared.accepted.tenant) {
                logger.notice("tenant quota exceeded", metadata: ["tenant": "\(prepared.accepted.tenant)", "retry_after": "\(retryAfter)"])
                let seconds = Int((retryAfter / .seconds(1)).rounded(.up))
                return reply(SMTPReply(451, EnhancedStatusCode(4, 7, 1), "Message rate quota exceeded (\(rate)), try again in \(seconds) s"))
            }
            enqueue(prepared, reply: reply)
        }
    }

    private struct Prepared {
        let accepted: AcceptedMessage
        let record: OutgoingRecord
    }

    private enum Preparation {
        case ready(Prepared)
        case refused(SMTPReply)
    }

    /// The checks that need nothing but the message and the configuration, then the record.
    private func prepare(_ envelope: Envelope, message: [UInt8], connection: ConnectionInfo) -> Preparation {
        // The session refuses recipients without a tenant; this is the second lock on that door.
        guard let tenantName = connection.tenant, let tenant = configuration.tenants[tenantName] else {
            return .refused(SMTPReply(554, EnhancedStatusCode(5, 7, 1), "Relay access denied"))
        }
        guard message.count <= tenant.maxMessageSize.bytes else {
            return .refused(SMTPReply(552, EnhancedStatusCode(5, 3, 4), "Message exceeds the size limit of \(tenant.maxMessageSize.bytes) octets"))
        }
        if let violation = SenderDomains.violation(sender: envelope.sender, message: message, allowed: tenant.senderDomains) {
            logger.notice("refused a sender", metadata: ["tenant": "\(tenantName)", "reason": "\(violation)"])
            return .refused(SMTPReply(550, EnhancedStatusCode(5, 7, 1), "Sender not allowed: \(violation)"))
        }
        // A message may ask for another egress pool than its tenant's, by name; a name that is
        // not configured is refused rather than sent from a pool the sender did not ask for.
        let pool = HeaderField.value(of: "X-Smarthost-Pool", in: message)
        if let pool, configuration.pools[pool] == nil {
            return .refused(SMTPReply(550, EnhancedStatusCode(5, 7, 1), "X-Smarthost-Pool names no configured pool: \(pool.prefix(64))"))
        }
        // A message may also ask for another lane than its tenant's (a password reset among a
        // tenant's newsletters); anything but the three names is refused, not guessed.
        var lane = AcceptedMessage.Lane(rawValue: tenant.lane.rawValue) ?? .normal
        if let requested = HeaderField.value(of: "X-Smarthost-Lane", in: message) {
            guard let named = AcceptedMessage.Lane(rawValue: requested.lowercased()) else {
                return .refused(SMTPReply(550, EnhancedStatusCode(5, 7, 1), "X-Smarthost-Lane must be high, normal or low, not \(requested.prefix(64))"))
            }
            lane = named
        }
        let now = Date()
        let receivedAt = UInt64(now.timeIntervalSince1970 * 1000)
        let id = MessageID.generate(milliseconds: receivedAt)
        let received = ReceivedHeader.make(helo: envelope.helloName, connection: connection, hostname: hostname,
                                           id: id.text, recipients: envelope.recipients, date: now)
        let accepted = AcceptedMessage(
            id: id, tenant: tenantName, sender: envelope.sender, recipients: envelope.recipients,
            receivedAt: receivedAt, client: connection.clientAddress, helo: envelope.helloName,
            tls: connection.isEncrypted ? "TLS" : nil, authenticatedUser: connection.authenticatedUser, job: HeaderField.value(of: "X-Job", in: message),
            pool: pool, lane: lane, trafficClass: tenant.trafficClass,
            smtputf8: envelope.parameters.smtputf8, eightBit: envelope.parameters.body == .eightBitMIME,
            content: received + message)
        let record = OutgoingRecord(
            topic: configuration.kafka.tenantTopic(for: tenantName), key: Array(id.text.utf8), value: accepted.content,
            headers: accepted.headers.map { KafkaHeader(name: $0.name, string: $0.value) })
        return .ready(Prepared(accepted: accepted, record: record))
    }

    /// Produces the record; the reply follows Kafka's acknowledgement (or its refusal).
    private func enqueue(_ prepared: Prepared, reply: @escaping @Sendable (SMTPReply) -> Void) {
        let accepted = prepared.accepted
        producer.send(prepared.record) { [self] result in
            switch result {
            case .success(let report):
                logger.info("queued", metadata: [
                    "id": "\(accepted.id)", "tenant": "\(accepted.tenant)", "recipients": "\(accepted.recipients.count)",
                    "size": "\(accepted.content.count)", "partition": "\(report.partition)", "offset": "\(report.offset)",
                ])
                // The ledger learns of the message from the spool that takes this record, not
                // from an event of ours a SIGKILL here could lose (docs/reconciler.md).
                reply(SMTPReply(250, EnhancedStatusCode(2, 0, 0), "Ok: queued as \(accepted.id)"))
            case .failure(KafkaError.recordTooLarge(let size, let limit)):
                logger.warning("message too large for Kafka", metadata: ["size": "\(size)", "limit": "\(limit)"])
                reply(SMTPReply(552, EnhancedStatusCode(5, 3, 4), "Message too big for this system"))
            case .failure(let error):
                logger.warning("could not queue a message", metadata: ["tenant": "\(accepted.tenant)", "error": "\(error)"])
                reply(SMTPReply(451, EnhancedStatusCode(4, 3, 0), "Queue temporarily unavailable, try again later"))
            }
        }
    }
}

/// Reads a header field from a message's header section (before the first empty line).
enum HeaderField {
    /// The unfolded value of the first field named `name` (case-insensitive), trimmed; nil if
    /// absent or empty. Only printable ASCII is kept: the value travels as a Kafka header and
    /// into logs.
    static func value(of name: String, in message: [UInt8]) -> String? {
        let wanted = Array(name.lowercased().utf8) + [UInt8(ascii: ":")]
        var lineStart = 0
        var index = 0
        while index < message.count {
            guard message[index] == 10 else { index += 1; continue }
            let line = message[lineStart..<index]
            if line.count <= 1 { return nil }  // the empty line: end of the header section
            if line.count > wanted.count, line.prefix(wanted.count).map({ (65...90).contains($0) ? $0 + 32 : $0 }) == wanted {
                var end = index + 1
                // Unfold continuation lines (starting with space or tab).
                while end < message.count, message[end] == 32 || message[end] == 9, let next = message[end...].firstIndex(of: 10) {
                    end = next + 1
                }
                let raw = message[(lineStart + wanted.count)..<end].filter { $0 >= 32 && $0 < 127 }
                let value = String(decoding: raw, as: UTF8.self).trimmingCharacters(in: .whitespaces)
                return value.isEmpty ? nil : String(value.prefix(200))
            }
            lineStart = index + 1
            index += 1
        }
        return nil
    }
}
