import Events
import Foundation
import Kafka
import Logging
import Metrics
import QueueRecord
import Spool
import Synchronization

/// Writes a delivery node's events to the events topic (key: the message id) and to a local
/// JSONL file that rotates by size, so that an operator has the node's own record even when
/// Kafka is unreachable.
public final class EventPublisher: Sendable {
    private struct LogFile {
        var descriptor: Int32
        var size: Int
    }

    private let producer: KafkaProducer?
    private let topic: String
    private let path: String
    private let maximumSize: Int
    private let keep: Int
    private let file: Mutex<LogFile?>
    private let inFlight = Atomic<Int>(0)
    private let logger: Logger
    private let failures = Counter(label: "smarthost_events_publish_failures_total")

    /// Opens (appending) `directory/events.jsonl`.
    public init(producer: KafkaProducer?, topic: String, directory: String, maximumSize: Int, keep: Int,
                logger: Logger = Logger(label: "smarthost.events")) throws {
        self.producer = producer
        self.topic = topic
        path = directory + "/events.jsonl"
        self.maximumSize = maximumSize
        self.keep = keep
        self.logger = logger
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        file = Mutex(try Self.open(path))
    }

    deinit {
        file.withLock { if let descriptor = $0?.descriptor { close(descriptor) } }
    }

    /// Events sent to Kafka whose acknowledgement has not come yet.
    public var pending: Int { inFlight.load(ordering: .relaxed) }

    public func publish(_ events: [MessageEvent]) {
        guard !events.isEmpty else { return }
        let encoded = events.map(\.json)
        appendLines(encoded)
        guard let producer else { return }
        for (event, json) in zip(events, encoded) {
            inFlight.add(1, ordering: .relaxed)
            let record = OutgoingRecord(topic: topic, key: Array(event.id.utf8), value: json)
            Task { [self] in
                defer { inFlight.subtract(1, ordering: .relaxed) }
                do {
                    _ = try await producer.send(record)
                } catch {
                    failures.increment()
                    logger.warning("event not published to Kafka (it is in the local event log)",
                                   metadata: ["id": "\(event.id)", "type": "\(event.type.rawValue)", "error": "\(error)"])
                }
            }
        }
    }

    /// Events encoded once (JSON encoding was a twentieth of a delivery node's CPU, twice per
    /// outcome), for the outbox and the local log alike.
    public struct Encoded: Sendable {
        fileprivate let keys: [[UInt8]]
        fileprivate let lines: [[UInt8]]
        public var isEmpty: Bool { lines.isEmpty }

        /// The events whose flag is true (`flags` has one per event).
        public func selecting(_ flags: [Bool]) -> Encoded {
            let kept = zip(keys, lines).enumerated().filter { flags[$0.offset] }.map(\.element)
            return Encoded(keys: kept.map(\.0), lines: kept.map(\.1))
        }
    }

    public func encode(_ events: [MessageEvent]) -> Encoded {
        Encoded(keys: events.map { Array($0.id.utf8) }, lines: events.map(\.json))
    }

    /// The Reception of each message this node spools, written by `Spool.insert` in the
    /// transaction that spools it: the ledger learns of a message from the spool that took
    /// its record (the thing the client's 250 stood for), never from a side event an ingress
    /// killed after its 250 could lose. `time` is the ingress's acceptance; `node` the spool's.
    public func receptions(of messages: [(AcceptedMessage, SpoolPosition?)], node: String) -> Encoded {
        encode(messages.map { message, position in
            MessageEvent(type: .reception, id: message.id.text, tenant: message.tenant, time: Int64(message.receivedAt), node: node,
                         sender: message.sender?.description ?? "", recipients: message.recipients.map(\.description),
                         size: message.content.count, job: message.job, client: message.client,
                         topic: position?.topic, partition: position?.partition, offset: position?.offset)
        })
    }

    /// The Quarantined event of a tenant-topic record that is not a message: the ledger
    /// counts the record as taken (it names it apart) instead of as one no spool took.
    public func quarantined(topic: String, partition: Int32, offset: Int64, reason: String, node: String) -> Encoded {
        let record = "\(topic)/\(partition)/\(offset)"
        // The tenant its topic names (`<prefix>.<tenant>`).
        let tenant = topic.firstIndex(of: ".").map { String(topic[topic.index(after: $0)...]) } ?? topic
        var event = MessageEvent(type: .quarantined, id: record, tenant: tenant.isEmpty ? topic : tenant,
                                 time: Int64(MessageID.currentMilliseconds()), node: node, topic: topic, partition: partition, offset: offset)
        event.reason = String(reason.prefix(500))
        return encode([event])
    }

    /// The events as outbox rows: written by the spool in the same transaction as the outcome
    /// they report, then sent by `relayOutbox` (and only then forgotten).
    /// Without a producer (a node that publishes nowhere) there is no outbox.
    public func outboxEvents(_ encoded: Encoded) -> [OutboxEvent] {
        guard producer != nil else { return [] }
        return zip(encoded.keys, encoded.lines).map { OutboxEvent(key: $0, value: $1) }
    }

    /// Appends events whose outcome the spool has recorded to the local log (the outbox relay
    /// sends them to Kafka).
    public func logLocally(_ encoded: Encoded) {
        guard !encoded.isEmpty else { return }
        appendLines(encoded.lines)
    }

    /// One JSON event per line, in one write.
    private func appendLines(_ encoded: [[UInt8]]) {
        var lines: [UInt8] = []
        for json in encoded {
            lines += json
            lines.append(10)
        }
        append(lines)
    }

    /// Sends the spool's outbox to the events topic, oldest first, deleting what Kafka
    /// acknowledged; what it could not send stays and is tried again (also after a restart).
    /// Runs until cancelled, or with `stopWhenEmpty` until the outbox is empty.
    public func relayOutbox(from spool: Spool, stopWhenEmpty: Bool = false) async {
        guard let producer else { return }
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            let page: [(seq: Int64, event: OutboxEvent)]
            do {
                page = try await spool.outboxPage(limit: 1_000)
            } catch {
                logger.error("the outbox could not be read", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            if page.isEmpty {
                if stopWhenEmpty { return }
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            inFlight.add(page.count, ordering: .relaxed)
            let sent = await send(page, with: producer)
            inFlight.subtract(page.count, ordering: .relaxed)
            do {
                try await spool.removeFromOutbox(sent)
            } catch {
                logger.error("acknowledged events could not be removed from the outbox (they will be sent again)", metadata: ["error": "\(error)"])
            }
            if sent.count < page.count {
                failures.increment(by: page.count - sent.count)
                logger.warning("events not yet published to Kafka; kept in the outbox", metadata: ["events": "\(page.count - sent.count)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            } else {
                backoff = .milliseconds(100)
            }
        }
    }

    /// Hands a page to the producer in outbox order (one call each, no task per event, so a
    /// message's Reception goes out before its outcomes) and gives the acknowledged rows.
    private func send(_ page: [(seq: Int64, event: OutboxEvent)], with producer: KafkaProducer) async -> [Int64] {
        let acknowledged = Mutex<(left: Int, seqs: [Int64])>((page.count, []))
        return await withCheckedContinuation { (continuation: CheckedContinuation<[Int64], Never>) in
            for (seq, event) in page {
                producer.send(OutgoingRecord(topic: topic, key: event.key, value: event.value)) { result in
                    let done: [Int64]? = acknowledged.withLock { state in
                        if case .success = result { state.seqs.append(seq) }
                        state.left -= 1
                        return state.left == 0 ? state.seqs : nil
                    }
                    if let done { continuation.resume(returning: done) }
                }
            }
        }
    }

    private func append(_ bytes: [UInt8]) {
        file.withLock { file in
            if file == nil { file = try? Self.open(path) }
            guard var current = file else { return }
            let written = bytes.withUnsafeBytes { Glibc.write(current.descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                failures.increment()
                return
            }
            current.size += written
            if current.size >= maximumSize {
                close(current.descriptor)
                rotate()
                file = try? Self.open(path)
            } else {
                file = current
            }
        }
    }

    /// events.jsonl → events.jsonl.1 → … → events.jsonl.KEEP (dropped).
    private func rotate() {
        let manager = FileManager.default
        try? manager.removeItem(atPath: "\(path).\(keep)")
        for index in stride(from: keep - 1, through: 1, by: -1) where manager.fileExists(atPath: "\(path).\(index)") {
            try? manager.moveItem(atPath: "\(path).\(index)", toPath: "\(path).\(index + 1)")
        }
        try? manager.moveItem(atPath: path, toPath: "\(path).1")
    }

    private static func open(_ path: String) throws -> LogFile {
        let descriptor = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw EventLogError(description: "cannot open the event log \(path): \(String(cString: strerror(errno)))")
        }
        var status = stat()
        fstat(descriptor, &status)
        return LogFile(descriptor: descriptor, size: Int(status.st_size))
    }
}

public struct EventLogError: Error, CustomStringConvertible {
    public let description: String
}
