import QueueRecord

/// What the orphan sweep needs of an unfinished message: which queue entries it should have
/// (one per domain of its pending recipients) and since when it is spooled.
public struct SpoolSlot: Sendable, Equatable {
    public var id: MessageID
    /// The lowercased domains of its pending recipients, in first-seen order.
    public var domains: [String]
    public var spooledAt: UInt64

    public init(id: MessageID, domains: [String], spooledAt: UInt64) {
        self.id = id
        self.domains = domains
        self.spooledAt = spooledAt
    }
}

/// One page of the spool in `seq` order.
public struct SpoolPage: Sendable {
    public var slots: [SpoolSlot]
    /// Rows that do not decode (a damaged file), described; the sweep reports them.
    public var malformed: [String]
    /// Where the next page starts; nil after the last page.
    public var next: Int64?
}

extension Spool {
    /// A page of unfinished messages after `cursor` (0 for the first), read on a reader thread
    /// from one snapshot: the sweep walks the spool without blocking the writer or the caller.
    public func sweepPage(after cursor: Int64, limit: Int) async throws(SpoolError) -> SpoolPage {
        try await read("sweep the spool") { db throws(SpoolError) in
            var page = SpoolPage(slots: [], malformed: [], next: nil)
            var last: Int64?
            var rows = 0
            try db.query("SELECT seq, id, pending, spooled_at FROM message WHERE seq > ? ORDER BY seq LIMIT ?",
                         [.int(cursor), .int(Int64(limit))]) { row throws(SpoolError) in
                rows += 1
                last = row.int(0)
                let rawID = (try? row.text(1)) ?? nil
                guard let rawID, let id = MessageID(parsing: rawID), let pending = (try? row.text(2)) ?? nil, !pending.isEmpty else {
                    page.malformed.append("row \(row.int(0)) (id \(rawID ?? "NULL")): no valid id or pending recipients")
                    return true
                }
                page.slots.append(SpoolSlot(id: id, domains: Self.domains(ofPending: pending), spooledAt: UInt64(max(0, row.int(3)))))
                return true
            }
            page.next = rows == limit ? last : nil
            return page
        }
    }

    /// The lowercased domains of a `pending` column (one address per line; the domain is
    /// after the last `@`, as `Mailbox.normalizedDomain` has it).
    static func domains(ofPending pending: String) -> [String] {
        var seen: Set<String> = []
        var order: [String] = []
        for line in pending.split(separator: "\n") {
            guard let at = line.lastIndex(of: "@") else { continue }
            let domain = line[line.index(after: at)...].lowercased()
            if seen.insert(domain).inserted { order.append(domain) }
        }
        return order
    }

    /// The unfinished messages among `ids`, read now (not from an earlier page): what the sweep
    /// checks again before it calls anything an orphan. Rows that do not decode are left out.
    public func pendingMessages(_ ids: [MessageID]) async throws(SpoolError) -> [SpooledMessage] {
        try await select(Schema.messageColumns, of: ids, "read") { row throws(SpoolError) in try? Schema.decode(row).get() }
    }

    /// Which of `ids` the spool holds unfinished (for the reconciler's ledger).
    public func pendingIDs(among ids: [MessageID]) async throws(SpoolError) -> [MessageID] {
        try await select("id", of: ids, "look up") { row throws(SpoolError) in try row.text(0).flatMap { MessageID(parsing: $0) } }
    }

    /// `columns` of the message rows with these ids, a statement per `idsPerStatement`.
    private func select<T: Sendable>(_ columns: String, of ids: [MessageID], _ verb: String,
                                     _ decode: @escaping @Sendable (Row) throws(SpoolError) -> T?) async throws(SpoolError) -> [T] {
        var found: [T] = []
        for chunk in Self.statementChunks(ids) {
            found += try await read("\(verb) \(chunk.count) messages") { db throws(SpoolError) in
                var rows: [T] = []
                try db.query("SELECT \(columns) FROM message WHERE id IN (\(Self.placeholders(chunk.count)))",
                             chunk.map { .text($0.text) }) { row throws(SpoolError) in
                    if let value = try decode(row) { rows.append(value) }
                    return true
                }
                return rows
            }
        }
        return found
    }

    /// Unfinished messages, counted on a reader thread.
    public func pendingCount() async throws(SpoolError) -> Int {
        try await read("count messages") { db throws(SpoolError) in Int(try db.integer("SELECT count(*) FROM message") ?? 0) }
    }

    static let idsPerStatement = 500

    /// `values` in slices of at most `idsPerStatement`, one SQL statement each.
    static func statementChunks<T>(_ values: [T]) -> [ArraySlice<T>] {
        stride(from: 0, to: values.count, by: idsPerStatement).map { values[$0..<min($0 + idsPerStatement, values.count)] }
    }

    /// `?,?,…`: the parameters of an `IN (…)` list.
    static func placeholders(_ count: Int) -> String { Array(repeating: "?", count: count).joined(separator: ",") }
}

/// An event kept in the spool's outbox until Kafka has it: its record key and JSON value.
public struct OutboxEvent: Sendable, Equatable {
    public var key: [UInt8]
    public var value: [UInt8]

    public init(key: [UInt8], value: [UInt8]) {
        self.key = key
        self.value = value
    }
}

extension Spool {
    /// The oldest outbox events, with their sequence numbers (for `removeFromOutbox`).
    public func outboxPage(limit: Int) async throws(SpoolError) -> [(seq: Int64, event: OutboxEvent)] {
        try await read("read the outbox") { db throws(SpoolError) in
            var page: [(Int64, OutboxEvent)] = []
            try db.query("SELECT seq, event_key, event_value FROM outbox ORDER BY seq LIMIT ?", [.int(Int64(limit))]) { row throws(SpoolError) in
                page.append((row.int(0), OutboxEvent(key: row.blob(1) ?? [], value: row.blob(2) ?? [])))
                return true
            }
            return page
        }
    }

    /// Forgets outbox events Kafka acknowledged.
    public func removeFromOutbox(_ seqs: [Int64]) async throws(SpoolError) {
        guard !seqs.isEmpty else { return }
        try await write("empty the outbox") { db throws(SpoolError) in
            for chunk in Self.statementChunks(seqs) {
                try db.run("DELETE FROM outbox WHERE seq IN (\(Self.placeholders(chunk.count)))", chunk.map { .int($0) })
            }
        }
    }
}
