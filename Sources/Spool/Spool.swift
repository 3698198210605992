import CSQLite
import Dispatch
import Foundation
import QueueRecord
import SMTPProtocol
import Synchronization

/// A delivery node's durable spool: one SQLite file (`spool.sqlite`) in WAL mode, written by one
/// thread that commits every queued operation in one transaction, so that concurrent callers
/// share one fsync (docs/spool.md).
///
/// Durability contract: when `insert`, `settle`, `remove` or `quarantine` returns, its change is
/// committed and fsynced; when it throws, nothing of it was written.
///
/// Sendable without `@unchecked`: the SQLite connections are not stored here but live as locals
/// of the threads that use them (one writer, `Options.readers` readers); everything shared with
/// those threads is a `Mutex`, a semaphore or a job queue.
public final class Spool: Sendable {
    public struct Options: Sendable {
        /// How long ids of finished messages are remembered, so that a Kafka redelivery of a
        /// finished message is recognised (milliseconds; 7 days).
        public var completedRetention: UInt64
        /// Reader threads, each with a read-only connection: `content(of:)` and the other reads.
        public var readers: Int
        /// The WAL size (in pages, 4 KiB by default) past which the writer runs a passive
        /// checkpoint after answering its callers.
        public var checkpointPages: Int
        /// Milliseconds since the epoch; replaceable in tests.
        public var clock: @Sendable () -> UInt64

        public init(completedRetention: UInt64 = 7 * 24 * 3_600_000, readers: Int = 2, checkpointPages: Int = 4_000,
                    clock: @escaping @Sendable () -> UInt64 = { MessageID.currentMilliseconds() }) {
            self.completedRetention = completedRetention
            self.readers = readers
            self.checkpointPages = checkpointPages
            self.clock = clock
        }
    }

    public static let fileName = "spool.sqlite"

    public let directory: String
    /// The database file.
    public let path: String
    let options: Options
    private let writes = JobQueue<WriteJob>()
    private let reads = JobQueue<ReadJob>()
    private let counters = Counters()
    private let lifecycle: Mutex<Lifecycle>
    private let writerExited = DispatchSemaphore(value: 0)
    private let readerExited = DispatchSemaphore(value: 0)

    private struct Lifecycle {
        var closed = false
        var writer = false
        var readers = 0
        /// The locked directory's descriptor (an flock held while the spool is open).
        var lock: Int32
    }

    private init(directory: String, options: Options, lock: Int32) {
        self.directory = directory
        path = directory.hasSuffix("/") ? directory + Self.fileName : directory + "/" + Self.fileName
        self.options = options
        lifecycle = Mutex(Lifecycle(lock: lock))
    }

    deinit {
        close()
    }

    // MARK: - Opening and closing

    /// Opens the spool in `directory`, creating both if needed. Refuses, naming the path, a
    /// directory that is a file, a spool another `Spool` has open, a file that is not a spool
    /// and a spool written by a newer version.
    public static func open(directory: String, options: Options = Options()) throws(SpoolError) -> Spool {
        try makeDirectory(directory)
        let lock = try lockDirectory(directory)
        let spool = Spool(directory: directory, options: options, lock: lock)
        do throws(SpoolError) {
            try spool.startWriter()
            for index in 0..<max(options.readers, 1) {
                try spool.startReader(index)
            }
        } catch {
            spool.close()
            throw error
        }
        return spool
    }

    /// Finishes the queued writes, then closes the connections (the writer's last, so that it
    /// checkpoints and removes the WAL) and releases the directory. Later calls fail with `.closed`.
    public func close() {
        let first = lifecycle.withLock { state -> Bool in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        reads.close()
        let (readers, writer) = lifecycle.withLock { ($0.readers, $0.writer) }
        for _ in 0..<readers { readerExited.wait() }
        writes.close()
        if writer { writerExited.wait() }
        lifecycle.withLock { state in
            closeDescriptor(state.lock)
            state.lock = -1
        }
    }

    private func startWriter() throws(SpoolError) {
        let ready = Handoff<Result<Void, SpoolError>>()
        let (path, writes, counters, options, exited) = (path, writes, counters, options, writerExited)
        lifecycle.withLock { $0.writer = true }
        startThread("spool-writer") {
            let db: Connection
            do throws(SpoolError) {
                db = try Connection(path: path, readOnly: false)
                do throws(SpoolError) {
                    try Schema.prepare(db)
                } catch {
                    db.close()
                    throw error
                }
            } catch {
                ready.put(.failure(error.during("open", path: path)))
                exited.signal()
                return
            }
            db.trackWAL()
            ready.put(.success(()))
            Writer(db: db, counters: counters, options: options).run(writes)
            db.close()
            exited.signal()
        }
        try ready.wait().get()
    }

    private func startReader(_ index: Int) throws(SpoolError) {
        let ready = Handoff<Result<Void, SpoolError>>()
        let (path, reads, exited) = (path, reads, readerExited)
        lifecycle.withLock { $0.readers += 1 }
        startThread("spool-reader-\(index)") {
            let db: Connection
            do throws(SpoolError) {
                db = try Connection(path: path, readOnly: true)
            } catch {
                ready.put(.failure(error.during("open a reader", path: path)))
                exited.signal()
                return
            }
            ready.put(.success(()))
            while let jobs = reads.take(all: false) {
                for job in jobs { job.run(db) }
            }
            db.close()
            exited.signal()
        }
        try ready.wait().get()
    }

    private static func makeDirectory(_ directory: String) throws(SpoolError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw SpoolError(.notADirectory, "open", path: directory, reason: "the spool's path exists and is not a directory")
            }
            return
        }
        do {
            // Mail is private: only the node's user reads the spool.
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw SpoolError(.cannotOpen, "create the spool directory", path: directory, reason: "\(error)")
        }
    }

    /// Two nodes (or two `Spool`s) on one spool would deliver its messages twice.
    private static func lockDirectory(_ directory: String) throws(SpoolError) -> Int32 {
        let descriptor = openDirectory(directory)
        guard descriptor >= 0 else {
            throw SpoolError(.cannotOpen, "open", path: directory, reason: String(cString: strerror(errno)))
        }
        // A child process forked meanwhile holds a copy of a just-closed spool's lock until it
        // execs (O_CLOEXEC): a spool reopened in that instant waits it out, for at most a second.
        var locked = flock(descriptor, LOCK_EX | LOCK_NB) == 0
        for _ in 0..<50 where !locked && errno == EWOULDBLOCK {
            usleep(20_000)
            locked = flock(descriptor, LOCK_EX | LOCK_NB) == 0
        }
        guard locked else {
            let reason = errno == EWOULDBLOCK ? "another spool (this process or another) has the directory open" : String(cString: strerror(errno))
            closeDescriptor(descriptor)
            throw SpoolError(.locked, "open", path: directory, reason: reason)
        }
        return descriptor
    }

    // MARK: - Writing (group commit)

    /// Spools messages in one transaction; per message, true if newly spooled, false if the
    /// spool already holds its id or finished it within `completedRetention` (a Kafka
    /// redelivery). A message that cannot be stored as given (an address that does not parse
    /// back, no recipients) fails the whole call before anything is written.
    /// `receptions` (none, or one per message) go into the outbox in the same transaction, for
    /// each message newly spooled: so the ledger learns of every message a spool took, from
    /// the spool that took it, whatever process dies when.
    public func insert(_ messages: [(AcceptedMessage, SpoolPosition?)], receptions: [OutboxEvent] = []) async throws(SpoolError) -> [Bool] {
        guard !messages.isEmpty else { return [] }
        precondition(receptions.isEmpty || receptions.count == messages.count, "one Reception per message, or none")
        for (message, _) in messages {
            do throws(SpoolError) { try Schema.validate(message) } catch { throw error.during("insert", path: path) }
        }
        let clock = options.clock
        return try await write("insert \(messages.count == 1 ? messages[0].0.id.text : "of \(messages.count) messages")") { db throws(SpoolError) in
            let now = clock().storable
            var inserted: [Bool] = []
            inserted.reserveCapacity(messages.count)
            for (index, (message, position)) in messages.enumerated() {
                if try db.exists("SELECT 1 FROM completed WHERE id = ?", [.text(message.id.text)]) {
                    inserted.append(false)
                    continue
                }
                let recipients = message.recipients.map(\.description).joined(separator: "\n")
                var seq: Int64?
                try db.query(Self.insertMessage, [
                    .text(message.id.text), .text(message.tenant), .text(message.sender?.description), .text(recipients),
                    .text(recipients), .int(message.receivedAt.storable), .text(message.client), .text(message.helo),
                    .text(message.tls), .text(message.authenticatedUser), .text(message.job), .text(message.lane.rawValue),
                    .text(message.trafficClass), .bool(message.smtputf8), .bool(message.eightBit), .int(message.content.count),
                    .int(now), .text(position?.topic), position.map { .int(Int64($0.partition)) } ?? .null,
                    position.map { .int($0.offset) } ?? .null, .text(message.pool),
                ]) { row throws(SpoolError) in
                    seq = row.int(0)
                    return false
                }
                guard let seq else {
                    inserted.append(false)
                    continue
                }
                try db.run("INSERT INTO content (seq, body) VALUES (?, ?)", [.int(seq), .blob(message.content)])
                if !receptions.isEmpty { try Self.addToOutbox(receptions[index], db) }
                inserted.append(true)
            }
            return inserted
        }
    }

    /// One message; see `insert(_:)`.
    public func insert(_ message: AcceptedMessage, position: SpoolPosition?, reception: OutboxEvent? = nil) async throws(SpoolError) -> Bool {
        try await insert([(message, position)], receptions: reception.map { [$0] } ?? [])[0]
    }

    private static func addToOutbox(_ event: OutboxEvent, _ db: Connection) throws(SpoolError) {
        try db.run("INSERT INTO outbox (event_key, event_value) VALUES (?, ?)", [.blob(event.key), .blob(event.value)])
    }

    private static let insertMessage = """
        INSERT INTO message (id, tenant, sender, recipients, pending, received_at, client, helo, tls, auth_user, job, lane, \
        traffic_class, smtputf8, eight_bit, size, spooled_at, kafka_topic, kafka_partition, kafka_offset, pool)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO NOTHING RETURNING seq
        """

    /// Records an attempt: `finalRecipients` (delivered, or failed for good) leave the pending
    /// list (matched by their exact text), and the attempt count and next attempt time are
    /// stored. When no recipient remains, the message and its content are deleted and its id is
    /// remembered as completed. True when the message is gone (also for an unknown id).
    /// `nextAttemptAt` beyond `Int64.max` is stored as `Int64.max`.
    /// `events` go into the outbox in the same transaction (see `outboxPage`), so an outcome
    /// and the events that report it are durable together, or neither is.
    @discardableResult
    public func settle(_ id: MessageID, finalRecipients: [Mailbox], attempts: Int, nextAttemptAt: UInt64,
                       events: [OutboxEvent] = []) async throws(SpoolError) -> Bool {
        let finals = Set(finalRecipients.map(\.description))
        let clock = options.clock
        return try await write("settle \(id)") { db throws(SpoolError) in
            for event in events { try Self.addToOutbox(event, db) }
            guard let (seq, pending) = try Self.pending(of: id, db) else { return true }
            let remaining = pending.split(separator: "\n").filter { !finals.contains(String($0)) }
            if remaining.isEmpty {
                try Self.delete(seq: seq, id: id, now: clock().storable, db)
                return true
            }
            try db.run("UPDATE message SET pending = ?, attempts = ?, next_attempt_at = ? WHERE seq = ?",
                       [.text(remaining.joined(separator: "\n")), .int(Int64(max(attempts, 0))), .int(nextAttemptAt.storable), .int(seq)])
            return false
        }
    }

    /// Deletes a message whatever its recipients (an administrator's delete, or a bounce of
    /// all); its id is remembered as completed. False when the spool did not hold it.
    @discardableResult
    public func remove(_ id: MessageID) async throws(SpoolError) -> Bool {
        let clock = options.clock
        return try await write("remove \(id)") { db throws(SpoolError) in
            guard let (seq, _) = try Self.pending(of: id, db) else { return false }
            try Self.delete(seq: seq, id: id, now: clock().storable, db)
            return true
        }
    }

    private static func pending(of id: MessageID, _ db: Connection) throws(SpoolError) -> (Int64, String)? {
        var found: (Int64, String)?
        try db.query("SELECT seq, pending FROM message WHERE id = ?", [.text(id.text)]) { row throws(SpoolError) in
            found = (row.int(0), try row.text(1) ?? "")
            return false
        }
        return found
    }

    private static func delete(seq: Int64, id: MessageID, now: Int64, _ db: Connection) throws(SpoolError) {
        try db.run("DELETE FROM content WHERE seq = ?", [.int(seq)])
        try db.run("DELETE FROM message WHERE seq = ?", [.int(seq)])
        try db.run("""
            INSERT INTO completed (id, completed_at) VALUES (?, ?)
            ON CONFLICT (id) DO UPDATE SET completed_at = excluded.completed_at
            """, [.text(id.text), .int(now)])
    }

    /// Keeps a Kafka record that is not a valid message, with the reason, so that skipping it
    /// is never silent. The same record quarantined again (a redelivery) keeps its first entry.
    /// `event` (its Quarantined event) goes into the outbox in the same transaction, the first
    /// time only; true when the record was not quarantined before.
    @discardableResult
    public func quarantine(topic: String, partition: Int32, offset: Int64, reason: String, key: [UInt8]?, value: [UInt8],
                           event: OutboxEvent? = nil) async throws(SpoolError) -> Bool {
        let clock = options.clock
        return try await write("quarantine \(topic)/\(partition)/\(offset)") { db throws(SpoolError) in
            var inserted = false
            try db.query("""
                INSERT INTO quarantine (kafka_topic, kafka_partition, kafka_offset, reason, record_key, record_value, quarantined_at)
                VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING seq
                """, [.text(topic), .int(Int64(partition)), .int(offset), .text(reason), key.map(SQLValue.blob) ?? .null,
                      .blob(value), .int(clock().storable)]) { _ throws(SpoolError) in
                inserted = true
                return false
            }
            if inserted, let event { try Self.addToOutbox(event, db) }
            return inserted
        }
    }

    /// Queues a write for the writer thread and waits until its transaction has committed.
    /// Not cancellable: once queued, the operation happens (or fails) as a whole.
    func write<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (Connection) throws(SpoolError) -> T) async throws(SpoolError) -> T {
        let path = path
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, SpoolError>, Never>) in
            let job = WriteJob(operation: operation, apply: { db throws(SpoolError) in
                let value = try body(db)
                return { continuation.resume(returning: .success(value)) }
            }, fail: { error in
                continuation.resume(returning: .failure(error))
            })
            if !writes.submit(job) {
                continuation.resume(returning: .failure(SpoolError(.closed, operation, path: path, reason: "the spool is closed")))
            }
        }
        return try result.get()
    }

    /// Group commit at work so far.
    public var statistics: SpoolStatistics { counters.value.withLock { $0 } }

    /// The error `operation` would fail with on a full disk, made on purpose by a test's fault
    /// injection (`testing.fault_injection`) for the caller's real failure branch to handle.
    public func injectedFailure(_ operation: String) -> SpoolError {
        SpoolError(.sqlite, operation, path: path, reason: "injected fault")
    }

    /// Writes waiting for the writer (for tests).
    var pendingWrites: Int { writes.pending }

    /// What the spool takes on disk: the database file plus its write-ahead log, in bytes (the
    /// `-shm` index is not counted: it is memory, mapped). Pages freed by finished messages are
    /// reused, not returned, so this follows the spool's largest recent size, not its content.
    public var diskBytes: Int {
        [path, path + "-wal"].reduce(0) { total, file in
            var info = stat()
            return stat(file, &info) == 0 ? total + Int(info.st_size) : total
        }
    }

    // MARK: - Reading (reader threads, never the writer's connection)

    /// The message's content, nil if the spool does not hold it.
    public func content(of id: MessageID) async throws(SpoolError) -> [UInt8]? {
        try await read("read the content of \(id)") { db throws(SpoolError) in
            var content: [UInt8]?
            try db.query("SELECT body FROM content WHERE seq = (SELECT seq FROM message WHERE id = ?)", [.text(id.text)]) { row throws(SpoolError) in
                content = row.blob(0) ?? []
                return false
            }
            return content
        }
    }

    /// Calls `body` with every unfinished message, in spool order, reading metadata only (a
    /// page of rows at a time, so a million messages need no more memory than their
    /// `SpooledMessage`s). A row that no longer decodes goes to `malformed` and enumeration
    /// goes on; without `malformed`, it ends enumeration with its error. Blocks the calling
    /// thread: meant for startup and for tools.
    public func forEach(malformed: ((SpoolError) -> Void)? = nil, _ body: (SpooledMessage) -> Void) throws(SpoolError) {
        let pageSize = 1_000
        var after: Int64 = 0
        while true {
            let from = after
            let page = try readNow("enumerate messages") { db throws(SpoolError) in
                var rows: [(Int64, Result<SpooledMessage, SpoolError>)] = []
                try db.query("SELECT \(Schema.messageColumns) FROM message WHERE seq > ? ORDER BY seq LIMIT ?",
                             [.int(from), .int(pageSize)]) { row throws(SpoolError) in
                    rows.append((row.int(0), Schema.decode(row)))
                    return true
                }
                return rows
            }
            for (_, result) in page {
                switch result {
                case .success(let message): body(message)
                case .failure(let error):
                    guard let malformed else { throw error.during("enumerate messages", path: path) }
                    malformed(error.during("enumerate messages", path: path))
                }
            }
            guard page.count == pageSize, let last = page.last else { return }
            after = last.0
        }
    }

    /// One message's metadata, nil if the spool does not hold it.
    public func message(_ id: MessageID) throws(SpoolError) -> SpooledMessage? {
        let result = try readNow("read message \(id)") { db throws(SpoolError) in
            var result: Result<SpooledMessage, SpoolError>?
            try db.query("SELECT \(Schema.messageColumns) FROM message WHERE id = ?", [.text(id.text)]) { row throws(SpoolError) in
                result = Schema.decode(row)
                return false
            }
            return result
        }
        return try result?.mapError { $0.during("read message \(id)", path: path) }.get()
    }

    public func contains(_ id: MessageID) throws(SpoolError) -> Bool {
        try readNow("look up \(id)") { db throws(SpoolError) in
            try db.exists("SELECT 1 FROM message WHERE id = ?", [.text(id.text)])
        }
    }

    /// True when the message was finished (or removed) within `completedRetention`.
    public func isCompleted(_ id: MessageID) throws(SpoolError) -> Bool {
        try readNow("look up completed \(id)") { db throws(SpoolError) in
            try db.exists("SELECT 1 FROM completed WHERE id = ?", [.text(id.text)])
        }
    }

    /// Unfinished messages.
    public func count() throws(SpoolError) -> Int {
        try readNow("count messages") { db throws(SpoolError) in
            Int(try db.integer("SELECT count(*) FROM message") ?? 0)
        }
    }

    /// Every quarantined record, oldest first, without values.
    public func quarantined() throws(SpoolError) -> [QuarantinedRecord] {
        try readNow("list quarantined records") { db throws(SpoolError) in
            var records: [QuarantinedRecord] = []
            try db.query("""
                SELECT kafka_topic, kafka_partition, kafka_offset, reason, quarantined_at, record_key, length(record_value)
                FROM quarantine ORDER BY seq
                """) { row throws(SpoolError) in
                records.append(QuarantinedRecord(
                    topic: try row.text(0) ?? "", partition: Int32(truncatingIfNeeded: row.int(1)), offset: row.int(2),
                    reason: try row.text(3) ?? "", quarantinedAt: UInt64(max(row.int(4), 0)), key: row.blob(5),
                    valueSize: Int(row.int(6))))
                return true
            }
            return records
        }
    }

    /// A quarantined record's value, nil if there is no such record.
    public func quarantinedValue(topic: String, partition: Int32, offset: Int64) throws(SpoolError) -> [UInt8]? {
        try readNow("read quarantined \(topic)/\(partition)/\(offset)") { db throws(SpoolError) in
            var value: [UInt8]?
            try db.query("SELECT record_value FROM quarantine WHERE kafka_topic = ? AND kafka_partition = ? AND kafka_offset = ?",
                         [.text(topic), .int(Int64(partition)), .int(offset)]) { row throws(SpoolError) in
                value = row.blob(0) ?? []
                return false
            }
            return value
        }
    }

    private func readJob<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (Connection) throws(SpoolError) -> T,
                                      _ done: @escaping @Sendable (Result<T, SpoolError>) -> Void) {
        let job = ReadJob { db in
            // One read transaction per job: a consistent snapshot, released at once so that
            // checkpoints are not held back.
            done(Result { () throws(SpoolError) -> T in try body(db) }.mapError { $0.during(operation, path: db.path) })
        }
        if !reads.submit(job) {
            done(.failure(SpoolError(.closed, operation, path: path, reason: "the spool is closed")))
        }
    }

    func read<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (Connection) throws(SpoolError) -> T) async throws(SpoolError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, SpoolError>, Never>) in
            readJob(operation, body) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// A read for the synchronous calls: the calling thread waits for a reader thread.
    private func readNow<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (Connection) throws(SpoolError) -> T) throws(SpoolError) -> T {
        let handoff = Handoff<Result<T, SpoolError>>()
        readJob(operation, body) { handoff.put($0) }
        return try handoff.wait().get()
    }
}

final class Counters: Sendable {
    let value = Mutex(SpoolStatistics())
}

/// The writer thread's loop: every write queued since the last commit goes into the next
/// transaction, each in a savepoint so that one failing operation does not undo the others.
struct Writer {
    let db: Connection
    let counters: Counters
    let options: Options
    typealias Options = Spool.Options
    /// Completed ids are pruned a slice at a time inside ordinary batches, never in one long transaction.
    static let pruneSlice = 5_000
    private static let pruneInterval: UInt64 = 3_600_000

    func run(_ queue: JobQueue<WriteJob>) {
        var nextPrune: UInt64 = 0
        while let jobs = queue.take(all: true) {
            commit(jobs, nextPrune: &nextPrune)
            if db.walPages >= options.checkpointPages { db.checkpoint() }
        }
    }

    private func commit(_ jobs: [WriteJob], nextPrune: inout UInt64) {
        func failAll(_ list: [WriteJob], _ error: SpoolError, _ what: String) {
            for job in list {
                job.fail(SpoolError(error.kind, job.operation, path: db.path, reason: "\(what): \(error.reason)", sqliteCode: error.sqliteCode))
            }
        }
        do throws(SpoolError) {
            try db.run("BEGIN IMMEDIATE")
        } catch {
            failAll(jobs, error, "could not begin a transaction")
            return
        }
        let now = options.clock()
        if now >= nextPrune {
            let cutoff = now > options.completedRetention ? now - options.completedRetention : 0
            // The oldest ids past the window; a slice per batch until none are left.
            if let pruned = try? step({ () throws(SpoolError) in
                try db.run("""
                    DELETE FROM completed WHERE id IN
                    (SELECT id FROM completed WHERE completed_at < ? ORDER BY completed_at LIMIT \(Self.pruneSlice))
                    """, [.int(cutoff.storable)])
            }), pruned == Self.pruneSlice {
                nextPrune = now
            } else {
                nextPrune = now + Self.pruneInterval
            }
        }
        guard db.inTransaction else {
            failAll(jobs, SpoolError(.sqlite, "", path: db.path, reason: "pruning completed ids ended the transaction"), "could not write")
            return
        }
        var done: [(job: WriteJob, resume: @Sendable () -> Void)] = []
        var fatal: SpoolError?
        for (index, job) in jobs.enumerated() {
            do throws(SpoolError) {
                let resume = try step { () throws(SpoolError) in try job.apply(db) }
                done.append((job, resume))
            } catch {
                // Its savepoint is rolled back: the failure is final whatever happens to the batch.
                job.fail(error.during(job.operation, path: db.path))
                guard db.inTransaction else {
                    // SQLite rolled back the whole transaction (disk full, I/O error).
                    fatal = error
                    failAll(Array(jobs[(index + 1)...]), error, "the transaction was rolled back")
                    break
                }
            }
        }
        if fatal == nil {
            do throws(SpoolError) {
                try db.run("COMMIT")
            } catch {
                fatal = error
            }
        }
        if let fatal {
            if db.inTransaction { _ = try? db.run("ROLLBACK") }
            failAll(done.map(\.job), fatal, "the transaction was rolled back")
            return
        }
        counters.value.withLock { statistics in
            statistics.commits += 1
            statistics.operations += done.count
            statistics.largestBatch = max(statistics.largestBatch, done.count)
        }
        for entry in done { entry.resume() }
    }

    /// Runs `body` in a savepoint, rolled back if it throws.
    private func step<T>(_ body: () throws(SpoolError) -> T) throws(SpoolError) -> T {
        try db.run("SAVEPOINT step")
        do throws(SpoolError) {
            let value = try body()
            try db.run("RELEASE step")
            return value
        } catch {
            if db.inTransaction {
                do throws(SpoolError) {
                    try db.run("ROLLBACK TO step")
                    try db.run("RELEASE step")
                } catch {
                    // Whatever state the savepoint is in, the batch cannot go on: the caller
                    // sees the transaction gone and fails the rest.
                    _ = try? db.run("ROLLBACK")
                }
            }
            throw error
        }
    }
}
