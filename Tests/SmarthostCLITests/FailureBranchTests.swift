import Events
import Foundation
import Kafka
import NodeHTTP
import Reconciliation
import Testing
import TestSupport

/// The failure branches of docs/reconciler.md's first table that only an injected fault
/// reaches, on live processes (Tansu, redis-server, a scripted destination, `smarthost
/// delivery` with `testing.fault_injection: true`; for the last, `smarthost ingress` and
/// `smarthost reconciler` too): each fault armed through the admin API, the real branch runs.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct FailureBranchTests {
    /// The node's configuration after its node, kafka and redis sections: tenant `acme`
    /// (class `fast`, retried every second), its mail and its DSNs (to `acme.test`) routed to
    /// the destination on `port`, faults on.
    static func nodeYAML(_ port: Int) -> String {
        """
        traffic_classes:
          fast: {first_retry: 1s, retry_multiplier: 1, max_retry_interval: 1s, expiry: 1h}
        tenants:
          acme: {trusted_networks: [127.0.0.0/8], traffic_class: fast}
        routes:
          - {domain: inbox.test, next_hop: "127.0.0.1:\(port)"}
          - {domain: acme.test, next_hop: "127.0.0.1:\(port)"}
        delivery: {command_timeout: 30s}
        testing: {fault_injection: true}
        """
    }

    /// Tansu, Redis, one scripted destination and one delivery node routed to it.
    static func rig(_ name: String, script: String = #"{"rules": []}"#) async throws -> DeliveryCluster {
        try await DeliveryCluster.start(scripts: [script], nodes: [name]) { Self.nodeYAML($0[0].port) }
    }

    /// How many lines of the process's log contain every one of `texts`.
    static func logLines(_ process: ManagedProcess, containing texts: String...) -> Int {
        let log = (try? String(contentsOfFile: process.logPath, encoding: .utf8)) ?? ""
        return log.split(separator: "\n").filter { line in texts.allSatisfy { line.contains($0) } }.count
    }

    /// Which of `ids` the node's spool holds unfinished (`POST /admin/spool/lookup`).
    static func held(_ ids: [String], by node: DeliveryProcess) async throws -> [String] {
        let body = Array(#"{"ids": [\#(ids.map { "\"\($0)\"" }.joined(separator: ", "))]}"#.utf8)
        return try ReportFormat.decode(SpoolLookup.Answer.self, from: try await node.admin("POST", "/admin/spool/lookup", body: body)).held
    }

    static func recipients(_ destination: ScriptedSMTPServer) throws -> [String] {
        try destination.messages().flatMap { $0.recipients ?? [] }
    }

    /// The delivery group's committed offset in each tenant-topic partition (nil: none yet).
    static func committedOffsets(_ admin: KafkaAdmin) async throws -> [TopicPartition: Int64?] {
        try await admin.committedOffsets(group: "smarthost-delivery", topicsWithPrefix: "smarthost.")
    }

    static func committed(_ offsets: [TopicPartition: Int64?], _ record: DeliveryReport) -> Int64? {
        offsets[TopicPartition(topic: record.topic, partition: record.partition)] ?? nil
    }

    static let retryLog = "spool write failed; retrying before any offset is committed"

    /// `DeliveryNode.persist`'s retry loop: the next six spool writes fail (backoff 0.1, 0.2,
    /// 0.4, 0.8, 1.6, 3.2 s). While they fail no record is marked done: the delivery group's
    /// committed offsets stay at or below the records, the spool holds none of them, nothing is
    /// sent. Then the write succeeds: each message is spooled and delivered exactly once and the
    /// offsets move past the records.
    @Test func spoolWritesThatFailAreRetriedWithNoOffsetCommittedPastTheRecords() async throws {
        let rig = try await Self.rig("spool-write-1")
        defer { rig.stop() }
        let (node, destination) = (rig.nodes[0], rig.servers[0])
        _ = try await node.admin("POST", "/admin/faults/fail-spool-writes?count=6")
        let messages = (0..<3).map { testMessage(to: ["writes\($0)@inbox.test"]) }
        let ids = messages.map(\.id.text)
        let records = try await enqueue(messages, broker: rig.broker)

        let failing = try await eventually(.seconds(30)) { Self.logLines(node.process, containing: Self.retryLog, "injected fault") >= 5 }
        try #require(failing, "five failed writes logged; log:\n\(node.process.logTail())")
        // A second and more since the first failure: the consumer commits what is done every second.
        let admin = try KafkaAdmin(bootstrapServers: [rig.broker.bootstrap])
        let during = try await Self.committedOffsets(admin)
        for record in records {
            let committed = Self.committed(during, record)
            #expect((committed ?? 0) <= record.offset, "\(record.topic)/\(record.partition): committed \(committed ?? -1), record at \(record.offset)")
        }
        // Still unspooled after the offsets were read: they were read while the writes failed.
        #expect(try await Self.held(ids, by: node).isEmpty, "no record spooled yet")
        #expect(try destination.messages().isEmpty)

        let delivered = try await eventually(.seconds(60)) { try Self.recipients(destination).count >= messages.count }
        #expect(delivered, "log:\n\(node.process.logTail())")
        #expect(try Self.recipients(destination).sorted() == messages.flatMap { $0.recipients.map(\.description) }.sorted(), "each exactly once")
        #expect(Self.logLines(node.process, containing: Self.retryLog, "injected fault") == 6)
        let receptions = try node.events(receptions: true).filter { $0.type == .reception }
        #expect(receptions.map(\.id).sorted() == ids.sorted(), "each spooled once")
        let committedPast = try await eventuallyAsync(.seconds(30)) {
            let after = try await Self.committedOffsets(admin)
            return records.allSatisfy { record in Self.committed(after, record).map { $0 > record.offset } ?? false }
        }
        #expect(committedPast, "once spooled, the records' offsets are committed")
    }

    /// The body read before sending fails twice (the spool read of the content): each time the
    /// attempt is a transient failure (451 4.3.0 "Local spool error", TransientFailure event)
    /// that does not count as an attempt, retried on schedule; the third read works and the
    /// message is delivered, on what counts as its first attempt.
    @Test func aBodyThatCannotBeReadIsATransientFailureNotCountedAndDeliveredLater() async throws {
        let rig = try await Self.rig("body-read-1")
        defer { rig.stop() }
        let (node, destination) = (rig.nodes[0], rig.servers[0])
        _ = try await node.admin("POST", "/admin/faults/fail-body-reads?count=2")
        let message = testMessage(to: ["body@inbox.test"])
        try await enqueue([message], broker: rig.broker)

        let delivered = try await eventually(.seconds(60)) { try !destination.messages().isEmpty }
        #expect(delivered, "log:\n\(node.process.logTail())")
        #expect(try Self.recipients(destination) == ["body@inbox.test"])
        let logged = try await eventually(.seconds(10)) { try node.events().contains { $0.type == .delivery } }
        #expect(logged, "the Delivery event is in the node's event log")
        let events = try node.events()
        let transient = events.filter { $0.type == .transientFailure && $0.id == message.id.text }
        #expect(transient.count == 2, "\(events.map(\.type))")
        for event in transient {
            #expect(event.response?.code == 451 && event.response?.enhanced == "4.3.0", "\(String(describing: event.response))")
            #expect(event.response?.text.contains("Local spool error") == true && event.response?.text.contains("injected fault") == true)
            #expect(event.attempt == 0, "not counted as an attempt")
            #expect(event.nextAttemptAt != nil, "retried on schedule")
        }
        let delivery = try #require(events.first { $0.type == .delivery && $0.id == message.id.text })
        #expect(delivery.attempt == 1, "the delivery is the first counted attempt")
        #expect(events.firstIndex { $0.type == .delivery }! > events.lastIndex { $0.type == .transientFailure }!)
    }

    /// A bounce whose DSN cannot be queued (spooling it fails): the Bounce is still recorded
    /// (without a DSN id) and the message leaves the spool; `smarthost_delivery_dsn_failures_total`
    /// counts it and the error is logged. The next bounce, the fault used up, gets its DSN.
    @Test func aDSNThatCannotBeQueuedLeavesTheBounceRecordedCountedAndLogged() async throws {
        let rig = try await Self.rig("dsn-fail-1", script: #"{"rules": [{"when": "rcpt", "address": "gone@inbox.test", "reply": "550 5.1.1 No such user"}]}"#)
        defer { rig.stop() }
        let (node, destination) = (rig.nodes[0], rig.servers[0])
        let failuresBefore = node.metric("smarthost_delivery_dsn_failures_total") ?? 0
        _ = try await node.admin("POST", "/admin/faults/fail-dsn-queueing?count=1")
        let first = testMessage(to: ["gone@inbox.test"])
        try await enqueue([first], broker: rig.broker)

        let bounced = try await eventually(.seconds(60)) { try node.events().contains { $0.type == .bounce && $0.id == first.id.text } }
        try #require(bounced, "log:\n\(node.process.logTail())")
        let bounce = try #require(try node.events().first { $0.type == .bounce && $0.id == first.id.text })
        #expect(bounce.dsn == nil && bounce.response?.code == 550, "recorded without a DSN: \(bounce)")
        let counted = try await eventually(.seconds(10)) { node.metric("smarthost_delivery_dsn_failures_total") == failuresBefore + 1 }
        #expect(counted, "dsn failures: \(node.metric("smarthost_delivery_dsn_failures_total") ?? -1)")
        #expect(Self.logLines(node.process, containing: "could not queue a DSN", first.id.text, "injected fault") == 1,
                "log:\n\(node.process.logTail())")
        #expect(try await Self.held([first.id.text], by: node).isEmpty, "the bounced message left the spool")
        #expect(try node.events(receptions: true).filter { $0.type == .reception && $0.client == "dsn" }.isEmpty, "no DSN was spooled")

        let second = testMessage(to: ["gone@inbox.test"])
        try await enqueue([second], broker: rig.broker)
        let notified = try await eventually(.seconds(60)) { try destination.messages().contains { $0.sender == "" && $0.recipients == ["app@acme.test"] } }
        #expect(notified, "the next bounce's DSN reaches the sender; log:\n\(node.process.logTail())")
        let secondBounce = try node.events().first { $0.type == .bounce && $0.id == second.id.text }
        #expect(secondBounce?.dsn != nil)
        #expect(node.metric("smarthost_delivery_dsn_failures_total") == failuresBefore + 1)
        #expect(try await Self.held([first.id.text, second.id.text], by: node).isEmpty)
    }

    /// An ingress node that exits as a SIGKILL would (status 70, nothing flushed or shut down)
    /// the instant its 250 to a message is written: the client has the 250, the node answers
    /// nothing more, and the ledger (which learns the acceptance from the spool that took the
    /// record) counts the message accepted and delivered; the balance holds and the destination
    /// has it once. Without the flag an ingress node's fault endpoint answers 403.
    @Test func anIngressKilledRightAfterItsAckLosesNoAcceptanceInTheLedger() async throws {
        let rig = try await Self.rig("ack-crash-delivery-1")
        defer { rig.stop() }
        let (node, destination) = (rig.nodes[0], rig.servers[0])
        let ingressYAML = { (port: Int, faults: Bool) in
            """
            tenants:
              acme: {trusted_networks: [127.0.0.0/8]}
            ingress:
              hostname: mx.test
              listeners: [{address: "127.0.0.1:\(port)"}]
            testing: {fault_injection: \(faults)}
            """
        }
        let plainPort = try Loopback.freePort()
        let plain = try IngressProcess.start(broker: rig.broker, name: "ack-plain-ingress", yaml: ingressYAML(plainPort, false),
                                             redisPort: rig.redis.port)
        defer { plain.stop() }
        let port = try Loopback.freePort()
        let ingress = try IngressProcess.start(broker: rig.broker, name: "ack-crash-ingress", yaml: ingressYAML(port, true),
                                               redisPort: rig.redis.port)
        defer { ingress.stop() }
        let reconciler = try ClusterLedgerTests.ReconcilerProcess.start(broker: rig.broker, redis: rig.redis.address, tenantYAML: """
            tenants:
              acme: {trusted_networks: [127.0.0.0/8]}
            """)
        defer { reconciler.process.stop() }
        try await waitForGreeting(plain.process, port: plainPort, greeting: "220 mx.test ")
        try await waitForGreeting(ingress.process, port: port, greeting: "220 mx.test ")

        let token = DeliveryProcess.adminToken
        let refused = try await AdminClient.request("127.0.0.1:\(plain.adminPort)", method: "POST", path: "/admin/faults/crash-after-ack", token: token)
        #expect(refused.status == 403 && String(decoding: refused.body, as: UTF8.self).contains("fault injection is off"))
        let unknown = try await AdminClient.request("127.0.0.1:\(ingress.adminPort)", method: "POST", path: "/admin/faults/nope", token: token)
        #expect(unknown.status == 404)
        let armed = try await AdminClient.request("127.0.0.1:\(ingress.adminPort)", method: "POST", path: "/admin/faults/crash-after-ack", token: token)
        try #require(armed.status == 200, "\(armed.status) \(String(decoding: armed.body, as: UTF8.self))")

        let swaks = try await runCommand(try findExecutable("swaks"), [
            "--server", "127.0.0.1:\(port)", "--timeout", "30", "--from", "app@acme.test", "--to", "acked@inbox.test"])
        let id = try #require(IngressFailureTests.queuedID(swaks.output), "the client got its 250:\n\(swaks.output)\(swaks.errors)")
        let status = try await ingress.process.exitCode(within: .seconds(30))
        #expect(status == 70, "the ingress exited on the injected fault; log:\n\(ingress.process.logTail())")
        #expect(!swaks.output.contains("<-  221") && !swaks.output.contains("<~  221"), "nothing answered after the 250:\n\(swaks.output)")

        let arrived = try await eventually(.seconds(60)) { try Self.recipients(destination) == ["acked@inbox.test"] }
        #expect(arrived, "delivered; log:\n\(node.process.logTail())")
        #expect(try node.events(receptions: true).contains { $0.type == .reception && $0.id == id }, "spooled under the acknowledged id")

        var report: LedgerReport?
        for _ in 0..<60 {
            report = try await reconciler.ledger()
            if let report, report.totals.delivered >= 1, report.queuedRecipients == 0 { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        let ledger = try #require(report, "the reconciler answered; log:\n\(reconciler.process.logTail())")
        #expect(ledger.totals.acceptedMessages == 1 && ledger.totals.acceptedRecipients == 1 && ledger.totals.delivered == 1,
                "\(ledger.totals)")
        #expect(ledger.balances && ledger.queuedRecipients == 0 && ledger.imbalance == nil, "\(ledger.imbalance ?? "")")
        #expect(ledger.unaccounted.isEmpty && ledger.withoutReception.isEmpty && ledger.unspooledRecords.isEmpty && ledger.duplicates.isEmpty)
    }
}
