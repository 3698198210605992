import Foundation
import Kafka
import Logging
import Metrics
import QueueRecord
import Reconciliation
import ServiceLifecycle
import SmarthostConfig
import Spool

/// A delivery node as a ServiceLifecycle service: it reloads its spool, then consumes every
/// tenant topic into the spool (offsets committed only once the spool has fsynced the
/// records) and keeps the queues moving until a graceful shutdown.
public final class DeliveryNode: Service, Sendable {
    private let consumer: KafkaConsumer
    private let spool: Spool
    public let manager: QueueManager
    private let events: EventPublisher
    private let shutdownGrace: Duration
    private let maxQueued: Int
    private let sweep: SweepSettings
    private let faults: FaultInjector?
    private let logger: Logger
    private let quarantined = Counter(label: "smarthost_delivery_records_quarantined_total")
    private let duplicates = Counter(label: "smarthost_delivery_records_duplicate_total")

    /// When the orphan sweep runs and where its report goes.
    public struct SweepSettings: Sendable {
        public var every: Duration
        public var grace: Duration
        /// The latest report is written there as sweep-<node>.json, .txt and .csv (nil: not written).
        public var reportDirectory: String?

        public init(every: Duration = .seconds(60), grace: Duration = .seconds(30), reportDirectory: String? = nil) {
            self.every = every
            self.grace = grace
            self.reportDirectory = reportDirectory
        }
    }

    public init(consumer: KafkaConsumer, spool: Spool, manager: QueueManager, events: EventPublisher, maxQueued: Int = 1_000_000,
                sweep: SweepSettings = SweepSettings(), faults: FaultInjector? = nil,
                shutdownGrace: Duration = .seconds(30), logger: Logger = Logger(label: "smarthost.delivery")) {
        self.maxQueued = maxQueued
        self.sweep = sweep
        self.faults = faults
        self.consumer = consumer
        self.spool = spool
        self.manager = manager
        self.events = events
        self.shutdownGrace = shutdownGrace
        self.logger = logger
    }

    public func run() async throws {
        try await recover()
        await withGracefulShutdownHandler {
            // Consuming ends the node's work (a graceful shutdown closes the consumer); the
            // rest runs beside it until then.
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.pumpUntilCancelled() }
                group.addTask { await self.sweepUntilCancelled() }
                group.addTask { await self.events.relayOutbox(from: self.spool) }
                group.addTask { await self.measureSpoolUntilCancelled() }
                await self.consume()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            Task { await self.consumer.close() }
        }
        await manager.stop()
        // Connections finish the message they are sending; the rest stays spooled.
        let deadline = ContinuousClock.now + shutdownGrace
        var open = await manager.openConnections + manager.outcomesBeingRecorded
        while open > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
            open = await manager.openConnections + manager.outcomesBeingRecorded
        }
        // The events of the last outcomes leave the outbox now if Kafka takes them; the rest at the next start.
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.events.relayOutbox(from: self.spool, stopWhenEmpty: true) }
            group.addTask { try? await Task.sleep(for: .seconds(5)) }
            await group.next()
            group.cancelAll()
        }
        logger.notice("delivery stopped", metadata: ["connections_cut": "\(open)"])
    }

    /// Every unfinished message of the spool back in its queue, as it was scheduled.
    private func recover() async throws {
        var batch: [SpooledMessage] = []
        try spool.forEach { batch.append($0) }
        for start in stride(from: 0, to: batch.count, by: 10_000) {
            await manager.enqueue(Array(batch[start..<min(start + 10_000, batch.count)]))
        }
        logger.notice("spool recovered", metadata: ["messages": "\(batch.count)"])
    }

    /// The orphan sweep on its schedule (first one a period after recovery).
    private func sweepUntilCancelled() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: sweep.every)
            guard !Task.isCancelled else { return }
            _ = await sweepNow(trigger: "schedule")
        }
    }

    /// Runs a sweep (or joins the one running) and writes its report files.
    public func sweepNow(trigger: String) async -> SweepReport {
        let report = await manager.sweep(trigger: trigger, grace: sweep.grace)
        if let directory = sweep.reportDirectory {
            do {
                try ReportFiles.write(ReconcileReport(generatedAt: report.startedAt, sweeps: [report]), named: "sweep-\(report.node)",
                                      in: directory)
            } catch {
                logger.error("could not write the sweep report", metadata: ["directory": "\(directory)", "error": "\(error)"])
            }
        }
        return report
    }

    /// `smarthost_spool_bytes` now and every 10 s (two stat calls).
    private func measureSpoolUntilCancelled() async {
        let bytes = Gauge(label: "smarthost_spool_bytes")
        while !Task.isCancelled {
            bytes.record(spool.diskBytes)
            try? await Task.sleep(for: .seconds(10))
        }
    }

    private func pumpUntilCancelled() async {
        while !Task.isCancelled {
            await manager.pump()
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Kafka → spool → queues. A record is marked done (its offset committable) only after the
    /// spool has fsynced it, or kept it in quarantine when it is not a valid message.
    private func consume() async {
        while true {
            // Backpressure: a full node leaves the records in Kafka (its consumer pauses once
            // its read-ahead buffer is full) instead of growing without bound.
            while await manager.counts.total >= maxQueued, !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
            }
            var records = await consumer.nextBatch(max: 512)
            if records.isEmpty { return }
            if let faults {
                if faults.crashesBeforeSpool {
                    logger.critical("injected fault: exiting after consuming and before spooling", metadata: ["records": "\(records.count)"])
                    exit(70)
                }
                records = records.filter { record in
                    guard faults.takeRecordSkip() else { return true }
                    // Test-only: marked done and never spooled, as a consumer that committed past it.
                    consumer.markDone(record)
                    return false
                }
                if records.isEmpty { continue }
            }
            var parsed: [(record: ConsumedRecord, message: AcceptedMessage)] = []
            var invalid: [(ConsumedRecord, String)] = []
            for record in records {
                do {
                    parsed.append((record, try AcceptedMessage(key: record.key, headers: record.headers.map { ($0.name, $0.value) },
                                                               value: record.value)))
                } catch {
                    invalid.append((record, error.description))
                }
            }
            // Cancelled while the spool refused the batch: nothing marked done, Kafka redelivers it.
            guard let inserted = await persist(parsed, invalid: invalid) else { return }
            for record in records { consumer.markDone(record) }
            var fresh: [SpooledMessage] = []
            for ((record, message), outcome) in zip(parsed, inserted) where outcome != .quarantined {
                if outcome == .spooled {
                    fresh.append(SpooledMessage(message, position: SpoolPosition(record)))
                } else {
                    duplicates.increment()
                }
            }
            await manager.enqueue(fresh)
        }
    }

    enum Persisted { case spooled, alreadyKnown, quarantined }

    /// Spools the batch (one group commit) and quarantines the invalid records; retries until
    /// the spool takes them (nil if cancelled first), since a record not in the spool must not
    /// be marked done. A message the spool refuses as invalid sends the batch through one by
    /// one, so that only that record goes to quarantine.
    private func persist(_ parsed: [(record: ConsumedRecord, message: AcceptedMessage)],
                         invalid: [(ConsumedRecord, String)]) async -> [Persisted]? {
        let messages = parsed.map { ($0.message, Optional(SpoolPosition($0.record))) }
        let receptions = events.receptions(of: messages, node: manager.settings.nodeID)
        let outbox = events.outboxEvents(receptions)
        var results: [Persisted?] = Array(repeating: nil, count: messages.count)
        var invalid = invalid
        var oneByOne = false
        var delay = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                let pending = results.indices.filter { results[$0] == nil }
                if oneByOne {
                    for index in pending {
                        do {
                            try failIfInjected()
                            let reception = outbox.isEmpty ? [] : [outbox[index]]
                            results[index] = try await spool.insert([messages[index]], receptions: reception)[0] ? .spooled : .alreadyKnown
                        } catch where error.kind == .invalidInput {
                            results[index] = .quarantined
                            invalid.append((parsed[index].record, error.description))
                        }
                    }
                } else if !pending.isEmpty {
                    try failIfInjected()
                    let flags = try await spool.insert(pending.map { messages[$0] }, receptions: outbox.isEmpty ? [] : pending.map { outbox[$0] })
                    for (index, isNew) in zip(pending, flags) { results[index] = isNew ? .spooled : .alreadyKnown }
                }
                try await quarantine(invalid)
                let persisted = results.map { $0 ?? .alreadyKnown }
                events.logLocally(receptions.selecting(persisted.map { $0 == .spooled }))
                return persisted
            } catch where error.kind == .invalidInput && !oneByOne {
                oneByOne = true
            } catch {
                logger.error("spool write failed; retrying before any offset is committed", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
        return nil
    }

    /// Test-only (`fail-spool-writes`): this spool write fails as a full disk would.
    private func failIfInjected() throws(SpoolError) {
        if let faults, faults.takeSpoolWriteFailure() { throw spool.injectedFailure("insert") }
    }

    /// Keeps records that are not valid messages in the spool's quarantine (idempotent per
    /// topic, partition and offset), so that none is skipped silently.
    private func quarantine(_ invalid: [(ConsumedRecord, String)]) async throws(SpoolError) {
        for (record, reason) in invalid {
            let event = events.quarantined(topic: record.topic, partition: record.partition, offset: record.offset, reason: reason,
                                           node: manager.settings.nodeID)
            let first = try await spool.quarantine(topic: record.topic, partition: record.partition, offset: record.offset,
                                                   reason: reason, key: record.key, value: record.value,
                                                   event: events.outboxEvents(event).first)
            if first { events.logLocally(event) }
            quarantined.increment()
            logger.error("invalid record kept in the spool's quarantine", metadata: [
                "topic": "\(record.topic)", "partition": "\(record.partition)", "offset": "\(record.offset)", "reason": "\(reason)",
            ])
        }
    }
}

extension SpoolPosition {
    init(_ record: ConsumedRecord) {
        self.init(topic: record.topic, partition: record.partition, offset: record.offset)
    }
}

extension SpooledMessage {
    /// A message just spooled from its Kafka record: no attempt yet, due now.
    init(_ message: AcceptedMessage, position: SpoolPosition?) {
        self.init(id: message.id, tenant: message.tenant, sender: message.sender, pendingRecipients: message.recipients,
                  receivedAt: message.receivedAt, job: message.job, pool: message.pool, lane: message.lane, trafficClass: message.trafficClass,
                  smtputf8: message.smtputf8, eightBit: message.eightBit, size: message.content.count, attempts: 0,
                  nextAttemptAt: 0, spooledAt: MessageID.currentMilliseconds(), position: position)
    }
}
