import Events
import Foundation
import Kafka
import Logging
import Reconciliation
import Testing
@testable import Reconciler

/// The reconciler's durable state on a real directory: what a restart finds, what Kafka
/// delivering records again does, and what a damaged file does.
struct LedgerStoreTests {
    static func record(_ event: MessageEvent, partition: Int32 = 0, offset: Int64) -> ConsumedRecord {
        ConsumedRecord(topic: "smarthost-events", partition: partition, offset: offset, key: Array(event.id.utf8), value: event.json)
    }

    static func directory() -> String { NSTemporaryDirectory() + "ledger-store-\(UUID().uuidString.prefix(8))" }

    @Test func aRestartFindsTheLedgerAndRecordsDeliveredAgainAreNotCountedTwice() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let reception = LedgerTests.reception("m1", ["a@x.test", "b@x.test"])
        let delivery = LedgerTests.outcome(.delivery, "m1", "a@x.test")
        let first = try LedgerStore(directory: directory, logger: Logger(label: "test"))
        await first.apply([Self.record(reception, offset: 10), Self.record(delivery, offset: 11)])
        let done = try await first.checkpoint()
        #expect(done.map(\.offset) == [10, 11], "the records the snapshot covers, to be committed")
        // The report is written next to the state (report_dir defaults to ledger_dir): it must not replace it.
        try ReportFiles.write(await first.report(now: 0, unaccountedAfter: 1, held: [], unanswered: [:]), named: "ledger", in: directory)

        let second = try LedgerStore(directory: directory, logger: Logger(label: "test"))
        // Kafka delivers 11 again (its offset was not committed yet), then 12.
        let bounce = LedgerTests.outcome(.bounce, "m1", "b@x.test")
        await second.apply([Self.record(delivery, offset: 11), Self.record(bounce, offset: 12)])
        let report = await second.report(now: 10_000, unaccountedAfter: 1_000, held: [], unanswered: [:])
        #expect(report.totals.delivered == 1 && report.totals.bounced == 1 && report.totals.duplicateOutcomes == 0)
        #expect(report.totals.finishedMessages == 1 && report.balances)
    }

    @Test func aDamagedStateFileStopsTheReconcilerWithItsPath() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for text in ["", "{", #"{"version": 9}"#, #"{"version": 1, "positions": {}}"#, #"{"positions": {}}"#, "[]"] {
            try Data(text.utf8).write(to: URL(fileURLWithPath: directory + "/state.json"))
            #expect {
                _ = try LedgerStore(directory: directory, logger: Logger(label: "test"))
            } throws: { error in
                "\(error)".contains(directory + "/state.json")
            }
        }
    }

    @Test func anEventThatIsNotOneIsCountedAndSkipped() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try LedgerStore(directory: directory, logger: Logger(label: "test"))
        let garbage = ConsumedRecord(topic: "smarthost-events", partition: 0, offset: 0, key: nil, value: Array("{not json".utf8))
        let wrongType = ConsumedRecord(topic: "smarthost-events", partition: 0, offset: 1, key: nil,
                                       value: Array(#"{"type":"Nope","id":"x","tenant":"t","time":1,"node":"n"}"#.utf8))
        await store.apply([garbage, wrongType, Self.record(LedgerTests.reception("m1", ["a@x.test"]), offset: 2)])
        let report = await store.report(now: 0, unaccountedAfter: 1, held: [], unanswered: [:])
        #expect(report.malformedEvents == 2 && report.totals.acceptedMessages == 1)
    }
}
