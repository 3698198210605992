import Events
import Foundation
import Kafka
import Logging
import Reconciliation
import Throttle

/// The ledger and the events-topic positions it reflects, kept durably as one snapshot file
/// (`state.json`, replaced atomically after an fsync; the reports are `ledger.*`, apart). Events below a partition's position
/// were applied already and are skipped when Kafka delivers them again.
actor LedgerStore {
    struct Snapshot: Codable {
        /// 2: acceptances from the spools' Receptions, copies and duplicates named.
        var version = Self.currentVersion
        /// `topic/partition` → the next offset to apply.
        var positions: [String: Int64] = [:]
        var ledger = Ledger()
        /// Delivery nodes seen in the registry, and when (ms): one that disappears is named
        /// in the report until it has been gone for `forgetNodesAfter`.
        var knownNodes: [String: Int64] = [:]
        var malformedEvents = 0

        static let currentVersion = 2
    }

    static let forgetNodesAfter: Int64 = 3_600_000
    /// Finished messages are remembered this long, for duplicates that come late.
    static let rememberFinished: Int64 = 3_600_000

    private var state: Snapshot
    private var unsaved: [ConsumedRecord] = []
    private(set) var lastReport: LedgerReport?
    private let path: String
    private let logger: Logger

    init(directory: String, logger: Logger) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/state.json"
        self.logger = logger
        if let data = FileManager.default.contents(atPath: path) {
            struct Version: Decodable { var version: Int }
            let version = (try? JSONDecoder().decode(Version.self, from: data))?.version
            guard version == nil || version == Snapshot.currentVersion else {
                throw LedgerFileError(description: "\(path): ledger version \(version!), this one reads \(Snapshot.currentVersion); move it away to start a new ledger")
            }
            do {
                state = try JSONDecoder().decode(Snapshot.self, from: data)
            } catch {
                throw LedgerFileError(description: "\(path): not a ledger this version can read (\(error)); move it away to start a new ledger")
            }
        } else {
            state = Snapshot()
        }
    }

    func apply(_ records: [ConsumedRecord]) {
        for record in records {
            unsaved.append(record)
            let key = "\(record.topic)/\(record.partition)"
            guard record.offset >= state.positions[key] ?? 0 else { continue }
            state.positions[key] = record.offset + 1
            do {
                state.ledger.apply(try MessageEvent(json: record.value))
            } catch {
                state.malformedEvents += 1
                logger.error("an event the ledger cannot read; counted and skipped", metadata: [
                    "record": "\(key)/\(record.offset)", "error": "\(error)",
                ])
            }
        }
    }

    /// Writes the snapshot; returns the records it covers, now safe to commit.
    func checkpoint() throws -> [ConsumedRecord] {
        guard !unsaved.isEmpty else { return [] }
        let newest = state.ledger.lastFinished ?? 0
        state.ledger.prune(finishedBefore: newest - Self.rememberFinished)
        let data = try JSONEncoder().encode(state)
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else {
            throw LedgerFileError(description: "\(temporary): cannot be written")
        }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: temporary))
        try handle.synchronize()
        try handle.close()
        guard rename(temporary, path) == 0 else { throw LedgerFileError(description: "\(path): rename failed (errno \(errno))") }
        let done = unsaved
        unsaved = []
        return done
    }

    func candidates(acceptedBefore cutoff: Int64) -> [String] { state.ledger.candidates(acceptedBefore: cutoff) }

    func partitionsWithoutStart(_ keys: [String]) -> [String] { state.ledger.partitionsWithoutStart(keys) }

    func compare(committed: [String: Int64], lows: [String: Int64], now: Int64) {
        state.ledger.compare(committed: committed, lows: lows, now: now)
    }

    /// Remembers the live delivery nodes; returns those seen before and gone now.
    func missingNodes(live: [NodeAnnouncement], now: Int64) -> [(id: String, lastSeen: Int64)] {
        for node in live { state.knownNodes[node.id] = now }
        state.knownNodes = state.knownNodes.filter { now - $0.value < Self.forgetNodesAfter }
        let liveIDs = Set(live.map(\.id))
        return state.knownNodes.filter { !liveIDs.contains($0.key) }.map { ($0.key, $0.value) }.sorted { $0.id < $1.id }
    }

    func report(now: Int64, unaccountedAfter: Int64, held: Set<String>, unanswered: [String: String]) -> LedgerReport {
        var report = state.ledger.report(now: now, unaccountedAfter: unaccountedAfter, held: held, unanswered: unanswered)
        report.malformedEvents = state.malformedEvents
        lastReport = report
        return report
    }
}

struct LedgerFileError: Error, CustomStringConvertible {
    var description: String
}
