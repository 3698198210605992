import Events
import Testing
@testable import Reconciliation

/// The ledger as pure state: each event sequence and what the totals and the report say.
struct LedgerTests {
    /// A Reception as the delivery node that spooled the record writes it.
    static func reception(_ id: String, _ recipients: [String], at time: Int64 = 1_000, client: String = "192.0.2.1:4000",
                          node: String = "delivery-1", offset: Int64 = 41) -> MessageEvent {
        MessageEvent(type: .reception, id: id, tenant: "acme", time: time, node: node, sender: "a@acme.test", recipients: recipients,
                     size: 100, client: client, topic: "smarthost.acme", partition: 2, offset: offset)
    }

    static func outcome(_ type: MessageEvent.Kind, _ id: String, _ recipient: String?, at time: Int64 = 2_000,
                        node: String = "delivery-1") -> MessageEvent {
        var event = MessageEvent(type: type, id: id, tenant: "acme", time: time, node: node)
        event.recipient = recipient
        return event
    }

    @Test func everyRecipientEndsInOneTerminalOutcome() {
        var ledger = Ledger()
        ledger.apply(Self.reception("m1", ["a@x.test", "b@x.test", "c@y.test"]))
        ledger.apply(Self.outcome(.transientFailure, "m1", "c@y.test"))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test"))
        ledger.apply(Self.outcome(.bounce, "m1", "b@x.test"))
        #expect(ledger.open["m1"]?.openRecipients == 1, "c is still being retried")
        ledger.apply(Self.outcome(.expiration, "m1", "c@y.test"))
        #expect(ledger.open.isEmpty && ledger.finished["m1"] != nil)
        #expect(ledger.totals.acceptedRecipients == 3 && ledger.totals.delivered == 1 && ledger.totals.bounced == 1 && ledger.totals.expired == 1)
        let report = ledger.report(now: 10_000, unaccountedAfter: 1_000, held: [], unanswered: [:])
        #expect(report.balances && report.queuedRecipients == 0 && report.unaccounted.isEmpty)
    }

    @Test func repeatedOutcomesAreNamedNotAddedTwice() throws {
        var ledger = Ledger()
        ledger.apply(Self.reception("m1", ["a@x.test", "b@x.test"]))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test"))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test", at: 2_500))
        ledger.apply(Self.outcome(.delivery, "m1", "b@x.test"))
        ledger.apply(Self.outcome(.delivery, "m1", "b@x.test", node: "delivery-2"))
        ledger.apply(Self.reception("m1", ["a@x.test", "b@x.test"]))
        #expect(ledger.totals.delivered == 2 && ledger.totals.duplicateOutcomes == 2 && ledger.totals.acceptedMessages == 1)
        #expect(ledger.totals.duplicateMessages == 1)
        let duplicate = try #require(ledger.duplicates["m1"])
        #expect(duplicate.copies == [Ledger.Copy(node: "delivery-1", record: "smarthost.acme/2/41")], "the same copy's Reception again is no new copy")
        #expect(duplicate.repeats.map(\.node) == ["delivery-1", "delivery-2"] && duplicate.repeats.map(\.recipient) == ["a@x.test", "b@x.test"])
        let report = ledger.report(now: 10_000, unaccountedAfter: 1_000, held: [], unanswered: [:])
        #expect(report.balances, "a duplicate is named in its own row; the balance holds")
        #expect(report.duplicates.map(\.id) == ["m1"] && report.rendered(as: .table).contains("delivery-2"))
    }

    /// The same outcome event read twice (an outbox batch sent again after a send timed out,
    /// or after a crash before its rows were cleared) is no second delivery: counted apart,
    /// named nowhere. A second delivery by the same node has a time of its own and is named.
    @Test func anOutcomeEventSentTwiceIsNoRepeat() throws {
        var ledger = Ledger()
        ledger.apply(Self.reception("m1", ["a@x.test", "b@x.test"]))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test"))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test"))
        #expect(ledger.totals.resentOutcomes == 1 && ledger.totals.duplicateOutcomes == 0 && ledger.duplicates.isEmpty, "while open")
        ledger.apply(Self.outcome(.bounce, "m1", "b@x.test", at: 3_000))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test"))
        ledger.apply(Self.outcome(.bounce, "m1", "b@x.test", at: 3_000))
        #expect(ledger.totals.resentOutcomes == 3 && ledger.duplicates.isEmpty, "after it finished, either recipient's event")
        #expect(ledger.totals.delivered == 1 && ledger.totals.bounced == 1)
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test", at: 2_001))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test", node: "delivery-2"))
        #expect(ledger.totals.duplicateOutcomes == 2 && ledger.totals.resentOutcomes == 3)
        let duplicate = try #require(ledger.duplicates["m1"])
        #expect(duplicate.repeats.map(\.time) == [2_001, 2_000] && duplicate.repeats.map(\.node) == ["delivery-1", "delivery-2"])
        let table = ledger.report(now: 10_000, unaccountedAfter: 1_000, held: [], unanswered: [:]).rendered(as: .table)
        #expect(table.split(separator: "\n").contains { $0.hasPrefix("outcome events resent ") && $0.hasSuffix(" 3") })
    }

    /// A record spooled by two nodes (a rebalance before the first committed): each copy is
    /// named with its node and Kafka position, the acceptance counted once.
    @Test func aSecondCopyIsNamedWithItsNodeAndRecord() {
        var ledger = Ledger()
        ledger.apply(Self.reception("m1", ["a@x.test"]))
        ledger.apply(Self.reception("m2", ["a@x.test"]))
        ledger.apply(Self.reception("m2", ["a@x.test"], node: "delivery-2", offset: 41))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test"))
        ledger.apply(Self.reception("m1", ["a@x.test"], node: "delivery-2", offset: 97))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test", node: "delivery-2"))
        #expect(ledger.totals.acceptedMessages == 2 && ledger.totals.acceptedRecipients == 2 && ledger.totals.delivered == 1)
        #expect(ledger.duplicates["m1"]?.copies == [Ledger.Copy(node: "delivery-1", record: "smarthost.acme/2/41"),
                                                    Ledger.Copy(node: "delivery-2", record: "smarthost.acme/2/97")])
        #expect(ledger.duplicates["m1"]?.repeats.first?.node == "delivery-2")
        #expect(ledger.duplicates["m2"]?.copies.map(\.node) == ["delivery-1", "delivery-2"])
        let report = ledger.report(now: 1_500, unaccountedAfter: 1_000, held: [], unanswered: [:])
        #expect(report.balances && report.queuedRecipients == 1 && report.totals.duplicateMessages == 2)
        let csv = report.rendered(as: .csv)
        #expect(csv.contains("duplicate,m1,acme,,,,smarthost.acme/2/97,Reception,delivery-2,"))
    }

    @Test func anOperatorDeletionWithoutARecipientClosesEveryOpenOne() {
        var ledger = Ledger()
        ledger.apply(Self.reception("m1", ["a@x.test", "b@x.test"]))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test"))
        ledger.apply(Self.outcome(.adminBounce, "m1", nil))
        #expect(ledger.open.isEmpty && ledger.totals.deleted == 1 && ledger.totals.delivered == 1)
    }

    @Test func anOutcomeBeforeItsReceptionWaitsForIt() {
        var ledger = Ledger()
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test"))
        #expect(ledger.open["m1"] != nil && ledger.totals.outcomesBeforeReception == 1)
        #expect(ledger.totals.delivered == 0, "not counted before its acceptance")
        #expect(ledger.candidates(acceptedBefore: .max).isEmpty, "no Reception: nothing to look for yet")
        let waiting = ledger.report(now: 2_500, unaccountedAfter: 1_000, held: [], unanswered: [:])
        #expect(waiting.balances && waiting.withoutReception.isEmpty, "its Reception may still be on its way")
        let late = ledger.report(now: 9_000, unaccountedAfter: 1_000, held: [], unanswered: [:])
        #expect(!late.balances && late.withoutReception.map(\.id) == ["m1"])
        #expect(late.imbalance?.contains("1 messages with outcomes and no Reception") == true)
        ledger.apply(Self.reception("m1", ["a@x.test"]))
        #expect(ledger.open.isEmpty && ledger.totals.finishedMessages == 1 && ledger.totals.delivered == 1)
    }

    /// Old enough, open, and in no spool: unaccounted, named with its record; held by a spool
    /// or young: queued; a node that did not answer: unconfirmed, never unaccounted.
    @Test func theReportClassifiesOpenMessagesByWhatTheSpoolsSay() {
        var ledger = Ledger()
        ledger.apply(Self.reception("lost", ["a@x.test"], at: 1_000))
        ledger.apply(Self.reception("spooled", ["b@x.test"], at: 1_000))
        ledger.apply(Self.reception("young", ["c@x.test"], at: 95_000))
        ledger.apply(Self.reception("dsn", ["app@acme.test"], at: 95_000, client: "dsn"))
        #expect(ledger.candidates(acceptedBefore: 40_000) == ["lost", "spooled"])
        let report = ledger.report(now: 100_000, unaccountedAfter: 60_000, held: ["spooled"], unanswered: [:])
        #expect(report.unaccounted.map(\.id) == ["lost"] && report.unaccounted[0].record == "smarthost.acme/2/41")
        #expect(report.unaccountedRecipients == 1 && report.queuedRecipients == 3)
        #expect(!report.balances && report.imbalance == "1 recipients in no spool")
        #expect(report.totals.notificationMessages == 1)
        let unsure = ledger.report(now: 100_000, unaccountedAfter: 60_000, held: [], unanswered: ["delivery-2": "timed out"])
        #expect(unsure.unaccounted.isEmpty && unsure.unconfirmed.map(\.id) == ["lost", "spooled"])
        #expect(!unsure.balances && unsure.imbalance == "2 recipients unconfirmed, 1 nodes not answering", "it cannot be proven")
        let found = ledger.report(now: 100_000, unaccountedAfter: 60_000, held: ["spooled", "lost"], unanswered: [:])
        #expect(found.balances && found.queuedRecipients == 4)
    }

    /// A record the delivery group's consumers passed (below its committed offset) with no
    /// Reception, once older than `unaccounted_after`, is named by its position; a late
    /// Reception clears it; the partition's low watermark is where checking starts.
    @Test func aRecordBelowTheCommittedOffsetWithoutAReceptionIsNamed() {
        var ledger = Ledger()
        for offset in [Int64(3), 4, 6, 9, 5] {
            ledger.apply(Self.reception("m\(offset)", ["a@x.test"], offset: offset))
        }
        #expect(ledger.coverage["smarthost.acme/2"]?.covered == [3..<7, 9..<10])
        #expect(ledger.partitionsWithoutStart(["smarthost.acme/2", "smarthost.acme/0"]) == ["smarthost.acme/2", "smarthost.acme/0"])
        ledger.compare(committed: ["smarthost.acme/2": 10, "smarthost.acme/0": 0], lows: ["smarthost.acme/2": 2, "smarthost.acme/0": 0], now: 1_000)
        #expect(ledger.partitionsWithoutStart(["smarthost.acme/2", "smarthost.acme/0"]).isEmpty)
        #expect(ledger.coverage["smarthost.acme/2"]?.missing == [2: 1_000, 7: 1_000, 8: 1_000], "below 2: before the partition's start")
        let young = ledger.report(now: 1_500, unaccountedAfter: 1_000, held: ["m3", "m4", "m5", "m6", "m9"], unanswered: [:])
        #expect(young.unspooledRecords.isEmpty && young.balances, "its Reception may still be on its way")
        ledger.apply(Self.reception("m8", ["a@x.test"], offset: 8))
        ledger.compare(committed: ["smarthost.acme/2": 10], lows: [:], now: 1_800)
        let old = ledger.report(now: 2_500, unaccountedAfter: 1_000, held: ["m3", "m4", "m5", "m6", "m8", "m9"], unanswered: [:])
        #expect(old.unspooledRecords.map(\.record) == ["smarthost.acme/2/2", "smarthost.acme/2/7"])
        #expect(!old.balances && old.imbalance == "2 Kafka records no spool took")
        #expect(old.rendered(as: .table).contains("smarthost.acme/2/7") && old.rendered(as: .csv).contains("unspooled-record,,,,,,smarthost.acme/2/2,"))
    }

    /// A record quarantined as not a message is taken (no unspooled record), named apart,
    /// counted once however often it is announced, and not an acceptance.
    @Test func aQuarantinedRecordIsNamedApartFromTheBalance() {
        var ledger = Ledger()
        var quarantined = MessageEvent(type: .quarantined, id: "smarthost.acme/2/1", tenant: "acme", time: 1_000, node: "delivery-1",
                                       topic: "smarthost.acme", partition: 2, offset: 1)
        quarantined.reason = "missing header sh-format"
        ledger.apply(Self.reception("m0", ["a@x.test"], offset: 0))
        ledger.apply(quarantined)
        ledger.apply(quarantined)
        ledger.apply(Self.outcome(.delivery, "m0", "a@x.test"))
        ledger.compare(committed: ["smarthost.acme/2": 2], lows: ["smarthost.acme/2": 0], now: 1_000)
        let report = ledger.report(now: 9_000, unaccountedAfter: 1_000, held: [], unanswered: [:])
        #expect(report.balances && report.unspooledRecords.isEmpty && report.totals.acceptedMessages == 1)
        #expect(report.totals.quarantinedRecords == 1 && report.quarantined.map(\.record) == ["smarthost.acme/2/1"] && ledger.open.isEmpty)
        #expect(report.rendered(as: .table).contains("missing header sh-format"))
    }

    @Test(arguments: [[Int64(0), 1, 2, 3], [3, 2, 1, 0], [0, 2, 1, 3], [2, 0, 3, 1]])
    func coverageMergesInAnyOrder(_ offsets: [Int64]) {
        var coverage = Ledger.Coverage(start: 0)
        for offset in offsets { coverage.cover(offset) }
        coverage.cover(2)
        #expect(coverage.covered == [0..<4] && coverage.gaps(below: 6, limit: 10) == [4, 5] && coverage.gaps(below: 6, limit: 1) == [4])
    }

    @Test func finishedMessagesAreForgottenAfterAWhile() {
        var ledger = Ledger()
        ledger.apply(Self.reception("m1", ["a@x.test"]))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test", at: 5_000))
        ledger.prune(finishedBefore: 4_000)
        #expect(ledger.finished["m1"] != nil)
        ledger.prune(finishedBefore: 6_000)
        #expect(ledger.finished.isEmpty)
    }

    @Test func theLedgerSurvivesAJSONRoundTrip() throws {
        var ledger = Ledger()
        ledger.apply(Self.reception("m1", ["a@x.test", "b@x.test"]))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test"))
        ledger.apply(Self.outcome(.delivery, "m1", "a@x.test", node: "delivery-2"))
        let text = ReportFormat.json(ledger)
        #expect(try ReportFormat.decode(Ledger.self, from: Array(text.utf8)) == ledger)
    }
}

struct ReportFormatTests {
    static let sweep: SweepReport = {
        var report = SweepReport(node: "delivery-1", trigger: "request", startedAt: 1_800_000_000_000)
        report.spooledMessages = 3
        report.entriesChecked = 3
        report.add(OrphanRecord(node: "delivery-1", id: "01J00000000000000000000001", tenant: "acme", domain: "x.test", queue: "acme//x.test",
                                reason: "in no queue", ageSeconds: 30, attempts: 0, repaired: true), limbo: false)
        report.add(OrphanRecord(node: "delivery-1", id: "01J00000000000000000000002", tenant: "acme", domain: "y.test", queue: "acme//y.test",
                                reason: "limbo: disk I/O error, \"quoted\"", ageSeconds: 7_200, attempts: 2, repaired: false,
                                error: "still failing"), limbo: true)
        return report
    }()

    @Test func csvQuotesWhatNeedsQuotingAndListsEveryOrphan() {
        let csv = ReconcileReport(generatedAt: 0, sweeps: [Self.sweep]).rendered(as: .csv)
        let lines = csv.split(separator: "\r\n")
        #expect(lines.count == 3)
        #expect(lines[0] == "node,id,tenant,domain,queue,reason,age_seconds,age_bucket,attempts,repaired,error")
        #expect(lines[2].contains(#""limbo: disk I/O error, ""quoted""""#))
        #expect(lines[1].hasSuffix(",30,<1m,0,true,"))
    }

    @Test func theTableSummarisesByNodeTenantDomainAgeAndReason() {
        let text = ReconcileReport(generatedAt: 0, sweeps: [Self.sweep], unanswered: ["delivery-2": "timed out"]).rendered(as: .table)
        #expect(text.contains("NOT ANSWERING: delivery-2: timed out"))
        for heading in ["by tenant", "by domain", "by age", "by reason"] { #expect(text.contains(heading), "\(heading)") }
        #expect(text.contains("1h-6h"))
    }

    @Test func jsonReadsBackAsTheSameReport() throws {
        let report = ReconcileReport(generatedAt: 5, sweeps: [Self.sweep], unanswered: ["n": "e"])
        #expect(try ReportFormat.decode(ReconcileReport.self, from: Array(report.rendered(as: .json).utf8)) == report)
        let counts = Dictionary(uniqueKeysWithValues: report.breakdown(\.reason).map { ($0.key, $0.found) })
        #expect(counts == ["in no queue": 1, "limbo: disk I/O error, \"quoted\"": 1])
    }

    @Test(arguments: [Int64(0), 59, 60, 599, 600, 3_599, 3_600, 21_599, 21_600, 86_399, 86_400])
    func ageBuckets(seconds: Int64) {
        let expected = seconds < 60 ? "<1m" : seconds < 600 ? "1m-10m" : seconds < 3_600 ? "10m-1h" : seconds < 21_600 ? "1h-6h"
            : seconds < 86_400 ? "6h-24h" : ">24h"
        #expect(AgeBucket.name(seconds: seconds) == expected)
    }

    @Test(arguments: ["", "{", "[]", #"{"generated_at": "x"}"#, #"{"generated_at": 1, "sweeps": [{}], "unanswered": {}}"#])
    func aReportThatIsNotOneIsAnError(_ text: String) {
        #expect(throws: (any Error).self) { try ReportFormat.decode(ReconcileReport.self, from: Array(text.utf8)) }
    }
}
