import Foundation
import Operations
import Testing

/// The admin API's queue requests are an external boundary: every malformed or hostile one is
/// refused with a message that says what is wrong (and a delete never widens to everything).
@Suite struct QueueRequestTests {
    @Test(arguments: [
        (["tenat": "acme"], "unknown query parameter tenat"),
        (["age_min": "two hours"], "age_min must be a number of seconds, got two hours"),
        (["age_min": "-5"], "age_min must be a number of seconds, got -5"),
        (["state": "frozen"], "state must be one of scheduled, deferred, suspended, ready, in-flight, held, limbo, got frozen"),
        (["tenant": ""], "tenant must be 1 to 255 characters without spaces"),
        (["domain": "a b.test"], "domain must be 1 to 255 characters without spaces"),
        (["pool": String(repeating: "p", count: 300)], "pool must be 1 to 255 characters without spaces"),
        (["job": "x\ny"], "job must be 1 to 255 characters without spaces"),
        (["tenant": "ac\u{0}me"], "tenant must be 1 to 255 characters without spaces or control characters"),
    ])
    func badFilterQueriesAreRefused(_ query: [String: String], _ message: String) {
        #expect(throws: QueueRequestError.self) { try QueueFilter(query: query) }
        do {
            _ = try QueueFilter(query: query)
        } catch {
            #expect(error.description.hasPrefix(message), "\(error.description)")
        }
    }

    @Test func aFilterRoundTripsThroughItsQueryAndMatches() throws {
        let filter = try QueueFilter(query: ["tenant": "acme", "domain": "Gmail.COM", "age_min": "7200", "state": "deferred"])
        #expect(filter.domain == "gmail.com")
        #expect(try QueueFilter(query: filter.query) == filter)
        let now: UInt64 = 10_000_000
        #expect(filter.matches(tenant: "acme", domain: "gmail.com", job: nil, pool: "p", receivedAt: now - 7_200_000, state: .deferred, now: now))
        #expect(!filter.matches(tenant: "acme", domain: "gmail.com", job: nil, pool: "p", receivedAt: now - 7_199_999, state: .deferred, now: now))
        #expect(!filter.matches(tenant: "acme", domain: "gmail.com", job: nil, pool: "p", receivedAt: 0, state: .ready, now: now))
        #expect(!filter.matches(tenant: "globex", domain: "gmail.com", job: nil, pool: "p", receivedAt: 0, state: .deferred, now: now))
        #expect(QueueFilter().matches(tenant: "any", domain: "any", job: "j", pool: "p", receivedAt: now, state: .inFlight, now: now))
    }

    @Test(arguments: [
        ("", false, nil),
        ("[]", false, "expected a JSON object"),
        ("{", true, "expected a JSON object"),
        (#"{"filter": {"domain": "x.test"}}"#, true, #"a delete needs "mode": "bounce" or "silent""#),
        (#"{"filter": {"domian": "x.test"}, "mode": "silent"}"#, true, "unknown filter key domian"),
        (#"{"filtre": {"domain": "x.test"}, "mode": "silent"}"#, true, "unknown key filtre"),
        (#"{"filter": "x.test", "mode": "silent"}"#, true, "filter must be an object"),
        (#"{"filter": {}, "mode": "shred"}"#, true, "mode:"),
        (#"{"filter": {"age_min_seconds": "old"}, "mode": "bounce"}"#, true, "filter.age_min_seconds:"),
        (#"{"filter": {}, "mode": "bounce", "limit": 0}"#, true, "limit must be from 1 to 100000, got 0"),
        (#"{"filter": {"state": "in-flight"}, "mode": "bounce"}"#, true, "entries in flight or in limbo cannot be deleted"),
        (#"{"filter": {}, "mode": "bounce"}"#, false, "unknown key mode"),
        (#"{"filter": {"tenant": ""}}"#, false, "tenant must be 1 to 255 characters"),
        (#"{"filter": {"domain": "X.Test"}, "dry_run": true, "limit": 1000}"#, false, nil),
    ] as [(String, Bool, String?)])
    func actionBodiesAreCheckedStrictly(_ body: String, _ deleting: Bool, _ refusal: String?) {
        do {
            let request = try QueueActionRequest.parse(Array(body.utf8), deleting: deleting)
            #expect(refusal == nil, "accepted \(body) as \(request)")
            if body.contains("X.Test") { #expect(request.filter.domain == "x.test" && request.dryRun == true && request.limit == 1_000) }
        } catch {
            #expect(refusal.map { error.description.hasPrefix($0) || error.description.contains($0) } == true, "\(body): \(error.description)")
        }
    }
}

func row(_ node: String, _ tenant: String, _ domain: String, pool: String = "default", deferred: Int = 0, ready: Int = 0,
         suspended: Int = 0, paused: Int = 0, received: Int64 = 1_000, delivered: Int = 0, failed: Int = 0, response: String? = nil,
         nullSender: Int = 0, delivered_at: Int64 = 100_000) -> QueueSummaryRow {
    var row = QueueSummaryRow(node: node, tenant: tenant, domain: domain, pool: pool)
    row.deferred = deferred
    row.ready = ready
    row.suspended = suspended
    row.paused = paused
    row.oldestReceivedAt = received
    row.recent = RecentOutcomes(delivered: delivered, deferred: failed, deferringSince: failed > 0 && delivered == 0 ? received : nil,
                                lastDeliveredAt: delivered > 0 ? delivered_at : nil)
    if let response {
        row.lastResponse = response
        row.lastResponseAt = received
        row.responses = [ResponseCount(text: response, count: deferred)]
    }
    row.nullSender = nullSender
    return row
}

func node(_ name: String, _ rows: [QueueSummaryRow], orphaned: Int = 0, samples: [DeferredSample] = [], dsnFailures: Int = 0) -> NodeQueueSummary {
    NodeQueueSummary(node: name, generatedAt: 100_000, windowSeconds: 600, rows: rows, spooledMessages: rows.reduce(0) { $0 + $1.queued } + orphaned,
                     queuedMessages: rows.reduce(0) { $0 + $1.queued }, orphanedMessages: orphaned, deferredSamples: samples,
                     dsnFailuresRecent: dsnFailures, dsnFailuresTotal: dsnFailures)
}

@Suite struct ClusterSummaryTests {
    @Test func nodesMergeIntoTheChosenGroupsSortedAndTotalled() {
        let nodes = [
            node("d1", [row("d1", "acme", "gmail.com", deferred: 30, received: 500, response: "421 4.7.28 slow down"),
                        row("d1", "acme", "yahoo.com", ready: 2, received: 900)]),
            node("d2", [row("d2", "acme", "gmail.com", deferred: 20, received: 300, response: "421 4.7.28 slow down"),
                        row("d2", "globex", "gmail.com", suspended: 5, received: 200)]),
        ]
        let byDomain = ClusterQueueSummary(nodes: nodes, unanswered: ["d3": "cannot connect"], by: [.domain], sort: .queued, limit: nil, now: 1_000)
        #expect(byDomain.rows.map(\.domain) == ["gmail.com", "yahoo.com"])
        #expect(byDomain.rows[0].queued == 55 && byDomain.rows[0].deferred == 50 && byDomain.rows[0].suspended == 5)
        #expect(byDomain.rows[0].oldestReceivedAt == 200 && byDomain.rows[0].tenant == nil && byDomain.rows[0].node == nil)
        #expect(byDomain.rows[0].responses == [ResponseCount(text: "421 4.7.28 slow down", count: 50)])
        #expect(byDomain.total.queued == 57 && byDomain.nodes.map(\.queuedEntries) == [32, 25])
        let oldest = ClusterQueueSummary(nodes: nodes, unanswered: [:], by: [.node, .tenant], sort: .oldest, limit: 2, now: 1_000)
        #expect(oldest.rows.map { "\($0.node!)/\($0.tenant!)" } == ["d2/globex", "d2/acme"])
        let table = byDomain.table(width: 100)
        #expect(table.contains("NOT ANSWERING: d3: cannot connect") && table.contains("TOTAL"))
        #expect(table.split(separator: "\n").allSatisfy { $0.count <= 100 }, "\(table)")
    }
}

@Suite struct DiagnosisTests {
    func patterns(_ nodes: [NodeQueueSummary]) -> [IncidentPattern] {
        Diagnosis(nodes: nodes, unanswered: [:], now: 200_000).findings.map(\.pattern)
    }

    @Test func aHealthyClusterIsHealthy() {
        let diagnosis = Diagnosis(nodes: [node("d1", [row("d1", "acme", "a.test", ready: 3, delivered: 500, failed: 2),
                                                      row("d1", "acme", "b.test", delivered: 100)])], unanswered: [:], now: 200_000)
        #expect(diagnosis.healthy && diagnosis.findings.isEmpty)
        #expect(diagnosis.text().hasPrefix("healthy: no incident pattern holds (1 delivery nodes, 3 queued entries, 602 attempts"))
    }

    @Test func oneDestinationNotTakingMailWhileOthersFlowIsPatternA() throws {
        let diagnosis = Diagnosis(nodes: [node("d1", [
            row("d1", "acme", "gmail.com", deferred: 400, failed: 800, response: "421-4.7.28 Our system has detected an unusual rate"),
            row("d1", "acme", "a.test", delivered: 500), row("d1", "acme", "b.test", ready: 1, delivered: 300),
        ])], unanswered: [:], now: 200_000)
        #expect(diagnosis.findings.map(\.pattern) == [.singleDestinationBackedUp])
        let finding = try #require(diagnosis.findings.first)
        #expect(finding.summary.hasPrefix("gmail.com: 400 entries waiting"))
        #expect(finding.evidence.contains { $0.contains("421-4.7.28 Our system has detected an unusual rate\" × 400") })
        #expect(finding.since == 1_000 && finding.interventions.contains { $0.contains("queue pause --domain gmail.com") })
    }

    @Test func aDestinationThatAskedUsToBackOffIsBackedUp() {
        let suspendedByRule = row("d1", "acme", "gmail.com", suspended: 60, failed: 12, response: "421 4.7.28 rate limited")
        #expect(patterns([node("d1", [suspendedByRule, row("d1", "acme", "a.test", delivered: 50)])]) == [.singleDestinationBackedUp])
    }

    @Test func everyDestinationFailingIsPatternBNotA() {
        let nodes = ["a.test", "b.test", "c.test"].map { domain in
            node("d-\(domain)", [row("d", "acme", domain, deferred: 50, failed: 50, response: "451 4.4.1 Connection refused")])
        }
        #expect(patterns(nodes) == [.allDestinationsSlow])
        #expect(patterns([node("d1", [row("d1", "acme", "a.test", deferred: 50, failed: 50)])]) == [.singleDestinationBackedUp],
                "one destination only is pattern A")
    }

    @Test func destinationsThatDeliveredOnlyBeforeTheTroubleBeganDoNotCountAsFlowing() {
        let failing = ["a.test", "b.test", "c.test"].map { row("d1", "acme", $0, deferred: 15, received: 50_000, failed: 15) }
        let earlier = ["x.test", "y.test"].map { row("d1", "acme", $0, delivered: 90, delivered_at: 40_000) }
        #expect(patterns([node("d1", failing + earlier)]) == [.allDestinationsSlow], "the sink went down after x and y delivered")
        let stillFlowing = ["x.test", "y.test"].map { row("d1", "acme", $0, delivered: 90, delivered_at: 60_000) }
        #expect(patterns([node("d1", failing + stillFlowing)]) == Array(repeating: .singleDestinationBackedUp, count: 3),
                "x and y deliver while a, b and c fail: three destinations backed up, not all")
    }

    @Test func onePoolFailingWhileAnotherDeliversIsPatternE() throws {
        let nodes = [node("d1", [
            row("d1", "globex", "inbox.test", pool: "bad", deferred: 40, failed: 40, response: "451 4.4.1 Cannot assign requested address"),
            row("d1", "acme", "inbox.test", pool: "good", delivered: 40),
        ])]
        let diagnosis = Diagnosis(nodes: nodes, unanswered: [:], now: 200_000)
        #expect(diagnosis.findings.map(\.pattern) == [.poolDegraded], "the destination delivers on the other pool: not pattern A")
        #expect(try #require(diagnosis.findings.first).summary.hasPrefix("pool bad: 40 of 40 recent attempts failed"))
    }

    @Test func aGrowingRetryQueueIsPatternC() {
        let samples = [DeferredSample(at: 10_000, deferred: 100), DeferredSample(at: 100_000, deferred: 400)]
        let rows = (1...8).map { row("d1", "acme", "d\($0).test", deferred: 50, ready: 0, delivered: 10, failed: 60) }
        #expect(patterns([node("d1", rows, samples: samples)]).contains(.retryQueueExploding))
        let steady = [DeferredSample(at: 10_000, deferred: 390), DeferredSample(at: 100_000, deferred: 400)]
        #expect(!patterns([node("d1", rows, samples: steady)]).contains(.retryQueueExploding), "a steady retry queue is not exploding")
    }

    @Test func notificationsThatCannotBeMadeOrSentArePatternD() {
        #expect(patterns([node("d1", [row("d1", "acme", "a.test", delivered: 10)], dsnFailures: 3)]) == [.bounceProcessingFailing])
        let stuck = row("d1", "acme", "senders.test", deferred: 12, failed: 12, response: "450 mailbox busy", nullSender: 12)
        #expect(patterns([node("d1", [stuck, row("d1", "acme", "a.test", delivered: 10), row("d1", "acme", "b.test", delivered: 10)])])
                == [.singleDestinationBackedUp, .bounceProcessingFailing])
    }

    @Test func spooledMessagesInNoQueueAreOrphans() throws {
        let diagnosis = Diagnosis(nodes: [node("d1", [row("d1", "acme", "a.test", suspended: 90, paused: 90)], orphaned: 10)], unanswered: [:],
                                  now: 200_000)
        #expect(diagnosis.findings.map(\.pattern) == [.orphanedInSpool], "mail an operator paused is not a backed-up destination")
        #expect(try #require(diagnosis.findings.first).evidence == ["d1: 10 of 100 spooled messages are in no queue"])
    }
}

@Suite struct TerminalTests {
    @Test func agesReadAtAGlance() {
        #expect([0, 42_000, 65_000, 3_900_000, 90_061_000, -5].map(TerminalTable.age) == ["0s", "42s", "1m05s", "1h05m", "1d01h", "0s"])
    }

    @Test func theLastColumnIsCutToTheWidth() {
        let text = TerminalTable.render(["A", "TEXT"], [["1", String(repeating: "x", count: 200)]], width: 60)
        #expect(text.split(separator: "\n").allSatisfy { $0.count <= 60 } && text.contains("…"))
        #expect(TerminalTable.width(environment: ["COLUMNS": "80"]) == 80 && TerminalTable.width(environment: ["COLUMNS": "x"]) == 120)
    }

    @Test func progressBarsFill() {
        let bar = ProgressBar(total: 200)
        #expect(bar.line(done: 100, label: "deleted") == "[" + String(repeating: "#", count: 15) + String(repeating: ".", count: 15) + "] 100/200 deleted")
        #expect(bar.line(done: 500, label: "x").hasPrefix("[" + String(repeating: "#", count: 30) + "]"))
        #expect(ProgressBar(total: 0).line(done: 0, label: "x").hasPrefix("[###"))
    }
}
