import Events
import Foundation
import NodeHTTP
import Reconciliation
import Testing
import TestSupport

/// The delivery node's orphan sweep, on real processes: a real spool, Tansu, Redis and a
/// recording destination; faults injected through the admin API of a node configured with
/// `testing.fault_injection: true`.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct OrphanSweepTests {
    /// What `GET /admin/queue/counts` answers.
    struct View: Decodable {
        var scheduled: Int
        var limbo: Int
        var queuedMessages: Int
        var spooledMessages: Int
        var orphanedMessages: Int
    }

    struct Armed: Decodable {
        var count: Int
        var ids: [String]?
    }

    static func nodeYAML(_ port: Int, sweepEvery: String, faults: Bool = true) -> String {
        inboxTestYAML(destination: port, delivery: "command_timeout: 30s, max_connections_per_site: 4", more: """
            reconciliation: {sweep_every: \(sweepEvery), orphan_grace: 1s}
            testing: {fault_injection: \(faults)}
            """)
    }

    /// Tansu with the tenant topics, Redis, a recording destination and one delivery node with
    /// fault injection, routed to it.
    struct Rig {
        var cluster: DeliveryCluster
        var broker: TansuBroker { cluster.broker }
        var destination: ScriptedSMTPServer { cluster.servers[0] }
        var node: DeliveryProcess {
            get { cluster.nodes[0] }
            set { cluster.nodes[0] = newValue }
        }

        static func start(_ name: String, sweepEvery: String, destinationScript: String = #"{"rules": []}"#) async throws -> Rig {
            Rig(cluster: try await DeliveryCluster.start(scripts: [destinationScript], nodes: [name]) {
                OrphanSweepTests.nodeYAML($0[0].port, sweepEvery: sweepEvery)
            })
        }

        func stop() { cluster.stop() }
    }

    static func view(_ node: DeliveryProcess) async throws -> View {
        try ReportFormat.decode(View.self, from: try await node.admin("GET", "/admin/queue/counts"))
    }

    /// 10,000 messages held by a suspended destination; 1,000 of their entries dropped from the
    /// scheduled queues without a trace. Before the sweep the queue view counts them as
    /// orphans, not as queued; the sweep finds exactly those, the report names them and why;
    /// once the destination is released every message arrives exactly once.
    @Test func theSweepFindsExactlyTheDroppedEntriesAndTheyAreDelivered() async throws {
        let rig = try await Rig.start("sweep-1", sweepEvery: "1h")
        defer { rig.stop() }
        let (broker, destination, node) = (rig.broker, rig.destination, rig.node)
        let ctl = { (arguments: [String]) in try await rig.cluster.ctl(arguments) }
        let suspend = try await ctl(["queue", "pause", "--domain", "inbox.test", "--for", "10m", "--reason", "hold"])
        try #require(suspend.status == 0, "\(suspend.output)\(suspend.errors)")
        let holding = try await eventually(.seconds(30)) { node.metric("smarthost_throttle_adjustments") == 1 }
        try #require(holding, "the node sees the suspension before any mail arrives; log:\n\(node.process.logTail())")

        let total = 10_000
        for start in stride(from: 0, to: total, by: 2_000) {
            try await enqueue((start..<start + 2_000).map { testMessage(to: ["user\($0)@inbox.test"]) }, broker: broker)
        }
        var scheduled = 0
        for _ in 0..<240 where scheduled < total {
            try await Task.sleep(for: .milliseconds(500))
            scheduled = (try? await Self.view(node).scheduled) ?? 0
        }
        try #require(scheduled == total, "all \(total) in their scheduled queue, not \(scheduled); log:\n\(node.process.logTail())")

        let armed = try ReportFormat.decode(Armed.self, from: try await node.admin("POST", "/admin/faults/drop-scheduled?count=1000"))
        let dropped = Set(armed.ids ?? [])
        #expect(armed.count == 1_000 && dropped.count == 1_000)
        let before = try await Self.view(node)
        #expect(before.scheduled == 9_000 && before.queuedMessages == 9_000 && before.spooledMessages == total && before.orphanedMessages == 1_000,
                "the view counts them as orphans, not as queued: \(before)")

        try await Task.sleep(for: .seconds(1.5))  // past orphan_grace
        let swept = try await ctl(["reconcile", "sweep", "--format", "json"])
        #expect(swept.status == 0, "\(swept.errors)")
        let report = try ReportFormat.decode(ReconcileReport.self, from: Array(swept.output.utf8))
        let sweep = try #require(report.sweeps.first)
        #expect(sweep.orphansFound == 1_000 && sweep.orphansRepaired == 1_000 && sweep.spooledMessages == total && sweep.limboRetried == 0)
        #expect(Set(sweep.orphans.map(\.id)) == dropped, "exactly the dropped entries")
        #expect(sweep.orphans.allSatisfy { $0.reason == "in no queue" && $0.tenant == "acme" && $0.domain == "inbox.test" && $0.repaired })
        let after = try await Self.view(node)
        #expect(after.scheduled == total && after.orphanedMessages == 0)
        print("sweep: \(sweep.spooledMessages) spooled, \(sweep.orphansFound) orphans found and requeued in \(sweep.durationMilliseconds) ms")

        let again = try await ctl(["reconcile", "sweep", "--format", "json"])
        #expect(try ReportFormat.decode(ReconcileReport.self, from: Array(again.output.utf8)).sweeps.first?.orphansFound == 0,
                "a second sweep finds nothing")
        let csv = try await ctl(["reconcile", "report", "--format", "csv"])
        #expect(csv.status == 0 && csv.output.split(separator: "\r\n").count == 1, "the last report (the second sweep) has no orphans")
        let table = try await ctl(["reconcile", "report"])
        #expect(table.output.contains("no orphans") && table.output.contains("sweep-1"), "\(table.output)")

        let release = try await ctl(["queue", "resume", "--domain", "inbox.test"])
        #expect(release.status == 0, "\(release.output)\(release.errors)")
        let delivered = try await eventually(.seconds(180), every: .seconds(1)) { try destination.messages().count >= total }
        let arrived = try destination.messages().count
        #expect(delivered, "\(arrived) of \(total) delivered; log:\n\(node.process.logTail())")
        let recipients = try destination.messages().flatMap { $0.recipients ?? [] }
        #expect(recipients.count == total && Set(recipients).count == total, "every message exactly once")
        let requeued = try await eventually(.seconds(10)) { try node.events().filter { $0.type == .orphanRequeued }.count == 1_000 }
        #expect(requeued, "one OrphanRequeued event per repaired entry")
    }

    /// The KumoMTA thread, scripted: the destination refuses every connection, so the ready
    /// queues are bulk-delayed and every entry goes back to its scheduled queue after each
    /// failure; 300 of those re-inserts fail. Then the destination recovers. Every message is
    /// delivered without a restart; the events and metrics show what the sweep repaired
    /// (limbo entries, each with its error) and that nothing was ever in no queue.
    @Test func theKumoMTAStuckInSpoolThreadEndsWithEveryMessageDelivered() async throws {
        let rig = try await Rig.start("kumo-1", sweepEvery: "3s",
                                      destinationScript: #"{"rules": [{"when": "connect", "reply": "421 4.4.5 Server busy, try again later"}]}"#)
        defer { rig.stop() }
        let (broker, destination, node) = (rig.broker, rig.destination, rig.node)
        let armed = try ReportFormat.decode(Armed.self, from: try await node.admin("POST", "/admin/faults/fail-reinserts?count=300"))
        #expect(armed.count == 300)

        let total = 2_000
        try await enqueue((0..<total).map { testMessage(to: ["user\($0)@inbox.test"]) }, broker: broker)
        let failing = try await eventually(.seconds(120), every: .seconds(1)) {
            (node.metric("smarthost_reconcile_orphans_total", labels: #"kind="limbo""#) ?? 0) >= 300
        }
        #expect(failing, "300 re-inserts failed and their limbo entries were retried; log:\n\(node.process.logTail())")
        let pid = node.process.pid
        try destination.replaceScript(#"{"rules": []}"#)

        let delivered = try await eventually(.seconds(240), every: .seconds(1)) { Set(try destination.messages().flatMap { $0.recipients ?? [] }).count >= total }
        let arrived = try destination.messages().count
        #expect(delivered, "\(arrived) of \(total); log:\n\(node.process.logTail())")
        #expect(node.process.isRunning && node.process.pid == pid, "no restart")
        let recipients = try destination.messages().flatMap { $0.recipients ?? [] }
        #expect(recipients.count == total, "each exactly once")
        let repairs = try node.events().filter { $0.type == .orphanRequeued }
        #expect(repairs.count == 300 && repairs.allSatisfy { $0.reason == "limbo: re-insert failed (injected fault)" }, "\(repairs.count)")
        #expect((node.metric("smarthost_reconcile_orphans_total", labels: #"kind="in-no-queue""#) ?? 0) == 0,
                "no entry was ever in no queue: the design kept each one somewhere")
        let report = try await runCommand(SmarthostCLITests.ctl, ["reconcile", "report", "--format", "json", "--config", node.config])
        let totals = try #require(try ReportFormat.decode(ReconcileReport.self, from: Array(report.output.utf8)).sweeps.first?.sinceStart)
        #expect(totals.limboRetried == 300 && totals.limboRepaired == 300 && totals.orphansFound == 0 && totals.sweeps >= 1,
                "the report shows what the sweeps repaired: \(totals)")
        let refused = try destination.records().filter { $0.event == "reply" && $0.reply?.hasPrefix("421") == true }.count
        print("KumoMTA reproduction: \(refused) connections refused, 300 re-inserts failed into limbo, all repaired by the sweep; \(total) of \(total) delivered without a restart")
    }

    /// The third fault: the node exits after consuming a batch and before spooling it. Its
    /// offsets were not committed, so the restarted node reads the batch again: nothing lost,
    /// nothing twice.
    @Test func aCrashBetweenConsumingAndSpoolingLosesNothing() async throws {
        var rig = try await Rig.start("crash-1", sweepEvery: "1h")
        defer { rig.stop() }
        let (broker, destination) = (rig.broker, rig.destination)
        _ = try await rig.node.admin("POST", "/admin/faults/crash-before-spool")
        let total = 300
        try await enqueue((0..<total).map { testMessage(to: ["user\($0)@inbox.test"]) }, broker: broker)
        let status = try await rig.node.process.exitCode(within: .seconds(60))
        #expect(status == 70, "the node exited on the injected fault; log:\n\(rig.node.process.logTail())")
        #expect(try destination.messages().isEmpty, "nothing was spooled, so nothing was sent")
        rig.node = try rig.node.restart()
        let delivered = try await eventually(.seconds(120), every: .milliseconds(500)) { try destination.messages().count >= total }
        let recipients = try destination.messages().flatMap { $0.recipients ?? [] }
        #expect(delivered && recipients.count == total && Set(recipients).count == total, "\(recipients.count) of \(total); log:\n\(rig.node.process.logTail())")
    }

    /// Hostile and malformed admin requests get a precise 4xx and change nothing; the faults
    /// do not exist without `testing.fault_injection`.
    @Test func badAdminRequestsAreRefusedAndFaultsAreOffByDefault() async throws {
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker)
        let node = try DeliveryProcess.start(broker: broker, name: "admin-1", yaml: Self.nodeYAML(9, sweepEvery: "1h", faults: false))
        defer { node.stop() }
        _ = try await node.admin("GET", "/admin/queue/counts")
        let address = "127.0.0.1:\(node.adminPort)"
        let token = DeliveryProcess.adminToken
        let cases: [(String, String, String?, String, Int, String)] = [
            ("POST", "/admin/faults/drop-scheduled?count=5", token, "", 403, "fault injection is off"),
            ("POST", "/admin/faults/crash-before-spool", token, "", 403, "fault injection is off"),
            ("POST", "/admin/faults/fail-spool-writes?count=1", token, "", 403, "fault injection is off"),
            ("POST", "/admin/faults/fail-body-reads?count=1", token, "", 403, "fault injection is off"),
            ("POST", "/admin/faults/fail-dsn-queueing?count=1", token, "", 403, "fault injection is off"),
            ("GET", "/admin/queue/counts", nil, "", 401, "bearer token"),
            ("GET", "/admin/queue/counts", "wrong-token-0123456789", "", 401, "bearer token"),
            ("POST", "/admin/spool/lookup", token, "{not json", 400, "expected"),
            ("POST", "/admin/spool/lookup", token, #"{"ids": ["nope"]}"#, 400, "not a message id"),
            ("POST", "/admin/spool/lookup", token, #"{"ids": 5}"#, 400, "expected"),
            ("GET", "/admin/reconcile/report?format=xml", token, "", 400, "format must be"),
            ("GET", "/admin/reconcile/report?format=%ZZ", token, "", 400, "percent-encoded"),
            ("DELETE", "/admin/queue/counts", token, "", 404, "no such admin endpoint"),
        ]
        for (method, path, bearer, body, status, text) in cases {
            let (got, answer) = try await AdminClient.request(address, method: method, path: path, token: bearer, body: Array(body.utf8))
            let answerText = String(decoding: answer, as: UTF8.self)
            #expect(got == status && answerText.contains(text) && answerText.hasPrefix("{\"error\":"), "\(method) \(path): \(got) \(answerText)")
        }
        let lookup = try await node.admin("POST", "/admin/spool/lookup", body: Array(#"{"ids": ["01M8XFY1ZHN7Z9T4HG54CGSY5A"]}"#.utf8))
        struct Held: Decodable { var held: [String] }
        #expect(try ReportFormat.decode(Held.self, from: lookup).held.isEmpty)
        #expect(node.process.isRunning, "still serving")
    }
}
