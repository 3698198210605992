import CSQLite
import QueueRecord
import SMTPProtocol

/// The spool's tables (docs/spool.md), versioned with `PRAGMA user_version`.
enum Schema {
    static let version = 2
    /// `PRAGMA application_id`: "SPOL", so that `file(1)` and this code can tell a spool from
    /// any other SQLite database.
    static let applicationID: Int64 = 0x5350_4F4C

    static let tables = """
        CREATE TABLE message (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE CHECK (length(id) = 26),
            tenant TEXT NOT NULL,
            sender TEXT,
            recipients TEXT NOT NULL,
            pending TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            client TEXT NOT NULL,
            helo TEXT NOT NULL,
            tls TEXT,
            auth_user TEXT,
            job TEXT,
            pool TEXT,
            lane TEXT NOT NULL,
            traffic_class TEXT NOT NULL,
            smtputf8 INTEGER NOT NULL,
            eight_bit INTEGER NOT NULL,
            size INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL DEFAULT 0,
            spooled_at INTEGER NOT NULL,
            kafka_topic TEXT,
            kafka_partition INTEGER,
            kafka_offset INTEGER
        );
        CREATE TABLE content (
            seq INTEGER PRIMARY KEY,
            body BLOB NOT NULL
        );
        CREATE TABLE completed (
            id TEXT PRIMARY KEY,
            completed_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX completed_by_time ON completed (completed_at);
        CREATE TABLE quarantine (
            seq INTEGER PRIMARY KEY,
            kafka_topic TEXT NOT NULL,
            kafka_partition INTEGER NOT NULL,
            kafka_offset INTEGER NOT NULL,
            reason TEXT NOT NULL,
            record_key BLOB,
            record_value BLOB NOT NULL,
            quarantined_at INTEGER NOT NULL,
            UNIQUE (kafka_topic, kafka_partition, kafka_offset)
        );
        \(outbox)
        """

    /// Events written in the same transaction as the outcome they report, sent to Kafka by
    /// the outbox relay and deleted once acknowledged (version 2).
    static let outbox = """
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,
            event_key BLOB NOT NULL,
            event_value BLOB NOT NULL
        );
        """

    /// Checks that the writer's file is a spool of a version this code knows (creating the
    /// tables in an empty file), before anything writes to it; then sets WAL and FULL sync.
    static func prepare(_ db: Connection) throws(SpoolError) {
        // Reading the header is the first access: garbage fails here, as SQLITE_NOTADB.
        let applicationID = try db.integer("PRAGMA application_id") ?? 0
        let version = Int(try db.integer("PRAGMA user_version") ?? 0)
        let objects = try db.integer("SELECT count(*) FROM sqlite_schema") ?? 0
        let fresh = applicationID == 0 && version == 0 && objects == 0
        if !fresh {
            guard applicationID == Self.applicationID else {
                throw SpoolError(.notASpool, "open", path: db.path,
                                 reason: "the file is an SQLite database but not a spool (application_id \(applicationID), \(objects) schema objects)")
            }
            guard version <= Self.version else {
                throw SpoolError(.newerSchema(version), "open", path: db.path,
                                 reason: "the spool has schema version \(version), written by a newer smarthost; this one knows up to \(Self.version)")
            }
            guard version >= 1 else {
                throw SpoolError(.notASpool, "open", path: db.path, reason: "the spool has no schema version")
            }
        }
        // WAL: a commit appends to the log and fsyncs it once; readers keep reading their
        // snapshot while the writer writes. FULL: that fsync happens at every commit.
        guard try db.text("PRAGMA journal_mode = WAL")?.lowercased() == "wal" else {
            throw SpoolError(.cannotOpen, "open", path: db.path, reason: "SQLite could not switch the file to WAL mode")
        }
        try db.run("PRAGMA synchronous = FULL")
        guard try db.integer("PRAGMA synchronous") == 2 else {
            throw SpoolError(.cannotOpen, "open", path: db.path, reason: "SQLite did not accept synchronous = FULL")
        }
        // After a checkpoint resets a WAL that grew large (a burst of big messages), truncate it.
        try db.run("PRAGMA journal_size_limit = 67108864")
        try db.run("PRAGMA trusted_schema = OFF")
        if fresh {
            try db.run("BEGIN IMMEDIATE")
            do throws(SpoolError) {
                for statement in tables.split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
                    try db.run(String(statement))
                }
                try db.run("PRAGMA application_id = \(Self.applicationID)")
                try db.run("PRAGMA user_version = \(Self.version)")
                try db.run("COMMIT")
            } catch {
                if db.inTransaction { _ = try? db.run("ROLLBACK") }
                throw error
            }
        }
        // Migrations from older versions, each in its own transaction.
        if !fresh, version < 2 {
            try db.run("BEGIN IMMEDIATE")
            do throws(SpoolError) {
                try db.run(outbox)
                try db.run("PRAGMA user_version = 2")
                try db.run("COMMIT")
            } catch {
                if db.inTransaction { _ = try? db.run("ROLLBACK") }
                throw error
            }
        }
    }

    static let messageColumns = """
        seq, id, tenant, sender, pending, received_at, job, lane, traffic_class, smtputf8, eight_bit, size, \
        attempts, next_attempt_at, spooled_at, kafka_topic, kafka_partition, kafka_offset, pool
        """

    /// A message row (selected with `messageColumns`) as the delivery node sees it. Rows are
    /// checked as strictly as the Kafka record was: the file can be edited, or damaged.
    static func decode(_ row: Row) -> Result<SpooledMessage, SpoolError> {
        let rawID = (try? row.text(1)) ?? nil
        let operation = "read message \(rawID ?? "at row \(row.int(0))")"
        func malformed(_ reason: String) -> SpoolError {
            SpoolError(.malformedRow, operation, path: "", reason: reason)
        }
        do throws(SpoolError) {
            guard let rawID, let id = MessageID(parsing: rawID) else { throw malformed("column id is not a message id") }
            guard let tenant = try row.text(2) else { throw malformed("column tenant is NULL") }
            let smtputf8 = row.int(9) != 0
            func mailbox(_ text: Substring, _ column: String) throws(SpoolError) -> Mailbox {
                do { return try Mailbox(parsing: text, allowUTF8: smtputf8) } catch {
                    throw malformed("column \(column): \(error.description): \(text.prefix(80))")
                }
            }
            let sender = try row.text(3).map { text throws(SpoolError) in try mailbox(Substring(text), "sender") }
            guard let pendingText = try row.text(4), !pendingText.isEmpty else { throw malformed("column pending is empty") }
            var pending: [Mailbox] = []
            for line in pendingText.split(separator: "\n", omittingEmptySubsequences: false) {
                pending.append(try mailbox(line, "pending"))
            }
            guard let laneText = try row.text(7), let lane = AcceptedMessage.Lane(rawValue: laneText) else {
                throw malformed("column lane is not high, normal or low")
            }
            guard let trafficClass = try row.text(8) else { throw malformed("column traffic_class is NULL") }
            let numbers = (received: row.int(5), size: row.int(11), attempts: row.int(12), next: row.int(13), spooled: row.int(14))
            guard numbers.received >= 0, numbers.size >= 0, numbers.attempts >= 0, numbers.next >= 0, numbers.spooled >= 0 else {
                throw malformed("a time, size or attempt count is negative")
            }
            var position: SpoolPosition?
            if let topic = try row.text(15) {
                guard !row.isNull(16), !row.isNull(17), let partition = Int32(exactly: row.int(16)) else {
                    throw malformed("column kafka_partition or kafka_offset is not valid")
                }
                position = SpoolPosition(topic: topic, partition: partition, offset: row.int(17))
            }
            return .success(SpooledMessage(
                id: id, tenant: tenant, sender: sender, pendingRecipients: pending, receivedAt: UInt64(numbers.received),
                job: try row.text(6), pool: try row.text(18), lane: lane, trafficClass: trafficClass, smtputf8: smtputf8, eightBit: row.int(10) != 0,
                size: Int(numbers.size), attempts: Int(numbers.attempts), nextAttemptAt: UInt64(numbers.next),
                spooledAt: UInt64(numbers.spooled), position: position))
        } catch {
            return .failure(error.during(operation, path: ""))
        }
    }

    /// Refuses, before it reaches the writer, a message that would not read back as it was
    /// given: recipients are stored one per line and parsed again at every start.
    static func validate(_ message: AcceptedMessage) throws(SpoolError) {
        func invalid(_ reason: String) -> SpoolError {
            SpoolError(.invalidInput, "insert \(message.id)", path: "", reason: reason)
        }
        func check(_ mailbox: Mailbox, _ role: String) throws(SpoolError) {
            let text = mailbox.description
            guard !text.contains(where: { $0 == "\n" || $0 == "\r" }),
                  (try? Mailbox(parsing: Substring(text), allowUTF8: message.smtputf8)) == mailbox else {
                throw invalid("the \(role) \(text.prefix(80).debugDescription) is not an address that parses back\(message.smtputf8 ? "" : " without SMTPUTF8")")
            }
        }
        guard !message.recipients.isEmpty else { throw invalid("the message has no recipients") }
        guard !message.tenant.isEmpty else { throw invalid("the message has no tenant") }
        guard message.receivedAt <= UInt64(Int64.max) else { throw invalid("receivedAt is out of range") }
        if let sender = message.sender { try check(sender, "sender") }
        for recipient in message.recipients { try check(recipient, "recipient") }
    }
}

extension UInt64 {
    /// Times are stored as SQLite integers (signed); later than year 292 million means "never".
    var storable: Int64 { Int64(clamping: self) }
}
