/// A column a cluster summary groups by.
public enum SummaryDimension: String, Codable, Sendable, CaseIterable {
    case tenant, domain, pool, node
}

/// The order of a summary's rows: the most of something first, or the oldest first.
public enum SummarySort: String, Codable, Sendable, CaseIterable {
    case queued, oldest, deferred, inFlight = "in-flight", suspended
}

/// A node's own totals, beside the merged rows.
public struct NodeTotals: Codable, Sendable, Equatable {
    public var node: String
    public var spooledMessages: Int
    public var queuedMessages: Int
    public var orphanedMessages: Int
    public var queuedEntries: Int
}

/// Every delivery node's summary merged into rows grouped by the chosen dimensions, with the
/// nodes that did not answer named (`smarthostctl queue summary`).
public struct ClusterQueueSummary: Codable, Sendable, Equatable {
    public var generatedAt: Int64
    public var by: [SummaryDimension]
    public var rows: [QueueSummaryRow]
    public var total: QueueSummaryRow
    public var nodes: [NodeTotals]
    public var unanswered: [String: String]

    public init(nodes summaries: [NodeQueueSummary], unanswered: [String: String], by: [SummaryDimension], sort: SummarySort,
                limit: Int?, now: Int64) {
        generatedAt = now
        self.by = by
        self.unanswered = unanswered
        var groups: [[String?]: QueueSummaryRow] = [:]
        var total = QueueSummaryRow()
        for summary in summaries {
            for row in summary.rows {
                let grouped = Self.project(row, by)
                let key = [grouped.tenant, grouped.domain, grouped.pool, grouped.node]
                var merged = groups[key] ?? grouped.withoutCounts
                merged.add(row)
                groups[key] = merged
                total.add(row)
            }
        }
        nodes = summaries.map {
            NodeTotals(node: $0.node, spooledMessages: $0.spooledMessages, queuedMessages: $0.queuedMessages,
                       orphanedMessages: $0.orphanedMessages, queuedEntries: $0.rows.reduce(0) { $0 + $1.queued })
        }.sorted { $0.node < $1.node }
        let sorted = groups.values.filter { $0.queued > 0 || $0.recent.attempts > 0 }.sorted(by: Self.order(sort))
        rows = limit.map { Array(sorted.prefix($0)) } ?? sorted
        self.total = total
    }

    /// The row's labels that `by` keeps (the others nil).
    private static func project(_ row: QueueSummaryRow, _ by: [SummaryDimension]) -> QueueSummaryRow {
        QueueSummaryRow(node: by.contains(.node) ? row.node : nil, tenant: by.contains(.tenant) ? row.tenant : nil,
                        domain: by.contains(.domain) ? row.domain : nil, pool: by.contains(.pool) ? row.pool : nil)
    }

    static func order(_ sort: SummarySort) -> (QueueSummaryRow, QueueSummaryRow) -> Bool {
        let label = { (row: QueueSummaryRow) in [row.tenant, row.domain, row.pool, row.node].map { $0 ?? "" } }
        return { a, b in
            let (x, y): (Int64, Int64)
            switch sort {
            case .queued: (x, y) = (Int64(b.queued), Int64(a.queued))
            case .deferred: (x, y) = (Int64(b.deferred), Int64(a.deferred))
            case .inFlight: (x, y) = (Int64(b.inFlight), Int64(a.inFlight))
            case .suspended: (x, y) = (Int64(b.suspended), Int64(a.suspended))
            case .oldest: (x, y) = (a.oldestReceivedAt ?? .max, b.oldestReceivedAt ?? .max)
            }
            return x != y ? x < y : label(a).lexicographicallyPrecedes(label(b))
        }
    }
}

extension QueueSummaryRow {
    /// The same labels with nothing counted.
    var withoutCounts: QueueSummaryRow { QueueSummaryRow(node: node, tenant: tenant, domain: domain, pool: pool) }
}
