import Events
import Foundation
import Kafka
import Logging
import Metrics
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
    }

    public func encode(_ events: [MessageEvent]) -> Encoded {
        Encoded(keys: events.map { Array($0.id.utf8) }, lines: events.map(\.json))
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
            let sent = await withTaskGroup(of: Int64?.self) { group in
                for (seq, event) in page {
                    group.addTask {
                        let record = OutgoingRecord(topic: self.topic, key: event.key, value: event.value)
                        return (try? await producer.send(record)) == nil ? nil : seq
                    }
                }
                var acknowledged: [Int64] = []
                for await seq in group { if let seq { acknowledged.append(seq) } }
                return acknowledged
            }
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
