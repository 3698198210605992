import Foundation
import Reconciliation
import Testing
import TestSupport

/// `smarthost reconciler` keeping the cluster ledger of a real run: smtp-source → ingress →
/// Tansu → two delivery nodes → smtp-sink, one delivery node killed and restarted mid-run.
@Suite(.serialized, .timeLimit(.minutes(12)))
struct ClusterLedgerTests {
    /// A `smarthost reconciler` process.
    struct ReconcilerProcess {
        let process: ManagedProcess
        let config: String

        static func start(broker: TansuBroker, redis: String, tenantYAML: String) throws -> ReconcilerProcess {
            let directory = NSTemporaryDirectory() + "reconciler-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let config = "\(directory)/cluster.yaml"
            try """
                node: {id: reconciler-1, log_format: json, admin_listen: "127.0.0.1:\(try Loopback.freePort())", admin_token: \(DeliveryProcess.adminToken)}
                kafka: {brokers: ["\(broker.bootstrap)"], delivery_timeout: 5s, session_timeout: 6s, metadata_refresh: 1s}
                redis: {address: "\(redis)"}
                reconciliation: {ledger_dir: "\(directory)/ledger", unaccounted_after: 5s, ledger_every: 2s}
                \(tenantYAML)

                """.write(toFile: config, atomically: true, encoding: .utf8)
            return try start(config: config)
        }

        static func start(config: String) throws -> ReconcilerProcess {
            let process = try ManagedProcess(name: "smarthost reconciler", executable: SmarthostCLITests.binary,
                                             arguments: ["reconciler", "--config", config],
                                             logPath: "\(config).\(UUID().uuidString.prefix(4)).log")
            return ReconcilerProcess(process: process, config: config)
        }

        /// Starts again on the same configuration and ledger directory.
        func restart() throws -> ReconcilerProcess { try Self.start(config: config) }

        /// `smarthost ledger --now --format json`, parsed (nil while the reconciler is not listed yet).
        func ledger() async throws -> LedgerReport? {
            let result = try await runCommand(SmarthostCLITests.ctl, ["ledger", "--now", "--format", "json", "--config", config])
            guard result.status == 0 else { return nil }
            return try ReportFormat.decode(LedgerReport.self, from: Array(result.output.utf8))
        }
    }

    static func sinkIDs(_ directory: String) throws -> Set<String> {
        Set(try EndToEndDeliveryTests.sinkContents(directory).map(\.id))
    }

    /// 20,000 messages; a delivery node and the reconciler killed (SIGKILL) and restarted mid-run. The ledger
    /// balances (accepted = delivered + bounced + expired + deleted + queued) with nothing
    /// unaccounted. Then each node's consumer skips one record on purpose (a consumer that
    /// committed past it): the ledger names exactly those records, and does not balance.
    @Test func theLedgerBalancesAfterAKilledNodeAndNamesALostRecord() async throws {
        let messages = 20_000
        let broker = try await TansuBroker.start()
        defer { broker.stop() }
        try await DeliveryNodeTests.createTopics(broker, tenants: ["demo"])
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let sinkDirectory = NSTemporaryDirectory() + "ledger-sink-\(UUID().uuidString.prefix(8))"
        let sinkPort = try Loopback.freePort()
        let sink = try await EndToEndDeliveryTests.startSink(directory: sinkDirectory, port: sinkPort)
        defer { sink.stop() }
        let ingressPort = try Loopback.freePort()
        let ingress = try IngressProcess.start(broker: broker, name: "ledger-ingress", yaml: EndToEndDeliveryTests.tenantYAML + """

            ingress:
              hostname: mx.test
              listeners: [{address: "127.0.0.1:\(ingressPort)"}]
            """, redisPort: redis.port)
        defer { ingress.stop() }
        var nodes = try (1...2).map { index in
            try DeliveryProcess.start(broker: broker, name: "ledger-delivery-\(index)", yaml: EndToEndDeliveryTests.tenantYAML + """

                delivery: {default_next_hop: "127.0.0.1:\(sinkPort)", command_timeout: 30s, max_connections_per_site: 8}
                testing: {fault_injection: true}
                """, redis: redis.address)
        }
        defer { for node in nodes { node.stop() } }
        var reconciler = try ReconcilerProcess.start(broker: broker, redis: redis.address, tenantYAML: EndToEndDeliveryTests.tenantYAML)
        defer { reconciler.process.stop() }
        try await waitForGreeting(ingress.process, port: ingressPort, greeting: "220 mx.test ")

        let sending = Task {
            try await runCommand(try findExecutable("smtp-source"), [
                "-m", "\(messages)", "-s", "20", "-l", "1024", "-f", "app@demo.test", "-t", "someone@example.com", "127.0.0.1:\(ingressPort)"])
        }
        #expect(try await eventually(.seconds(180), every: .milliseconds(50)) { EndToEndDeliveryTests.fileCount(sinkDirectory) >= messages / 4 })
        nodes[0].process.crash()
        let atKill = EndToEndDeliveryTests.fileCount(sinkDirectory)
        nodes[0] = try nodes[0].restart()
        // The reconciler too, mid-run: its ledger is on disk, and what it had not saved is read again.
        try await Task.sleep(for: .seconds(3))
        reconciler.process.crash()
        reconciler = try reconciler.restart()
        let source = try await sending.value
        #expect(source.status == 0 && source.errors.isEmpty, "smtp-source: \(source.output)\(source.errors)")
        let arrived = try await eventually(.seconds(300), every: .seconds(1)) { try Self.sinkIDs(sinkDirectory).count >= messages }
        let distinct = try Self.sinkIDs(sinkDirectory).count
        #expect(arrived, "\(distinct) of \(messages) at the sink")

        var report: LedgerReport?
        for _ in 0..<60 {
            report = try await reconciler.ledger()
            if let report, report.totals.acceptedMessages >= messages, report.queuedRecipients == 0 { break }
            try await Task.sleep(for: .seconds(2))
        }
        let balanced = try #require(report, "the reconciler answered; log:\n\(reconciler.process.logTail())")
        let totals = balanced.totals
        print("""
            ledger: killed a delivery node at \(atKill) delivered; accepted \(totals.acceptedRecipients), delivered \(totals.delivered), \
            bounced \(totals.bounced), expired \(totals.expired), deleted \(totals.deleted), queued \(balanced.queuedRecipients), \
            unaccounted \(balanced.unaccountedRecipients), duplicated messages \(totals.duplicateMessages), \
            duplicate outcomes \(totals.duplicateOutcomes), outcomes seen before their Reception \(totals.outcomesBeforeReception)
            """)
        #expect(totals.acceptedMessages == messages && totals.acceptedRecipients == messages)
        #expect(balanced.balances && balanced.queuedRecipients == 0 && totals.delivered == messages)
        #expect(balanced.unaccounted.isEmpty && balanced.unconfirmed.isEmpty && balanced.unanswered.isEmpty, "\(balanced.unanswered)")
        #expect(balanced.malformedEvents == 0 && balanced.openMessagesWithoutReception == 0 && balanced.unspooledRecords.isEmpty)
        #expect(balanced.recordsUnchecked == nil)
        // The killed node's uncommitted records were spooled again by whichever node got them:
        // each such copy is named, never counted twice.
        #expect(totals.duplicateMessages == balanced.duplicates.count && balanced.duplicates.allSatisfy { $0.copies.count + $0.repeats.count >= 2 })

        // Each delivery node's consumer now skips one record: marked done, never spooled.
        for node in nodes { _ = try await node.admin("POST", "/admin/faults/skip-records?count=1") }
        let more = 10
        let second = try await runCommand(try findExecutable("smtp-source"), [
            "-m", "\(more)", "-s", "1", "-l", "1024", "-f", "app@demo.test", "-t", "someone@example.com", "127.0.0.1:\(ingressPort)"])
        #expect(second.status == 0, "\(second.errors)")
        // Whatever reaches the sink arrives within seconds; wait past unaccounted_after as well.
        try await Task.sleep(for: .seconds(12))
        let atSink = try Self.sinkIDs(sinkDirectory)
        let lost = messages + more - atSink.count
        #expect((1...2).contains(lost), "one record skipped per node that consumed any of the \(more)")
        var named: LedgerReport?
        for _ in 0..<15 {
            named = try await reconciler.ledger()
            if let named, named.unspooledRecords.count >= lost { break }
            try await Task.sleep(for: .seconds(2))
        }
        let final = try #require(named)
        // No spool took them, so no Reception names them: the ledger finds them as records
        // below the delivery group's committed offsets that no spool reported taking.
        #expect(final.unspooledRecords.count == lost && final.recordsUnchecked == nil, "\(final.unspooledRecords)")
        #expect(final.unspooledRecords.allSatisfy { $0.record.hasPrefix("smarthost.demo/") }, "named by their record")
        #expect(!final.balances && final.imbalance == "\(lost) Kafka records no spool took")
        #expect(final.unaccounted.isEmpty && final.totals.acceptedMessages == messages + more - lost)
        let table = try await runCommand(SmarthostCLITests.ctl, ["ledger", "--format", "table", "--config", reconciler.config])
        #expect(final.unspooledRecords.allSatisfy { table.output.contains($0.record) } && table.output.contains("DOES NOT HOLD"), "\(table.output)")
        print("ledger: \(lost) skipped record(s) named: \(final.unspooledRecords.map(\.record))")
    }
}
