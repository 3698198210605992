import CSQLite
import Dispatch
import Foundation
import QueueRecord
import SMTPProtocol
import Synchronization
import Testing
@testable import Spool

/// A fresh directory under the system's temporary directory, removed after `body`.
func withDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("spool-test-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    return try await body(directory)
}

func mailbox(_ text: String) -> Mailbox {
    try! Mailbox(parsing: Substring(text), allowUTF8: true)
}

func makeMessage(sender: String? = "app@sender.test", recipients: [String] = ["a@one.test", "b@two.test"],
                 smtputf8: Bool = false, job: String? = "spring", lane: AcceptedMessage.Lane = .normal,
                 content: [UInt8] = Array("Subject: hello\r\n\r\nbody\r\n".utf8)) -> AcceptedMessage {
    AcceptedMessage(id: MessageID.generate(), tenant: "acme", sender: sender.map(mailbox), recipients: recipients.map(mailbox),
                    receivedAt: 1_795_000_000_123, client: "192.0.2.7:4000", helo: "client.test", tls: "TLSv1.3",
                    authenticatedUser: "app1", job: job, lane: lane, trafficClass: "transactional", smtputf8: smtputf8,
                    eightBit: true, content: content)
}

func all(_ spool: Spool) throws(SpoolError) -> [SpooledMessage] {
    var messages: [SpooledMessage] = []
    try spool.forEach { messages.append($0) }
    return messages
}

/// Runs `body` and checks it fails with `kind` and a description naming `path`.
func expectFailure(_ kind: SpoolError.Kind, naming path: String, sourceLocation: SourceLocation = #_sourceLocation,
                   _ body: () async throws(SpoolError) -> Void) async {
    do {
        try await body()
        Issue.record("no error, expected \(kind)", sourceLocation: sourceLocation)
    } catch {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        #expect(error.description.contains(path), "\(error)", sourceLocation: sourceLocation)
    }
}

/// An independent SQLite connection, as an operator's `sqlite3` would open the file: rows as text.
func sql(_ path: String, _ statement: String) -> [[String?]] {
    var db: OpaquePointer?
    guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK else { fatalError("cannot open \(path)") }
    defer { sqlite3_close_v2(db) }
    sqlite3_busy_timeout(db, 10_000)
    var prepared: OpaquePointer?
    guard sqlite3_prepare_v2(db, statement, -1, &prepared, nil) == SQLITE_OK else {
        fatalError(String(cString: sqlite3_errmsg(db)))
    }
    defer { sqlite3_finalize(prepared) }
    var rows: [[String?]] = []
    while sqlite3_step(prepared) == SQLITE_ROW {
        rows.append((0..<sqlite3_column_count(prepared)).map { column in
            sqlite3_column_text(prepared, column).map { String(cString: $0) }
        })
    }
    return rows
}

final class Flag: Sendable {
    let value = Atomic(false)
}

final class FakeClock: Sendable {
    let now = Mutex<UInt64>(1_800_000_000_000)
    func advance(by milliseconds: UInt64) { now.withLock { $0 += milliseconds } }
    var options: Spool.Options { Spool.Options(clock: { self.now.withLock { $0 } }) }
}

@Suite struct SpoolRoundTripTests {
    @Test func messagesSurviveWithUTF8AddressesAndTheNullSender() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let plain = makeMessage()
            let international = makeMessage(sender: "jürgen@bücher.test", recipients: ["用户@例子.test", "\"quoted name\"@[192.0.2.1]"],
                                            smtputf8: true, job: "rentrée", lane: .high, content: Array("é\r\n".utf8))
            let bounce = makeMessage(sender: nil, recipients: ["postmaster@one.test"], job: nil, lane: .low, content: [])
            let position = SpoolPosition(topic: "smarthost.acme", partition: 7, offset: 1_234_567)
            let inserted = try await spool.insert([(plain, position), (international, nil), (bounce, position)])
            #expect(inserted == [true, true, true])

            let messages = try all(spool)
            #expect(messages.map(\.id) == [plain.id, international.id, bounce.id], "spool order")
            for (message, original) in zip(messages, [plain, international, bounce]) {
                #expect(message.tenant == original.tenant)
                #expect(message.sender == original.sender)
                #expect(message.pendingRecipients == original.recipients)
                #expect(message.receivedAt == original.receivedAt)
                #expect(message.job == original.job)
                #expect(message.lane == original.lane)
                #expect(message.trafficClass == original.trafficClass)
                #expect(message.smtputf8 == original.smtputf8)
                #expect(message.eightBit == original.eightBit)
                #expect(message.size == original.content.count)
                #expect(message.attempts == 0)
                #expect(message.nextAttemptAt == 0)
                #expect(message.spooledAt > 0)
                #expect(try await spool.content(of: original.id) == original.content)
                #expect(try spool.message(original.id) == message)
            }
            #expect(messages[0].position == position)
            #expect(messages[1].position == nil)
            #expect(messages[2].sender == nil)
            #expect(try spool.count() == 3)
            #expect(try spool.contains(plain.id))
        }
    }

    @Test func enumerationPagesThroughManyMessages() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let messages = (0..<2_500).map { _ in makeMessage(recipients: ["x@y.test"], content: []) }
            #expect(try await spool.insert(messages.map { ($0, nil) }) == Array(repeating: true, count: 2_500))
            #expect(try all(spool).map(\.id) == messages.map(\.id))
            #expect(try spool.count() == 2_500)
        }
    }

    @Test func unknownIdsAreAnswerableWithoutErrors() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let unknown = MessageID.generate()
            #expect(try await spool.content(of: unknown) == nil)
            #expect(try spool.message(unknown) == nil)
            #expect(try spool.contains(unknown) == false)
            #expect(try await spool.settle(unknown, finalRecipients: [], attempts: 1, nextAttemptAt: 0) == true, "already gone")
            #expect(try await spool.remove(unknown) == false)
            #expect(try spool.isCompleted(unknown) == false, "removing what was never there remembers nothing")
        }
    }
}

@Suite struct SpoolLifecycleTests {
    /// What `smarthost_spool_bytes` reports: the database and its WAL, growing with what is spooled.
    @Test func diskBytesCountTheDatabaseAndItsWriteAheadLog() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let empty = spool.diskBytes
            #expect(empty > 0, "the schema takes pages")
            _ = try await spool.insert((0..<50).map { _ in (makeMessage(content: [UInt8](repeating: 65, count: 8_192)), nil) })
            let files = try [Spool.fileName, Spool.fileName + "-wal"].map {
                try FileManager.default.attributesOfItem(atPath: directory + "/" + $0)[.size] as? Int ?? 0
            }
            #expect(spool.diskBytes == files.reduce(0, +))
            #expect(spool.diskBytes >= empty + 50 * 8_192)
        }
    }

    @Test func duplicatesAreRecognisedInABatchAcrossBatchesAndAfterCompletion() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let message = makeMessage()
            #expect(try await spool.insert([(message, nil), (message, nil)]) == [true, false])
            #expect(try await spool.insert(message, position: nil) == false)
            #expect(try await spool.settle(message.id, finalRecipients: message.recipients, attempts: 1, nextAttemptAt: 0))
            #expect(try spool.isCompleted(message.id))
            #expect(try await spool.insert(message, position: nil) == false, "a Kafka redelivery of a finished message")
            #expect(try spool.count() == 0)
        }
    }

    /// A message's Reception goes into the outbox in the transaction that spools it, and only
    /// for a message newly spooled: a redelivered record announces nothing twice.
    @Test func aReceptionIsWrittenOnlyWithTheMessageThatIsNewlySpooled() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let first = makeMessage()
            let second = makeMessage()
            func reception(_ message: AcceptedMessage) -> OutboxEvent {
                OutboxEvent(key: Array(message.id.text.utf8), value: Array("reception of \(message.id)".utf8))
            }
            #expect(try await spool.insert([(first, nil), (first, nil)], receptions: [reception(first), reception(first)]) == [true, false])
            #expect(try await spool.insert([(first, nil), (second, nil)], receptions: [reception(first), reception(second)]) == [false, true])
            let page = try await spool.outboxPage(limit: 10)
            #expect(page.map(\.event) == [reception(first), reception(second)])
            try await spool.removeFromOutbox(page.map(\.seq))
            #expect(try await spool.settle(second.id, finalRecipients: second.recipients, attempts: 1, nextAttemptAt: 0))
            #expect(try await spool.insert(second, position: nil, reception: reception(second)) == false, "finished: no second Reception")
            #expect(try await spool.outboxPage(limit: 10).isEmpty)
        }
    }

    @Test func settlingPartlyThenFullyRemovesTheMessageAndItsContent() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let message = makeMessage(recipients: ["a@one.test", "b@two.test", "c@three.test"])
            _ = try await spool.insert(message, position: nil)

            #expect(try await spool.settle(message.id, finalRecipients: [mailbox("b@two.test"), mailbox("nobody@x.test")],
                                           attempts: 1, nextAttemptAt: 1_800_000_060_000) == false)
            let partly = try #require(try spool.message(message.id))
            #expect(partly.pendingRecipients == [mailbox("a@one.test"), mailbox("c@three.test")])
            #expect(partly.attempts == 1)
            #expect(partly.nextAttemptAt == 1_800_000_060_000)
            #expect(try await spool.content(of: message.id) == message.content)

            #expect(try await spool.settle(message.id, finalRecipients: [], attempts: 2, nextAttemptAt: 1_800_000_120_000) == false,
                    "a deferral with no final outcome only reschedules")
            #expect(try spool.message(message.id)?.attempts == 2)

            #expect(try await spool.settle(message.id, finalRecipients: [mailbox("a@one.test"), mailbox("c@three.test")],
                                           attempts: 3, nextAttemptAt: 0) == true)
            #expect(try spool.message(message.id) == nil)
            #expect(try await spool.content(of: message.id) == nil)
            #expect(sql(spool.path, "SELECT count(*) FROM content") == [["0"]], "no orphaned content")
            #expect(try spool.isCompleted(message.id))
        }
    }

    @Test func removeDeletesWhateverTheRecipients() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let message = makeMessage()
            _ = try await spool.insert(message, position: nil)
            #expect(try await spool.remove(message.id) == true)
            #expect(try spool.count() == 0)
            #expect(try await spool.content(of: message.id) == nil)
            #expect(try await spool.insert(message, position: nil) == false, "an administrator's delete is final too")
        }
    }

    @Test func aRestartRecoversEveryUnfinishedMessage() async throws {
        try await withDirectory { directory in
            let position = SpoolPosition(topic: "smarthost.acme", partition: 2, offset: 99)
            let waiting = makeMessage(recipients: ["a@one.test", "b@two.test"])
            let fresh = makeMessage(sender: "ü@ü.test", recipients: ["ö@ö.test"], smtputf8: true)
            let finished = makeMessage()
            do {
                let spool = try Spool.open(directory: directory)
                _ = try await spool.insert([(waiting, position), (fresh, nil), (finished, nil)])
                _ = try await spool.settle(waiting.id, finalRecipients: [mailbox("a@one.test")], attempts: 4, nextAttemptAt: 1_900_000_000_000)
                _ = try await spool.settle(finished.id, finalRecipients: finished.recipients, attempts: 1, nextAttemptAt: 0)
                spool.close()
            }
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let recovered = try all(spool)
            #expect(recovered.map(\.id) == [waiting.id, fresh.id])
            #expect(recovered[0].pendingRecipients == [mailbox("b@two.test")])
            #expect(recovered[0].attempts == 4)
            #expect(recovered[0].nextAttemptAt == 1_900_000_000_000)
            #expect(recovered[0].position == position)
            #expect(recovered[1].pendingRecipients == fresh.recipients)
            #expect(recovered[1].sender == fresh.sender)
            #expect(try await spool.content(of: fresh.id) == fresh.content)
            #expect(try await spool.insert(finished, position: nil) == false, "completed ids survive a restart")
        }
    }

    @Test func completedIdsAreForgottenAfterTheWindow() async throws {
        try await withDirectory { directory in
            let clock = FakeClock()
            let spool = try Spool.open(directory: directory, options: clock.options)
            defer { spool.close() }
            let message = makeMessage()
            _ = try await spool.insert(message, position: nil)
            _ = try await spool.settle(message.id, finalRecipients: message.recipients, attempts: 1, nextAttemptAt: 0)
            clock.advance(by: 6 * 24 * 3_600_000)
            #expect(try await spool.insert(message, position: nil) == false, "within 7 days")
            clock.advance(by: 2 * 24 * 3_600_000)
            // The next batch prunes first, then inserts.
            #expect(try await spool.insert(message, position: nil) == true, "past 7 days the id is forgotten")
            #expect(try spool.isCompleted(message.id) == false)
        }
    }

    @Test func aClosedSpoolRefusesWork() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            spool.close()
            spool.close()
            await expectFailure(.closed, naming: directory) { () throws(SpoolError) in _ = try await spool.insert(makeMessage(), position: nil) }
            await expectFailure(.closed, naming: directory) { () throws(SpoolError) in _ = try spool.count() }
            let reopened = try Spool.open(directory: directory)
            reopened.close()
        }
    }
}

@Suite struct SpoolGroupCommitTests {
    @Test func concurrentInsertsShareCommits() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let messages = (0..<1_000).map { _ in makeMessage(recipients: ["x@y.test"]) }
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for message in messages {
                    group.addTask { try await spool.insert(message, position: nil) }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(results.count == 1_000 && results.allSatisfy { $0 })
            let statistics = spool.statistics
            #expect(statistics.operations == 1_000)
            #expect(statistics.commits < statistics.operations, "\(statistics)")
            #expect(try spool.count() == 1_000)
        }
    }

    /// With the writer held inside a transaction, everything queued meanwhile goes into the
    /// next one: one commit; and the one operation that fails there fails alone.
    @Test func oneFailingOperationDoesNotUndoItsBatch() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let gate = DispatchSemaphore(value: 0)
            let holding = Flag()
            let blocker = Task {
                try await spool.write("hold the writer") { _ throws(SpoolError) in
                    holding.value.store(true, ordering: .sequentiallyConsistent)
                    gate.wait()
                }
            }
            while !holding.value.load(ordering: .sequentiallyConsistent) { try await Task.sleep(for: .milliseconds(1)) }

            let messages = (0..<50).map { _ in makeMessage(recipients: ["x@y.test"]) }
            let inserts = messages.map { message in Task { try await spool.insert(message, position: nil) } }
            let failing = Task {
                try await spool.write("fail on purpose") { db throws(SpoolError) in
                    try db.run("INSERT INTO message (id) VALUES ('too short')")  // NOT NULL and CHECK refuse it
                }
            }
            while spool.pendingWrites < 51 { try await Task.sleep(for: .milliseconds(1)) }
            let before = spool.statistics
            gate.signal()
            try await blocker.value

            for insert in inserts { #expect(try await insert.value == true) }
            switch await failing.result {
            case .success: Issue.record("the constraint was not enforced")
            case .failure(let error):
                let error = try #require(error as? SpoolError)
                #expect(error.kind == .sqlite)
                #expect(error.operation == "fail on purpose", "\(error)")
            }
            let after = spool.statistics
            #expect(after.commits == before.commits + 2, "the blocker's commit, then one for all 50 inserts")
            #expect(after.largestBatch == 50)
            #expect(try spool.count() == 50)
        }
    }
}

@Suite struct SpoolDurabilityTests {
    /// Once `insert` has returned, another connection to the file (another process would see
    /// the same) finds the message: it is committed, not waiting in a buffer.
    @Test func anInsertIsCommittedWhenItReturns() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let message = makeMessage(content: Array(repeating: 0x41, count: 100_000))
            _ = try await spool.insert(message, position: nil)
            #expect(sql(spool.path, "SELECT id, length(body) FROM message JOIN content USING (seq)") == [[message.id.text, "100000"]])
            #expect(sql(spool.path, "PRAGMA journal_mode") == [["wal"]])
            _ = try await spool.settle(message.id, finalRecipients: message.recipients, attempts: 1, nextAttemptAt: 0)
            #expect(sql(spool.path, "SELECT count(*) FROM message") == [["0"]])
            #expect(sql(spool.path, "SELECT id FROM completed") == [[message.id.text]])
        }
    }
}

@Suite struct SpoolQuarantineTests {
    @Test func quarantinedRecordsAreKeptWithTheirReason() async throws {
        try await withDirectory { directory in
            let clock = FakeClock()
            let spool = try Spool.open(directory: directory, options: clock.options)
            defer { spool.close() }
            try await spool.quarantine(topic: "smarthost.acme", partition: 3, offset: 42, reason: "header sh-id: not a message id",
                                       key: Array("k".utf8), value: [0, 1, 2, 255])
            try await spool.quarantine(topic: "smarthost.acme", partition: 3, offset: 42, reason: "redelivered", key: nil, value: [])
            try await spool.quarantine(topic: "smarthost.beta", partition: 0, offset: 0, reason: "record format \"9\"", key: nil, value: [])
            let records = try spool.quarantined()
            #expect(records.count == 2)
            #expect(records[0].topic == "smarthost.acme" && records[0].partition == 3 && records[0].offset == 42)
            #expect(records[0].reason == "header sh-id: not a message id", "the first entry stays")
            #expect(records[0].key == Array("k".utf8))
            #expect(records[0].valueSize == 4)
            #expect(records[0].quarantinedAt == 1_800_000_000_000)
            #expect(records[1].key == nil && records[1].valueSize == 0)
            #expect(try spool.quarantinedValue(topic: "smarthost.acme", partition: 3, offset: 42) == [0, 1, 2, 255])
            #expect(try spool.quarantinedValue(topic: "smarthost.acme", partition: 3, offset: 43) == nil)
        }
    }
}

@Suite struct SpoolHostileTests {
    @Test func garbageInsteadOfADatabaseIsNamed() async throws {
        try await withDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let path = directory + "/spool.sqlite"
            try Data(String(repeating: "this is not a database\n", count: 200).utf8).write(to: URL(fileURLWithPath: path))
            await expectFailure(.notASpool, naming: path) { () throws(SpoolError) in _ = try Spool.open(directory: directory) }
        }
    }

    @Test func anotherApplicationsDatabaseIsNotTouched() async throws {
        try await withDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let path = directory + "/spool.sqlite"
            var db: OpaquePointer?
            sqlite3_open(path, &db)
            sqlite3_exec(db, "CREATE TABLE invoices (n INTEGER)", nil, nil, nil)
            sqlite3_close(db)
            await expectFailure(.notASpool, naming: path) { () throws(SpoolError) in _ = try Spool.open(directory: directory) }
            #expect(sql(path, "PRAGMA journal_mode") == [["delete"]], "refused before anything was written")
        }
    }

    @Test func aSpoolFromANewerVersionIsRefused() async throws {
        try await withDirectory { directory in
            try Spool.open(directory: directory).close()
            let path = directory + "/spool.sqlite"
            _ = sql(path, "PRAGMA user_version = 3")
            await expectFailure(.newerSchema(3), naming: path) { () throws(SpoolError) in _ = try Spool.open(directory: directory) }
        }
    }

    @Test func aFileWhereTheDirectoryShouldBeIsNamed() async throws {
        try await withDirectory { directory in
            try Data("x".utf8).write(to: URL(fileURLWithPath: directory))
            await expectFailure(.notADirectory, naming: directory) { () throws(SpoolError) in _ = try Spool.open(directory: directory) }
        }
    }

    @Test func aSpoolIsOpenedOnceAtATime() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            await expectFailure(.locked, naming: directory) { () throws(SpoolError) in _ = try Spool.open(directory: directory) }
            spool.close()
            try Spool.open(directory: directory).close()
        }
    }

    @Test func aMessageThatWouldNotReadBackIsRefusedWhole() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            var bad = makeMessage()
            bad.recipients.append(Mailbox(localPart: "two\nlines", domain: "x.test"))
            let good = makeMessage()
            await expectFailure(.invalidInput, naming: bad.id.text) { () throws(SpoolError) in _ = try await spool.insert([(good, nil), (bad, nil)]) }
            var ascii = makeMessage(recipients: ["用户@例子.test"])
            ascii.smtputf8 = false
            await expectFailure(.invalidInput, naming: "SMTPUTF8") { () throws(SpoolError) in _ = try await spool.insert(ascii, position: nil) }
            var none = makeMessage()
            none.recipients = []
            await expectFailure(.invalidInput, naming: "no recipients") { () throws(SpoolError) in _ = try await spool.insert(none, position: nil) }
            #expect(try spool.count() == 0)
        }
    }

    @Test func aDamagedRowIsReportedAndTheOthersStillRecover() async throws {
        try await withDirectory { directory in
            let spool = try Spool.open(directory: directory)
            defer { spool.close() }
            let damaged = makeMessage()
            let intact = makeMessage()
            let unknownLane = makeMessage()
            _ = try await spool.insert([(damaged, nil), (intact, nil), (unknownLane, nil)])
            _ = sql(spool.path, "UPDATE message SET pending = 'a@one.test' || char(10) || 'not an address' WHERE id = '\(damaged.id.text)'")
            _ = sql(spool.path, "UPDATE message SET lane = 'urgent' WHERE id = '\(unknownLane.id.text)'")

            await expectFailure(.malformedRow, naming: damaged.id.text) { () throws(SpoolError) in _ = try all(spool) }
            var problems: [SpoolError] = []
            var recovered: [MessageID] = []
            try spool.forEach(malformed: { problems.append($0) }) { recovered.append($0.id) }
            #expect(recovered == [intact.id])
            #expect(problems.count == 2)
            #expect(problems[0].description.contains(damaged.id.text) && problems[0].description.contains("not an address"), "\(problems[0])")
            #expect(problems[1].description.contains(unknownLane.id.text) && problems[1].description.contains("lane"), "\(problems[1])")
            await expectFailure(.malformedRow, naming: "lane") { () throws(SpoolError) in _ = try spool.message(unknownLane.id) }
        }
    }
}
