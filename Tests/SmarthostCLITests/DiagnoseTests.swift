import Foundation
import Operations
import QueueRecord
import Reconciliation
import Testing
import TestSupport

/// `smarthostctl diagnose` on scripted incidents, each on its own real cluster (Tansu, Redis,
/// one delivery node, scripted destinations): it names the pattern that holds, and only that
/// one, and says healthy when nothing does.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct DiagnoseTests {
    /// Tenant acme sends through pool `good`, tenant globex through pool `bad`, whose source
    /// address (TEST-NET-1) is not on this host, so every connection it opens fails.
    static func nodeYAML(routes: [String: Int]) -> String {
        """
        traffic_classes:
          slow: {first_retry: 10m, retry_multiplier: 1, max_retry_interval: 10m, expiry: 1h}
        pools:
          good: {ehlo_name: good.test}
          bad: {ehlo_name: bad.test, source_address: 192.0.2.1}
        tenants:
          acme: {trusted_networks: [127.0.0.0/8], pool: good}
          globex: {trusted_networks: [127.0.0.0/8], pool: bad}
        routes:
        \(routes.sorted { $0.key < $1.key }.map { "  - {domain: \($0.key), next_hop: \"127.0.0.1:\($0.value)\"}" }.joined(separator: "\n"))
        delivery: {command_timeout: 30s, connect_timeout: 5s}
        reconciliation: {orphan_grace: 1s}
        testing: {fault_injection: true}
        """
    }

    struct Incident {
        let cluster: DeliveryCluster
        var broker: TansuBroker { cluster.broker }
        var servers: [ScriptedSMTPServer] { cluster.servers }
        var node: DeliveryProcess { cluster.nodes[0] }

        /// Starts one destination per script, routes each domain to the port `routes` gives
        /// (an index into the scripts, or -1 for a port where nothing listens).
        static func start(_ name: String, scripts: [String], routes: [String: Int]) async throws -> Incident {
            Incident(cluster: try await DeliveryCluster.start(tenants: ["acme", "globex"], scripts: scripts, nodes: [name]) { servers in
                let closed = try Loopback.freePort()
                return DiagnoseTests.nodeYAML(routes: routes.mapValues { $0 < 0 ? closed : servers[$0].port })
            })
        }

        func stop() { cluster.stop() }
        func ctl(_ arguments: [String]) async throws -> CommandResult { try await cluster.ctl(arguments) }
        func summary(by: String) async throws -> ClusterQueueSummary { try await cluster.summary(["--by", by]) }

        /// `diagnose --json` and its exit status.
        func diagnose() async throws -> (Diagnosis, status: Int32, text: String) {
            let json = try await ctl(["diagnose", "--json"])
            let diagnosis = try ReportFormat.decode(Diagnosis.self, from: Array(json.output.utf8))
            let text = try await ctl(["diagnose"])
            return (diagnosis, json.status, text.output)
        }

        func delivered(at server: Int) throws -> Int {
            try servers[server].messages().count
        }

        func log() -> String {
            String(((try? String(contentsOfFile: node.process.logPath, encoding: .utf8)) ?? "").suffix(3_000))
        }
    }

    static func mail(_ count: Int, to domain: String, tenant: String = "acme") -> [AcceptedMessage] {
        (0..<count).map { testMessage(tenant: tenant, to: ["\(tenant)-\($0)@\(domain)"], trafficClass: "slow") }
    }

    @Test func aHealthyClusterIsHealthy() async throws {
        let incident = try await Incident.start("diagnose-healthy", scripts: [#"{"rules": []}"#], routes: ["a.test": 0, "b.test": 0])
        defer { incident.stop() }
        try await enqueue(Self.mail(20, to: "a.test") + Self.mail(20, to: "b.test"), broker: incident.broker)
        let delivered = try await eventually(.seconds(60)) { try incident.delivered(at: 0) == 40 }
        try #require(delivered, "40 delivered; log:\n\(incident.log())")
        let (diagnosis, status, text) = try await incident.diagnose()
        #expect(status == 0 && diagnosis.healthy && diagnosis.findings.isEmpty, "\(text)")
        #expect(text.hasPrefix("healthy: no incident pattern holds (1 delivery nodes"), "\(text)")
    }

    @Test func oneDomainAnswering421IsASingleDestinationBackedUp() async throws {
        let gmail = #"{"rules": [{"when": "rcpt", "reply": "421 4.7.28 [192.0.2.9] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited."}]}"#
        let incident = try await Incident.start("diagnose-421", scripts: [gmail, #"{"rules": []}"#],
                                                routes: ["slow.test": 0, "fast.test": 1, "ok.test": 1])
        defer { incident.stop() }
        try await enqueue(Self.mail(30, to: "slow.test") + Self.mail(30, to: "fast.test") + Self.mail(30, to: "ok.test"), broker: incident.broker)
        let settled = try await eventuallyAsync(.seconds(60)) {
            let refused = try await incident.summary(by: "domain").rows.first { $0.domain == "slow.test" }?.recent.deferred ?? 0
            return try incident.delivered(at: 1) == 60 && refused > 0
        }
        try #require(settled, "the other domains delivered, slow.test refused; log:\n\(incident.log())")
        let (diagnosis, status, text) = try await incident.diagnose()
        #expect(status == 2 && diagnosis.findings.map(\.pattern) == [.singleDestinationBackedUp], "\(text)")
        let finding = try #require(diagnosis.findings.first)
        #expect(finding.summary.hasPrefix("slow.test: 30 entries waiting") && finding.since != nil, "\(text)")
        #expect(finding.evidence.contains { $0.contains("421 4.7.28") && $0.contains("temporarily rate limited") }, "\(text)")
        #expect(text.contains("single-destination-backed-up: slow.test") && text.contains("smarthostctl queue pause --domain slow.test"), "\(text)")
    }

    @Test func theWholeSinkDownIsAllDestinationsSlow() async throws {
        let incident = try await Incident.start("diagnose-down", scripts: [], routes: ["a.test": -1, "b.test": -1, "c.test": -1])
        defer { incident.stop() }
        try await enqueue(Self.mail(20, to: "a.test") + Self.mail(20, to: "b.test") + Self.mail(20, to: "c.test"), broker: incident.broker)
        let failing = try await eventuallyAsync(.seconds(60)) {
            let rows = try await incident.summary(by: "domain").rows
            return rows.count == 3 && rows.allSatisfy { $0.recent.deferred > 0 && $0.queued == 20 }
        }
        try #require(failing, "every domain deferred; log:\n\(incident.log())")
        let (diagnosis, status, text) = try await incident.diagnose()
        #expect(status == 2 && diagnosis.findings.map(\.pattern) == [.allDestinationsSlow], "\(text)")
        #expect(diagnosis.findings.first?.summary == "3 of 3 destinations with recent traffic are not taking mail: 60 entries waiting", "\(text)")
        #expect(diagnosis.findings.first?.evidence.contains { $0.contains("onnect") } == true, "the connection error is the evidence: \(text)")
    }

    @Test func aPoolWhoseSourceAddressFailsIsDegraded() async throws {
        let incident = try await Incident.start("diagnose-pool", scripts: [#"{"rules": []}"#], routes: ["inbox.test": 0])
        defer { incident.stop() }
        try await enqueue(Self.mail(30, to: "inbox.test") + Self.mail(30, to: "inbox.test", tenant: "globex"), broker: incident.broker)
        let settled = try await eventuallyAsync(.seconds(60)) {
            let failed = try await incident.summary(by: "pool").rows.first { $0.pool == "bad" }?.recent.deferred ?? 0
            return try incident.delivered(at: 0) == 30 && failed >= 10
        }
        try #require(settled, "pool good delivered, pool bad failed; log:\n\(incident.log())")
        let (diagnosis, status, text) = try await incident.diagnose()
        #expect(status == 2 && diagnosis.findings.map(\.pattern) == [.poolDegraded], "\(text)")
        #expect(text.contains("pool-degraded: pool bad:") && text.contains("pools.bad"), "\(text)")
        #expect(try incident.servers[0].messages().allSatisfy { $0.helo == "good.test" }, "nothing left through the bad pool")
    }

    @Test func orphansInjectedAreOrphanedInSpoolAndASweepMendsThem() async throws {
        let incident = try await Incident.start("diagnose-orphans", scripts: [#"{"rules": []}"#], routes: ["inbox.test": 0])
        defer { incident.stop() }
        let pause = try await incident.ctl(["queue", "pause", "--domain", "inbox.test"])
        try #require(pause.status == 0, "\(pause.errors)")
        let seen = try await eventually(.seconds(10)) { incident.node.metric("smarthost_throttle_adjustments") == 1 }
        try #require(seen, "the node sees the pause")
        try await enqueue(Self.mail(50, to: "inbox.test"), broker: incident.broker)
        let held = try await eventuallyAsync(.seconds(60)) { try await incident.summary(by: "domain").total.paused == 50 }
        try #require(held, "50 paused; log:\n\(incident.log())")
        let healthy = try await incident.diagnose()
        #expect(healthy.status == 0 && healthy.0.healthy, "paused mail alone is healthy: \(healthy.text)")
        let armed = try ReportFormat.decode(OrphanSweepTests.Armed.self,
                                            from: try await incident.node.admin("POST", "/admin/faults/drop-scheduled?count=10"))
        try #require(armed.count == 10)
        let (diagnosis, status, text) = try await incident.diagnose()
        #expect(status == 2 && diagnosis.findings.map(\.pattern) == [.orphanedInSpool], "\(text)")
        #expect(diagnosis.findings.first?.evidence == ["diagnose-orphans: 10 of 50 spooled messages are in no queue"], "\(text)")
        #expect(text.contains("smarthostctl reconcile sweep"), "\(text)")
        let sweep = try await incident.ctl(["reconcile", "sweep"])
        #expect(sweep.status == 0, "\(sweep.output)\(sweep.errors)")
        let after = try await incident.diagnose()
        #expect(after.status == 0 && after.0.healthy, "the intervention it names mends it: \(after.text)")
    }
}
