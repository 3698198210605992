import Foundation

/// How a report is written: JSON for machines, a table for people, CSV for spreadsheets.
public enum ReportFormat: String, Sendable, CaseIterable {
    case json, table, csv

    public var contentType: String {
        switch self {
        case .json: "application/json"
        case .table: "text/plain; charset=utf-8"
        case .csv: "text/csv; charset=utf-8"
        }
    }

    public var fileExtension: String { self == .table ? "txt" : rawValue }

    /// JSON with sorted snake_case keys, as every report and admin answer is written; `{}`
    /// for a value that does not encode.
    public static func json<T: Encodable>(_ value: T) -> String {
        (try? encodedJSON(value)) ?? "{}\n"
    }

    /// As `json`, but a value that does not encode is an error.
    public static func encodedJSON<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
    }

    /// Decodes what `json` wrote.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(type, from: Data(bytes))
    }

    /// RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled.
    public static func csvRow(_ fields: [String]) -> String {
        fields.map { field in
            field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
                ? "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : field
        }.joined(separator: ",") + "\r\n"
    }

    /// Columns padded to their widest cell, numbers right-aligned.
    public static func table(_ header: [String], _ rows: [[String]]) -> String {
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                let pad = String(repeating: " ", count: widths[index] - cell.count)
                return Int(cell) != nil && index > 0 ? pad + cell : cell + pad
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n") + "\n"
    }

    public static func time(_ milliseconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1_000))
    }
}

extension ReconcileReport {
    public func rendered(as format: ReportFormat) -> String {
        switch format {
        case .json:
            return ReportFormat.json(self)
        case .csv:
            return ReportFormat.csvRow(["node", "id", "tenant", "domain", "queue", "reason", "age_seconds", "age_bucket", "attempts",
                                        "repaired", "error"])
                + orphans.map {
                    ReportFormat.csvRow([$0.node, $0.id, $0.tenant, $0.domain, $0.queue, $0.reason, "\($0.ageSeconds)", $0.ageBucket,
                                         "\($0.attempts)", "\($0.repaired)", $0.error ?? ""])
                }.joined()
        case .table:
            var text = "Orphan reconciliation report, \(ReportFormat.time(generatedAt))\n\n"
            text += ReportFormat.table(
                ["node", "swept at", "ms", "spooled", "entries", "orphans", "repaired", "limbo", "limbo repaired", "malformed"],
                sweeps.map {
                    [$0.node, ReportFormat.time($0.startedAt), "\($0.durationMilliseconds)", "\($0.spooledMessages)", "\($0.entriesChecked)",
                     "\($0.orphansFound)", "\($0.orphansRepaired)", "\($0.limboRetried)", "\($0.limboRepaired)", "\($0.malformedRows.count)"]
                })
            for (node, error) in unanswered.sorted(by: { $0.key < $1.key }) { text += "NOT ANSWERING: \(node): \(error)\n" }
            text += "\nsince each node started\n" + ReportFormat.table(
                ["node", "sweeps", "orphans", "repaired", "limbo", "limbo repaired"],
                sweeps.map {
                    [$0.node, "\($0.sinceStart.sweeps)", "\($0.sinceStart.orphansFound)", "\($0.sinceStart.orphansRepaired)",
                     "\($0.sinceStart.limboRetried)", "\($0.sinceStart.limboRepaired)"]
                })
            for (title, dimension) in [("tenant", \OrphanRecord.tenant), ("domain", \.domain), ("age", \.ageBucket), ("reason", \.reason)] {
                let rows = breakdown(dimension)
                guard !rows.isEmpty else { continue }
                text += "\nby \(title)\n" + ReportFormat.table([title, "found", "repaired"], rows.prefix(20).map { [$0.key, "\($0.found)", "\($0.repaired)"] })
            }
            let listed = orphans.prefix(50)
            if !listed.isEmpty {
                text += "\norphans (\(listed.count) of \(orphans.count) listed; --format csv lists all)\n"
                text += ReportFormat.table(["node", "id", "tenant", "domain", "age", "reason", "repaired"],
                                           listed.map { [$0.node, $0.id, $0.tenant, $0.domain, "\($0.ageSeconds)s", $0.reason, "\($0.repaired)"] })
            } else {
                text += "\nno orphans\n"
            }
            return text
        }
    }
}

extension LedgerReport {
    public func rendered(as format: ReportFormat) -> String {
        switch format {
        case .json:
            return ReportFormat.json(self)
        case .csv:
            let header = ReportFormat.csvRow(["status", "id", "tenant", "accepted_at", "age_seconds", "open_recipients", "record",
                                              "last_event", "last_node", "last_time"])
            let rows = unaccounted.map { ("unaccounted", $0) } + unconfirmed.map { ("unconfirmed", $0) }
                + withoutReception.map { ("without-reception", $0) }
            let missing = rows.map { status, missing in
                ReportFormat.csvRow([status, missing.id, missing.tenant, missing.acceptedAt == 0 ? "" : ReportFormat.time(missing.acceptedAt),
                                     "\(missing.ageSeconds)", "\(missing.openRecipients)", missing.record ?? "", missing.lastEvent,
                                     missing.lastNode, ReportFormat.time(missing.lastTime)])
            }
            // One row per copy and per repeated outcome: status `duplicate`, `record` the copy's.
            let duplicated = duplicates.flatMap { duplicate in
                duplicate.copies.map {
                    ReportFormat.csvRow(["duplicate", duplicate.id, duplicate.tenant, "", "", "", $0.record ?? "", "Reception", $0.node, ""])
                } + duplicate.repeats.map {
                    ReportFormat.csvRow(["duplicate", duplicate.id, duplicate.tenant, "", "", "", "", "\($0.outcome) \($0.recipient)", $0.node,
                                         ReportFormat.time($0.time)])
                }
            }
            let unspooled = unspooledRecords.map {
                ReportFormat.csvRow(["unspooled-record", "", "", "", "", "", $0.record, "", "", ReportFormat.time($0.since)])
            }
            return header + (missing + unspooled + duplicated).joined()
        case .table:
            var text = "Cluster ledger, \(ReportFormat.time(generatedAt))\n\n"
            text += ReportFormat.table(["recipients", "count"], [
                ["accepted", "\(totals.acceptedRecipients)"], ["delivered", "\(totals.delivered)"], ["bounced", "\(totals.bounced)"],
                ["expired", "\(totals.expired)"], ["deleted", "\(totals.deleted)"], ["queued", "\(queuedRecipients)"],
                ["unaccounted", "\(unaccountedRecipients)"], ["unconfirmed", "\(unconfirmedRecipients)"],
                ["duplicate outcomes", "\(totals.duplicateOutcomes)"],
                ["outcome events resent", "\(totals.resentOutcomes ?? 0)"],
            ])
            text += "\nmessages: \(totals.acceptedMessages) accepted (\(totals.notificationMessages) of them DSNs), \(totals.finishedMessages) finished, "
                + "\(totals.duplicateMessages) duplicated; \(totals.quarantinedRecords) records quarantined as not messages\n"
            text += balances ? "balance: holds (accepted = delivered + bounced + expired + deleted + queued)\n"
                : "balance: DOES NOT HOLD (\(imbalance ?? ""))\n"
            for (node, error) in unanswered.sorted(by: { $0.key < $1.key }) { text += "NOT ANSWERING: \(node): \(error)\n" }
            for (title, list) in [("unaccounted (in no spool, no terminal event)", unaccounted), ("unconfirmed (a node did not answer)", unconfirmed)]
            where !list.isEmpty {
                text += "\n\(title)\n" + ReportFormat.table(["id", "tenant", "age", "record", "last seen"], list.prefix(100).map {
                    [$0.id, $0.tenant, "\($0.ageSeconds)s", $0.record ?? "-", "\($0.lastEvent) on \($0.lastNode) at \(ReportFormat.time($0.lastTime))"]
                })
            }
            if !withoutReception.isEmpty {
                text += "\noutcomes without a Reception (an acceptance the ledger never learnt)\n"
                    + ReportFormat.table(["id", "tenant", "last seen"], withoutReception.prefix(100).map {
                        [$0.id, $0.tenant, "\($0.lastEvent) on \($0.lastNode) at \(ReportFormat.time($0.lastTime))"]
                    })
            }
            if let recordsUnchecked { text += "RECORDS NOT CHECKED: the delivery group's offsets could not be read: \(recordsUnchecked)\n" }
            if !unspooledRecords.isEmpty {
                text += "\nKafka records no spool took (the delivery nodes' consumers passed them; kcat -C -t TOPIC -p PARTITION -o OFFSET -c 1 shows one)\n"
                    + ReportFormat.table(["record", "missing since"], unspooledRecords.prefix(100).map { [$0.record, ReportFormat.time($0.since)] })
            }
            if !quarantined.isEmpty {
                text += "\nquarantined records (not messages; kept in the node's spool)\n"
                    + ReportFormat.table(["record", "node", "reason"], quarantined.prefix(100).map { [$0.record, $0.node, $0.reason] })
            }
            if !duplicates.isEmpty {
                text += "\nduplicates (each copy spooled, each repeated outcome)\n"
                    + ReportFormat.table(["id", "tenant", "copies", "repeated outcomes"], duplicates.prefix(100).map { duplicate in
                        [duplicate.id, duplicate.tenant, duplicate.copies.map { "\($0.node) \($0.record ?? "(made there)")" }.joined(separator: ", "),
                         duplicate.repeats.map { "\($0.outcome) \($0.recipient) by \($0.node)" }.joined(separator: ", ")]
                    })
                if duplicates.count > 100 { text += "(\(duplicates.count - 100) more in the JSON and CSV reports)\n" }
            }
            return text
        }
    }
}

extension ReportFormat {
    /// The `format` of an admin request's query: JSON when there is none, nil when it names
    /// no format (`refusal` says so).
    public init?(query: [String: String]) {
        self.init(rawValue: query["format"] ?? ReportFormat.json.rawValue)
    }

    public static func refusal(_ query: [String: String]) -> String {
        "format must be json, table or csv, got \(query["format"] ?? "")"
    }
}

/// What the reconciler asks a delivery node (`POST /admin/spool/lookup`) and its answer.
public struct SpoolLookup: Codable, Sendable, Equatable {
    /// Message ids.
    public var ids: [String]

    public init(ids: [String]) {
        self.ids = ids
    }

    public struct Answer: Codable, Sendable, Equatable {
        public var node: String
        /// Those of the ids the node's spool holds unfinished.
        public var held: [String]

        public init(node: String, held: [String]) {
            self.node = node
            self.held = held
        }
    }
}
