import NodeHTTP
import Operations
import QueueRecord
import Reconciliation

/// A delivery node's admin API routes (docs/admin-api.md). Every bad request gets a 4xx with
/// a JSON error naming what was wrong, and changes nothing.
public struct DeliveryAdmin: Sendable {
    let node: DeliveryNode
    let faults: FaultInjector?

    public init(node: DeliveryNode, faults: FaultInjector?) {
        self.node = node
        self.faults = faults
    }

    /// The most ids one spool lookup may ask about.
    public static let maximumLookup = 100_000

    public func handle(_ request: AdminRequest) async -> AdminResponse? {
        switch (request.method, request.path) {
        case ("GET", "/admin/queue/counts"):
            do {
                return .json(try await node.manager.view())
            } catch {
                return .error(503, "the spool could not be read: \(error)")
            }
        case ("GET", "/admin/queue/summary"):
            do {
                return .json(try await node.manager.summary(try QueueFilter(query: request.query)))
            } catch let error as QueueRequestError {
                return .error(400, error.description)
            } catch {
                return .error(503, "the spool could not be read: \(error)")
            }
        case ("GET", "/admin/queue/messages"):
            do {
                let filter = try QueueFilter(query: request.query, extra: ["limit"])
                let limit = try Self.listLimit(request.query["limit"])
                return .json(await node.manager.listing(filter, limit: limit))
            } catch {
                return .error(400, error.description)
            }
        case ("POST", "/admin/queue/retry"):
            do {
                return .json(await node.manager.retry(try QueueActionRequest.parse(request.body, deleting: false)))
            } catch {
                return .error(400, error.description)
            }
        case ("POST", "/admin/queue/delete"):
            do {
                return .json(await node.manager.delete(try QueueActionRequest.parse(request.body, deleting: true)))
            } catch {
                return .error(400, error.description)
            }
        case ("GET", "/admin/reconcile/report"):
            guard let format = ReportFormat(query: request.query) else { return .error(400, ReportFormat.refusal(request.query)) }
            let sweeps = await node.manager.lastSweep.map { [$0] } ?? []
            let report = ReconcileReport(generatedAt: Int64(MessageID.currentMilliseconds()), sweeps: sweeps)
            return AdminResponse(status: 200, contentType: format.contentType, body: report.rendered(as: format))
        case ("POST", "/admin/reconcile/sweep"):
            guard let format = ReportFormat(query: request.query) else { return .error(400, ReportFormat.refusal(request.query)) }
            let report = ReconcileReport(generatedAt: Int64(MessageID.currentMilliseconds()), sweeps: [await node.sweepNow(trigger: "request")])
            return AdminResponse(status: 200, contentType: format.contentType, body: report.rendered(as: format))
        case ("POST", "/admin/spool/lookup"):
            return await lookup(request.body)
        case ("POST", let path) where path.hasPrefix("/admin/faults/"):
            return await fault(String(path.dropFirst("/admin/faults/".count)), request)
        default:
            return nil
        }
    }

    /// `limit` of a queue listing: 1 to 100,000, 100 when not given.
    static func listLimit(_ text: String?) throws(QueueRequestError) -> Int {
        guard let text else { return 100 }
        guard let limit = Int(text), (1...QueueActionRequest.maximumLimit).contains(limit) else {
            throw QueueRequestError("limit must be from 1 to \(QueueActionRequest.maximumLimit), got \(text.prefix(40))")
        }
        return limit
    }

    /// Which of the given message ids this node's spool holds unfinished (the reconciler asks).
    private func lookup(_ body: [UInt8]) async -> AdminResponse {
        let lookup: SpoolLookup
        do {
            lookup = try ReportFormat.decode(SpoolLookup.self, from: body)
        } catch {
            return .error(400, #"expected {"ids": ["<message id>", ...]}"#)
        }
        guard lookup.ids.count <= Self.maximumLookup else {
            return .error(400, "at most \(Self.maximumLookup) ids per lookup, got \(lookup.ids.count)")
        }
        var ids: [MessageID] = []
        for text in lookup.ids {
            guard let id = MessageID(parsing: text) else { return .error(400, "not a message id: \(text.prefix(80))") }
            ids.append(id)
        }
        do {
            let held = try await node.manager.spool.pendingIDs(among: ids)
            return .json(SpoolLookup.Answer(node: node.manager.settings.nodeID, held: held.map(\.text)))
        } catch {
            return .error(503, "the spool could not be read: \(error)")
        }
    }

    private func fault(_ name: String, _ request: AdminRequest) async -> AdminResponse {
        guard let faults else { return .faultInjectionOff }
        struct Armed: Encodable {
            var fault: String
            var count: Int
            /// drop-scheduled: the messages whose entries were dropped.
            var ids: [String]?
        }
        var count = 1
        if name != "crash-before-spool" {
            guard let text = request.query["count"], let value = Int(text), (1...1_000_000).contains(value) else {
                return .error(400, "count must be an integer from 1 to 1000000, got \(request.query["count"] ?? "nothing")")
            }
            count = value
        }
        var ids: [String]?
        switch name {
        case "drop-scheduled":
            ids = await node.manager.dropScheduledSilently(count)
            count = ids?.count ?? 0
        case "fail-reinserts": faults.failReinserts(count)
        case "skip-records": faults.skipRecords(count)
        case "fail-spool-writes": faults.failSpoolWrites(count)
        case "fail-body-reads": faults.failBodyReads(count)
        case "fail-dsn-queueing": faults.failNotifications(count)
        case "crash-before-spool": faults.crashBeforeSpool()
        default:
            return .error(404, "no such fault: \(name) (drop-scheduled, fail-reinserts, skip-records, fail-spool-writes, fail-body-reads, "
                               + "fail-dsn-queueing, crash-before-spool)")
        }
        return .json(Armed(fault: name, count: count, ids: ids))
    }

}
