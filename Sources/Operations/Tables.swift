import Reconciliation

/// Tables for a terminal: columns padded, the free-text column cut to what is left of the
/// terminal's width, so that a row stays one line.
public enum TerminalTable {
    /// `header` and `rows`; the last column is shortened to fit `width` (with an ellipsis).
    public static func render(_ header: [String], _ rows: [[String]], width: Int) -> String {
        guard let lastColumn = header.indices.last else { return "" }
        let widths = header.indices.dropLast().map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        let room = max(16, width - widths.reduce(0, +) - 2 * widths.count)
        let cut = rows.map { row in
            row.enumerated().map { index, cell in index == lastColumn && cell.count > room ? String(cell.prefix(room - 1)) + "…" : cell }
        }
        return ReportFormat.table(header, cut)
    }

    /// `1h05m`, `3d02h`, `42s`: an age at a glance.
    public static func age(_ milliseconds: Int64) -> String {
        let seconds = max(0, milliseconds / 1_000)
        switch seconds {
        case ..<60: return "\(seconds)s"
        case ..<3_600: return "\(seconds / 60)m\(String(format2: seconds % 60))s"
        case ..<86_400: return "\(seconds / 3_600)h\(String(format2: seconds / 60 % 60))m"
        default: return "\(seconds / 86_400)d\(String(format2: seconds / 3_600 % 24))h"
        }
    }

    /// The width to fit: `$COLUMNS` when set and sane, else 120.
    public static func width(environment: [String: String]) -> Int {
        environment["COLUMNS"].flatMap(Int.init).map { min(max($0, 60), 400) } ?? 120
    }
}

extension String {
    /// Two digits, zero-padded.
    init(format2 value: Int64) {
        self = value < 10 ? "0\(value)" : "\(value)"
    }
}

extension ClusterQueueSummary {
    public func table(width: Int) -> String {
        let now = generatedAt
        let labels = by.map(\.rawValue)
        var header = labels + ["queued", "ready", "in-flight", "deferred", "suspended", "held", "limbo", "oldest", "last response"]
        header = header.map { $0.uppercased() }
        func cells(_ row: QueueSummaryRow, _ names: [String]) -> [String] {
            names + ["\(row.queued)", "\(row.ready)", "\(row.inFlight)", "\(row.deferred)", "\(row.suspended)", "\(row.held)", "\(row.limbo)",
                     row.oldestReceivedAt.map { TerminalTable.age(now - $0) } ?? "-", row.lastResponse ?? ""]
        }
        var lines = rows.map { row in
            cells(row, by.map { dimension in
                switch dimension {
                case .tenant: row.tenant ?? ""
                case .domain: row.domain ?? ""
                case .pool: row.pool ?? ""
                case .node: row.node ?? ""
                }
            })
        }
        lines.append(cells(total, ["TOTAL"] + Array(repeating: "", count: max(0, by.count - 1))))
        var text = TerminalTable.render(header, lines, width: width)
        text += "\n" + ReportFormat.table(["NODE", "SPOOLED MESSAGES", "QUEUED MESSAGES", "ORPHANED", "ENTRIES"], nodes.map {
            [$0.node, "\($0.spooledMessages)", "\($0.queuedMessages)", "\($0.orphanedMessages)", "\($0.queuedEntries)"]
        })
        for (node, error) in unanswered.sorted(by: { $0.key < $1.key }) { text += "NOT ANSWERING: \(node): \(error)\n" }
        return text
    }
}

extension [ListedEntry] {
    public func table(width: Int, now: Int64) -> String {
        TerminalTable.render(
            ["NODE", "ID", "TENANT", "JOB", "DOMAIN", "STATE", "ATTEMPTS", "AGE", "NEXT", "RECIPIENTS", "LAST RESPONSE"],
            map {
                [$0.node, $0.id, $0.tenant, $0.job ?? "", $0.domain, $0.state.rawValue, "\($0.attempts)", TerminalTable.age(now - $0.receivedAt),
                 $0.state == .suspended ? "when resumed" : $0.dueAt.map { $0 > now ? "in " + TerminalTable.age($0 - now) : "now" } ?? "-",
                 $0.recipients.count == 1 ? $0.recipients[0] : "\($0.recipients.count) recipients", $0.lastResponse ?? ""]
            }, width: width)
    }
}

extension Diagnosis {
    public func text() -> String {
        var text = healthy ? "healthy: no incident pattern holds (\(scope))\n" : "\(findings.count) incident pattern(s) hold (\(scope))\n"
        for note in notes { text += "note: \(note)\n" }
        for finding in findings {
            text += "\n\(finding.pattern.rawValue): \(finding.summary)\n"
            if let since = finding.since { text += "  since \(ReportFormat.time(since)) (\(TerminalTable.age(generatedAt - since)) ago)\n" }
            for line in finding.evidence { text += "  evidence: \(line)\n" }
            for (index, step) in finding.interventions.enumerated() { text += "  \(index + 1). \(step)\n" }
        }
        for (node, error) in unanswered.sorted(by: { $0.key < $1.key }) { text += "\nNOT ANSWERING: \(node): \(error)\n" }
        return text
    }
}

/// A progress bar on one terminal line: `[#####.....] 512/1,000 entries`.
public struct ProgressBar: Sendable {
    public var total: Int
    public var width = 30

    public init(total: Int) {
        self.total = total
    }

    public func line(done: Int, label: String) -> String {
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        let filled = Int(fraction * Double(width))
        return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] \(done)/\(total) \(label)"
    }
}
