import Events
import Foundation
import Kafka
import Logging
import Metrics
import NodeHTTP
import Reconciliation
import ServiceLifecycle
import Throttle

/// The reconciler process: consumes the events topic into the cluster ledger (kept durably in
/// `ledger_dir`), and every `ledger_every` asks the delivery nodes' spools about the open
/// messages older than `unaccounted_after`, then writes the ledger report (docs/reconciler.md).
public final class LedgerService: Service, Sendable {
    public struct Settings: Sendable {
        public var nodeID: String
        public var ledgerDirectory: String
        public var reportDirectory: String
        public var unaccountedAfter: Duration
        public var checkEvery: Duration
        /// The delivery nodes' admin token (the reconciler asks their spools).
        public var adminToken: String?
        /// The delivery nodes' consumer group and the tenant topics' common prefix
        /// (`<topic_prefix>.`): records below that group's committed offsets must each have
        /// a Reception.
        public var deliveryGroup: String
        public var tenantTopicPrefix: String

        public init(nodeID: String, ledgerDirectory: String, reportDirectory: String, unaccountedAfter: Duration, checkEvery: Duration,
                    adminToken: String?, deliveryGroup: String, tenantTopicPrefix: String) {
            self.deliveryGroup = deliveryGroup
            self.tenantTopicPrefix = tenantTopicPrefix
            self.nodeID = nodeID
            self.ledgerDirectory = ledgerDirectory
            self.reportDirectory = reportDirectory
            self.unaccountedAfter = unaccountedAfter
            self.checkEvery = checkEvery
            self.adminToken = adminToken
        }
    }

    let settings: Settings
    private let consumer: KafkaConsumer
    private let admin: KafkaAdmin
    private let registry: NodeRegistry
    private let store: LedgerStore
    private let logger: Logger

    public init(settings: Settings, consumer: KafkaConsumer, admin: KafkaAdmin, registry: NodeRegistry,
                logger: Logger = Logger(label: "smarthost.reconciler")) throws {
        self.settings = settings
        self.consumer = consumer
        self.admin = admin
        self.registry = registry
        self.logger = logger
        store = try LedgerStore(directory: settings.ledgerDirectory, logger: logger)
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.consume() }
                group.addTask { await self.checkUntilCancelled() }
                await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            Task { await self.consumer.close() }
        }
        if let done = try? await store.checkpoint() { done.forEach { consumer.markDone($0) } }
    }

    /// Events → ledger; a record is marked done (its offset committable) only once a snapshot
    /// that includes it is on disk, so a restart neither loses nor double-counts an event.
    private func consume() async {
        var lastCheckpoint = ContinuousClock.now
        while true {
            let records = await consumer.nextBatch(max: 2_000)
            if records.isEmpty { return }
            await store.apply(records)
            if ContinuousClock.now - lastCheckpoint >= .seconds(1) {
                await checkpoint()
                lastCheckpoint = .now
            }
        }
    }

    private func checkpoint() async {
        do {
            for record in try await store.checkpoint() { consumer.markDone(record) }
        } catch {
            logger.error("could not write the ledger; its events stay uncommitted and are read again after a restart",
                         metadata: ["error": "\(error)"])
        }
    }

    private func checkUntilCancelled() async {
        while !Task.isCancelled {
            let started = ContinuousClock.now
            _ = await check()
            try? await Task.sleep(until: started + settings.checkEvery)
        }
    }

    /// Asks the spools about the open messages old enough, and writes the report.
    public func check() async -> LedgerReport {
        await checkpoint()
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        let threshold = Int64(settings.unaccountedAfter / .milliseconds(1))
        let candidates = await store.candidates(acceptedBefore: now - threshold)
        var held: Set<String> = []
        var unanswered: [String: String] = [:]
        do {
            let registered = try await registry.liveNodes()
            // An entry that does not decode may be a delivery node whose spool cannot be asked.
            for entry in registered.unreadable {
                unanswered[entry.id] = "its registry entry does not decode (\(entry.problem)); its spool cannot be asked"
            }
            let live = registered.nodes.map(\.announcement).filter { $0.role == "delivery" }
            for node in await store.missingNodes(live: live, now: now) {
                unanswered[node.id] = "not in the registry since \(ReportClock.ago(now - node.lastSeen)); its spool cannot be asked"
            }
            if !candidates.isEmpty {
                for node in live {
                    do {
                        held.formUnion(try await ask(node, about: candidates))
                    } catch {
                        unanswered[node.id] = "\(error)"
                    }
                }
            }
        } catch {
            unanswered["registry"] = "the node registry in Redis could not be read: \(error)"
        }
        let recordsUnchecked = await compareRecords(now: now)
        var report = await store.report(now: now, unaccountedAfter: threshold, held: held, unanswered: unanswered)
        report.recordsUnchecked = recordsUnchecked
        Gauge(label: "smarthost_ledger_unspooled_records").record(report.unspooledRecords.count)
        Gauge(label: "smarthost_ledger_unaccounted_recipients").record(report.unaccountedRecipients)
        Gauge(label: "smarthost_ledger_queued_recipients").record(report.queuedRecipients)
        do {
            try ReportFiles.write(report, named: "ledger", in: settings.reportDirectory)
        } catch {
            logger.error("could not write the ledger report", metadata: ["directory": "\(settings.reportDirectory)", "error": "\(error)"])
        }
        if !report.unspooledRecords.isEmpty {
            logger.error("Kafka records the delivery nodes' consumers are done with and no spool took", metadata: [
                "records": "\(report.unspooledRecords.count)", "first": "\(report.unspooledRecords.prefix(20).map(\.record))",
            ])
        }
        if report.unaccountedRecipients > 0 {
            logger.error("unaccounted messages: acknowledged, no terminal event, in no spool", metadata: [
                "messages": "\(report.unaccounted.count)", "ids": "\(report.unaccounted.prefix(20).map(\.id))",
            ])
        }
        return report
    }

    /// The delivery group's committed offsets against the Receptions seen; the error, if
    /// Kafka could not say.
    private func compareRecords(now: Int64) async -> String? {
        do {
            // The ledger's key of a partition, as in its Receptions: `topic/partition`.
            func key(_ partition: TopicPartition) -> String { "\(partition.topic)/\(partition.partition)" }
            let committed = try await admin.committedOffsets(group: settings.deliveryGroup, topicsWithPrefix: settings.tenantTopicPrefix)
            var positions: [String: (partition: TopicPartition, offset: Int64)] = [:]
            for case let (partition, offset?) in committed { positions[key(partition)] = (partition, offset) }
            let new = await store.partitionsWithoutStart(Array(positions.keys)).compactMap { positions[$0]?.partition }
            let lows = try await admin.lowWatermarks(new)
            await store.compare(committed: positions.mapValues(\.offset),
                                lows: Dictionary(uniqueKeysWithValues: lows.map { (key($0.key), $0.value) }), now: now)
            return nil
        } catch {
            logger.warning("the tenant topics' records could not be compared with the Receptions", metadata: ["error": "\(error)"])
            return "\(error)"
        }
    }

    private func ask(_ node: NodeAnnouncement, about ids: [String]) async throws -> [String] {
        var held: [String] = []
        for start in stride(from: 0, to: ids.count, by: 50_000) {
            let body = ReportFormat.json(SpoolLookup(ids: Array(ids[start..<min(start + 50_000, ids.count)])))
            let (status, answer) = try await AdminClient.request(node.admin, method: "POST", path: "/admin/spool/lookup",
                                                                 token: settings.adminToken, body: Array(body.utf8), timeout: .seconds(30))
            guard status == 200 else {
                throw AdminClient.Failure(description: "\(node.admin) answered \(status): \(String(decoding: answer.prefix(200), as: UTF8.self))")
            }
            held += try ReportFormat.decode(SpoolLookup.Answer.self, from: answer).held
        }
        return held
    }

    /// The last report, for the admin API.
    public func lastReport() async -> LedgerReport? { await store.lastReport }
}

enum ReportClock {
    static func ago(_ milliseconds: Int64) -> String {
        let seconds = milliseconds / 1_000
        return seconds < 120 ? "\(seconds) s" : "\(seconds / 60) min"
    }
}
